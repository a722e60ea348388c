// Settings: the API key (this tab only unless remembered), the theme, the version.

import { getJSON, getKey, getVersion, isKeyRemembered, setKey } from "../api.js";
import { el, errorBox } from "../dom.js";

const THEME = "llamaswap.theme";

export function applyTheme(theme) {
  if (theme === "light" || theme === "dark") {
    localStorage.setItem(THEME, theme);
    document.documentElement.dataset.theme = theme;
  } else {
    localStorage.removeItem(THEME);
    delete document.documentElement.dataset.theme;
  }
}

export function mount(view) {
  const key = el("input", { id: "api-key", type: "password", autocomplete: "off", value: getKey() });
  const remember = el("input", { id: "api-key-remember", type: "checkbox", checked: isKeyRemembered() });
  const saved = el("p", { class: "muted", role: "status", id: "api-key-status" });
  const form = el("form", { id: "key-form" },
    el("label", { class: "field" }, el("span", {}, "API key"), key),
    el("label", { class: "check" }, remember, " Remember on this browser (otherwise it is forgotten when this tab closes)"),
    el("div", { class: "toolbar" }, el("button", { type: "submit" }, "Save key"),
      el("button", { type: "button", id: "api-key-forget", onclick: () => { key.value = ""; remember.checked = false; save(); } }, "Forget key")),
    saved);
  form.addEventListener("submit", (event) => { event.preventDefault(); save(); });

  async function save() {
    setKey(key.value.trim(), remember.checked);
    window.dispatchEvent(new Event("llamaswap:key-changed"));
    saved.textContent = key.value.trim() ? "Checking the key…" : "No key is sent.";
    if (!key.value.trim()) return;
    try {
      await getJSON("running");
      saved.textContent = "Key saved and accepted" + (remember.checked ? " (remembered)." : " for this tab.");
    } catch (error) {
      saved.textContent = "Key saved, but llamaswap answered " + error.message;
    }
  }

  const theme = el("select", { id: "theme" },
    [["system", "Follow the system"], ["light", "Light"], ["dark", "Dark"]].map(([v, label]) =>
      el("option", { value: v, selected: (localStorage.getItem(THEME) || "system") === v }, label)));
  theme.addEventListener("change", () => applyTheme(theme.value));

  const version = el("div", { id: "version" });
  async function loadVersion() {
    try {
      const v = await getVersion();
      version.replaceChildren(el("dl", { class: "facts" }, el("dt", {}, "version"), el("dd", {}, v.version || "—"),
        el("dt", {}, "commit"), el("dd", {}, v.commit || "—"),
        el("dt", {}, "built"), el("dd", {}, v.build_date || "—")));
    } catch (error) {
      version.replaceChildren(errorBox(error, loadVersion));
    }
  }

  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Settings")),
    el("section", { class: "card", "aria-labelledby": "key-title" }, el("h2", { id: "key-title" }, "API key"), form),
    el("section", { class: "card", "aria-labelledby": "theme-title" }, el("h2", { id: "theme-title" }, "Appearance"),
      el("label", { class: "field" }, el("span", {}, "Theme"), theme)),
    el("section", { class: "card", "aria-labelledby": "version-title" }, el("h2", { id: "version-title" }, "Version"), version));
  loadVersion();
  return null;
}
