// Live state from /api/events: models, in-flight requests, the queue depth, and a bounded
// history of model phases and queue depth that the swap timeline and queue pages draw.
// The stream reconnects on its own with exponential backoff (1 s doubling to 30 s).

import { readSSE, request } from "./api.js";

export const HISTORY_SECONDS = 15 * 60;
const MIN_BACKOFF = 1000;
const MAX_BACKOFF = 30_000;

export const live = {
  connection: "connecting", // connecting | live | reconnecting | unauthorized
  lastError: "",
  /** Date.now() of the next reconnection attempt while reconnecting. */
  retryAt: 0,
  models: [],
  inflight: new Map(),
  queued: 0,
  /** model id -> [{t, phase, detail}] in time order; t in ms (Date.now()). */
  lanes: new Map(),
  /** [{t, depth}] queue depth changes. */
  queue: [],
  /** [{t, model, evicted: [ids], reason}] swaps seen (a model starting while others stop). */
  swaps: [],
  /** model id -> Date.now() when it became idle (ready, nothing in flight). */
  idleSince: new Map(),
};

const listeners = new Map();

/** Subscribe to "models", "inflight", "queue", "activity", "connection" or "timeline". */
export function on(kind, listener) {
  if (!listeners.has(kind)) listeners.set(kind, new Set());
  listeners.get(kind).add(listener);
  return () => listeners.get(kind).delete(listener);
}

function emit(kind, payload) {
  for (const listener of listeners.get(kind) || []) {
    try { listener(payload); } catch (error) { console.error(kind, error); }
  }
}

function setConnection(state, error = "") {
  live.connection = state;
  live.lastError = error;
  emit("connection", state);
}

// -- phases -------------------------------------------------------------------------------

/** Stop causes (llamaswap's stopCause) that mean the model failed rather than was stopped. */
export const FAILURE_CAUSES = ["crash", "start_failed"];

/** A model's timeline phase from its status and its previous phase (pure: exported for the
 *  timeline and tests). llamaswap says why a model stopped (stopCause): a crash or a failed
 *  start is "failed" until the model starts again; a server that does not (llama-swap) shows
 *  a failure only as a start that ended stopped with an error. */
export function phaseOf(model, previous) {
  const busy = (model.inFlight || 0) > 0;
  if (model.state === "ready") return busy ? "serving" : "ready";
  if (model.state === "stopping") return busy ? "draining" : "stopping";
  if (model.state === "starting") return "starting";
  if (model.state === "stopped") {
    // Only a failure seen happening: a model already down when the page opened is "stopped".
    const failed = FAILURE_CAUSES.includes(model.stopCause)
      || (!model.stopCause && previous === "starting" && Boolean(model.lastError));
    return failed && previous && previous !== "stopped" ? "failed" : "stopped";
  }
  if (model.state === "shutdown") return "stopped";
  return model.state || "unknown";
}

function prune(now) {
  const horizon = now - HISTORY_SECONDS * 1000;
  for (const [id, lane] of live.lanes) {
    // keep the last change before the horizon: it says what the lane was doing then
    let first = 0;
    while (first + 1 < lane.length && lane[first + 1].t < horizon) first += 1;
    if (first) lane.splice(0, first);
    if (!live.models.some((m) => m.id === id) && lane.length && lane[lane.length - 1].t < horizon) {
      live.lanes.delete(id);
    }
  }
  while (live.queue.length > 1 && live.queue[1].t < horizon) live.queue.shift();
  while (live.swaps.length && live.swaps[0].t < horizon) live.swaps.shift();
}

function recordModels(models) {
  const now = Date.now();
  const starting = [];
  const stopping = [];
  for (const model of models) {
    const lane = live.lanes.get(model.id) || [];
    const last = lane[lane.length - 1];
    const phase = phaseOf(model, last && last.phase);
    if (!last || last.phase !== phase) {
      const detail = phase === "failed" ? model.stopReason || model.lastError || "" : model.lastError || "";
      lane.push({ t: now, phase, detail });
      if (phase === "starting" && (!last || last.phase !== "starting")) starting.push(model.id);
      if (phase === "stopping" || phase === "draining") {
        if (!last || !["stopping", "draining"].includes(last.phase)) stopping.push(model.id);
      }
    }
    live.lanes.set(model.id, lane);
    const idle = model.state === "ready" && !(model.inFlight > 0);
    if (!idle) live.idleSince.delete(model.id);
    else if (!live.idleSince.has(model.id)) live.idleSince.set(model.id, now);
  }
  // A model that starts while others stop within a few seconds: a swap.
  const recent = (t) => now - t < 5000;
  for (const id of starting) {
    const evicted = [...live.lanes].filter(([other, lane]) => other !== id && lane.some(
      (p) => (p.phase === "stopping" || p.phase === "draining") && recent(p.t))).map(([o]) => o);
    const reason = models.find((m) => m.id === id)?.swapReason
      || (evicted.length ? "a request for " + id + " evicted " + evicted.join(", ") : "a request for " + id);
    live.swaps.push({ t: now, model: id, evicted, reason });
  }
  for (const id of stopping) {
    const model = models.find((m) => m.id === id);
    const reason = model?.stopReason || "";
    const lane = live.lanes.get(id);
    if (reason) lane[lane.length - 1].detail = reason;
  }
  prune(now);
}

// -- events -------------------------------------------------------------------------------

function applyInflight(data) {
  if (data.operation === "snapshot") {
    live.inflight = new Map((data.requests || []).map((r) => [String(r.id), { ...r, seenAt: performance.now() }]));
  } else if (data.operation === "upsert" && data.request) {
    live.inflight.set(String(data.request.id), { ...data.request, seenAt: performance.now() });
  } else if (data.operation === "remove") {
    live.inflight.delete(String(data.id));
  }
}

/** A slotCache event (save, restore, verify, ...) becomes the model's last cache event; a
 * save also sets the cache's size. */
function applySlotCache(data) {
  const model = live.models.find((m) => m.id === data.model);
  if (!model || !model.slotCache) return;
  const saved = data.action === "save" ? { bytes: data.bytes, tokens: data.tokens } : {};
  model.slotCache = { ...model.slotCache, ...saved, last: data };
  emit("models", live.models);
}

export function handle(type, data) {
  if (type === "modelStatus") {
    live.models = [...data].sort((a, b) => (a.name + a.id).localeCompare(b.name + b.id, undefined, { numeric: true }));
    recordModels(live.models);
    emit("models", live.models);
    emit("timeline");
  } else if (type === "slotCache") {
    applySlotCache(data);
  } else if (type === "queue") {
    live.queued = data.queued || 0;
    const last = live.queue[live.queue.length - 1];
    if (!last || last.depth !== live.queued) live.queue.push({ t: Date.now(), depth: live.queued });
    emit("queue", live.queued);
    emit("timeline");
  } else if (type === "inflight") {
    applyInflight(data);
    emit("inflight", live.inflight);
  } else if (type === "activity") {
    emit("activity", data);
  } else if (type === "logData") {
    emit("log", data);
  }
}

let controller = null;
let backoff = MIN_BACKOFF;
let retryTimer = null;

async function connect() {
  controller = new AbortController();
  const mine = controller;
  if (live.connection !== "reconnecting") setConnection("connecting");
  try {
    const response = await request("api/events", { signal: mine.signal });
    setConnection("live");
    backoff = MIN_BACKOFF;
    await readSSE(response, (text) => {
      try {
        const message = JSON.parse(text);
        handle(message.type, JSON.parse(message.data));
      } catch (error) {
        console.warn("a malformed event was skipped:", error);
      }
    });
    if (mine.signal.aborted) return;
    setConnection("reconnecting", "the event stream ended");
  } catch (error) {
    if (mine.signal.aborted) return;
    setConnection(error.status === 401 ? "unauthorized" : "reconnecting", error.message);
  }
  live.retryAt = Date.now() + backoff;
  emit("connection", live.connection);
  retryTimer = setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, MAX_BACKOFF);
}

/** (Re)start the event stream now, e.g. after the API key changed. */
export function start() {
  if (controller) controller.abort();
  clearTimeout(retryTimer);
  backoff = MIN_BACKOFF;
  connect();
}
