// The console's leaderboard panel: every version that fought side-by-side battles (the
// base model and each adapter), rated by a Bradley–Terry fit of users' verdicts on the Elo
// scale, the base model fixed at 1000, best first: a chart of each rating with its
// bootstrap interval, and a table of the figures. From GET /api/leaderboard.
import { describeError, h } from "./api.js";
import { svgEl, svgText } from "./charts.js";

const points = (x) => Math.round(x).toString();

/** Each version's rating (a dot) with its interval (a line), one row per version. */
export function leaderboardChart(board) {
  const rows = board.standings;
  const width = 620, rowH = 24, left = 130, right = 60, top = 22;
  const lo = Math.min(...rows.map((r) => r.low)), hi = Math.max(...rows.map((r) => r.high));
  const pad = Math.max(10, (hi - lo) * 0.05);
  const x = (v) => left + ((v - (lo - pad)) / (hi - lo + 2 * pad)) * (width - left - right);
  const height = top + rows.length * rowH + 8;
  const svg = svgEl("svg", { class: "chart leaderboard-chart", width, height, role: "img",
    "aria-label": `Ratings of ${rows.length} versions with ${Math.round(board.level * 100)}% `
      + `intervals; ${rows[0].version} leads at ${points(rows[0].rating)}` });
  const anchor = board.anchor_rating;
  if (anchor >= lo - pad && anchor <= hi + pad) {
    svg.append(svgEl("line", { class: "axis", x1: x(anchor), x2: x(anchor), y1: top - 6,
      y2: height - 4 }), svgText(x(anchor) - 14, 12, points(anchor)));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH + 10;
    const title = svgEl("title");
    title.textContent = `${r.version}: ${points(r.rating)} (${points(r.low)} to `
      + `${points(r.high)}), ${r.battles} battles`;
    const group = svgEl("g", { class: "standing", "data-version": r.version });
    group.append(title, svgText(4, y + 4, r.version),
      svgEl("line", { class: "interval", x1: x(r.low), x2: x(r.high), y1: y, y2: y }),
      svgEl("circle", { class: "bar", cx: x(r.rating), cy: y, r: 5 }),
      svgText(width - right + 8, y + 4, points(r.rating)));
    svg.append(group);
  });
  return h("figure", {}, svg, h("figcaption", { class: "muted" },
    `Bradley–Terry ratings from ${board.battles} side-by-side battles, with `
    + `${Math.round(board.level * 100)}% bootstrap intervals`));
}

function row(r, rank) {
  return h("tr", { dataset: { version: r.version } },
    h("td", {}, String(rank)),
    h("th", { scope: "row" }, r.version),
    h("td", {}, points(r.rating)),
    h("td", {}, `${points(r.low)} to ${points(r.high)}`),
    h("td", {}, String(r.battles)),
    h("td", {}, `${r.wins} / ${r.losses} / ${r.ties}`),
    h("td", {}, r.status ? h("span", { class: `status-pill status-${r.status}` }, r.status)
      : "–"));
}

/** The panel's content. */
export async function leaderboardPanel({ api }) {
  let board;
  try {
    board = await api("/api/leaderboard");
  } catch (error) {
    return h("p", { role: "alert" }, `Could not load the leaderboard: ${describeError(error)}`);
  }
  if (!board.standings.length) {
    return h("p", { class: "muted" }, "No side-by-side battles decided yet: users' picks "
      + "between two answers (and candidates' canary traffic) fill the leaderboard.");
  }
  const level = `${Math.round(board.level * 100)}% interval`;
  return h("div", {},
    h("p", { class: "muted" }, `${board.anchor} is fixed at ${points(board.anchor_rating)} `
      + "points; 400 points mean 10-to-1 odds of winning a battle. Intervals come from "
      + `${board.resamples} bootstrap resamples of the battles. A tie or "both bad" counts `
      + "half a win to each side."),
    leaderboardChart(board),
    h("table", { class: "data leaderboard" },
      h("thead", {}, h("tr", {}, ...["Rank", "Version", "Rating", level, "Battles",
        "Won / lost / tied", "Status"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, board.standings.map((r, i) => row(r, i + 1)))));
}
