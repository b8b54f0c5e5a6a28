// The console's live-watch panel: after a promotion, is the live adapter doing better
// for people, or only for the reward model? The reward-hacking alarm and the rollback test
// (live adapter against its predecessor), one line chart per figure with a line per
// adapter over hours or days, and each adapter's totals. From GET /api/watch.
import { describeError, h } from "./api.js";
import { pct, svgEl, svgText } from "./charts.js";

const FIGURES = [
  ["thumbs_up_rate", "Thumbs-up rate", pct],
  ["reward_mean", "Reward-model score", (v) => v.toFixed(2)],
  ["flag_rate", "Flag rate", pct],
  ["degenerate_rate", "Empty or degenerate", pct],
  ["mean_length", "Answer length (tokens)", (v) => v.toFixed(1)],
];
const SERIES_COLOURS = 6;

function label(start, bucket) {
  const d = new Date(start);
  return bucket === "hour" ? `${String(d.getUTCHours()).padStart(2, "0")}h`
    : `${d.getUTCDate()}/${d.getUTCMonth() + 1}`;
}

/** One figure over the buckets, a line per adapter; empty buckets break the line. */
export function seriesChart(watch, key, title, format) {
  const width = 340, height = 130, left = 40, bottom = 18, top = 18;
  const values = watch.adapters.flatMap((a) => a.buckets.map((b) => b[key]))
    .filter((v) => v !== null);
  const svg = svgEl("svg", { class: "chart watch-chart", width, height, role: "img",
    "data-figure": key, "aria-label": `${title} per ${watch.bucket}, per adapter` });
  svg.append(svgText(4, 12, title));
  if (!values.length) {
    svg.append(svgText(left, height / 2, "no data yet"));
    return svg;
  }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (key.endsWith("_rate")) { lo = 0; hi = Math.max(hi, 0.01); }
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; } // one value: centre it
  const span = hi - lo || 1;
  const n = watch.adapters[0].buckets.length;
  const x = (i) => left + (i / Math.max(1, n - 1)) * (width - left - 8);
  const y = (v) => height - bottom - ((v - lo) / span) * (height - bottom - top);
  svg.append(svgEl("line", { class: "axis", x1: left, x2: width - 8, y1: y(lo), y2: y(lo) }),
    svgText(2, y(hi) + 4, format(hi)), svgText(2, y(lo), format(lo)),
    svgText(left, height - 4, label(watch.adapters[0].buckets[0].start, watch.bucket)),
    svgText(width - 40, height - 4, label(watch.adapters[0].buckets[n - 1].start, watch.bucket)));
  watch.adapters.forEach((adapter, a) => {
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        svg.append(svgEl("circle", { class: `dot series-${a % SERIES_COLOURS}`,
          cx: run[0][0], cy: run[0][1], r: 2.5 }));
      } else if (run.length) {
        svg.append(svgEl("polyline", { class: `line series-${a % SERIES_COLOURS}`,
          points: run.map((p) => p.join(",")).join(" "), "data-adapter": adapter.version }));
      }
      run = [];
    };
    adapter.buckets.forEach((b, i) => {
      if (b[key] === null) flush(); else run.push([x(i), y(b[key])]);
    });
    flush();
  });
  return svg;
}

function verdicts(watch) {
  if (!watch.live) {
    return h("p", { class: "muted" }, "No adapter is live: the base model serves alone.");
  }
  const alarm = watch.alarm.raised;
  return h("div", { class: "watch-verdicts" },
    h("p", {}, `Live: ${watch.live}, against ${watch.predecessor}. Reward model: `
      + `${watch.reward_model ?? "none current"}.`),
    h("p", { class: alarm ? "watch-alarm" : "muted", role: alarm ? "alert" : null,
      dataset: { verdict: "alarm", raised: String(alarm) } },
    `${alarm ? "Reward-hacking alarm" : "No reward-hacking alarm"}: ${watch.alarm.reason}.`),
    h("p", { class: watch.rollback.raised ? "watch-alarm" : "muted",
      dataset: { verdict: "rollback", raised: String(watch.rollback.raised) } },
    `${watch.rollback.raised ? "Rollback due" : "No rollback due"}: ${watch.rollback.reason}. `
      + `Automatic rollback is ${watch.rollback.automatic ? "on" : "off"}.`));
}

function totalsTable(watch) {
  const cell = (v, format) => (v === null ? "–" : format(v));
  return h("table", { class: "data watch-totals" },
    h("thead", {}, h("tr", {}, ...["Adapter", "Answers", "Rated", ...FIGURES.map((f) => f[1])]
      .map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, watch.adapters.map((a, i) => h("tr", { dataset: { version: a.version } },
      h("th", { scope: "row" }, h("span", { class: `swatch series-${i % SERIES_COLOURS}` }),
        ` ${a.version}${a.version === watch.live ? " (live)" : ""}`),
      h("td", {}, String(a.totals.answers)), h("td", {}, String(a.totals.rated)),
      ...FIGURES.map(([key, , format]) => h("td", {}, cell(a.totals[key], format)))))));
}

/** The panel's content for one bucket size ("hour" or "day"). */
export async function watchPanel({ api, bucket }) {
  let watch;
  try {
    watch = await api(`/api/watch?bucket=${encodeURIComponent(bucket)}`);
  } catch (error) {
    return h("p", { role: "alert" }, `Could not load the watch: ${describeError(error)}`);
  }
  if (!watch.adapters.length) {
    return h("div", {}, verdicts(watch),
      h("p", { class: "muted" }, `No answers served in the last ${bucket === "hour"
        ? "48 hours" : "14 days"}.`));
  }
  return h("div", {}, verdicts(watch),
    h("div", { class: "watch-charts" }, FIGURES.map(([key, title, format]) =>
      seriesChart(watch, key, title, format))),
    totalsTable(watch));
}
