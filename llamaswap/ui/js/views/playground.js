// Playground: chat (streaming, stop, system prompt, parameters, markdown), completions,
// embeddings, images, transcription, speech, rerank, and two models side by side.

import { ApiError, postJSON, readSSE, request } from "../api.js";
import { el, errorBox, ms, num } from "../dom.js";
import { live, on } from "../live.js";
import { renderMarkdown } from "../markdown.js";

const TABS = [["chat", "Chat"], ["completion", "Completion"], ["embeddings", "Embeddings"],
  ["images", "Images"], ["transcription", "Transcription"], ["speech", "Speech"],
  ["rerank", "Rerank"], ["compare", "Side by side"]];

let uid = 0;
const field = (label, control, extra = {}) => {
  if (!control.id) control.id = "pg-" + (++uid);
  return el("div", { class: "field", ...extra }, el("label", { for: control.id }, label), control);
};

/** A <select> of the models a client may name, kept up to date from /api/events. */
function modelSelect(id, offs) {
  const select = el("select", { id, name: "model", required: true });
  const fill = () => {
    const current = select.value;
    const models = live.models.filter((m) => !m.unlisted);
    select.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.name && m.name !== m.id ? `${m.id} (${m.name})` : m.id)));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  offs.push(on("models", fill));
  fill();
  return select;
}

/** Streams a chat completion; calls onText(all text so far). Resolves with the totals. */
export async function streamChat({ model, messages, params = {}, signal, onText }) {
  const started = performance.now();
  let firstToken = null;
  let content = "";
  let reasoning = "";
  let usage = null;
  let timings = null;
  const response = await postJSON("v1/chat/completions",
    { model, messages, stream: true, stream_options: { include_usage: true }, ...params }, { signal });
  await readSSE(response, (data) => {
    if (data === "[DONE]") return;
    let chunk;
    try { chunk = JSON.parse(data); } catch { return; }
    if (chunk.error) throw new ApiError(chunk.error.message || "the model failed", 0);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && (delta.content || delta.reasoning_content)) {
      if (firstToken === null) firstToken = performance.now() - started;
      content += delta.content || "";
      reasoning += delta.reasoning_content || "";
      onText(content, reasoning);
    }
    if (chunk.usage) usage = chunk.usage;
    if (chunk.timings) timings = chunk.timings;
  });
  return { content, reasoning, usage, timings, firstToken, total: performance.now() - started };
}

function summary(result) {
  const parts = [`done in ${ms(result.total)}`];
  if (result.firstToken !== null) parts.push(`first token after ${ms(result.firstToken)}`);
  if (result.usage) parts.push(`${result.usage.completion_tokens} tokens`);
  if (result.timings && result.timings.predicted_per_second) parts.push(`${num(result.timings.predicted_per_second, 1)} tokens/s`);
  return parts.join(", ");
}

function messageNode(role, text) {
  const node = el("div", { class: "msg " + role }, el("span", { class: "sr-only" }, role === "user" ? "You: " : "Model: "));
  const body = el("div", { class: "msg-body" });
  node.append(body);
  if (role === "assistant") body.append(renderMarkdown(text)); else body.textContent = text;
  return { node, body };
}

// -- chat ---------------------------------------------------------------------------------

function chatTab(offs) {
  const history = [];
  let controller = null;
  const model = modelSelect("chat-model", offs);
  const system = el("textarea", { id: "chat-system", rows: 2, placeholder: "You are a helpful assistant." });
  const temperature = el("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, placeholder: "default" });
  const topP = el("input", { id: "chat-top-p", type: "number", min: 0, max: 1, step: 0.05, placeholder: "default" });
  const maxTokens = el("input", { id: "chat-max-tokens", type: "number", min: 1, step: 1, placeholder: "default" });
  const log = el("div", { id: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const input = el("textarea", { id: "chat-input", rows: 3, placeholder: "Enter sends, Shift+Enter starts a new line" });
  const send = el("button", { type: "submit", id: "chat-send" }, "Send");
  const stop = el("button", { type: "button", id: "chat-stop", class: "danger", disabled: true }, "Stop");
  const clear = el("button", { type: "button", id: "chat-clear" }, "Clear");
  const status = el("p", { id: "chat-status", class: "muted", role: "status" });
  const form = el("form", { id: "chat-form", class: "chat-form" }, field("Message", input), el("div", { class: "toolbar" }, send, stop, clear));

  function params() {
    const out = {};
    if (temperature.value !== "") out.temperature = Number(temperature.value);
    if (topP.value !== "") out.top_p = Number(topP.value);
    if (maxTokens.value !== "") out.max_tokens = Number(maxTokens.value);
    return out;
  }

  async function submit(event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !model.value || controller) return;
    input.value = "";
    history.push({ role: "user", content: text });
    log.append(messageNode("user", text).node);
    const answer = messageNode("assistant", "");
    log.append(answer.node);
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    status.textContent = `waiting for ${model.value}…`;
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }, ...history] : [...history];
    let frame = 0;
    let latest = "";
    const draw = () => { frame = 0; answer.body.replaceChildren(renderMarkdown(latest)); log.scrollTop = log.scrollHeight; };
    try {
      const result = await streamChat({ model: model.value, messages, params: params(), signal: controller.signal,
        onText: (content) => { latest = content; if (!frame) frame = requestAnimationFrame(draw); } });
      if (frame) cancelAnimationFrame(frame);
      latest = result.content;
      draw();
      history.push({ role: "assistant", content: result.content });
      status.textContent = summary(result);
    } catch (error) {
      if (frame) cancelAnimationFrame(frame);
      if (error.name === "AbortError") {
        draw();
        if (latest) history.push({ role: "assistant", content: latest }); else history.pop();
        answer.node.classList.add("stopped");
        status.textContent = "stopped";
      } else {
        history.pop();
        answer.node.classList.add("error");
        answer.body.textContent = "error: " + error.message;
        status.textContent = "";
      }
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  form.addEventListener("submit", submit);
  input.addEventListener("keydown", (event) => { if (event.key === "Enter" && !event.shiftKey) submit(event); });
  stop.addEventListener("click", () => controller && controller.abort());
  clear.addEventListener("click", () => { history.length = 0; log.replaceChildren(); status.textContent = ""; });
  offs.push(() => controller && controller.abort());
  return el("div", {},
    el("div", { class: "params" }, field("Model", model), field("Temperature", temperature),
      field("Top p", topP), field("Max tokens", maxTokens)),
    field("System prompt", system), log, form, status);
}

// -- the simpler APIs ---------------------------------------------------------------------

function simpleTab(offs, { id, inputs, run, button = "Run" }) {
  const model = modelSelect(id + "-model", offs);
  const output = el("div", { id: id + "-output", class: "output", "aria-live": "polite" });
  const go = el("button", { type: "submit", id: id + "-run" }, button);
  const form = el("form", { id: id + "-form" }, field("Model", model), ...inputs, el("div", { class: "toolbar" }, go));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    go.disabled = true;
    output.replaceChildren(el("p", { class: "muted" }, "working…"));
    const started = performance.now();
    try {
      const nodes = await run(model.value);
      output.replaceChildren(...nodes, el("p", { class: "muted" }, `took ${ms(performance.now() - started)}`));
    } catch (error) {
      output.replaceChildren(errorBox(error));
    } finally {
      go.disabled = false;
    }
  });
  return el("div", {}, form, output);
}

function completionTab(offs) {
  const prompt = el("textarea", { id: "completion-prompt", rows: 4 });
  const maxTokens = el("input", { id: "completion-max-tokens", type: "number", min: 1, value: 64 });
  return simpleTab(offs, { id: "completion", inputs: [field("Prompt", prompt), field("Max tokens", maxTokens)], button: "Complete",
    run: async (model) => {
      const body = await (await postJSON("v1/completions", { model, prompt: prompt.value, max_tokens: Number(maxTokens.value) || 64 })).json();
      const text = body.choices && body.choices[0] ? body.choices[0].text : "";
      return [el("pre", { class: "body", tabindex: 0, "aria-label": "Completion" }, prompt.value, el("strong", {}, text))];
    } });
}

function cosine(a, b) {
  let dot = 0; let na = 0; let nb = 0;
  for (let i = 0; i < a.length; i += 1) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}

function embeddingsTab(offs) {
  const text = el("textarea", { id: "embeddings-input", rows: 4, placeholder: "one text per line" });
  return simpleTab(offs, { id: "embeddings", inputs: [field("Texts (one per line)", text)], button: "Embed",
    run: async (model) => {
      const inputs = text.value.split("\n").map((t) => t.trim()).filter(Boolean);
      const body = await (await postJSON("v1/embeddings", { model, input: inputs })).json();
      const vectors = (body.data || []).map((d) => d.embedding);
      const nodes = [el("p", { id: "embeddings-dims" }, `${vectors.length} vectors of ${vectors[0] ? vectors[0].length : 0} dimensions`)];
      if (vectors.length > 1) {
        nodes.push(el("table", { class: "matrix" }, el("caption", {}, "Cosine similarity"),
          el("thead", {}, el("tr", {}, el("td", {}), inputs.map((t, i) => el("th", { scope: "col", title: t }, `#${i + 1}`)))),
          el("tbody", {}, vectors.map((v, i) => el("tr", {}, el("th", { scope: "row", title: inputs[i] }, `#${i + 1}`),
            vectors.map((w) => el("td", { class: "num" }, cosine(v, w).toFixed(3))))))));
      }
      nodes.push(...vectors.map((v, i) => el("p", { class: "muted mono" }, `#${i + 1}: [${v.slice(0, 6).map((x) => x.toFixed(4)).join(", ")}, …]`)));
      return nodes;
    } });
}

function imagesTab(offs) {
  const prompt = el("textarea", { id: "images-prompt", rows: 3 });
  const size = el("select", { id: "images-size" }, ["256x256", "512x512", "1024x1024"].map((s) => el("option", { value: s }, s)));
  return simpleTab(offs, { id: "images", inputs: [field("Prompt", prompt), field("Size", size)], button: "Generate",
    run: async (model) => {
      const body = await (await postJSON("v1/images/generations", { model, prompt: prompt.value, size: size.value, n: 1 })).json();
      return (body.data || []).map((d, i) => {
        const src = d.b64_json ? "data:image/png;base64," + d.b64_json : /^https?:\/\//.test(d.url || "") ? d.url : null;
        return src ? el("img", { src, alt: `Generated image ${i + 1} for: ${prompt.value}`, class: "generated" })
          : el("p", {}, "no image in the answer");
      });
    } });
}

function transcriptionTab(offs) {
  const file = el("input", { id: "transcription-file", type: "file", accept: "audio/*" });
  return simpleTab(offs, { id: "transcription", inputs: [field("Audio file", file)], button: "Transcribe",
    run: async (model) => {
      if (!file.files.length) throw new Error("choose an audio file first");
      const form = new FormData();
      form.append("model", model);
      form.append("file", file.files[0]);
      const body = await (await request("v1/audio/transcriptions", { method: "POST", body: form })).json();
      return [el("p", { id: "transcription-text" }, body.text ?? JSON.stringify(body))];
    } });
}

function speechTab(offs) {
  const text = el("textarea", { id: "speech-input", rows: 3 });
  const voice = el("input", { id: "speech-voice", value: "alloy" });
  let objectUrl = null;
  offs.push(() => objectUrl && URL.revokeObjectURL(objectUrl));
  return simpleTab(offs, { id: "speech", inputs: [field("Text", text), field("Voice", voice)], button: "Speak",
    run: async (model) => {
      const blob = await (await postJSON("v1/audio/speech", { model, input: text.value, voice: voice.value })).blob();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(blob);
      return [el("audio", { controls: true, src: objectUrl, id: "speech-audio", "aria-label": "Generated speech" }),
        el("p", { class: "muted" }, `${blob.size} bytes of ${blob.type || "audio"}`)];
    } });
}

function rerankTab(offs) {
  const query = el("input", { id: "rerank-query", type: "text" });
  const docs = el("textarea", { id: "rerank-documents", rows: 5, placeholder: "one document per line" });
  return simpleTab(offs, { id: "rerank", inputs: [field("Query", query), field("Documents (one per line)", docs)], button: "Rerank",
    run: async (model) => {
      const documents = docs.value.split("\n").map((t) => t.trim()).filter(Boolean);
      const body = await (await postJSON("v1/rerank", { model, query: query.value, documents })).json();
      const results = [...(body.results || body.data || [])].sort((a, b) => b.relevance_score - a.relevance_score);
      return [el("ol", { id: "rerank-results" }, results.map((r) => el("li", {},
        el("strong", {}, num(r.relevance_score, 3)), " ", documents[r.index] ?? `document ${r.index}`)))];
    } });
}

function compareTab(offs) {
  const left = modelSelect("compare-left", offs);
  const right = modelSelect("compare-right", offs);
  if (right.options.length > 1) right.selectedIndex = 1;
  const prompt = el("textarea", { id: "compare-prompt", rows: 3 });
  const go = el("button", { type: "submit", id: "compare-run" }, "Ask both");
  const columns = [left, right].map((select, i) => {
    const out = el("div", { class: "msg assistant compare-out", id: `compare-out-${i}`, "aria-live": "polite" });
    const stat = el("p", { class: "muted", id: `compare-status-${i}` });
    return { select, out, stat };
  });
  const form = el("form", { id: "compare-form" },
    el("div", { class: "params" }, field("Left model", left), field("Right model", right)),
    field("Prompt", prompt), el("div", { class: "toolbar" }, go,
      el("span", { class: "muted" }, "One after the other, so each answer's first-token time includes any swap.")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    go.disabled = true;
    for (const c of columns) { c.out.replaceChildren(); c.stat.textContent = "queued"; }
    for (const c of columns) {
      c.stat.textContent = `waiting for ${c.select.value}…`;
      try {
        const result = await streamChat({ model: c.select.value, messages: [{ role: "user", content: prompt.value }],
          onText: (text) => c.out.replaceChildren(renderMarkdown(text)) });
        c.stat.textContent = summary(result);
      } catch (error) {
        c.out.replaceChildren(errorBox(error));
        c.stat.textContent = "";
      }
    }
    go.disabled = false;
  });
  return el("div", {}, form, el("div", { class: "cards two" },
    columns.map((c, i) => el("div", { class: "card" }, el("h2", {}, i ? "Right" : "Left"), c.out, c.stat))));
}

const BUILDERS = { chat: chatTab, completion: completionTab, embeddings: embeddingsTab, images: imagesTab,
  transcription: transcriptionTab, speech: speechTab, rerank: rerankTab, compare: compareTab };

export function mount(view, { rest = [] } = {}) {
  const offs = [];
  const tablist = el("div", { role: "tablist", "aria-label": "Playground tools", class: "tabs" });
  const panels = el("div");
  const built = new Map();
  let current = null;

  function select(name, focus = false) {
    current = name;
    for (const tab of tablist.children) {
      const on = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
    }
    for (const [key, panel] of built) panel.hidden = key !== name;
    history.replaceState(null, "", "#/playground/" + name);
  }

  for (const [name, label] of TABS) {
    tablist.append(el("button", { type: "button", role: "tab", id: "tab-" + name, "data-tab": name,
                                  "aria-controls": "panel-" + name, onclick: () => select(name) }, label));
  }
  tablist.addEventListener("keydown", (event) => {
    const names = TABS.map(([n]) => n);
    const index = names.indexOf(current);
    const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: names.length - 1 - index };
    if (!(event.key in moves)) return;
    event.preventDefault();
    select(names[(index + moves[event.key] + names.length) % names.length], true);
  });
  for (const [name] of TABS) {
    const panel = el("div", { role: "tabpanel", id: "panel-" + name, "aria-labelledby": "tab-" + name,
                              class: "tabpanel", hidden: true }, BUILDERS[name](offs));
    built.set(name, panel);
    panels.append(panel);
  }
  view.append(el("div", { class: "toolbar" }, el("h1", {}, "Playground")), tablist, panels);
  select(BUILDERS[rest[0]] ? rest[0] : "chat");
  return () => offs.forEach((off) => off());
}
