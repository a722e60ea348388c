// The API client: relative URLs (the UI works wherever llamaswap is mounted), the API key
// sent as a bearer token, and errors turned into exceptions carrying the server's message.

const KEY = "llamaswap.apiKey";

/** llamaswap's root: the folder above ui/, whatever prefix the site mounts it under. */
export const ROOT = new URL("../", document.baseURI);

export function url(path) {
  return new URL(String(path).replace(/^\//, ""), ROOT).toString();
}

/** The API key: kept for this browser tab only, unless the user asked to remember it. */
export function getKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function isKeyRemembered() {
  return Boolean(localStorage.getItem(KEY));
}

export function setKey(key, remember) {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  if (!key) return;
  (remember ? localStorage : sessionStorage).setItem(KEY, key);
}

export function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: "Bearer " + key } : { ...extra };
}

/** fetch() options with the key. Without a key, credentials are omitted so that a 401's
 *  Basic challenge does not pop up the browser's login dialog: the UI asks for the key. */
export function withAuth(options = {}) {
  return { ...options, headers: authHeaders(options.headers || {}),
           credentials: getKey() ? "same-origin" : "omit" };
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

const authListeners = new Set();
/** Called with no argument whenever the server answers 401 (the key is missing or wrong). */
export function onAuthRequired(listener) {
  authListeners.add(listener);
  return () => authListeners.delete(listener);
}

async function messageOf(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    const error = body.error;
    if (error && typeof error === "object" && error.message) return error.message;
    if (typeof error === "string") return error;
    if (body.message) return body.message;
  } catch { /* not JSON */ }
  return text.trim().slice(0, 300) || `HTTP ${response.status} ${response.statusText}`;
}

/** fetch() against llamaswap; throws ApiError on a non-2xx answer or a network failure. */
export async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(url(path), withAuth(options));
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("llamaswap cannot be reached: " + error.message, 0);
  }
  if (response.status === 401) for (const listener of authListeners) listener();
  if (!response.ok) {
    throw new ApiError(`${response.status}: ${await messageOf(response)}`, response.status);
  }
  return response;
}

export async function getJSON(path, options = {}) {
  const response = await request(path, options);
  return response.json();
}

export async function postJSON(path, body, options = {}) {
  return request(path, {
    ...options, method: "POST",
    headers: { "Content-Type": "application/json", ...(options.headers || {}) },
    body: JSON.stringify(body),
  });
}

/** A model ID as a path (IDs may contain "/": each segment is encoded on its own). */
export function modelPath(id) {
  return String(id).split("/").map(encodeURIComponent).join("/");
}

/** Reads a streamed body and calls onChunk(text) for each decoded piece. */
export async function readStream(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onChunk(decoder.decode(value, { stream: true }));
  }
}

/** Server-sent events over fetch (EventSource cannot send an Authorization header). */
export async function readSSE(response, onData) {
  let buffer = "";
  await readStream(response, (text) => {
    buffer += text.replace(/\r\n/g, "\n");
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

// -- llama-swap's management API ----------------------------------------------------------

export const loadModel = (id) => request("upstream/" + modelPath(id) + "/?_=" + Date.now());
export const unloadModel = (id) => request("api/models/unload/" + modelPath(id), { method: "POST" });
export const unloadAll = () => request("api/models/unload", { method: "POST" });
export const cancelInflight = (id) =>
  request("api/inflight/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
export const getCapture = (id) => getJSON("api/captures/" + encodeURIComponent(id));
export const getVersion = () => getJSON("api/version");
export const getHardware = () => getJSON("api/hardware");
export const getPerformance = (after) =>
  getJSON("api/performance" + (after ? "?after=" + encodeURIComponent(after) : ""));
