// The operator console: adapters (status, evaluation report, sample answer pairs, live
// win rate with its interval), approve / reject / promote / roll back with confirmation,
// and training runs with their step logs and charts.
import { api, describeError, h } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const KEY = "flywheel-operator-key";

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
};

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
    await api(path, { method: "POST", key });
    await refresh();
  } catch (error) {
    showBanner(`${action} failed: ${describeError(error)}`);
  }
}

// -- adapters --------------------------------------------------------------------------

const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);

function winRateText(b) {
  if (!b) return "–";
  const games = b.wins + b.losses + b.ties;
  if (!games && !b.both_bad) return `no votes yet vs ${b.opponent}`;
  return `${pct(b.win_rate)} (95% CI ${pct(b.low)}–${pct(b.high)}) vs ${b.opponent}: `
    + `${b.wins} won, ${b.losses} lost, ${b.ties} tied, ${b.both_bad} both bad `
    + `(${games} votes)`;
}

function adapterRow(a) {
  const actions = (ACTIONS[a.status] ?? []).map(([action, text]) => h("button", {
    type: "button", class: action === "reject" ? "danger" : "primary",
    dataset: { action, version: a.version }, onclick: () => act(action, a.version),
  }, text));
  return h("tr", { dataset: { version: a.version } },
    h("th", { scope: "row" }, a.version),
    h("td", {}, h("span", { class: `status-pill status-${a.status}` }, a.status)),
    h("td", {}, a.parent_version ?? "–"),
    h("td", {}, pct(a.traffic_share)),
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

function winRateChart(adapters) {
  const rows = adapters.filter((a) => a.live_battles?.win_rate !== null && a.live_battles);
  if (!rows.length) return h("p", { class: "muted" }, "No live side-by-side votes yet.");
  const width = 520, rowH = 26, left = 120, top = 18;
  const svg = svgEl("svg", { class: "chart", width, height: top + rows.length * rowH + 20,
    role: "img", "aria-label": "Live win rate against the live adapter, with 95% intervals" });
  const x = (v) => left + v * (width - left - 20);
  svg.append(svgEl("line", { class: "axis", x1: x(0.5), x2: x(0.5), y1: 8,
    y2: top + rows.length * rowH }), svgText(x(0.5) - 10, 12, "50%"));
  rows.forEach((a, i) => {
    const b = a.live_battles;
    const y = top + i * rowH;
    svg.append(svgText(4, y + 14, a.version),
      svgEl("rect", { class: "bar", x: x(0), y: y + 4, height: 14,
        width: Math.max(1, x(b.win_rate) - x(0)), opacity: 0.6 }),
      svgEl("line", { class: "interval", x1: x(b.low ?? b.win_rate), x2: x(b.high ?? b.win_rate),
        y1: y + 11, y2: y + 11 }),
      svgText(x(1) - 30, y + 14, pct(b.win_rate)));
  });
  return h("figure", {}, svg, h("figcaption", { class: "muted" },
    "Live win rate (users' side-by-side picks), with its 95% interval"));
}

async function loadAdapters() {
  const adapters = await api("/api/adapters", { key });
  $("win-chart").replaceChildren(winRateChart(adapters));
  const table = h("table", { class: "data" },
    h("thead", {}, h("tr", {}, ...["Version", "Status", "Parent", "Traffic", "Loaded",
      "Live win rate", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, adapters.map(adapterRow)));
  const reports = adapters.map(reportDetails).filter(Boolean);
  $("adapters").replaceChildren(adapters.length ? table : h("p", {}, "No adapters yet."),
    ...reports);
}

// -- training runs ---------------------------------------------------------------------

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function svgText(x, y, text) {
  const node = svgEl("text", { x, y });
  node.textContent = text;
  return node;
}

/** A small line chart of one numeric series. */
function lineChart(name, values) {
  const width = 260, height = 90, pad = 6;
  const lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || 1;
  const points = values.map((v, i) => [
    pad + (i / Math.max(1, values.length - 1)) * (width - 2 * pad),
    height - pad - ((v - lo) / span) * (height - 2 * pad - 14),
  ]);
  const svg = svgEl("svg", { class: "chart", width, height, role: "img",
    "aria-label": `${name} over ${values.length} steps, from ${lo.toFixed(3)} to ${hi.toFixed(3)}` });
  svg.append(svgText(pad, 11, `${name}: ${values.at(-1).toFixed(3)}`),
    svgEl("polyline", { class: "line", points: points.map((p) => p.join(",")).join(" ") }));
  return svg;
}

function stepCharts(steps) {
  const keys = Object.keys(steps[0] ?? {}).filter((k) =>
    steps.every((s) => typeof s[k] === "number") && k !== "step");
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
  const runs = await api("/api/training-runs", { key });
  $("runs").replaceChildren(...(runs.length ? runs.map(runDetails)
    : [h("p", {}, "No training runs yet.")]));
}

// -- page ------------------------------------------------------------------------------

async function refresh() {
  if (!key) return;
  try {
    await Promise.all([loadAdapters(), loadRuns()]);
    $("adapters-section").hidden = false;
    $("runs-section").hidden = false;
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
    $("adapters-section").hidden = true;
    $("runs-section").hidden = true;
  });
  $("rollback").addEventListener("click", () => act("rollback"));
  $("refresh").addEventListener("click", refresh);
  refresh();
}

main();
