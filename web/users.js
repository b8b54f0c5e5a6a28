// The console's users panel, for admins (GET /api/users answers others 403, and the panel
// stays hidden): every user with their role and their key's state; create a user, rotate or
// revoke a key (a new key is shown once, here), erase a user after a confirmation.
import { h } from "./api.js";

const when = (t) => (t ? new Date(t).toLocaleString() : "–");

function keyState(u) {
  if (u.has_api_key) return u.api_key_expires_at ? `expires ${when(u.api_key_expires_at)}` : "yes";
  return u.api_key_revoked_at ? `revoked ${when(u.api_key_revoked_at)}` : "none";
}

/** The panel; `api(path, options)` calls with the console's key; `confirm(text)` asks. */
export function usersPanel({ api, confirm, onError }) {
  const body = h("tbody");
  const shown = h("output", { class: "new-key", "aria-live": "polite" });
  const handle = h("input", { name: "handle", required: true, maxlength: 64,
    "aria-label": "Handle" });
  const role = h("select", { name: "role", "aria-label": "Role" },
    ["user", "operator", "admin", "judge"].map((r) => h("option", { value: r }, r)));
  const days = h("input", { name: "days", type: "number", min: 1, placeholder: "never",
    "aria-label": "Key expires in days" });

  const showKey = (who, key) => shown.replaceChildren(
    `API key for ${who} (shown only now): `, h("code", {}, key));

  async function run(action) {
    try {
      await action();
      await load();
    } catch (error) {
      onError(error);
    }
  }

  function row(u) {
    const buttons = [
      ["Rotate key", "primary", `Give ${u.handle} a new key? The old one stops working at once.`,
        async () => showKey(u.handle, (await api(`/api/users/${u.id}/rotate-key`,
          { method: "POST" })).api_key)],
      ...(u.has_api_key ? [["Revoke key", "danger",
        `Revoke ${u.handle}'s key? Every server refuses it at once.`,
        () => api(`/api/users/${u.id}/revoke`, { method: "POST" })]] : []),
      ["Erase", "danger", `Erase ${u.handle} and everything they wrote or voted, for good?`,
        () => api(`/api/users/${u.id}`, { method: "DELETE" })],
    ].map(([text, kind, question, action]) => h("button", {
      type: "button", class: kind,
      onclick: async () => { if (await confirm(question)) run(action); },
    }, text));
    return h("tr", { dataset: { user: u.handle } },
      h("th", { scope: "row" }, u.handle),
      h("td", {}, u.role),
      h("td", {}, keyState(u)),
      h("td", {}, when(u.api_key_last_used_at)),
      h("td", {}, h("div", { class: "row-actions" }, buttons)));
  }

  async function load() {
    body.replaceChildren(...(await api("/api/users?limit=1000")).map(row));
  }

  const form = h("form", { class: "new-user", onsubmit: (event) => {
    event.preventDefault();
    const expires = days.value
      ? new Date(Date.now() + Number(days.value) * 86_400_000).toISOString() : null;
    run(async () => {
      const made = await api("/api/users", { method: "POST",
        body: { handle: handle.value.trim(), role: role.value, expires_at: expires } });
      showKey(made.user.handle, made.api_key);
      handle.value = "";
    });
  } }, handle, role, days, h("button", { type: "submit", class: "primary" }, "Create user"));

  const element = h("div", {}, form, shown, h("table", {},
    h("thead", {}, h("tr", {}, ["Handle", "Role", "API key", "Last used", ""].map(
      (title) => h("th", { scope: "col" }, title)))), body));
  return { element, load };
}
