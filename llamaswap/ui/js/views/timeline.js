// The swap timeline: a live Gantt chart of the last minutes, one lane per model, coloured by
// phase (starting, ready, serving, draining, stopping, failed), with swaps marked and the
// queue depth drawn underneath. Built from /api/events as this page sees them.

import { el, svg } from "../dom.js";
import { live, on } from "../live.js";

export const PHASES = ["starting", "ready", "serving", "draining", "stopping", "failed"];
const WINDOWS = [[60, "1 minute"], [300, "5 minutes"], [900, "15 minutes"]];

/** Lane history -> [{from, to, phase, detail}] clipped to [start, end] (stopped left out). */
export function segments(lane, start, end) {
  const out = [];
  lane.forEach((change, i) => {
    const from = Math.max(change.t, start);
    const next = lane[i + 1];
    let to = Math.min(next ? next.t : end, end);
    if (change.phase === "failed") to = Math.min(Math.max(to, from + 2000), end); // visible
    if (to <= start || from >= end || change.phase === "stopped") return;
    out.push({ from, to, phase: change.phase, detail: change.detail || "" });
  });
  return out;
}

export function mount(view) {
  let windowSeconds = 300;
  const chartBox = el("div", { class: "timeline-box" });
  const details = el("p", { id: "timeline-details", class: "details", "aria-live": "polite" },
    "Hover or focus a bar or a swap marker for its details.");
  const select = el("select", { id: "timeline-window" },
    WINDOWS.map(([s, label]) => el("option", { value: s, selected: s === windowSeconds }, label)));
  select.addEventListener("change", () => { windowSeconds = Number(select.value); draw(); });
  const legend = el("ul", { class: "legend", "aria-label": "Phases" },
    PHASES.map((p) => el("li", {}, el("span", { class: "swatch phase-" + p }), p)),
    el("li", {}, el("span", { class: "swatch swap-mark" }), "swap"));
  view.append(
    el("div", { class: "toolbar" }, el("h1", {}, "Swap timeline"), el("span", { class: "spacer" }),
      el("label", { class: "field" }, el("span", {}, "Window"), select)),
    el("p", { class: "muted" }, "What the scheduler did since this page was opened: each model's phases, the swaps it made and why, and the requests waiting."),
    legend, chartBox, details);

  const show = (text) => { details.textContent = text; };
  const at = (t) => new Date(t).toLocaleTimeString();

  function draw() {
    const end = Date.now();
    const start = end - windowSeconds * 1000;
    const models = [...new Set([...live.models.map((m) => m.id), ...live.lanes.keys()])];
    const left = 150;
    const width = 1000;
    const laneH = 26;
    const queueH = 60;
    const top = 18;
    const height = top + models.length * laneH + 16 + queueH + 20;
    const plotW = width - left - 10;
    const x = (t) => left + ((t - start) / (end - start)) * plotW;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart timeline", id: "timeline",
                              role: "group", "aria-label": `Model phases over the last ${windowSeconds / 60} minutes` });
    // time ticks
    const step = windowSeconds <= 60 ? 10_000 : windowSeconds <= 300 ? 60_000 : 180_000;
    for (let t = Math.ceil(start / step) * step; t <= end; t += step) {
      chart.append(svg("line", { x1: x(t), x2: x(t), y1: top, y2: height - 20, class: "gridline" }),
        svg("text", { x: x(t), y: 12, "text-anchor": "middle", class: "axis" }, at(t)));
    }
    models.forEach((id, row) => {
      const y = top + row * laneH;
      chart.append(svg("text", { x: 4, y: y + laneH / 2 + 4, class: "lane-label" }, id.length > 20 ? id.slice(0, 19) + "…" : id));
      chart.append(svg("line", { x1: left, x2: width - 10, y1: y + laneH, y2: y + laneH, class: "gridline" }));
      for (const s of segments(live.lanes.get(id) || [], start, end)) {
        const text = `${id}: ${s.phase} from ${at(s.from)}` + (s.to >= end - 1000 ? " until now" : ` to ${at(s.to)}`)
          + ` (${((s.to - s.from) / 1000).toFixed(1)} s)` + (s.detail ? ` — ${s.detail}` : "");
        const bar = svg("rect", { x: x(s.from), y: y + 4, width: Math.max(x(s.to) - x(s.from), 2), height: laneH - 8,
                                  class: "segment phase-" + s.phase, tabindex: 0, role: "img", "aria-label": text,
                                  "data-model": id, "data-phase": s.phase },
          svg("title", {}, text));
        bar.addEventListener("mouseenter", () => show(text));
        bar.addEventListener("focus", () => show(text));
        chart.append(bar);
      }
    });
    // swaps
    for (const swap of live.swaps) {
      if (swap.t < start) continue;
      const sx = x(swap.t);
      const text = `swap at ${at(swap.t)}: ${swap.reason}`;
      chart.append(svg("line", { x1: sx, x2: sx, y1: top, y2: top + models.length * laneH, class: "swap-line" }));
      const marker = svg("path", { d: `M${sx - 6} ${top - 2} L${sx + 6} ${top - 2} L${sx} ${top + 8} Z`,
                                   class: "swap-mark", tabindex: 0, role: "img", "aria-label": text },
        svg("title", {}, text));
      marker.addEventListener("mouseenter", () => show(text));
      marker.addEventListener("focus", () => show(text));
      chart.append(marker);
    }
    // queue depth as a step line
    const qTop = top + models.length * laneH + 16;
    const maxDepth = Math.max(1, ...live.queue.map((q) => q.depth));
    const qy = (d) => qTop + queueH - (d / maxDepth) * queueH;
    chart.append(svg("text", { x: 4, y: qTop + queueH / 2 + 4, class: "lane-label" }, "queue depth"),
      svg("text", { x: left - 4, y: qTop + 8, "text-anchor": "end", class: "axis" }, String(maxDepth)),
      svg("line", { x1: left, x2: width - 10, y1: qTop + queueH, y2: qTop + queueH, class: "gridline" }));
    let depth = 0;
    let d = "";
    for (const q of live.queue) {
      if (q.t <= start) { depth = q.depth; continue; }
      d += (d ? "" : `M${left} ${qy(depth)} `) + `L${x(q.t)} ${qy(depth)} L${x(q.t)} ${qy(q.depth)} `;
      depth = q.depth;
    }
    d = (d || `M${left} ${qy(depth)} `) + `L${x(end)} ${qy(depth)}`;
    chart.append(svg("path", { d, class: "queue-line" }, svg("title", {}, `queue depth now ${live.queued}`)));
    const focusedLabel = chartBox.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    chartBox.replaceChildren(chart);
    if (focusedLabel) {
      // keep keyboard focus on the same bar across redraws (labels say "until now": match by start)
      const prefix = focusedLabel.split(" until")[0].split(" to ")[0];
      [...chart.querySelectorAll("[tabindex]")].find((n) => n.getAttribute("aria-label").startsWith(prefix))?.focus();
    }
  }

  const ticker = setInterval(draw, 1000);
  const off = on("timeline", draw);
  draw();
  return () => { clearInterval(ticker); off(); };
}
