// llamaswap web UI: plain JavaScript, no build step, no dependencies.
// Every URL is relative to llamaswap's root, so the UI works wherever llamaswap is mounted.
"use strict";

const BASE = new URL("../", location.href);
const KEY_STORAGE = "llamaswap.apiKey";
const state = { models: [], inflight: new Map(), activityPage: 1, logAbort: null };

function url(path) { return new URL(path.replace(/^\//, ""), BASE).toString(); }

function authHeaders(extra = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: "Bearer " + key } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(url(path), { ...options, headers: authHeaders(options.headers || {}) });
  if (response.status === 401) { askForKey(); }
  return response;
}

function askForKey() {
  const key = prompt("API key for this llamaswap (empty for none):", localStorage.getItem(KEY_STORAGE) || "");
  if (key === null) return;
  if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  location.reload();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

// Reads a streamed response body and calls onChunk(text) for each decoded piece.
async function readStream(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onChunk(decoder.decode(value, { stream: true }));
  }
}

// Server-sent events over fetch (EventSource cannot send an API key header).
async function readSSE(response, onData) {
  let buffer = "";
  await readStream(response, (text) => {
    buffer += text;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) onData(data);
    }
  });
}

// ---- pages ---------------------------------------------------------------------------

function showPage() {
  const page = (location.hash.replace(/^#\//, "") || "models").split("/")[0];
  for (const section of document.querySelectorAll(".page"))
    section.classList.toggle("active", section.id === "page-" + page);
  for (const link of document.querySelectorAll("header nav a"))
    link.classList.toggle("active", link.dataset.page === page);
  if (page === "logs") startLogs();
  if (page === "activity") loadActivity();
}

// ---- live events ---------------------------------------------------------------------

async function connectEvents() {
  const conn = document.getElementById("conn");
  try {
    const response = await api("/api/events");
    if (!response.ok) throw new Error("HTTP " + response.status);
    conn.textContent = "live";
    conn.style.color = "var(--ok)";
    await readSSE(response, (data) => {
      const message = JSON.parse(data);
      onEvent(message.type, JSON.parse(message.data));
    });
  } catch (error) {
    console.warn("events:", error);
  }
  conn.textContent = "reconnecting";
  conn.style.color = "var(--warn)";
  setTimeout(connectEvents, 2000);
}

function onEvent(type, data) {
  if (type === "modelStatus") { state.models = data; renderModels(); fillModelLists(); }
  else if (type === "queue") { document.getElementById("queue").textContent = "queue: " + data.queued; }
  else if (type === "inflight") {
    if (data.operation === "snapshot") {
      state.inflight = new Map(data.requests.map((r) => [r.id, r]));
    } else if (data.operation === "upsert") {
      state.inflight.set(data.request.id, data.request);
    } else if (data.operation === "remove") {
      state.inflight.delete(data.id);
    }
    renderInflight();
  } else if (type === "activity") {
    if (document.getElementById("page-activity").classList.contains("active")) loadActivity();
  }
}

// ---- models --------------------------------------------------------------------------

function renderModels() {
  const body = document.querySelector("#models tbody");
  body.replaceChildren(...state.models.map((m) => {
    const busy = m.state === "starting" || m.state === "stopping";
    return el("tr", { "data-model": m.id },
      el("td", {}, el("strong", {}, m.id), m.name ? el("div", { class: "muted" }, m.name) : ""),
      el("td", {}, el("span", { class: "state state-" + m.state }, m.state)),
      el("td", {}, m.ttl ? m.ttl + " s" : "—"),
      el("td", {}, m.inFlight),
      el("td", { class: "error" }, m.lastError || ""),
      el("td", {},
        el("button", { class: "small load", disabled: m.state !== "stopped" ? "" : null,
                       onclick: () => loadModel(m.id) }, "Load"), " ",
        el("button", { class: "small unload", disabled: m.state === "stopped" || busy ? "" : null,
                       onclick: () => unloadModel(m.id) }, "Unload")));
  }));
}

async function loadModel(id) {
  // As llama-swap's UI: any request to the model's own server starts it.
  await api("/upstream/" + id.split("/").map(encodeURIComponent).join("/") + "/");
}

async function unloadModel(id) {
  await api("/api/models/unload/" + id.split("/").map(encodeURIComponent).join("/"), { method: "POST" });
}

function fillModelLists() {
  const ids = state.models.map((m) => m.id);
  for (const [selectId, first] of [["activity-model", ["", "all models"]], ["chat-model", null]]) {
    const select = document.getElementById(selectId);
    const current = select.value;
    const listed = selectId === "chat-model" ? state.models.filter((m) => !m.unlisted).map((m) => m.id) : ids;
    const options = listed.map((id) => el("option", { value: id }, id));
    if (first) options.unshift(el("option", { value: first[0] }, first[1]));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }
  const source = document.getElementById("log-source");
  const currentSource = source.value;
  source.replaceChildren(
    el("option", { value: "" }, "all (proxy + upstream)"),
    el("option", { value: "proxy" }, "proxy"),
    el("option", { value: "upstream" }, "upstream (all models)"),
    ...ids.map((id) => el("option", { value: "model:" + id }, id)));
  source.value = currentSource || "";
}

// ---- logs ----------------------------------------------------------------------------

let logLines = [];
const MAX_LOG_LINES = 5000;

async function startLogs() {
  if (state.logAbort) state.logAbort.abort();
  const controller = new AbortController();
  state.logAbort = controller;
  logLines = [];
  renderLogs();
  const source = document.getElementById("log-source").value;
  const path = source.startsWith("model:")
    ? "/logs/stream/" + source.slice(6).split("/").map(encodeURIComponent).join("/")
    : "/logs/stream" + (source ? "/" + source : "");
  let partial = "";
  try {
    const response = await fetch(url(path), { headers: authHeaders(), signal: controller.signal });
    await readStream(response, (text) => {
      const lines = (partial + text).split("\n");
      partial = lines.pop();
      logLines.push(...lines);
      if (logLines.length > MAX_LOG_LINES) logLines = logLines.slice(-MAX_LOG_LINES);
      renderLogs();
    });
  } catch (error) {
    if (error.name !== "AbortError") console.warn("logs:", error);
  }
}

function renderLogs() {
  const view = document.getElementById("log-view");
  const filter = document.getElementById("log-filter").value.toLowerCase();
  const shown = filter ? logLines.filter((l) => l.toLowerCase().includes(filter)) : logLines;
  view.textContent = shown.join("\n");
  if (document.getElementById("log-follow").checked) view.scrollTop = view.scrollHeight;
}

// ---- activity ------------------------------------------------------------------------

function ms(value) { return value === null || value === undefined ? "—" : value < 1000 ? Math.round(value) + " ms" : (value / 1000).toFixed(2) + " s"; }
function num(value, digits = 0) { return value === null || value === undefined ? "—" : Number(value).toFixed(digits); }

function renderInflight() {
  const body = document.querySelector("#inflight tbody");
  const rows = [...state.inflight.values()];
  body.replaceChildren(...(rows.length ? rows.map((r) => el("tr", {},
    el("td", {}, r.id), el("td", {}, r.model), el("td", {}, r.method + " " + r.req_path),
    el("td", {}, r.status ?? "waiting"), el("td", {}, r.resp_bytes), el("td", {}, ms(r.elapsed_ms))))
    : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "nothing in flight"))]));
}

async function loadActivity() {
  const model = document.getElementById("activity-model").value;
  const query = new URLSearchParams({ page: state.activityPage, limit: 25 });
  const statsQuery = new URLSearchParams();
  if (model) { query.append("model", model); statsQuery.append("model", model); }
  const [page, stats] = await Promise.all([
    api("/api/metrics/activity?" + query).then((r) => r.json()),
    api("/api/metrics/stats?" + statsQuery).then((r) => r.json())]);
  document.getElementById("activity-page").textContent =
    `page ${page.page} of ${page.total_pages} (${page.total} requests)`;
  document.querySelector("#activity tbody").replaceChildren(...page.data.map((r) => el("tr",
    { class: r.has_capture ? "clickable" : "", onclick: () => r.has_capture && showCapture(r.id) },
    el("td", {}, r.id), el("td", {}, new Date(r.ts * 1000).toLocaleTimeString()),
    el("td", {}, r.model), el("td", {}, r.method + " " + r.endpoint),
    el("td", { class: r.status >= 400 ? "error" : "", title: r.error || "" }, r.status),
    el("td", {}, ms(r.duration_ms)), el("td", {}, ms(r.ttfb_ms)),
    el("td", {}, num(r.input_tokens)), el("td", {}, num(r.output_tokens)),
    el("td", {}, num(r.tokens_per_second, 1)), el("td", {}, r.client || ""))));
  document.getElementById("stats").replaceChildren(...Object.entries(stats.models).map(([id, s]) =>
    el("div", { class: "card" }, el("h3", {}, id),
      el("div", {}, `${s.total_requests} requests, ${s.errors} errors`),
      el("div", {}, `tokens in ${s.total_input_tokens}, out ${s.total_output_tokens}`),
      el("div", {}, s.gen_histogram
        ? `generation p50 ${num(s.gen_histogram.p50, 1)} t/s, p95 ${num(s.gen_histogram.p95, 1)} t/s`
        : "no generation speed yet"),
      el("div", {}, s.ttfb_ms ? `first byte p50 ${ms(s.ttfb_ms.p50)}` : ""),
      histogramBars(s.gen_histogram))));
}

function histogramBars(histogram) {
  if (!histogram) return "";
  const top = Math.max(...histogram.bins, 1);
  return el("div", { class: "bars", title: `tokens/s from ${num(histogram.min, 1)} to ${num(histogram.max, 1)}` },
    ...histogram.bins.map((count) => el("div", { style: `height:${(100 * count) / top}%` })));
}

async function showCapture(id) {
  const response = await api("/api/captures/" + id);
  const view = document.getElementById("capture");
  view.hidden = false;
  view.textContent = response.ok ? JSON.stringify(await response.json(), null, 2) : "capture no longer kept";
}

// ---- playground ----------------------------------------------------------------------

const chat = [];

async function sendChat(event) {
  event.preventDefault();
  const input = document.getElementById("chat-input");
  const text = input.value.trim();
  const model = document.getElementById("chat-model").value;
  if (!text || !model) return;
  input.value = "";
  chat.push({ role: "user", content: text });
  const log = document.getElementById("chat-log");
  log.append(el("div", { class: "msg user" }, text));
  const answer = el("div", { class: "msg assistant" }, "");
  log.append(answer);
  const status = document.getElementById("chat-status");
  status.textContent = "waiting for " + model + "…";
  const started = performance.now();
  let content = "";
  let usage = null;
  let timings = null;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, stream: true, messages: chat,
                             stream_options: { include_usage: true } }) });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || "HTTP " + response.status);
    }
    await readSSE(response, (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) { content += delta.content; answer.textContent = content; }
      if (chunk.usage) usage = chunk.usage;
      if (chunk.timings) timings = chunk.timings;
    });
    chat.push({ role: "assistant", content });
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const speed = timings && timings.predicted_per_second ? `, ${timings.predicted_per_second.toFixed(1)} tokens/s` : "";
    status.textContent = `done in ${seconds} s` + (usage ? `, ${usage.completion_tokens} tokens` : "") + speed;
  } catch (error) {
    answer.classList.add("error");
    answer.textContent = "error: " + error.message;
    status.textContent = "";
    chat.pop();
  }
}

// ---- wiring --------------------------------------------------------------------------

document.getElementById("unload-all").addEventListener("click", () => api("/api/models/unload", { method: "POST" }));
document.getElementById("key-button").addEventListener("click", askForKey);
document.getElementById("log-source").addEventListener("change", startLogs);
document.getElementById("log-filter").addEventListener("input", renderLogs);
document.getElementById("activity-model").addEventListener("change", () => { state.activityPage = 1; loadActivity(); });
document.getElementById("activity-prev").addEventListener("click", () => { state.activityPage = Math.max(1, state.activityPage - 1); loadActivity(); });
document.getElementById("activity-next").addEventListener("click", () => { state.activityPage += 1; loadActivity(); });
document.getElementById("chat-form").addEventListener("submit", sendChat);
document.getElementById("chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) sendChat(event);
});
document.getElementById("chat-clear").addEventListener("click", () => {
  chat.length = 0;
  document.getElementById("chat-log").replaceChildren();
  document.getElementById("chat-status").textContent = "";
});
window.addEventListener("hashchange", showPage);
renderInflight();
showPage();
connectEvents();
