// Hardware and performance: the host as detected at start (/api/hardware) and CPU, memory
// and GPU use over time (/api/performance, polled every 5 s for samples after the last one).

import { getHardware, getPerformance } from "../api.js";
import { lineChart } from "../charts.js";
import { bytes, el, errorBox, num } from "../dom.js";

const POLL_MS = 5000;
const KEEP = 900; // samples per series

export function mount(view) {
  const hardware = el("div", { id: "hardware" });
  const charts = el("div", { id: "performance", class: "cards two" });
  const perfState = el("div");
  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Hardware")),
    el("section", { "aria-labelledby": "host-title" }, el("h2", { id: "host-title" }, "Host"), hardware),
    el("section", { "aria-labelledby": "perf-title" }, el("h2", { id: "perf-title" }, "Performance"), perfState, charts));

  async function loadHardware() {
    try {
      const h = await getHardware();
      const facts = [
        ["CPU", [h.cpu?.vendor, h.cpu?.model].filter(Boolean).join(" ") || "—"],
        ["cores / threads", `${h.cpu?.physical_core_count ?? "—"} / ${h.cpu?.logical_thread_count ?? "—"}`],
        ["memory", bytes(h.memory?.capacity_bytes)],
        ["architecture", h.architecture?.name || "—"],
        ["system", [h.operating_system?.name || h.operating_system?.family, h.operating_system?.version].filter(Boolean).join(" ") || "—"],
        ["kernel", h.operating_system?.kernel || "—"],
        ["environment", [h.environment?.kind, h.environment?.name].filter(Boolean).join(" ") || "—"],
        ["captured", h.captured_at ? new Date(h.captured_at).toLocaleString() : "—"],
      ];
      const accelerators = h.accelerators || [];
      hardware.replaceChildren(el("div", { class: "cards two" },
        el("div", { class: "card" }, el("h3", {}, "Host"),
          el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
        el("div", { class: "card" }, el("h3", {}, "Accelerators"),
          accelerators.length ? el("ul", {}, accelerators.map((a) => el("li", {},
            `${a.index}: ${[a.vendor, a.model].filter(Boolean).join(" ") || a.kind}`,
            a.memory?.capacity_bytes ? `, ${bytes(a.memory.capacity_bytes)} ${a.memory.kind}` : "",
            a.driver?.version ? `, driver ${a.driver.name || ""} ${a.driver.version}` : "")))
            : el("p", { class: "muted" }, "none detected"))));
    } catch (error) {
      hardware.replaceChildren(errorBox(error, loadHardware));
    }
  }

  const sys = [];
  const gpu = [];
  let after = null;
  let timer = null;

  async function poll() {
    try {
      const data = await getPerformance(after);
      perfState.replaceChildren();
      sys.push(...(data.sys_stats || []));
      gpu.push(...(data.gpu_stats || []));
      sys.splice(0, Math.max(0, sys.length - KEEP));
      gpu.splice(0, Math.max(0, gpu.length - KEEP * 8));
      const last = sys[sys.length - 1] || gpu[gpu.length - 1];
      if (last) after = last.timestamp;
      draw();
    } catch (error) {
      const off = error.status === 503 ? new Error("503: performance sampling is off on this llamaswap") : error;
      perfState.replaceChildren(errorBox(off, poll));
    }
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }

  function draw() {
    const t = (s) => Date.parse(s.timestamp);
    const cpu = sys.map((s) => [t(s), avg(s.cpu_util_per_core || [])]);
    const mem = sys.map((s) => [t(s), s.mem_total_mb ? (100 * s.mem_used_mb) / s.mem_total_mb : 0]);
    const last = sys[sys.length - 1];
    const ids = [...new Set(gpu.map((g) => g.id))];
    charts.replaceChildren(
      el("div", { class: "card" }, el("h3", {}, "CPU"),
        el("p", { class: "muted" }, last ? `${num(avg(last.cpu_util_per_core || []), 0)} % over ${(last.cpu_util_per_core || []).length} cores, load ${num(last.load_avg_1, 2)}` : "no samples"),
        lineChart([{ name: "CPU %", points: cpu, className: "cpu" }], { label: "CPU use over time", yMax: 100, unit: " %" })),
      el("div", { class: "card" }, el("h3", {}, "Memory"),
        el("p", { class: "muted" }, last ? `${num(last.mem_used_mb)} of ${num(last.mem_total_mb)} MB used` : "no samples"),
        lineChart([{ name: "memory %", points: mem, className: "mem" }], { label: "Memory use over time", yMax: 100, unit: " %" })),
      ...ids.map((id) => {
        const rows = gpu.filter((g) => g.id === id);
        const g = rows[rows.length - 1];
        return el("div", { class: "card" }, el("h3", {}, `GPU ${id}: ${g.name}`),
          el("p", { class: "muted" }, `${num(g.gpu_util_pct)} % busy, ${num(g.mem_used_mb)} of ${num(g.mem_total_mb)} MB, ${num(g.temp_c)} °C, ${num(g.power_draw_w)} W`),
          lineChart([{ name: "GPU %", points: rows.map((r) => [t(r), r.gpu_util_pct]), className: "cpu" },
            { name: "VRAM %", points: rows.map((r) => [t(r), r.mem_total_mb ? (100 * r.mem_used_mb) / r.mem_total_mb : 0]), className: "mem" }],
          { label: `GPU ${id} use over time`, yMax: 100, unit: " %" }));
      }));
  }

  loadHardware();
  poll();
  return () => clearTimeout(timer);
}

function avg(values) {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0;
}
