// One model: its state and actions, its config as loaded (secrets masked), what llamaswap
// learnt about it (load and unload times, swaps, failures from /metrics), its activity
// and its log.

import { getJSON, modelPath, request } from "../api.js";
import { debounce, el, emptyRow, errorBox, ms, num, time } from "../dom.js";
import { live, on } from "../live.js";
import { logPanel } from "../logpanel.js";
import { normalizeRow } from "../activity-data.js";
import { maskSecrets, parsePrometheus } from "../model-data.js";
import { actionButtons, cacheNote, ttlText } from "./models.js";

export function mount(view, { id }) {
  const summary = el("dl", { class: "facts", id: "model-summary" });
  const message = el("p", { class: "error", role: "alert" });
  const actions = el("div", { class: "toolbar" });
  const config = el("div", { id: "model-config" });
  const learnt = el("div", { id: "model-learnt" });
  const activityBody = el("tbody");
  const activityState = el("div");
  const panel = logPanel({ id: "model-log", label: `Log of ${id}` });

  view.append(
    el("p", {}, el("a", { href: "#/models" }, "← All models")),
    el("div", { class: "toolbar" }, el("h1", {}, id), actions),
    message, summary,
    el("div", { class: "cards two" },
      el("section", { class: "card", "aria-labelledby": "config-title" }, el("h2", { id: "config-title" }, "Config as loaded"), config),
      el("section", { class: "card", "aria-labelledby": "learnt-title" }, el("h2", { id: "learnt-title" }, "Learnt"), learnt)),
    el("section", { "aria-labelledby": "model-activity-title" },
      el("h2", { id: "model-activity-title" }, "Recent requests"), activityState,
      el("div", { class: "table-wrap" }, el("table", { id: "model-activity" },
        el("thead", {}, el("tr", {}, ["ID", "Time", "Path", "Status", "Prompt", "Generated", "Gen t/s", "Duration"]
          .map((h) => el("th", { scope: "col" }, h)))), activityBody))),
    el("section", { "aria-labelledby": "model-log-title" }, el("h2", { id: "model-log-title" }, "Log"), panel.root));

  function renderSummary() {
    const m = live.models.find((x) => x.id === id);
    if (!m) {
      summary.replaceChildren(el("dt", {}, "state"), el("dd", {}, live.models.length ? "not configured" : "waiting for llamaswap…"));
      actions.replaceChildren();
      return;
    }
    const facts = [["name", m.name || "—"], ["description", m.description || "—"],
      ["state", el("span", { class: "state state-" + m.state }, m.state)],
      ["TTL", ttlText(m, live.idleSince.get(m.id), Date.now())], ["in flight", String(m.inFlight ?? 0)],
      ["aliases", (m.aliases || []).join(", ") || "—"], ["pid", m.pid ?? "—"],
      ["circuit", m.circuit || m.circuitState || "—"], ["last error", m.lastError || "—"]];
    if (m.slotCache) facts.push(["slot cache", cacheNote(m.slotCache)]);
    summary.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    if (!actions.contains(document.activeElement)) actions.replaceChildren(...actionButtons(m, (t) => { message.textContent = t; }));
  }

  async function loadConfig() {
    try {
      const running = await getJSON("running");
      const entry = (running.running || []).find((r) => r.model === id);
      const m = live.models.find((x) => x.id === id) || {};
      const shown = entry ? { cmd: entry.cmd, proxy: entry.proxy, ttl: entry.ttl, name: entry.name }
        : { ttl: m.ttl, name: m.name, unlisted: m.unlisted, aliases: m.aliases };
      config.replaceChildren(
        el("pre", { class: "body", tabindex: 0, "aria-label": "Config" }, JSON.stringify(maskSecrets(shown), null, 2)),
        entry ? "" : el("p", { class: "muted" }, "The command line is shown while the model runs."));
    } catch (error) {
      config.replaceChildren(errorBox(error, loadConfig));
    }
  }

  async function loadLearnt() {
    try {
      const text = await (await request("metrics")).text();
      const samples = parsePrometheus(text).filter((s) => s.labels.model === id);
      const value = (name) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
      // mean in ms, from a Prometheus histogram's _sum (seconds) and _count
      const mean = (base) => { const n = value(base + "_count"); return n ? (1000 * value(base + "_sum")) / n : null; };
      const swaps = samples.filter((s) => s.name === "llamaswap_swaps_total");
      learnt.replaceChildren(el("dl", { class: "facts" },
        el("dt", {}, "mean load time"), el("dd", { id: "learnt-load" }, mean("llamaswap_model_load_seconds") === null ? "not loaded yet" : ms(mean("llamaswap_model_load_seconds"))),
        el("dt", {}, "loads"), el("dd", {}, num(value("llamaswap_model_load_seconds_count"))),
        el("dt", {}, "mean unload time"), el("dd", {}, mean("llamaswap_model_unload_seconds") === null ? "not unloaded yet" : ms(mean("llamaswap_model_unload_seconds"))),
        el("dt", {}, "swapped out"), el("dd", {}, swaps.length ? swaps.map((s) => `${s.labels.reason}: ${s.value}`).join(", ") : "never"),
        el("dt", {}, "start failures"), el("dd", {}, num(value("llamaswap_model_start_failures_total"))),
        el("dt", {}, "restarts"), el("dd", {}, num(value("llamaswap_model_restarts_total")))));
    } catch (error) {
      learnt.replaceChildren(errorBox(error, loadLearnt));
    }
  }

  async function loadActivity() {
    try {
      const page = await getJSON("api/metrics/activity?limit=10&model=" + encodeURIComponent(id));
      activityState.replaceChildren();
      activityBody.replaceChildren(...((page.data || []).length ? page.data.map(normalizeRow).map((r) => el("tr", {},
        el("td", {}, r.id), el("td", {}, time(r.timestamp)), el("td", {}, r.req_path),
        el("td", { class: r.resp_status_code >= 400 ? "error" : "" }, r.resp_status_code ?? "—"),
        el("td", { class: "num" }, num(r.tokens?.input_tokens)), el("td", { class: "num" }, num(r.tokens?.output_tokens)),
        el("td", { class: "num" }, num(r.tokens?.tokens_per_second, 1)), el("td", { class: "num" }, ms(r.duration_ms))))
        : [emptyRow(8, "no requests yet")]));
    } catch (error) {
      activityBody.replaceChildren();
      activityState.replaceChildren(errorBox(error, loadActivity));
    }
  }

  const refresh = debounce(() => { loadActivity(); loadLearnt(); }, 750);
  const offs = [on("models", () => { renderSummary(); }), on("activity", refresh), () => refresh.cancel()];
  let lastState = live.models.find((x) => x.id === id)?.state;
  offs.push(on("models", () => {
    const state = live.models.find((x) => x.id === id)?.state;
    if (state !== lastState) { lastState = state; loadConfig(); refresh(); }
  }));
  renderSummary();
  loadConfig();
  loadLearnt();
  loadActivity();
  panel.open("logs/stream/" + modelPath(id));
  return () => { offs.forEach((off) => off()); panel.close(); };
}
