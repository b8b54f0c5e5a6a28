// A small, safe markdown renderer. It builds DOM nodes and sets text with textContent
// only: no HTML in a message is ever parsed, so no script or event handler from a message
// can run. Supported: paragraphs, headings, fenced code, block quotes, lists, tables,
// horizontal rules; inline code, **bold**, *italic*, and [links](https://…) whose
// target is http(s) or mailto (anything else renders as plain text).

const SAFE_URL = /^(https?:|mailto:)/i;

/** Render `source` into a DocumentFragment. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    const block = BLOCKS.find((b) => b.test(line, lines, i));
    const [node, next] = block ? block.render(lines, i) : paragraph(lines, i);
    fragment.append(node);
    i = next;
  }
  return fragment;
}

const FENCE = /^\s*(```|~~~)\s*([\w+-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s*>\s?/;
const BULLET = /^\s*[-*+]\s+/;
const ORDERED = /^\s*\d+[.)]\s+/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

const BLOCKS = [
  { test: (l) => FENCE.test(l), render: codeBlock },
  { test: (l) => HEADING.test(l), render: heading },
  { test: (l) => RULE.test(l), render: (lines, i) => [el("hr"), i + 1] },
  { test: (l) => QUOTE.test(l), render: quote },
  { test: (l) => BULLET.test(l), render: (lines, i) => list(lines, i, "ul", BULLET) },
  { test: (l) => ORDERED.test(l), render: (lines, i) => list(lines, i, "ol", ORDERED) },
  { test: (l, lines, i) => l.includes("|") && TABLE_DIVIDER.test(lines[i + 1] ?? ""),
    render: table },
];

function el(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

function startsBlock(lines, i) {
  return !lines[i].trim() || BLOCKS.some((b) => b.test(lines[i], lines, i));
}

function paragraph(lines, i) {
  const parts = [];
  while (i < lines.length && (parts.length === 0 || !startsBlock(lines, i))) {
    parts.push(lines[i].trim());
    i += 1;
  }
  const p = el("p");
  parts.forEach((part, k) => {
    if (k > 0) p.append(el("br"));
    appendInline(p, part);
  });
  return [p, i];
}

function codeBlock(lines, i) {
  const [, fence, language] = lines[i].match(FENCE);
  const body = [];
  i += 1;
  while (i < lines.length && !lines[i].trim().startsWith(fence)) {
    body.push(lines[i]);
    i += 1;
  }
  const pre = el("pre");
  const code = el("code", body.join("\n"));
  if (language) code.dataset.language = language;
  pre.append(code);
  return [pre, i + 1];  // past the closing fence (or the end, while still streaming)
}

function heading(lines, i) {
  const [, hashes, text] = lines[i].match(HEADING);
  const node = el(`h${Math.min(hashes.length + 2, 6)}`);  // below the page's own headings
  appendInline(node, text.replace(/\s#+\s*$/, ""));
  return [node, i + 1];
}

function quote(lines, i) {
  const inner = [];
  while (i < lines.length && QUOTE.test(lines[i])) {
    inner.push(lines[i].replace(QUOTE, ""));
    i += 1;
  }
  const node = el("blockquote");
  node.append(renderMarkdown(inner.join("\n")));
  return [node, i];
}

function list(lines, i, tag, marker) {
  const node = el(tag);
  const first = lines[i].match(/^\s*(\d+)/);
  if (tag === "ol" && first && first[1] !== "1") node.start = Number(first[1]);
  while (i < lines.length && marker.test(lines[i])) {
    const item = el("li");
    appendInline(item, lines[i].replace(marker, ""));
    i += 1;
    while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !marker.test(lines[i])) {
      item.append(" ");  // a continuation line of the item
      appendInline(item, lines[i].trim());
      i += 1;
    }
    node.append(item);
  }
  return [node, i];
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function table(lines, i) {
  const node = el("table");
  const head = el("thead");
  const headRow = el("tr");
  for (const text of cells(lines[i])) {
    const th = el("th");
    th.scope = "col";
    appendInline(th, text);
    headRow.append(th);
  }
  head.append(headRow);
  const body = el("tbody");
  i += 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
    const row = el("tr");
    for (const text of cells(lines[i])) {
      const td = el("td");
      appendInline(td, text);
      row.append(td);
    }
    body.append(row);
    i += 1;
  }
  node.append(head, body);
  const wrap = el("div");
  wrap.className = "table-wrap";
  wrap.append(node);
  return [wrap, i];
}

// Inline spans, earliest match first: `code`, **bold**, *italic* / _italic_, [text](url).
const INLINE = [
  { re: /`([^`]+)`/, make: (m) => el("code", m[1]) },
  // Underscores only between spaces (or the line's ends): snake_case and __dunder__
  // names in prose stay as they are.
  { re: /\*\*(?!\s)(.+?)\*\*|(?<![^\s(])__(?!\s)(.+?)__(?![^\s).,!?;:])/,
    make: (m) => nested("strong", m[1] ?? m[2]) },
  { re: /\*(?![\s*])(.+?)\*|(?<![^\s(])_(?![\s_])(.+?)_(?![^\s).,!?;:])/,
    make: (m) => nested("em", m[1] ?? m[2]) },
  { re: /\[([^\]]+)\]\(([^)\s]+)\)/, make: link },
];

function nested(tag, text) {
  const node = el(tag);
  appendInline(node, text);
  return node;
}

function link(m) {
  const [, text, href] = m;
  if (!SAFE_URL.test(href)) return document.createTextNode(m[0]);
  const a = el("a", text);
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

/** Append `text` to `parent`, with inline markdown turned into elements. */
export function appendInline(parent, text) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      const m = rule.re.exec(rest);
      if (m && (best === null || m.index < best.m.index)) best = { m, rule };
    }
    if (!best) { parent.append(document.createTextNode(rest)); return; }
    if (best.m.index > 0) parent.append(document.createTextNode(rest.slice(0, best.m.index)));
    parent.append(best.rule.make(best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
}
