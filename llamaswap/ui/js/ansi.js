// ANSI SGR colour codes (ESC[...m) to styled spans; every other escape is dropped.
// Text is only ever set as text: a log line cannot inject markup.

const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
// eslint-disable-next-line no-control-regex
const ESCAPE = /\x1b\[([0-9;?]*)([A-Za-z])/g;

/** Splits a line into [{text, classes}] runs (pure, exported for tests). */
export function ansiRuns(line) {
  const runs = [];
  let style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  let last = 0;
  const push = (text) => {
    if (!text) return;
    const classes = [];
    if (style.fg) classes.push("ansi-fg-" + style.fg);
    if (style.bg) classes.push("ansi-bg-" + style.bg);
    for (const flag of ["bold", "dim", "italic", "underline"]) if (style[flag]) classes.push("ansi-" + flag);
    runs.push({ text, classes });
  };
  for (const match of line.matchAll(ESCAPE)) {
    push(line.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[2] !== "m") continue;
    const codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
    for (let i = 0; i < codes.length; i += 1) {
      const code = codes[i];
      if (code === 0) style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
      else if (code === 1) style.bold = true;
      else if (code === 2) style.dim = true;
      else if (code === 3) style.italic = true;
      else if (code === 4) style.underline = true;
      else if (code === 22) { style.bold = false; style.dim = false; }
      else if (code === 23) style.italic = false;
      else if (code === 24) style.underline = false;
      else if (code >= 30 && code <= 37) style.fg = COLOURS[code - 30];
      else if (code >= 90 && code <= 97) style.fg = "bright-" + COLOURS[code - 90];
      else if (code === 39) style.fg = null;
      else if (code >= 40 && code <= 47) style.bg = COLOURS[code - 40];
      else if (code === 49) style.bg = null;
      else if ((code === 38 || code === 48) && codes[i + 1] === 5) i += 2; // 256 colours: ignored
      else if ((code === 38 || code === 48) && codes[i + 1] === 2) i += 4; // true colour: ignored
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
    if (!run.classes.length) { node.append(run.text); continue; }
    const span = document.createElement("span");
    span.className = run.classes.join(" ");
    span.textContent = run.text;
    node.append(span);
  }
  return node;
}
