// The operator console: adapters (status, evaluation report, sample answer pairs, live
// win rate with its interval, canary share), approve / reject / promote / roll back with
// confirmation, the leaderboard, the live watch after a promotion, feedback volume and
// reward-model accuracy charts, the reward models, the annotators, the review queue, the
// feedback browser, training runs with their step logs and charts, and (for admins) users
// and their keys.
import { annotatorsPanel } from "./annotators.js";
import { api, describeError, h } from "./api.js";
import {
  accuracyChart, accuracyPoints, lineChart, pct, volumeChart, winRateChart,
} from "./charts.js";
import { feedbackBrowser } from "./feedback-browser.js";
import { leaderboardPanel } from "./leaderboard.js";
import { renderMarkdown } from "./markdown.js";
import { reviewPanel } from "./review.js";
import { erasedDataPill, rewardModelsPanel } from "./reward-models.js";
import { usersPanel } from "./users.js";
import { watchPanel } from "./watch.js";

const $ = (id) => document.getElementById(id);
const KEY = "flywheel-operator-key";
const operatorApi = (path, options = {}) => api(path, { ...options, key });

let key = sessionStorage.getItem(KEY) ?? "";
const openReports = new Set(); // reports left open across refreshes

const ACTIONS = {
  candidate: [["approve", "Approve"], ["reject", "Reject"]],
  approved: [["promote", "Promote to live"], ["reject", "Reject"]],
};
const CONFIRM = {
  approve: (v) => `Approve ${v}? It can then be promoted to live.`,
  reject: (v) => `Reject ${v}? It will stop being evaluated and cannot go live.`,
  promote: (v) => `Promote ${v} to live? Every default chat turn will be answered by it.`,
  rollback: () => "Roll back to the previously live adapter?",
  traffic: (v, share) => (share > 0
    ? `Set ${v}'s canary share to ${pct(share)}? That share of chat turns will be answered `
      + "by it, side by side with the live adapter."
    : `Set ${v}'s canary share to 0%? It will answer no more chat turns.`),
};
const CANARY = new Set(["candidate", "approved"]);

function showBanner(message) {
  const banner = $("banner");
  banner.replaceChildren(h("span", {}, message), h("button", { type: "button",
    class: "icon-button", "aria-label": "Dismiss", onclick: () => { banner.hidden = true; } }, "✕"));
  banner.hidden = false;
}

function confirmAction(text) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"),
      { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-ok").focus();
  });
}

async function act(action, version) {
  if (!(await confirmAction(CONFIRM[action](version)))) return;
  const path = action === "rollback" ? "/api/adapters/rollback"
    : `/api/adapters/${encodeURIComponent(version)}/${action}`;
  try {
    await operatorApi(path, { method: "POST" });
    await refresh();
  } catch (error) {
    showBanner(`${action} failed: ${describeError(error)}`);
  }
}

// -- adapters --------------------------------------------------------------------------

function winRateText(b) {
  if (!b) return "–";
  const games = b.wins + b.losses + b.ties;
  if (!games && !b.both_bad) return `no votes yet vs ${b.opponent}`;
  return `${pct(b.win_rate)} (95% CI ${pct(b.low)}–${pct(b.high)}) vs ${b.opponent}: `
    + `${b.wins} won, ${b.losses} lost, ${b.ties} tied, ${b.both_bad} both bad `
    + `(${games} votes)`;
}

async function setTraffic(version, input) {
  const share = Number(input.value) / 100;
  if (!Number.isFinite(share) || share < 0 || share > 1 || input.value === "") {
    showBanner("A canary share is a percentage from 0 to 100.");
    return;
  }
  if (!(await confirmAction(CONFIRM.traffic(version, share)))) return;
  try {
    await operatorApi(`/api/adapters/${encodeURIComponent(version)}/traffic`,
      { method: "PUT", body: { share } });
    await refresh();
  } catch (error) {
    showBanner(`Setting the canary share failed: ${describeError(error)}`);
  }
}

/** The adapter's share of default traffic; a canary control for candidates. */
function trafficCell(a) {
  const current = h("span", { class: "traffic-share" }, pct(a.traffic_share));
  if (!CANARY.has(a.status)) return current;
  const input = h("input", { type: "number", min: 0, max: 100, step: 1, class: "share-input",
    value: Math.round(a.traffic_share * 100), "aria-label": `Canary share for ${a.version} (%)` });
  return h("form", { class: "canary", onsubmit: (e) => { e.preventDefault(); setTraffic(a.version, input); } },
    current, input, h("button", { type: "submit" }, "Set share"));
}

function adapterRow(a) {
  const actions = (ACTIONS[a.status] ?? []).map(([action, text]) => h("button", {
    type: "button", class: action === "reject" ? "danger" : "primary",
    dataset: { action, version: a.version }, onclick: () => act(action, a.version),
  }, text));
  return h("tr", { dataset: { version: a.version } },
    h("th", { scope: "row" }, a.version),
    h("td", {}, h("span", { class: `status-pill status-${a.status}` }, a.status),
      erasedDataPill(a)),
    h("td", {}, a.parent_version ?? "–"),
    h("td", {}, trafficCell(a)),
    h("td", {}, a.loaded ? "yes" : "no"),
    h("td", {}, winRateText(a.live_battles)),
    h("td", {}, new Date(a.created_at).toLocaleString()),
    h("td", {}, h("div", { class: "row-actions" }, actions)));
}

function reportDetails(a) {
  const report = a.eval_report;
  if (!report) return null;
  const samples = (report.samples ?? []).map((s) => h("div", {},
    h("p", {}, h("strong", {}, "Prompt: "), s.prompt),
    h("div", { class: "pairs" },
      h("div", {}, h("strong", {}, `Candidate (${s.candidate_reward?.toFixed?.(2) ?? "?"}): `),
        s.candidate),
      h("div", {}, h("strong", {}, `Baseline (${s.baseline_reward?.toFixed?.(2) ?? "?"}): `),
        s.baseline))));
  const markdown = report.markdown
    ? h("div", { class: "report markdown" }, renderMarkdown(report.markdown.split("## Sample")[0]))
    : h("pre", { class: "log" }, JSON.stringify(report, null, 2));
  return h("details", { class: "adapter-report", dataset: { version: a.version },
    open: openReports.has(a.version),
    ontoggle: (e) => openReports[e.target.open ? "add" : "delete"](a.version) },
    h("summary", {}, `Evaluation report: ${a.version}`), markdown,
    samples.length ? h("h3", {}, "Sample answer pairs") : null, ...samples);
}

async function loadAdapters() {
  const adapters = await operatorApi("/api/adapters");
  $("win-chart").replaceChildren(winRateChart(adapters));
  $("fb-adapter-versions").replaceChildren(...["base", ...adapters.map((a) => a.version)]
    .map((v) => h("option", { value: v })));
  const table = h("table", { class: "data" },
    h("thead", {}, h("tr", {}, ...["Version", "Status", "Parent", "Traffic", "Loaded",
      "Live win rate", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, adapters.map(adapterRow)));
  const reports = adapters.map(reportDetails).filter(Boolean);
  $("adapters").replaceChildren(adapters.length ? table : h("p", {}, "No adapters yet."),
    ...reports);
}

// -- charts: feedback volume, reward-model accuracy ------------------------------------

async function loadVolume() {
  const bucket = $("volume-bucket").value;
  $("volume-chart").replaceChildren(volumeChart(
    await operatorApi(`/api/feedback/volume?bucket=${encodeURIComponent(bucket)}`)));
}

// -- training runs ---------------------------------------------------------------------

const FIRST_STEP_KEYS = ["reward", "kl"]; // reward and KL per PPO step lead

function stepCharts(steps) {
  const keys = Object.keys(steps[0] ?? {}).filter((k) =>
    steps.every((s) => typeof s[k] === "number") && k !== "step");
  const rank = (k) => (FIRST_STEP_KEYS.includes(k) ? FIRST_STEP_KEYS.indexOf(k) : 99);
  keys.sort((a, b) => rank(a) - rank(b));
  return h("div", { class: "row-actions" }, keys.slice(0, 6).map((k) =>
    lineChart(k, steps.map((s) => s[k]))));
}

function runDetails(run) {
  const steps = run.metrics?.ppo?.steps ?? [];
  const summary = `Run ${run.id} · ${run.kind} · ${run.status}`
    + (run.adapter_version ? ` · made ${run.adapter_version}` : "")
    + ` · started ${new Date(run.started_at).toLocaleString()}`;
  return h("details", { class: "run", dataset: { runId: run.id } },
    h("summary", {}, summary),
    run.error ? h("pre", { class: "log", role: "alert" }, run.error) : null,
    steps.length ? stepCharts(steps) : null,
    h("h3", {}, "Log"),
    h("pre", { class: "log" }, JSON.stringify({ metrics: run.metrics, config: run.config,
      data_window: run.data_window }, null, 2)));
}

async function loadRuns() {
  const runs = await operatorApi("/api/training-runs?limit=200");
  $("accuracy-chart").replaceChildren(accuracyChart(accuracyPoints(runs)));
  $("runs").replaceChildren(...(runs.length ? runs.slice(0, 50).map(runDetails)
    : [h("p", {}, "No training runs yet.")]));
}

// -- page ------------------------------------------------------------------------------

const browser = feedbackBrowser({ api: operatorApi });
const review = reviewPanel({ api: operatorApi, confirm: confirmAction, onError: showBanner });

const users = usersPanel({ api: operatorApi, confirm: confirmAction,
  onError: (error) => showBanner(describeError(error)) });

// Admins only: the panel shows when GET /api/users answers, and stays hidden on a 403.
async function loadUsers() {
  try {
    await users.load();
    $("users").replaceChildren(users.element);
    $("users-section").hidden = false;
  } catch (error) {
    $("users-section").hidden = true;
    if (error.status !== 403) throw error;
  }
}

async function loadRewardModels() {
  $("reward-models").replaceChildren(await rewardModelsPanel({ api: operatorApi }));
}

async function loadLeaderboard() {
  $("leaderboard").replaceChildren(await leaderboardPanel({ api: operatorApi }));
}

async function loadWatch() {
  $("watch").replaceChildren(await watchPanel({ api: operatorApi,
    bucket: $("watch-bucket").value }));
}

async function loadAnnotators() {
  $("annotators").replaceChildren(await annotatorsPanel({ api: operatorApi,
    onUser: browser.showUser }));
}

function showSections(shown) {
  for (const section of document.querySelectorAll("section[data-operator]")) {
    section.hidden = !shown;
  }
}

async function refresh() {
  if (!key) return;
  try {
    await Promise.all([loadAdapters(), loadRuns(), loadVolume(), loadRewardModels(),
      loadAnnotators(), loadLeaderboard(), loadWatch(), browser.load(),
      review.load(), loadUsers()]);
    showSections(true);
    $("banner").hidden = true;
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem(KEY);
      key = "";
    }
    showBanner(describeError(error));
  }
}

function main() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    key = $("api-key").value.trim();
    sessionStorage.setItem(KEY, key);
    $("api-key").value = "";
    refresh();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    key = "";
    showSections(false);
    $("users-section").hidden = true;
  });
  $("rollback").addEventListener("click", () => act("rollback"));
  $("refresh").addEventListener("click", refresh);
  $("volume-bucket").addEventListener("change", () => loadVolume().catch((error) =>
    showBanner(describeError(error))));
  $("watch-bucket").addEventListener("change", () => loadWatch().catch((error) =>
    showBanner(describeError(error))));
  refresh();
}

main();
