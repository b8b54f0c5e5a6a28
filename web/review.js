// The console's review queue: flags, thumbs-down with a comment, rewrites and items users
// disagree on, oldest first, each with its prompt and answer; resolved from the keyboard
// (the keys are listed in the panel) or with the buttons. Message text is only ever set
// as text (h() appends text nodes): markup in it is shown, never run.
import { describeError, h } from "./api.js";

const PAGE = 25;
const KINDS = { flag: "Flag", thumbs_down: "Thumbs down", rewrite: "Rewrite",
  disagreement: "Disagreement" };
const SCOPES = { m: "message", v: "vote", u: "user" };
const KEYS = [["j / k", "next / previous item"], ["a", "accept"], ["d", "dismiss"],
  ["x then m, v or u", "exclude from training: the message, the vote, or the user's every "
    + "vote (on a disagreement, then 1–9: which voter)"], ["r", "redact the text"],
  ["Esc", "cancel a started exclusion"]];

function said(item) {
  const d = item.detail;
  if (item.kind === "flag") {
    return [h("strong", {}, `Flagged ${d.category?.replace("_", " ")}`),
      d.comment ? `: ${d.comment}` : "", h("span", { class: "muted" },
        ` · flag ${d.flag_status}`)];
  }
  if (item.kind === "thumbs_down") {
    return [h("strong", {}, "Thumbs down"), d.reasons?.length ? ` (${d.reasons.join(", ")})`
      : "", `: ${d.comment}`];
  }
  if (item.kind === "rewrite") {
    return [h("strong", {}, "Rewritten as"), h("div", { class: "fb-text" }, d.rewrite)];
  }
  return [h("strong", {}, "Votes: "), h("ol", { class: "review-votes" },
    (d.votes ?? []).map((v) => h("li", {}, `${v.handle ?? v.user_id}: ${v.vote}`)))];
}

function decision(item) {
  if (item.status === "open") return null;
  const scope = item.exclude_scope ? ` (${item.exclude_scope})` : "";
  return h("p", { class: "muted review-decision" }, `${item.status}${scope} by `
    + `${item.decided_by} on ${new Date(item.decided_at).toLocaleString()}`
    + (item.note ? ` — ${item.note}` : ""));
}

/** The panel: `reviewPanel({api, confirm, onError}).load()` fills #review. */
export function reviewPanel({ api, confirm, onError }) {
  const root = document.getElementById("review");
  const state = { items: [], cursor: null, selected: 0, pending: null, status: "open",
    kind: "" };
  const list = h("div", { class: "review-list", tabindex: "0",
    "aria-label": "Review queue (focus it to use the keys)", onkeydown: onKey });
  const hint = h("p", { class: "muted review-hint", "aria-live": "polite" });
  const more = h("button", { type: "button", hidden: true, onclick: () => fetchPage(true) },
    "Show more");
  const filters = h("form", { class: "filters", onchange: () => load() },
    h("label", {}, "Status", h("select", { name: "status" }, ["open", "accepted", "dismissed",
      "excluded", "redacted", ""].map((s) => h("option", { value: s }, s || "every status")))),
    h("label", {}, "Kind", h("select", { name: "kind" },
      h("option", { value: "" }, "every kind"),
      Object.entries(KINDS).map(([k, label]) => h("option", { value: k }, label)))));
  root.replaceChildren(filters,
    h("details", { class: "review-keys" }, h("summary", {}, "Keyboard"),
      h("dl", {}, KEYS.flatMap(([k, what]) => [h("dt", {}, h("kbd", {}, k)),
        h("dd", {}, what)]))),
    hint, list, more);

  function card(item, index) {
    const selected = index === state.selected;
    const open = item.status === "open";
    const button = (label, run, cls) => h("button", { type: "button", class: cls,
      disabled: !open, onclick: () => { state.selected = index; run(); } }, label);
    return h("article", { class: `fb-item review-item kind-${item.kind}`
      + (selected ? " selected" : ""), "aria-current": selected ? "true" : null,
      dataset: { id: item.id, kind: item.kind, status: item.status },
      onclick: () => { state.selected = index; render(); list.focus(); } },
    h("header", {}, h("span", { class: "status-pill" }, KINDS[item.kind]),
      h("span", { class: `status-pill status-${item.status}` }, item.status),
      item.handle ? h("span", {}, item.handle) : null,
      h("span", { class: "muted" }, item.adapter_version ?? ""),
      h("time", { class: "muted", datetime: item.created_at },
        new Date(item.created_at).toLocaleString())),
    item.prompt !== null ? h("div", { class: "fb-prompt" },
      h("p", { class: "muted" }, "Prompt"), h("div", { class: "fb-text" }, item.prompt)) : null,
    item.answer !== null ? h("div", { class: "fb-answer" },
      h("p", { class: "muted" }, "Answer"), h("div", { class: "fb-text" }, item.answer)) : null,
    h("div", { class: "review-said" }, said(item)),
    decision(item),
    h("p", { class: "review-actions" }, button("Accept (a)", () => resolve("accept")),
      button("Dismiss (d)", () => resolve("dismiss")),
      ...Object.entries(SCOPES).map(([k, scope]) => button(`Exclude ${scope} (x ${k})`,
        () => exclude(scope))),
      button("Redact (r)", () => resolve("redact"), "danger")));
  }

  function render() {
    state.selected = Math.max(0, Math.min(state.selected, state.items.length - 1));
    list.replaceChildren(...(state.items.length ? state.items.map(card)
      : [h("p", { class: "muted" }, state.status === "open" ? "Nothing to review."
        : "No items.")]));
    list.querySelector(".selected")?.scrollIntoView({ block: "nearest" });
    more.hidden = !state.cursor;
  }

  async function fetchPage(append) {
    const params = new URLSearchParams({ limit: PAGE });
    if (state.status) params.set("status", state.status);
    if (state.kind) params.set("kind", state.kind);
    if (append && state.cursor) params.set("cursor", state.cursor);
    const page = await api(`/api/review?${params}`);
    state.items = append ? state.items.concat(page.items) : page.items;
    state.cursor = page.next_cursor;
    render();
  }

  async function load() {
    state.status = filters.elements.status.value;
    state.kind = filters.elements.kind.value;
    await fetchPage(false);
  }

  async function resolve(action, extra = {}) {
    const item = state.items[state.selected];
    state.pending = null;
    hint.textContent = "";
    if (!item || item.status !== "open") return;
    if (action === "redact" && !(await confirm("Redact this item's text? The "
      + `${item.kind === "rewrite" ? "rewrite" : "message"} is replaced by [redacted] in the `
      + "store, and left out of training."))) {
      list.focus();
      return;
    }
    try {
      const done = await api(`/api/review/${item.id}`, { method: "POST",
        body: { action, ...extra } });
      if (state.status === "open") state.items.splice(state.selected, 1);
      else state.items[state.selected] = done;
      hint.textContent = `Item ${item.id}: ${done.status}`
        + `${done.exclude_scope ? ` (${done.exclude_scope})` : ""}.`;
      render();
    } catch (error) {
      onError(`Could not resolve item ${item.id}: ${describeError(error)}`);
    }
    list.focus();
  }

  function exclude(scope) {
    const item = state.items[state.selected];
    if (scope === "user" && item?.kind === "disagreement") {
      state.pending = "voter";
      hint.textContent = "Exclude which voter? "
        + item.detail.votes.map((v, i) => `${i + 1} ${v.handle ?? v.user_id}`).join(", ");
      return;
    }
    resolve("exclude", { scope });
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const { key } = event;
    const item = state.items[state.selected];
    const { pending } = state;
    if (pending) { // the second key of an exclusion: anything else cancels it
      state.pending = null;
      hint.textContent = "";
      const voter = /^[1-9]$/.test(key) ? item?.detail.votes?.[Number(key) - 1] : null;
      if (pending === "voter" && voter) {
        resolve("exclude", { scope: "user", user_id: voter.user_id });
      } else if (pending === "scope" && SCOPES[key]) {
        exclude(SCOPES[key]);
      }
    } else if (key === "j" || key === "k") {
      state.selected += key === "j" ? 1 : -1;
      render();
    } else if (key === "x") {
      state.pending = "scope";
      hint.textContent = "Exclude from training: m the message, v the vote, u the user.";
    } else if ({ a: "accept", d: "dismiss", r: "redact" }[key]) {
      resolve({ a: "accept", d: "dismiss", r: "redact" }[key]);
    } else {
      return;
    }
    event.preventDefault();
  }

  return { load };
}
