// The chat: conversations, streamed answers over the websocket, and every kind of
// feedback (thumbs with reasons, side-by-side picks, rewrites, flags, regenerate).
import { api, describeError, h } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);

const REASONS = {
  1: ["accurate", "helpful", "clear", "well written", "followed instructions"],
  [-1]: ["inaccurate", "unhelpful", "unsafe", "too long", "too short",
    "ignored instructions", "badly written"],
};
const PICKS = [
  ["a", "A is better"], ["b", "B is better"], ["tie", "Tie"], ["both_bad", "Both are bad"],
];

const state = {
  ws: null,
  reconnectDelay: 500,
  conversationId: null,
  parentId: null, // the answer the next turn follows
  turn: null, // the turn being streamed
  queued: null, // a frame to send once the socket is open
  demo: false, // the server runs the built-in demo model (GET /healthz)
};

// The built-in demo model speaks only its little language ("Tell me about the weather."):
// an empty chat says so, with questions it can answer, sent with a click.
const DEMO_QUESTIONS = ["Tell me about the weather.", "Tell me about my cat.",
  "Tell me about a holiday."];

function emptyState() {
  const intro = "Ask anything. Rate the answers: your votes train the next version of the model.";
  if (!state.demo) return h("p", { class: "empty-state", id: "empty-state" }, intro);
  return h("div", { class: "empty-state", id: "empty-state" },
    h("p", {}, intro),
    h("p", {}, "This server runs the built-in demo model, a toy that speaks a little " +
      "language: it answers questions like these."),
    h("div", { class: "suggestions" }, DEMO_QUESTIONS.map((question) =>
      h("button", { type: "button", onclick: () => startTurn(question) }, question))));
}

// -- the websocket ---------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/chat`);
  state.ws = ws;
  ws.addEventListener("open", () => {
    state.reconnectDelay = 500;
    hideBanner("connection");
    if (state.queued) { ws.send(JSON.stringify(state.queued)); state.queued = null; }
  });
  ws.addEventListener("message", (event) => handleFrame(JSON.parse(event.data)));
  ws.addEventListener("close", () => {
    if (state.turn) failTurn("The connection dropped while the answer was streaming.");
    showBanner("Disconnected from the server; reconnecting…", "connection");
    setTimeout(connect, state.reconnectDelay);
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, 10_000);
  });
}

function sendFrame(frame) {
  if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
  else state.queued = frame;
}

function handleFrame(frame) {
  const handlers = { start: onStart, token: onToken, end: onEnd, done: onDone,
    picked: onPicked, error: onError };
  handlers[frame.type]?.(frame);
}

// -- sending a turn --------------------------------------------------------------------

function startTurn(content, { conversationId = state.conversationId,
  parentId = state.parentId } = {}) {
  if (state.turn) return;
  hideBanner();
  $("empty-state")?.remove();
  const frame = { type: "user_turn", content, conversation_id: conversationId };
  if (conversationId !== null && parentId !== null) frame.parent_id = parentId;
  if ($("compare").checked) frame.side_by_side = true;
  const userNode = renderUser(content);
  const waiting = h("div", { class: "message assistant waiting", role: "status" },
    h("span", { class: "dots", "aria-hidden": "true" }), "Waiting for the model…");
  $("messages").append(userNode, waiting);
  state.turn = { content, parentId: frame.parent_id ?? null, userNode, waiting,
    answers: {}, conversationId };
  setStreaming(true);
  announce("Waiting for the answer.");
  sendFrame(frame);
  scrollToEnd();
}

function onStart(frame) {
  const turn = state.turn;
  if (!turn) return;
  turn.messageId = frame.message_id;
  turn.sideBySide = frame.side_by_side;
  turn.userNode.dataset.messageId = frame.message_id;
  if (state.conversationId !== frame.conversation_id) {
    state.conversationId = frame.conversation_id;
    history.replaceState(null, "", `#c${frame.conversation_id}`);
    loadConversations();
  }
  const prompt = { id: frame.message_id, content: turn.content, parentId: turn.parentId };
  const container = frame.side_by_side
    ? h("div", { class: "side-by-side", role: "group", "aria-label": "Two answers to compare" })
    : null;
  for (const label of frame.answers) {
    const answer = renderAnswer({ label: frame.side_by_side ? label : null, prompt,
      streaming: true });
    turn.answers[label] = answer;
    (container ?? $("messages")).append(answer.node);
  }
  turn.waiting.replaceWith(container ?? document.createComment("answer"));
  if (container) turn.container = container;
  announce(frame.side_by_side ? "Two answers are streaming." : "The answer is streaming.");
}

function onToken(frame) {
  const answer = state.turn?.answers[frame.answer];
  if (!answer) return;
  answer.text += frame.text;
  scheduleRender(answer);
}

function onEnd(frame) {
  const answer = state.turn?.answers[frame.answer];
  if (!answer) return;
  answer.id = frame.message_id;
  answer.node.dataset.messageId = frame.message_id;
  answer.node.setAttribute("aria-busy", "false");
  answer.node.classList.remove("streaming");
  renderNow(answer);
  // a side-by-side answer stays anonymous until the pick reveals its model
  const version = state.turn.sideBySide ? undefined : frame.adapter_version;
  setMeta(answer, version, frame.finish_reason, frame.completion_tokens);
}

function onDone(frame) {
  const turn = state.turn;
  if (!turn) return;
  state.turn = null;
  setStreaming(false);
  const answers = Object.values(turn.answers);
  if (frame.comparison_id !== null && answers.length === 2) {
    state.parentId = turn.answers.a.id; // until the pick says otherwise
    turn.container.after(renderPickBar(frame.comparison_id, turn));
    announce("Both answers are ready. Pick the better one.");
  } else {
    const last = answers.find((a) => a.id);
    if (last) state.parentId = last.id;
    answers.forEach(enableActions);
    announce("The answer is complete.");
  }
  markLatest();
  $("prompt").focus();
}

function onPicked(frame) {
  const bar = document.querySelector(`[data-comparison-id="${frame.comparison_id}"]`);
  if (!bar) return;
  bar.querySelectorAll("button").forEach((b) => {
    b.disabled = true;
    b.setAttribute("aria-pressed", String(b.value === frame.choice));
  });
  const note = bar.querySelector(".pick-result");
  note.textContent = `Thanks! A was ${frame.models.a}, B was ${frame.models.b}.`;
  state.parentId = frame.continue_from;
  for (const node of bar.previousElementSibling.querySelectorAll(".message.assistant")) {
    const answer = node.answer;
    const label = answer.label;
    const won = frame.choice === label || frame.choice === "tie";
    node.classList.toggle("winner", frame.choice === label);
    node.classList.toggle("loser", !won);
    setMeta(answer, frame.models[label]);
    enableActions(answer);
  }
  markLatest();
  announce("Your pick is saved.");
}

function onError(frame) {
  const error = frame.error;
  if (state.turn) failTurn(describeError(error), error.code);
  else showBanner(describeError(error));
}

function failTurn(message, code) {
  const turn = state.turn;
  state.turn = null;
  setStreaming(false);
  turn.waiting.remove();
  for (const answer of Object.values(turn.answers)) {
    answer.node.classList.remove("streaming");
    answer.node.setAttribute("aria-busy", "false");
  }
  if (!turn.messageId) turn.userNode.classList.add("failed");
  const retry = h("button", { type: "button", onclick: () => {
    hideBanner();
    if (!turn.messageId) turn.userNode.remove();
    startTurn(turn.content, { conversationId: turn.conversationId, parentId: turn.parentId });
  } }, "Retry");
  showBanner(message, code === "rate_limit_exceeded" ? "rate-limit" : "error", retry);
  announce(message);
}

function stopTurn() {
  if (state.turn) sendFrame({ type: "stop" });
}

// -- rendering -------------------------------------------------------------------------

function renderUser(content, id) {
  return h("div", { class: "message user", dataset: id ? { messageId: id } : {} },
    h("span", { class: "sr-only" }, "You said: "),
    h("div", { class: "bubble" }, content));
}

/** An answer card. `prompt` is the user message it answers ({id, content, parentId}). */
function renderAnswer({ label, prompt, text = "", id = null, streaming = false }) {
  const body = h("div", { class: "content markdown" });
  const meta = h("div", { class: "meta muted" });
  const actions = h("div", { class: "actions", role: "toolbar", "aria-label": "Feedback" });
  const heading = label ? h("h2", { class: "answer-label" }, `Answer ${label.toUpperCase()}`)
    : h("span", { class: "sr-only" }, "The assistant said:");
  const node = h("article", { class: `message assistant${streaming ? " streaming" : ""}`,
    "aria-busy": String(streaming), dataset: id ? { messageId: id } : {} },
  heading, body, meta, actions);
  const answer = { node, body, meta, actions, text, id, label, prompt, pending: false };
  node.answer = answer;
  renderNow(answer);
  return answer;
}

function scheduleRender(answer) {
  if (answer.pending) return;
  answer.pending = true;
  requestAnimationFrame(() => { answer.pending = false; renderNow(answer); scrollToEnd(); });
}

function renderNow(answer) {
  answer.body.replaceChildren(renderMarkdown(answer.text));
  if (answer.node.classList.contains("streaming")) {
    answer.body.append(h("span", { class: "cursor", "aria-hidden": "true" }));
  }
}

function setMeta(answer, adapterVersion, finishReason, tokens) {
  const parts = [];
  if (adapterVersion !== undefined) parts.push(`model: ${adapterVersion ?? "base"}`);
  if (finishReason === "length") parts.push("cut off at the length limit");
  if (finishReason === "stop" && tokens !== undefined) answer.finished = true;
  if (tokens !== undefined && tokens !== null) parts.push(`${tokens} tokens`);
  if (parts.length) answer.meta.textContent = parts.join(" · ");
  if (adapterVersion !== undefined) answer.node.dataset.adapterVersion = adapterVersion ?? "";
}

function enableActions(answer) {
  if (!answer.id || answer.actions.childElementCount) return;
  const thumb = (value, glyph, name) => h("button", {
    type: "button", class: "thumb", "aria-label": name, title: name, "aria-pressed": "false",
    dataset: { thumb: value }, onclick: () => openRating(answer, value),
  }, glyph);
  answer.actions.append(
    thumb(1, "▲ Good", "Good answer"),
    thumb(-1, "▼ Bad", "Bad answer"),
    h("button", { type: "button", class: "rewrite", onclick: () => openRewrite(answer) },
      "Rewrite"),
    h("button", { type: "button", class: "flag", onclick: () => openFlag(answer) }, "Flag"),
    h("button", { type: "button", class: "regenerate", onclick: () => regenerate(answer),
      title: "Ask the same question again" }, "Regenerate"),
    h("span", { class: "feedback-note muted", "aria-live": "polite" }),
  );
}

function markLatest() {
  // Regenerate is offered on the newest answers only (it asks their question again).
  const nodes = [...document.querySelectorAll("#messages .message.assistant")];
  const latest = nodes.at(-1)?.answer?.prompt?.id;
  for (const node of nodes) {
    const button = node.querySelector(".regenerate");
    if (button) button.hidden = node.answer.prompt?.id !== latest;
  }
}

function note(answer, text) {
  answer.actions.querySelector(".feedback-note").textContent = text;
}

// -- feedback --------------------------------------------------------------------------

/** Show a <dialog>; resolves true when it closes with its save button. */
function ask(dialog) {
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "save"),
      { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function openRating(answer, thumb) {
  const reasons = $("rating-reasons");
  const previous = answer.rating?.thumb === thumb ? answer.rating : null;
  reasons.replaceChildren(...REASONS[thumb].map((reason) => h("label", { class: "tag" },
    h("input", { type: "checkbox", value: reason,
      checked: previous?.reasons.includes(reason) }), reason)));
  $("rating-title").textContent = thumb === 1 ? "What was good?" : "What went wrong?";
  $("rating-comment").value = previous?.comment ?? "";
  if (!(await ask($("rating-dialog")))) return;
  const body = {
    thumb,
    reasons: [...reasons.querySelectorAll("input:checked")].map((i) => i.value),
    comment: $("rating-comment").value.trim(),
  };
  await submit(answer, async () => {
    answer.rating = await api(`/api/messages/${answer.id}/rating`, { method: "PUT", body });
    for (const b of answer.actions.querySelectorAll(".thumb")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.thumb) === thumb));
    }
    return "Rating saved.";
  });
}

async function openRewrite(answer) {
  $("rewrite-content").value = answer.text;
  const done = ask($("rewrite-dialog"));
  $("rewrite-content").focus();
  if (!(await done)) return;
  const content = $("rewrite-content").value.trim();
  if (!content) return;
  await submit(answer, async () => {
    await api(`/api/messages/${answer.id}/rewrites`, { method: "POST", body: { content } });
    return "Rewrite saved. Thank you!";
  });
}

async function openFlag(answer) {
  $("flag-comment").value = "";
  if (!(await ask($("flag-dialog")))) return;
  const body = { category: $("flag-category").value, comment: $("flag-comment").value.trim() };
  await submit(answer, async () => {
    await api(`/api/messages/${answer.id}/flags`, { method: "POST", body });
    answer.node.classList.add("flagged");
    return "Flagged. Thank you.";
  });
}

async function submit(answer, action) {
  note(answer, "Saving…");
  try {
    note(answer, await action());
  } catch (error) {
    note(answer, "");
    showBanner(`Could not save: ${describeError(error)}`);
  }
}

function regenerate(answer) {
  const { prompt } = answer;
  if (prompt.parentId === null) {
    // The first question of a conversation has no earlier answer to branch from.
    startTurn(prompt.content, { conversationId: null, parentId: null });
  } else {
    startTurn(prompt.content, { parentId: prompt.parentId });
  }
}

function renderPickBar(comparisonId, turn) {
  const buttons = PICKS.map(([value, text]) => h("button", {
    type: "button", value, class: "pick", "aria-pressed": "false",
    onclick: () => {
      buttons.forEach((b) => { b.disabled = true; });
      sendFrame({ type: "pick", comparison_id: comparisonId, choice: value });
    },
  }, text));
  turn.pickButtons = buttons;
  return h("div", { class: "pick-bar", role: "group", "aria-label": "Which answer is better?",
    dataset: { comparisonId } },
  h("span", {}, "Which answer is better?"), ...buttons,
  h("span", { class: "pick-result muted", "aria-live": "polite" }));
}

// -- conversations ---------------------------------------------------------------------

async function loadConversations() {
  try {
    const list = await api("/api/conversations");
    $("conversations").replaceChildren(...list.map(conversationItem));
  } catch (error) {
    showBanner(`Could not load conversations: ${describeError(error)}`);
  }
}

function conversationItem(c) {
  const current = c.id === state.conversationId;
  return h("li", { class: current ? "current" : "" },
    h("a", { href: `#c${c.id}`, "aria-current": current ? "page" : undefined,
      onclick: (e) => { e.preventDefault(); openConversation(c.id); } },
    c.title || "Untitled"),
    h("button", { type: "button", class: "icon-button delete", "aria-label": `Delete “${c.title}”`,
      onclick: () => deleteConversation(c) }, "✕"));
}

async function deleteConversation(c) {
  if (!confirm(`Delete the conversation “${c.title}”?`)) return;
  try {
    await api(`/api/conversations/${c.id}`, { method: "DELETE" });
    if (c.id === state.conversationId) newChat();
    loadConversations();
  } catch (error) {
    showBanner(describeError(error));
  }
}

// Erase everything this browser's user wrote or voted (DELETE /api/me), then start afresh.
async function eraseMe() {
  if (!confirm("Delete all your conversations and votes, for good? This cannot be undone.")) return;
  try {
    await api("/api/me", { method: "DELETE" });
    location.replace(location.pathname);
  } catch (error) {
    showBanner(describeError(error));
  }
}

function newChat() {
  if (state.turn) stopTurn();
  state.conversationId = null;
  state.parentId = null;
  history.replaceState(null, "", location.pathname);
  $("messages").replaceChildren(emptyState());
  loadConversations();
  closeSidebar();
  $("prompt").focus();
}

async function openConversation(id) {
  if (state.turn) return;
  try {
    const detail = await api(`/api/conversations/${id}`);
    state.conversationId = detail.id;
    history.replaceState(null, "", `#c${detail.id}`);
    renderThread(detail.messages);
    loadConversations();
    closeSidebar();
  } catch (error) {
    showBanner(describeError(error));
  }
}

/** Show the branch that ends at the newest message. */
function renderThread(messages) {
  const byId = new Map(messages.map((m) => [m.id, m]));
  const path = [];
  let node = messages.reduce((a, b) => (b.id > a.id ? b : a), messages[0]);
  while (node) { path.unshift(node); node = byId.get(node.parent_id); }
  const nodes = path.map((m) => {
    if (m.role === "user") return renderUser(m.content, m.id);
    const parent = byId.get(m.parent_id);
    const answer = renderAnswer({ text: m.content, id: m.id,
      prompt: parent ? { id: parent.id, content: parent.content, parentId: parent.parent_id }
        : null });
    setMeta(answer, m.adapter_version, m.finish_reason, m.completion_tokens);
    enableActions(answer);
    return answer.node;
  });
  $("messages").replaceChildren(...nodes);
  state.parentId = path.at(-1)?.role === "assistant" ? path.at(-1).id : null;
  markLatest();
  scrollToEnd();
}

// -- page state ------------------------------------------------------------------------

function setStreaming(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("messages").setAttribute("aria-busy", String(on));
  if (on) $("stop").focus({ preventScroll: true });
}

function showBanner(message, kind = "error", action) {
  const banner = $("banner");
  banner.className = `banner ${kind}`;
  banner.replaceChildren(h("span", {}, message), action ?? "",
    h("button", { type: "button", class: "icon-button", "aria-label": "Dismiss",
      onclick: () => hideBanner() }, "✕"));
  banner.hidden = false;
}

function hideBanner(kind) {
  const banner = $("banner");
  if (!kind || banner.classList.contains(kind)) banner.hidden = true;
}

function announce(text) { $("status").textContent = text; }

function scrollToEnd() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

function bindComposer() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const content = $("prompt").value.trim();
    if (!content || state.turn) return;
    $("prompt").value = "";
    startTurn(content);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stopTurn);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.turn && !document.querySelector("dialog[open]")) stopTurn();
  });
  $("new-chat").addEventListener("click", newChat);
  $("erase-me").addEventListener("click", eraseMe);
  $("toggle-sidebar").addEventListener("click", () => {
    const open = document.body.classList.toggle("sidebar-open");
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  });
}

async function main() {
  bindComposer();
  try {
    const me = await api("/api/me"); // starts the session cookie before the websocket
    $("whoami").textContent = me.handle;
  } catch (error) {
    showBanner(describeError(error));
  }
  try {
    state.demo = (await api("/healthz")).demo === true;
    if (state.demo) $("empty-state")?.replaceWith(emptyState());
  } catch {
    // a server that is starting answers 503: the plain empty state stays
  }
  connect();
  await loadConversations();
  const match = location.hash.match(/^#c(\d+)$/);
  if (match) await openConversation(Number(match[1]));
  $("prompt").focus();
}

main();
