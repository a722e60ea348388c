// Models: every configured model with its state, TTL countdown, in-flight count, circuit,
// last error, and load/unload buttons. Live from /api/events.

import { loadModel, modelPath, unloadAll, unloadModel } from "../api.js";
import { el, emptyRow, seconds } from "../dom.js";
import { live, on } from "../live.js";
import { loadSort, saveSort, sortableHeader, sortRows } from "../sorting.js";

/** The sortable columns: header label -> key; value() reads a model's cell for a key. */
export const COLUMNS = [["Model", "id"], ["State", "state"], ["TTL", "ttl"], ["In flight", "inFlight"],
  ["Circuit", "circuit"], ["Last error", "lastError"]];

export function value(model, key) {
  if (key === "inFlight") return model.inFlight ?? 0;
  if (key === "ttl") return model.ttl || 0;
  if (key === "circuit") return model.circuit || model.circuitState || "";
  return model[key] ?? "";
}

/** Seconds until a model's TTL unloads it, or a word for why it does not count down. */
export function ttlText(model, idleSince, now) {
  if (!model.ttl) return "no TTL";
  if (model.state !== "ready") return `${model.ttl} s`;
  if (model.inFlight > 0 || !idleSince) return `${model.ttl} s (busy)`;
  const left = model.ttl - (now - idleSince) / 1000;
  return left > 0 ? seconds(left) + " left" : "unloading";
}

/** What the models table says of a model's saved prompt cache (slotCache): its size, and
 * whether the last restore was reused by the first request after it (docs/slot-cache.md). */
export function cacheNote(cache) {
  const size = `cache ${(cache.bytes / 1048576).toFixed(1)} MiB`;
  const last = cache.last || {};
  if (last.action === "verify") {
    return last.helped ? `${size}, restore reused (${last.cached_tokens} of ${last.prompt_tokens} tokens)`
      : `${size}, restore not reused`;
  }
  if (last.action === "error") return `${size}, ${last.operation} failed`;
  return size;
}

/** The model's own server answered (any status): it is loaded. */
export async function load(id) {
  try {
    await loadModel(id);
  } catch (error) {
    if (error.status && error.status < 500 && error.status !== 401 && error.status !== 403) return;
    throw error;
  }
}

export function actionButtons(m, report) {
  const busy = m.state === "starting" || m.state === "stopping";
  const loadButton = el("button", { type: "button", class: "small load", disabled: m.state !== "stopped",
                                    "aria-label": `Load ${m.id}` }, "Load");
  const unloadButton = el("button", { type: "button", class: "small unload",
                                      disabled: m.state === "stopped" || busy,
                                      "aria-label": `Unload ${m.id}` }, "Unload");
  // Busy, not disabled, while the call runs: disabling would drop keyboard focus.
  const act = (button, action) => button.addEventListener("click", async () => {
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
    report("");
    try { await action(m.id); } catch (error) { report(`${m.id}: ${error.message}`); }
    finally { button.removeAttribute("aria-busy"); }
  });
  act(loadButton, load);
  act(unloadButton, unloadModel);
  return [loadButton, " ", unloadButton];
}

export function mount(view) {
  const body = el("tbody");
  // No saved choice: the order the event stream gives (by name).
  const sort = loadSort("models", COLUMNS.map(([, key]) => key), { key: null, dir: "asc" });
  const message = el("p", { class: "error", role: "alert", id: "models-error" });
  const report = (text) => { message.textContent = text; };
  const unloadAllButton = el("button", { type: "button", id: "unload-all" }, "Unload all");
  unloadAllButton.addEventListener("click", async () => {
    report("");
    try { await unloadAll(); } catch (error) { report(error.message); }
  });
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Models"), el("span", { class: "spacer" }), unloadAllButton),
    message,
    el("div", { class: "table-wrap" }, el("table", { id: "models" },
      el("caption", { class: "sr-only" }, "Configured models and their state"),
      el("thead", {}, sortableHeader([...COLUMNS.map(([label, key]) => ({ label, key })), { label: "Actions" }],
        sort, (chosen) => { saveSort("models", chosen); render(); })),
      body)));

  function render() {
    const focused = document.activeElement;
    const focusRow = body.contains(focused) ? focused.closest("tr")?.dataset.model : null;
    const focusClass = focusRow ? focused.className : "";
    draw();
    if (focusRow) {
      const row = [...body.querySelectorAll("tr")].find((tr) => tr.dataset.model === focusRow);
      const target = row && [...row.querySelectorAll("button, a")].find((n) => n.className === focusClass && !n.disabled);
      (target || row?.querySelector("a"))?.focus();
    }
  }

  function draw() {
    const now = Date.now();
    if (!live.models.length) {
      body.replaceChildren(emptyRow(7, live.connection === "live" ? "no models configured" : "waiting for llamaswap…"));
      return;
    }
    body.replaceChildren(...sortRows(live.models, sort, value).map((m) => el("tr", { "data-model": m.id },
      el("td", {}, el("a", { href: "#/models/" + modelPath(m.id) }, m.id),
        m.name && m.name !== m.id ? el("div", { class: "muted" }, m.name) : null,
        m.peerID ? el("div", { class: "muted" }, "peer " + m.peerID) : null),
      el("td", {}, el("span", { class: "state state-" + m.state }, m.state),
        m.slotCache ? el("div", { class: "muted", title: m.slotCache.last?.error || "saved prompt cache (slotCache)" },
          cacheNote(m.slotCache)) : null),
      el("td", { class: "ttl" }, ttlText(m, live.idleSince.get(m.id), now)),
      el("td", { class: "num" }, m.inFlight ?? 0),
      el("td", {}, m.circuit || m.circuitState || "—"),
      el("td", { class: "error" }, m.lastError || ""),
      el("td", { class: "actions" }, m.peerID ? "—" : actionButtons(m, report)))));
  }

  // The TTL countdown ticks in place: rows are only rebuilt when the models change.
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const row of body.querySelectorAll("tr[data-model]")) {
      const m = live.models.find((x) => x.id === row.dataset.model);
      if (m) row.querySelector(".ttl").textContent = ttlText(m, live.idleSince.get(m.id), now);
    }
  }, 1000);
  const off = on("models", render);
  render();
  return () => { clearInterval(ticker); off(); };
}
