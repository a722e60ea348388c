// The shell: hash routes to views, the connection pill, the queue badge, the key banner.
// A view is a module exporting mount(container, params) that returns its cleanup function.

import { onAuthRequired } from "./api.js";
import { el } from "./dom.js";
import { live, on, start } from "./live.js";

const ROUTES = {
  activity: () => import("./views/activity.js"),
  models: () => import("./views/models.js"),
  model: () => import("./views/model.js"),
  timeline: () => import("./views/timeline.js"),
  queue: () => import("./views/queue.js"),
  logs: () => import("./views/logs.js"),
  playground: () => import("./views/playground.js"),
  hardware: () => import("./views/hardware.js"),
  settings: () => import("./views/settings.js"),
};

/** "#/models/org/name" -> {page: "model", params: {id: "org/name"}} (IDs may contain "/"). */
export function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const page = parts[0] === "performance" ? "hardware" : parts[0] || "activity";
  if (page === "models" && parts.length > 1) {
    return { page: "model", params: { id: parts.slice(1).map(decodeURIComponent).join("/") } };
  }
  return { page: ROUTES[page] ? page : "activity", params: { rest: parts.slice(1) } };
}

let cleanup = null;
let generation = 0;

async function route() {
  const { page, params } = parseRoute(location.hash);
  const view = document.getElementById("view");
  const mine = ++generation;
  if (cleanup) { try { cleanup(); } catch (error) { console.error(error); } cleanup = null; }
  for (const link of document.querySelectorAll("header nav a")) {
    const current = link.dataset.page === (page === "model" ? "models" : page);
    link.classList.toggle("active", current);
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  let module;
  try {
    module = await ROUTES[page]();
  } catch (error) {
    view.replaceChildren(el("div", { class: "error-box", role: "alert" }, "This page failed to load: " + error.message));
    return;
  }
  if (mine !== generation) return;
  view.replaceChildren();
  view.dataset.page = page;
  try {
    cleanup = module.mount(view, params) || null;
  } catch (error) {
    console.error(error);
    view.replaceChildren(el("div", { class: "error-box", role: "alert" }, "This page failed: " + error.message));
  }
  const title = view.querySelector("h1");
  document.title = (title ? title.textContent + " · " : "") + "llamaswap";
  if (routed) view.focus({ preventScroll: true });
  routed = true;
}
let routed = false;

function showConnection() {
  const pill = document.getElementById("conn");
  const labels = { connecting: "connecting", live: "live", reconnecting: "reconnecting",
                   unauthorized: "API key needed" };
  pill.textContent = labels[live.connection] || live.connection;
  pill.className = "pill conn-" + live.connection;
  pill.title = live.lastError || "live updates from /api/events";
}

function showKeyBanner() {
  const banner = document.getElementById("banner");
  banner.replaceChildren("This llamaswap needs an API key. ",
    el("a", { href: "#/settings" }, "Enter it in Settings"), ".");
  banner.hidden = false;
}

/** Live views go stale while the event stream is down: say so on every page. */
function showConnectionBanner() {
  const banner = document.getElementById("banner");
  if (live.connection === "live") { banner.hidden = true; return; }
  if (live.connection === "unauthorized") { showKeyBanner(); return; }
  if (live.connection === "reconnecting") {
    const wait = Math.max(0, Math.round((live.retryAt - Date.now()) / 1000));
    banner.replaceChildren(`Live updates are interrupted (${live.lastError || "no connection"}); `
      + `reconnecting${wait ? ` in ${wait} s` : ""}.`);
    banner.hidden = false;
  }
}

onAuthRequired(showKeyBanner);
on("connection", () => { showConnection(); showConnectionBanner(); });
on("queue", (depth) => { document.getElementById("queue-count").textContent = String(depth); });
window.addEventListener("hashchange", route);
window.addEventListener("llamaswap:key-changed", () => { document.getElementById("banner").hidden = true; start(); });
showConnection();
route();
start();
