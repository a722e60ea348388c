// Logs: the proxy's and the models' output, live, with colours, search and follow/pause.

import { modelPath } from "../api.js";
import { el } from "../dom.js";
import { live, on } from "../live.js";
import { logPanel } from "../logpanel.js";

export function mount(view) {
  const panel = logPanel({ id: "log", label: "Log lines" });
  const source = el("select", { id: "log-source" });
  panel.controls.prepend(el("label", { class: "field" }, el("span", {}, "Source"), source));
  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Logs")), panel.root);

  function fillSources() {
    const current = source.value;
    source.replaceChildren(
      el("option", { value: "" }, "all (proxy and models)"),
      el("option", { value: "proxy" }, "proxy"),
      el("option", { value: "upstream" }, "all models"),
      ...live.models.filter((m) => !m.peerID).map((m) => el("option", { value: "model:" + m.id }, m.id)));
    source.value = [...source.options].some((o) => o.value === current) ? current : "";
  }

  function open() {
    const value = source.value;
    panel.open(value.startsWith("model:") ? "logs/stream/" + modelPath(value.slice(6))
      : "logs/stream" + (value ? "/" + value : ""));
  }

  source.addEventListener("change", open);
  const off = on("models", fillSources);
  fillSources();
  open();
  return () => { off(); panel.close(); };
}
