// A log viewer: streams /logs/stream/<source>, renders ANSI colours, appends new lines in
// one batch per animation frame, keeps at most MAX_LINES lines, filters, follows or pauses.

import { readStream, url, withAuth } from "./api.js";
import { ansiLine, stripAnsi } from "./ansi.js";
import { debounce, el, errorBox } from "./dom.js";

export const MAX_LINES = 5000;

export function logPanel({ id = "log", label = "Log" } = {}) {
  const lines = []; // raw lines kept, at most MAX_LINES
  let pending = []; // received, not yet drawn
  let filter = "";
  let paused = false;
  let frame = 0;
  let controller = null;
  let dropped = 0;

  const viewBox = el("div", { id: id + "-view", class: "log-view", role: "log", tabindex: 0,
                              "aria-label": label, "aria-live": "off" });
  const search = el("input", { id: id + "-filter", type: "search", placeholder: "text to find" });
  const follow = el("input", { id: id + "-follow", type: "checkbox", checked: true });
  const pause = el("button", { type: "button", class: "small", id: id + "-pause", "aria-pressed": "false" }, "Pause");
  const clear = el("button", { type: "button", class: "small", id: id + "-clear" }, "Clear");
  const status = el("span", { class: "muted", id: id + "-status", role: "status" });
  const problem = el("div");
  const controls = el("div", { class: "toolbar" },
    el("label", { class: "field" }, el("span", {}, "Search"), search),
    el("label", { class: "check" }, follow, " follow"), pause, clear, status);
  const root = el("div", { class: "log-panel" }, controls, problem, viewBox);

  const matches = (line) => !filter || stripAnsi(line).toLowerCase().includes(filter);

  function trim() {
    while (viewBox.childElementCount > MAX_LINES) viewBox.firstElementChild.remove();
  }

  function draw() {
    frame = 0;
    if (paused || !pending.length) return;
    const batch = pending;
    pending = [];
    const fragment = document.createDocumentFragment();
    for (const line of batch) if (matches(line)) fragment.append(ansiLine(line));
    viewBox.append(fragment);
    trim();
    if (follow.checked) viewBox.scrollTop = viewBox.scrollHeight;
    showStatus();
  }

  function redraw() {
    const fragment = document.createDocumentFragment();
    for (const line of lines) if (matches(line)) fragment.append(ansiLine(line));
    viewBox.replaceChildren(fragment);
    pending = [];
    if (follow.checked) viewBox.scrollTop = viewBox.scrollHeight;
    showStatus();
  }

  function showStatus() {
    status.textContent = `${lines.length} lines kept` + (dropped ? `, ${dropped} older dropped` : "")
      + (paused ? ", paused" : "") + (filter ? `, ${viewBox.childElementCount} shown` : "");
  }

  function add(newLines) {
    if (newLines.length > MAX_LINES) {
      dropped += newLines.length - MAX_LINES;
      newLines = newLines.slice(-MAX_LINES);
    }
    for (const line of newLines) lines.push(line);
    if (lines.length > MAX_LINES) { dropped += lines.length - MAX_LINES; lines.splice(0, lines.length - MAX_LINES); }
    for (const line of newLines) pending.push(line);
    if (pending.length > MAX_LINES) pending.splice(0, pending.length - MAX_LINES);
    if (!frame && !paused) frame = requestAnimationFrame(draw);
  }

  search.addEventListener("input", debounce(() => { filter = search.value.trim().toLowerCase(); redraw(); }, 150));
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) redraw(); else showStatus();
  });
  clear.addEventListener("click", () => { lines.length = 0; pending = []; dropped = 0; viewBox.replaceChildren(); showStatus(); });
  follow.addEventListener("change", () => { if (follow.checked) viewBox.scrollTop = viewBox.scrollHeight; });

  async function open(path) {
    close();
    lines.length = 0; pending = []; dropped = 0;
    viewBox.replaceChildren();
    problem.replaceChildren();
    const mine = new AbortController();
    controller = mine;
    let partial = "";
    try {
      const response = await fetch(url(path), withAuth({ signal: mine.signal }));
      if (!response.ok) {
        const text = await response.text();
        let message = text;
        try { message = JSON.parse(text).error.message; } catch { /* not JSON */ }
        throw new Error(`${response.status}: ${message}`);
      }
      status.textContent = "streaming";
      await readStream(response, (text) => {
        const parts = (partial + text).split("\n");
        partial = parts.pop();
        add(parts);
      });
      if (!mine.signal.aborted) problem.replaceChildren(errorBox(new Error("the log stream ended"), () => open(path)));
    } catch (error) {
      if (error.name !== "AbortError") problem.replaceChildren(errorBox(error, () => open(path)));
    }
  }

  function close() {
    if (controller) controller.abort();
    controller = null;
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
  }

  return { root, open, close, controls };
}
