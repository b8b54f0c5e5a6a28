// The console's feedback browser: every vote, newest first, filtered by kind, thumbs,
// flag category, adapter and user, with the prompt and the answers it judged. Message
// text is only ever set as text (h() appends text nodes): markup in it is shown, never run.
import { describeError, h } from "./api.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
const CHOICES = { a: "picked A", b: "picked B", tie: "a tie", both_bad: "both bad" };

function voteSummary(item) {
  const v = item.vote;
  if (item.kind === "rating") {
    return [v.thumb > 0 ? "Thumbs up" : "Thumbs down",
      v.reasons?.length ? ` · ${v.reasons.join(", ")}` : ""].join("");
  }
  if (item.kind === "comparison") {
    return v.choice ? `Side by side: ${CHOICES[v.choice] ?? v.choice}` : "Ranked the answers";
  }
  if (item.kind === "flag") return `Flagged: ${v.category.replace("_", " ")}`;
  return "Rewrote the answer";
}

function answerBlock(answer, label, winner) {
  return h("div", { class: `fb-answer${winner ? " winner" : ""}`,
    dataset: { messageId: answer.message_id } },
  h("p", { class: "muted" }, `${label} · ${answer.adapter_version ?? "base model"}`
      + (winner ? " · preferred" : "")),
  h("div", { class: "fb-text" }, answer.content));
}

function answers(item) {
  if (item.kind !== "comparison") return [answerBlock(item.answers[0], "Answer", false)];
  const { choice, ranking } = item.vote;
  return item.answers.map((a, i) => {
    const label = ranking ? `Answer ranked ${ranking.indexOf(a.message_id) + 1}`
      : `Answer ${String.fromCharCode(65 + i)}`;
    const winner = ranking ? ranking[0] === a.message_id
      : (choice === "a" && i === 0) || (choice === "b" && i === 1);
    return answerBlock(a, label, winner);
  });
}

function itemCard(item, onUser) {
  const v = item.vote;
  const comment = v.comment ? h("p", {}, h("strong", {}, "Comment: "), v.comment) : null;
  const rewrite = item.kind === "rewrite"
    ? h("div", { class: "fb-answer rewrite" }, h("p", { class: "muted" }, "Rewritten as"),
      h("div", { class: "fb-text" }, v.rewrite)) : null;
  return h("article", { class: `fb-item kind-${item.kind}${v.thumb < 0 ? " down" : ""}`,
    dataset: { kind: item.kind, id: item.id } },
  h("header", {},
    h("strong", { class: "fb-vote" }, voteSummary(item)),
    h("button", { type: "button", class: "link", title: "Show this user's feedback",
      onclick: () => onUser(item.handle) }, item.handle),
    item.ai_feedback ? h("span", { class: "status-pill ai", title: "A judge's vote: AI "
      + "feedback" }, "AI feedback") : null,
    h("span", { class: "muted" }, item.adapter_version ?? (item.kind === "comparison"
      ? item.answers.map((a) => a.adapter_version ?? "base").join(" vs ") : "base model")),
    h("time", { class: "muted", datetime: item.time }, new Date(item.time).toLocaleString())),
  h("div", { class: "fb-prompt" }, h("p", { class: "muted" }, "Prompt"),
    h("div", { class: "fb-text" }, item.prompt ?? "(no prompt)")),
  h("div", { class: "fb-answers" }, answers(item)), rewrite, comment);
}

/** Wire up the browser's filter form; returns {load, showUser}. */
export function feedbackBrowser({ api }) {
  const form = $("fb-filters");
  const list = $("fb-items");
  const more = $("fb-more");
  const status = $("fb-status");
  let cursor = null;

  function params() {
    const data = new FormData(form);
    const query = new URLSearchParams({ limit: PAGE });
    const vote = data.get("vote");
    if (vote === "down" || vote === "up") query.set("thumb", vote === "down" ? -1 : 1);
    else if (vote) query.set("kind", vote);
    for (const name of ["category", "adapter", "user"]) {
      const value = String(data.get(name) ?? "").trim();
      if (value) query.set(name, value);
    }
    return query;
  }

  async function load({ append = false } = {}) {
    const query = params();
    if (append && cursor) query.set("cursor", cursor);
    status.textContent = "Loading…";
    try {
      const page = await api(`/api/feedback?${query}`);
      const cards = page.items.map((item) => itemCard(item, showUser));
      if (append) list.append(...cards);
      else list.replaceChildren(...cards);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const shown = list.querySelectorAll(".fb-item").length;
      status.textContent = shown ? `${shown} shown${cursor ? "; more below" : ""}`
        : "No feedback matches these filters.";
    } catch (error) {
      status.textContent = `Could not load feedback: ${describeError(error)}`;
      more.hidden = true;
    }
  }

  function showUser(handle) {
    form.elements.user.value = handle;
    load();
    form.scrollIntoView({ behavior: "smooth" });
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  form.addEventListener("reset", () => setTimeout(load));
  // A flag category only filters flags; thumbs only filter ratings.
  form.elements.category.addEventListener("change", () => {
    if (form.elements.category.value) form.elements.vote.value = "flag";
  });
  form.elements.vote.addEventListener("change", () => {
    if (form.elements.vote.value !== "flag") form.elements.category.value = "";
  });
  more.addEventListener("click", () => load({ append: true }));
  return { load, showUser };
}
