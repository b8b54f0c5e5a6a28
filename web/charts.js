// Charts for the operator console, drawn as plain SVG: feedback volume over time by kind
// (stacked bars), reward-model accuracy per version, a numeric series over PPO steps, and
// the live win rate with its interval. Every label is set with textContent.
import { h } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
export const KIND_LABELS = { rating: "Ratings", comparison: "Comparisons", rewrite: "Rewrites",
  flag: "Flags" };

export const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);

export function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

export function svgText(x, y, text, attrs = {}) {
  const node = svgEl("text", { x, y, ...attrs });
  node.textContent = text;
  return node;
}

function titled(node, text) {
  const title = svgEl("title");
  title.textContent = text;
  node.append(title);
  return node;
}

function figure(svg, caption, extra = null) {
  return h("figure", {}, svg, extra, h("figcaption", { class: "muted" }, caption));
}

/** A small line chart of one numeric series (e.g. reward or KL per PPO step). */
export function lineChart(name, values) {
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

/** Live win rate of each candidate against the live adapter, with its 95% interval. */
export function winRateChart(adapters) {
  const rows = adapters.filter((a) => a.live_battles && a.live_battles.win_rate !== null);
  if (!rows.length) return h("p", { class: "muted" }, "No live side-by-side votes yet.");
  const width = 560, rowH = 26, left = 120, top = 18;
  const svg = svgEl("svg", { class: "chart", width, height: top + rows.length * rowH + 20,
    role: "img", "aria-label": "Live win rate against the live adapter, with 95% intervals" });
  const x = (v) => left + v * (width - left - 50);
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
      svgText(x(1) + 8, y + 14, pct(b.win_rate)));
  });
  return figure(svg, "Live win rate (users' side-by-side picks), with its 95% interval");
}

function bucketLabel(start, bucket) {
  const d = new Date(start);
  return bucket === "hour"
    ? `${d.getUTCDate()}/${d.getUTCMonth() + 1} ${String(d.getUTCHours()).padStart(2, "0")}h`
    : `${d.getUTCDate()}/${d.getUTCMonth() + 1}`;
}

/** Votes per hour or day, one stacked bar per bucket, one colour per kind. */
export function volumeChart(volume) {
  const { buckets, kinds, bucket } = volume;
  const totals = buckets.map((b) => kinds.reduce((sum, k) => sum + (b.counts[k] ?? 0), 0));
  const total = totals.reduce((a, b) => a + b, 0);
  const width = 720, height = 190, left = 34, bottom = 22, top = 10;
  const peak = Math.max(1, ...totals);
  const step = (width - left - 6) / Math.max(1, buckets.length);
  const y = (v) => height - bottom - (v / peak) * (height - bottom - top);
  const svg = svgEl("svg", { class: "chart volume-chart", width, height, role: "img",
    "data-total": total, "aria-label": `Feedback per ${bucket}: ${total} votes over `
      + `${buckets.length} ${bucket}s, at most ${Math.max(0, ...totals)} in one ${bucket}` });
  svg.append(svgEl("line", { class: "axis", x1: left, x2: width, y1: y(0), y2: y(0) }),
    svgText(2, y(peak) + 4, String(peak)), svgText(2, y(0), "0"));
  const labelEvery = Math.ceil(buckets.length / 8);
  buckets.forEach((b, i) => {
    let base = 0;
    const x = left + i * step + 1;
    for (const kind of kinds) {
      const n = b.counts[kind] ?? 0;
      if (!n) continue;
      svg.append(titled(svgEl("rect", { class: `bar kind-${kind}`, x, width: Math.max(1, step - 2),
        y: y(base + n), height: y(base) - y(base + n) }),
      `${bucketLabel(b.start, bucket)}: ${n} ${KIND_LABELS[kind] ?? kind}`.toLowerCase()));
      base += n;
    }
    if (i % labelEvery === 0) svg.append(svgText(x, height - 6, bucketLabel(b.start, bucket)));
  });
  const legend = h("p", { class: "legend" }, kinds.map((k) =>
    h("span", {}, h("span", { class: `swatch kind-${k}` }), ` ${KIND_LABELS[k] ?? k}`)));
  return figure(svg, `Feedback volume per ${bucket} (UTC), by kind: ${total} votes`, legend);
}

/** Reward-model held-out accuracy, one bar per version in training order. */
export function accuracyChart(points) {
  if (!points.length) return h("p", { class: "muted" }, "No reward model trained yet.");
  const width = 520, rowH = 24, left = 150, top = 18;
  const svg = svgEl("svg", { class: "chart accuracy-chart", width,
    height: top + points.length * rowH + 8, role: "img",
    "aria-label": "Reward-model held-out accuracy per version" });
  const x = (v) => left + v * (width - left - 50);
  svg.append(svgEl("line", { class: "axis", x1: x(0.5), x2: x(0.5), y1: 8,
    y2: top + points.length * rowH }), svgText(x(0.5) - 10, 12, "50%"));
  points.forEach((p, i) => {
    const yy = top + i * rowH;
    svg.append(svgText(4, yy + 13, p.version),
      titled(svgEl("rect", { class: p.kept === false ? "bar muted-bar" : "bar", x: x(0),
        y: yy + 3, height: 14, width: Math.max(1, x(p.accuracy) - x(0)) }),
      `${p.version}: ${(p.accuracy * 100).toFixed(1)}% on ${p.pairs ?? "?"} held-out pairs`
        + (p.kept === false ? " (not better than the current one: not used)" : "")),
      svgText(x(1) + 6, yy + 13, `${(p.accuracy * 100).toFixed(1)}%`));
  });
  return figure(svg, "Reward-model accuracy on held-out pairs, per version "
    + "(pale: not better than the current one, so not used)");
}

/** The reward models the runs trained: a cycle's metrics.reward, or a reward run's own. */
export function accuracyPoints(runs) {
  return runs.slice().sort((a, b) => a.id - b.id).flatMap((run) => {
    const m = run.kind === "reward" ? run.metrics : run.metrics?.reward;
    if (typeof m?.accuracy !== "number" || Number.isNaN(m.accuracy)) return [];
    return [{ version: m.version ?? `run ${run.id}`, accuracy: m.accuracy,
      pairs: m.heldout_pairs ?? m.pairs, kept: m.replaced_current }];
  });
}
