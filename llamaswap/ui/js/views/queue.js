// Queue: requests waiting for a model, with position, model, wait so far and ETA, and the
// queue depth over the last minutes (from /api/events).

import { getJSON } from "../api.js";
import { lineChart } from "../charts.js";
import { debounce, el, emptyRow, errorBox, ms } from "../dom.js";
import { HISTORY_SECONDS, live, on } from "../live.js";

/** /api/queue's answer as rows, whichever envelope it comes in. */
export function queueRows(body) {
  const rows = Array.isArray(body) ? body : body.requests || body.queue || body.waiting || [];
  return rows.map((r, i) => ({
    position: r.position ?? i + 1, id: r.id ?? "—", model: r.model ?? "",
    waited: r.waited_ms ?? r.wait_ms ?? (r.waited_seconds ?? 0) * 1000,
    eta: r.eta_ms ?? (r.eta_seconds !== undefined ? r.eta_seconds * 1000 : null),
    path: r.req_path ?? r.path ?? "",
  }));
}

export function mount(view) {
  const depth = el("p", { class: "big", id: "queue-depth", "aria-live": "polite" });
  const chartBox = el("div");
  const body = el("tbody");
  const state = el("div");
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Queue")), depth,
    el("section", { "aria-labelledby": "waiting-title" }, el("h2", { id: "waiting-title" }, "Waiting requests"), state,
      el("div", { class: "table-wrap" }, el("table", { id: "queue" },
        el("thead", {}, el("tr", {}, ["Position", "Request", "Model", "Path", "Waited", "ETA"].map((h) => el("th", { scope: "col" }, h)))),
        body))),
    el("section", { "aria-labelledby": "depth-title" }, el("h2", { id: "depth-title" }, "Depth over time"), chartBox));

  function drawDepth() {
    depth.textContent = `${live.queued} request${live.queued === 1 ? "" : "s"} waiting`;
    const now = Date.now();
    const points = live.queue.map((q) => [q.t, q.depth]);
    if (points.length) points.push([now, live.queued]);
    chartBox.replaceChildren(lineChart([{ name: "queue depth", points, className: "queue" }],
      { label: "Queue depth over time", from: now - HISTORY_SECONDS * 1000, to: now, yMax: Math.max(1, ...points.map((p) => p[1])) }));
  }

  async function loadTable() {
    try {
      const rows = queueRows(await getJSON("api/queue"));
      state.replaceChildren();
      body.replaceChildren(...(rows.length ? rows.map((r) => el("tr", {},
        el("td", { class: "num" }, r.position), el("td", {}, r.id), el("td", {}, r.model), el("td", {}, r.path),
        el("td", { class: "num" }, ms(r.waited)), el("td", { class: "num" }, r.eta === null ? "—" : ms(r.eta))))
        : [emptyRow(6, "nothing waiting")]));
    } catch (error) {
      body.replaceChildren();
      state.replaceChildren(errorBox(error, loadTable));
    }
  }

  const refresh = debounce(loadTable, 300);
  const ticker = setInterval(() => { drawDepth(); if (live.queued) loadTable(); }, 2000);
  const off = on("queue", () => { drawDepth(); refresh(); });
  drawDepth();
  loadTable();
  return () => { clearInterval(ticker); refresh.cancel(); off(); };
}
