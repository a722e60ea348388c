// Small DOM helpers. Text always goes in as text nodes: nothing here parses HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Calls fn at most once per `wait` ms, after the last call of a burst. */
export function debounce(fn, wait) {
  let timer = null;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(...args); }, wait);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

/** An alert box for a view that could not get its data, with a retry button. */
export function errorBox(error, retry) {
  return el("div", { class: "error-box", role: "alert" },
    el("strong", {}, "Could not load: "), error && error.message ? error.message : String(error),
    retry ? el("button", { type: "button", class: "small", onclick: retry }, "Retry") : null);
}

export function emptyRow(columns, text) {
  return el("tr", {}, el("td", { colspan: columns, class: "muted" }, text));
}

export function download(filename, text, type) {
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

// -- formatting ---------------------------------------------------------------------------

const missing = (v) => v === null || v === undefined || Number.isNaN(v);

export function ms(value) {
  if (missing(value)) return "—";
  return value < 1000 ? Math.round(value) + " ms" : (value / 1000).toFixed(2) + " s";
}

export function num(value, digits = 0) {
  if (missing(value) || value < 0) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits,
                                                   minimumFractionDigits: digits });
}

export function bytes(value) {
  if (missing(value)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = Number(value);
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return (unit ? n.toFixed(1) : String(n)) + " " + units[unit];
}

export function seconds(value) {
  if (missing(value)) return "—";
  const whole = Math.max(0, Math.round(value)); // rounded first: 299.6 s is "5 min 0 s"
  if (whole < 60) return whole + " s";
  return Math.floor(whole / 60) + " min " + (whole % 60) + " s";
}

export function time(value) {
  if (!value) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A header's value whatever the case of its name. */
export function header(headers, name) {
  if (!headers) return "";
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === wanted) return value;
  return "";
}
