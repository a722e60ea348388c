// Safe markdown for model output: DOM nodes built from text, never HTML parsing. Supports
// fenced code, headings, lists, quotes, rules, paragraphs, `code`, **bold**, *emphasis*,
// ~~strike~~ and http(s) links. Anything else (raw HTML included) shows as plain text.

const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*([^*]+?)\*\*|__([^_]+?)__|~~([^~]+?)~~|\*([^*\s][^*]*?)\*|(?<![\w])_([^_\s][^_]*?)_(?![\w])|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

function safeHref(href) {
  try {
    const parsed = new URL(href, "http://invalid.invalid/");
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? (href.startsWith("http") ? href : null) : null;
  } catch { return null; }
}

function link(text, href) {
  const safe = safeHref(href);
  if (!safe) return document.createTextNode(text + (href ? ` (${href})` : ""));
  const a = document.createElement("a");
  a.href = safe;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.append(...inline(text));
  return a;
}

function wrap(tag, children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

/** Inline markdown -> nodes. */
export function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[1]) { const code = document.createElement("code"); code.textContent = m[2]; out.push(code); }
    else if (m[3] || m[4]) out.push(wrap("strong", inline(m[3] || m[4])));
    else if (m[5]) out.push(wrap("del", inline(m[5])));
    else if (m[6] || m[7]) out.push(wrap("em", inline(m[6] || m[7])));
    else if (m[8]) out.push(link(m[8], m[9]));
    else if (m[10]) out.push(link(m[10], m[10]));
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

/** Markdown text -> a DocumentFragment. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (!paragraph.length) return;
    const p = document.createElement("p");
    paragraph.forEach((line, n) => { if (n) p.append(document.createElement("br")); p.append(...inline(line)); });
    fragment.append(p);
    paragraph = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)/.exec(line);
    if (fence) {
      flush();
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { body.push(lines[i]); i += 1; }
      i += 1; // the closing fence (or the end of an unfinished stream)
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      if (fence[2]) { code.dataset.lang = fence[2]; pre.dataset.lang = fence[2]; }
      code.textContent = body.join("\n");
      pre.append(code);
      fragment.append(pre);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const p = document.createElement("p");
      p.className = "md-heading md-h" + heading[1].length;
      p.append(wrap("strong", inline(heading[2])));
      fragment.append(p);
      i += 1;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { flush(); fragment.append(document.createElement("hr")); i += 1; continue; }
    if (/^\s*>/.test(line)) {
      flush();
      const quoted = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) { quoted.push(lines[i].replace(/^\s*>\s?/, "")); i += 1; }
      fragment.append(wrap("blockquote", [renderMarkdown(quoted.join("\n"))]));
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+/.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = document.createElement(ordered ? "ol" : "ul");
      if (ordered && parseInt(item[1], 10) !== 1) list.start = parseInt(item[1], 10);
      while (i < lines.length) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        const li = wrap("li", inline(m[2]));
        i += 1;
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
          li.append(document.createElement("br"), ...inline(lines[i].trim()));
          i += 1;
        }
        list.append(li);
      }
      fragment.append(list);
      continue;
    }
    if (!line.trim()) { flush(); i += 1; continue; }
    paragraph.push(line);
    i += 1;
  }
  flush();
  return fragment;
}
