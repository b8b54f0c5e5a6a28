// The console's annotators panel: how often each person's votes agree with the consensus
// and with the reward model, answer patterns that betray careless voting, and the weight
// their votes get in training. Servers without GET /api/annotators say "not available".
import { describeError, h } from "./api.js";
import { pct } from "./charts.js";

const PATTERNS = {
  always_a: "always picks A", always_b: "always picks B", always_tie: "always ties",
  always_up: "always thumbs up",
  always_down: "always thumbs down", random: "random picks",
};

function agreement(rate, items) {
  if (rate === null || rate === undefined) return "–";
  return items === undefined ? pct(rate) : `${pct(rate)} of ${items}`;
}

function row(a, onUser) {
  const careless = a.pattern !== null && a.pattern !== undefined;
  return h("tr", { class: careless ? "careless" : null, dataset: { userId: a.user_id } },
    h("th", { scope: "row" }, h("button", { type: "button", class: "link",
      title: "Show this user's feedback", onclick: () => onUser(a.handle) }, a.handle),
      a.ai_feedback ? h("span", { class: "status-pill ai", title: "A judge: its votes are "
        + "AI feedback, measured against people's" }, "AI judge") : null),
    h("td", {}, String(a.votes)),
    h("td", {}, agreement(a.consensus_agreement, a.consensus_items)),
    h("td", {}, agreement(a.reward_model_agreement)),
    h("td", {}, careless
      ? h("span", { class: "status-pill pattern" }, PATTERNS[a.pattern] ?? a.pattern)
      : h("span", { class: "muted" }, "none")),
    h("td", {}, typeof a.weight === "number" ? a.weight.toFixed(2) : "–"));
}

/** The panel's content, from GET /api/annotators. */
export async function annotatorsPanel({ api, onUser }) {
  let data;
  try {
    data = await api("/api/annotators");
  } catch (error) {
    if (error.status === 404) {
      return h("p", { class: "muted", dataset: { state: "unavailable" } },
        "Annotator statistics are not available on this server.");
    }
    return h("p", { role: "alert" }, `Could not load annotators: ${describeError(error)}`);
  }
  const people = data.annotators ?? [];
  if (!people.length) return h("p", { class: "muted" }, "No votes from anyone yet.");
  const careless = people.filter((a) => a.pattern).length;
  return h("div", {},
    h("p", { class: "muted" }, `Agreement with the reward model ${data.reward_model
      ? `(${data.reward_model})` : "(none trained yet)"}; ${careless} of ${people.length} `
      + "annotators show a careless pattern (highlighted), and their votes weigh less."),
    h("table", { class: "data annotators" },
      h("thead", {}, h("tr", {}, ...["Annotator", "Votes", "Agrees with consensus",
        "Agrees with reward model", "Pattern", "Training weight"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", {}, people.map((a) => row(a, onUser)))));
}
