// ANSI SGR colour codes (ESC[...m) to styled spans; every other escape is dropped.
// Text is only ever set as text: a log line cannot inject markup. The 16 basic colours are
// classes (the theme picks them); 256-colour and true-colour codes become inline colours
// built from validated integers only (never from the line's text), set through the CSSOM.

const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
// eslint-disable-next-line no-control-regex
const ESCAPE = /\x1b\[([0-9;:?]*)([A-Za-z])/g;
const CUBE = [0, 95, 135, 175, 215, 255];
/** The log view's own colours (app.css --log-bg, --log-fg): the defaults behind a run. */
export const LOG_BG = [16, 17, 20];
export const LOG_FG = [218, 218, 222];
const MIN_CONTRAST = 4.5;

const isByte = (n) => Number.isInteger(n) && n >= 0 && n <= 255;

/** A 256-colour palette index -> {name} (0-15: the basic colours) or {rgb: [r, g, b]}. */
export function paletteColour(index) {
  if (!isByte(index)) return null;
  if (index < 8) return { name: COLOURS[index] };
  if (index < 16) return { name: "bright-" + COLOURS[index - 8] };
  if (index < 232) {
    const n = index - 16;
    return { rgb: [CUBE[Math.floor(n / 36)], CUBE[Math.floor(n / 6) % 6], CUBE[n % 6]] };
  }
  const grey = 8 + 10 * (index - 232);
  return { rgb: [grey, grey, grey] };
}

/**
 * An extended colour from SGR parameters after 38/48: [5, N] or [2, R, G, B] (with the
 * colon form's optional colour-space id: [2, "", R, G, B]). Returns the colour (or null when
 * malformed) and how many of the parameters it used.
 */
function extendedColour(params, colon) {
  if (params[0] === 5) return { colour: paletteColour(params[1]), used: 2 };
  if (params[0] === 2) {
    const rgb = colon && params.length >= 5 ? params.slice(2, 5) : params.slice(1, 4);
    return { colour: rgb.length === 3 && rgb.every(isByte) ? { rgb } : null, used: colon ? params.length : 4 };
  }
  return { colour: null, used: 0 }; // not a colour form: the next code is read as usual
}

function luminance([r, g, b]) {
  const lin = (c) => { const s = c / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/** WCAG contrast ratio of two [r, g, b] colours. */
export function contrast(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** fg, mixed towards white or black (whichever the background needs) until it reads on bg
 *  at WCAG AA (4.5:1): a log's "dark grey on black" stays legible. */
export function readable(fg, bg) {
  if (contrast(fg, bg) >= MIN_CONTRAST) return fg;
  const target = contrast([255, 255, 255], bg) >= contrast([0, 0, 0], bg) ? 255 : 0;
  for (let step = 1; step <= 10; step += 1) {
    const mixed = fg.map((c) => Math.round(c + ((target - c) * step) / 10));
    if (contrast(mixed, bg) >= MIN_CONTRAST) return mixed;
  }
  return [target, target, target];
}

const rgbText = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

function plain() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
}

/** Splits a line into [{text, classes, style}] runs (pure, exported for tests). style holds
 *  CSS colours ("rgb(r, g, b)") for 256-colour and true-colour codes. */
export function ansiRuns(line) {
  const runs = [];
  let style = plain();
  let last = 0;
  const push = (text) => {
    if (!text) return;
    const classes = [];
    const css = {};
    if (style.fg?.name) classes.push("ansi-fg-" + style.fg.name);
    if (style.bg?.name) classes.push("ansi-bg-" + style.bg.name);
    for (const flag of ["bold", "dim", "italic", "underline"]) if (style[flag]) classes.push("ansi-" + flag);
    const bgRgb = style.bg?.rgb || null;
    if (bgRgb) css.backgroundColor = rgbText(bgRgb);
    if (style.fg?.rgb || bgRgb) {
      // A named foreground on a true-colour background is left to its class.
      if (style.fg?.rgb || !style.fg) css.color = rgbText(readable(style.fg?.rgb || LOG_FG, bgRgb || LOG_BG));
    }
    runs.push({ text, classes, style: css });
  };
  for (const match of line.matchAll(ESCAPE)) {
    push(line.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[2] !== "m") continue;
    const groups = match[1] === "" ? ["0"] : match[1].split(";");
    const codes = groups.map((g) => (g.includes(":") ? g : g === "" ? 0 : Number(g)));
    for (let i = 0; i < codes.length; i += 1) {
      const code = codes[i];
      if (typeof code === "string") { // colon form: 38:5:N or 38:2:[id]:R:G:B, one group
        const [head, ...rest] = code.split(":").map((p) => (p === "" ? "" : Number(p)));
        if (head === 38 || head === 48) {
          const { colour } = extendedColour(rest, true);
          if (colour) style[head === 38 ? "fg" : "bg"] = colour;
        }
        continue;
      }
      if (code === 0) style = plain();
      else if (code === 1) style.bold = true;
      else if (code === 2) style.dim = true;
      else if (code === 3) style.italic = true;
      else if (code === 4) style.underline = true;
      else if (code === 22) { style.bold = false; style.dim = false; }
      else if (code === 23) style.italic = false;
      else if (code === 24) style.underline = false;
      else if (code >= 30 && code <= 37) style.fg = { name: COLOURS[code - 30] };
      else if (code >= 90 && code <= 97) style.fg = { name: "bright-" + COLOURS[code - 90] };
      else if (code === 39) style.fg = null;
      else if (code >= 40 && code <= 47) style.bg = { name: COLOURS[code - 40] };
      else if (code >= 100 && code <= 107) style.bg = { name: COLOURS[code - 100] };
      else if (code === 49) style.bg = null;
      else if (code === 38 || code === 48) {
        const rest = codes.slice(i + 1, i + 5).map((c) => (typeof c === "number" ? c : NaN));
        const { colour, used } = extendedColour(rest, false);
        if (colour) style[code === 38 ? "fg" : "bg"] = colour.name && code === 48
          ? { name: colour.name.replace("bright-", "") } : colour;
        i += used;
      }
    }
  }
  push(line.slice(last));
  return runs;
}

/** Text without escapes, for searching. */
export function stripAnsi(line) {
  return line.replace(ESCAPE, "");
}

export function ansiLine(line) {
  const node = document.createElement("div");
  node.className = "log-line";
  for (const run of ansiRuns(line)) {
    if (!run.classes.length && !run.style.color && !run.style.backgroundColor) { node.append(run.text); continue; }
    const span = document.createElement("span");
    if (run.classes.length) span.className = run.classes.join(" ");
    if (run.style.color) span.style.color = run.style.color;
    if (run.style.backgroundColor) span.style.backgroundColor = run.style.backgroundColor;
    span.textContent = run.text;
    node.append(span);
  }
  return node;
}
