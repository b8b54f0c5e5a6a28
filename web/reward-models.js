// The console's reward-models panel: every reward model in the registry, newest first,
// which one is current, its accuracy and margin on the held-out split (the same
// conversations for every version, so versions compare), the pairs it trained on and the
// model that was current before it. A margin whose 90% interval reaches zero is marked: that
// model agrees with the voters no better than chance, and the auto-promotion gate will not
// take its word. Servers without GET /api/reward-models say "not available".
import { describeError, h } from "./api.js";

const accuracy = (m) => (typeof m.heldout?.accuracy === "number"
  ? `${(m.heldout.accuracy * 100).toFixed(1)}%` : "–");
const count = (n) => (typeof n === "number" ? String(n) : "–");
const signed = (x) => `${x < 0 ? "−" : "+"}${Math.abs(x).toFixed(2)}`;

function margin(m) {
  const { margin: mean, margin_low: low, margin_high: high } = m.heldout ?? {};
  if (typeof mean !== "number") return h("td", {}, "–");
  const chance = low <= 0;
  return h("td", { class: chance ? "chance" : null,
    title: chance ? "No better than chance on its held-out pairs" : null },
  `${signed(mean)} (${signed(low)} to ${signed(high)})${chance ? " chance" : ""}`);
}

// Trained on data of a user who was erased since: an operator retrains it.
export const erasedDataPill = (row) => (row.trained_on_erased_data
  ? h("span", { class: "status-pill erased-data",
    title: "Its training data included a user who has since been erased: retrain it" },
  "trained on erased data")
  : null);

function row(m) {
  return h("tr", { class: m.status === "current" ? "current" : null,
    dataset: { version: m.version } },
  h("th", { scope: "row" }, m.version),
  h("td", {}, h("span", { class: `status-pill status-${m.status}` }, m.status),
    erasedDataPill(m)),
  h("td", {}, accuracy(m)),
  margin(m),
  h("td", {}, count(m.heldout?.pairs)),
  h("td", {}, count(m.data_window?.pairs)),
  h("td", {}, m.parent_version ?? "–"),
  h("td", {}, new Date(m.created_at).toLocaleString()));
}

/** The panel's content, from GET /api/reward-models. */
export async function rewardModelsPanel({ api }) {
  let models;
  try {
    models = await api("/api/reward-models");
  } catch (error) {
    if (error.status === 404) {
      return h("p", { class: "muted", dataset: { state: "unavailable" } },
        "The reward-model registry is not available on this server.");
    }
    return h("p", { role: "alert" }, `Could not load reward models: ${describeError(error)}`);
  }
  if (!models.length) {
    return h("p", { class: "muted" },
      "No reward models yet: the first cycle (or flywheel train reward) trains one.");
  }
  const current = models.find((m) => m.status === "current");
  return h("div", {},
    h("p", { class: "muted" }, current
      ? `${current.version} is current. A retrained model that scores worse on the held-out `
        + "split is rejected; the current one stays."
      : "No reward model is current."),
    h("table", { class: "data reward-models" },
      h("thead", {}, h("tr", {}, ...["Version", "Status", "Held-out accuracy",
        "Held-out margin (90% CI)", "Held-out pairs", "Training pairs", "Parent", "Created"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", {}, models.map(row))));
}
