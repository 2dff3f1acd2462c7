// pipeforge preview page: sends the manifest to the server, which validates and renders it
// (nothing is stored), and shows the answer. Every text is put in the page as text, never as
// HTML; the diagram is SVG built element by element.
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A line of YAML or JSON as highlighted spans.
function highlight(line, lang) {
  const frag = document.createDocumentFragment();
  const push = (cls, t) => { if (t) frag.appendChild(cls ? el("span", cls, t) : document.createTextNode(t)); };
  let rest = line;
  if (lang === "yaml") {
    const c = rest.match(/^(\s*)(#.*)$/);
    if (c) { push("", c[1]); push("tok-com", c[2]); return frag; }
    const k = rest.match(/^(\s*(?:- )?)([A-Za-z0-9_.\/-]+|"[^"]*")(:)(\s|$)/);
    if (k) { push("", k[1]); push("tok-key", k[2]); push("tok-punct", k[3]); rest = rest.slice(k[0].length - k[4].length); }
  }
  const re = /("(?:[^"\\]|\\.)*"|'[^']*')|(-?\b\d+(?:\.\d+)?\b)|\b(true|false|null)\b|(\s#.*$)|([{}\[\],:])/g;
  let last = 0, m;
  while ((m = re.exec(rest))) {
    push("", rest.slice(last, m.index));
    if (m[1]) {
      const isKey = lang === "json" && /^\s*:/.test(rest.slice(m.index + m[1].length));
      push(isKey ? "tok-key" : "tok-str", m[1]);
    } else if (m[2]) push("tok-num", m[2]);
    else if (m[3]) push("tok-lit", m[3]);
    else if (m[4]) push("tok-com", m[4]);
    else push("tok-punct", m[5]);
    last = m.index + m[0].length;
  }
  push("", rest.slice(last));
  return frag;
}

// A file as numbered, highlighted lines; `problems` (line -> messages) go under their line.
function codeBlock(text, lang, problems) {
  const pre = el("pre", "code");
  text.split("\n").forEach((line, i) => {
    const n = i + 1;
    const span = el("span", "ln");
    span.dataset.line = String(n);
    span.appendChild(highlight(line, lang));
    const here = problems && problems.get(n);
    if (here) span.classList.add("error-line");
    pre.appendChild(span);
    if (here) for (const p of here) {
      const d = el("span", "problem", p.message + (p.help ? "\nhelp: " + p.help : ""));
      d.dataset.line = String(n);
      pre.appendChild(d);
    }
  });
  return pre;
}

// Icons are inline SVG, never font glyphs (a browser without an emoji or symbol font would
// draw a box): a check or a cross in a circle, and the pause bars of an approval.
function icon(kind) {
  const s = svg("svg", { class: `icon ${kind}`, width: 16, height: 16, viewBox: "0 0 16 16", "aria-hidden": "true" });
  s.appendChild(svg("circle", { cx: 8, cy: 8, r: 8, fill: "currentColor" }));
  const d = kind === "valid" ? "M4.4 8.3l2.4 2.4 4.8-5.2" : "M5.2 5.2l5.6 5.6M10.8 5.2l-5.6 5.6";
  s.appendChild(svg("path", { d, fill: "none", stroke: "#fff", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round" }));
  return s;
}

function pauseBars(x, y) {
  const g = svg("g", { class: "pause", transform: `translate(${x},${y})`, "aria-hidden": "true" });
  g.appendChild(svg("rect", { x: 0, y: 0, width: 3, height: 10, rx: 1 }));
  g.appendChild(svg("rect", { x: 5, y: 0, width: 3, height: 10, rx: 1 }));
  return g;
}

function drawPipeline(p) {
  const W = 190, GAP = 24, PAD = 12, H_ACT = 44, TOP = 34;
  const height = TOP + Math.max(...p.stages.map((s) => s.actions.length)) * (H_ACT + 8) + PAD;
  const root = svg("svg", { viewBox: `0 0 ${p.stages.length * (W + GAP) + GAP} ${height + 20}`, role: "img", "aria-label": "pipeline " + p.name });
  p.stages.forEach((s, i) => {
    const x = GAP + i * (W + GAP);
    const g = svg("g", { class: "stage", "data-stage": s.name, transform: `translate(${x},10)` });
    g.appendChild(svg("rect", { class: "frame", width: W, height, rx: 8 }));
    g.appendChild(svg("text", { class: "title", x: PAD, y: 22 }, s.name));
    s.actions.forEach((a, j) => {
      const kind = a.kind === "approval" ? "approval" : (a.kind.endsWith("change-set") ? "deploy" : a.kind);
      const ag = svg("g", { class: `action ${kind}`, "data-kind": a.kind, "data-name": a.name, transform: `translate(${PAD},${TOP + j * (H_ACT + 8)})` });
      if (a.environment) ag.setAttribute("data-environment", a.environment);
      ag.appendChild(svg("rect", { width: W - 2 * PAD, height: H_ACT }));
      const approval = a.kind === "approval";
      if (approval) ag.appendChild(pauseBars(8, 8));
      const label = approval ? "approval: " + (a.environment || "") : a.name;
      ag.appendChild(svg("text", { x: approval ? 21 : 8, y: 17 }, label));
      const sub = a.account ? `${a.account} · ${a.region}` : (a.kind === "gate" ? "gate, run order " + a.run_order : a.kind);
      ag.appendChild(svg("text", { class: "sub", x: 8, y: 34 }, sub));
      g.appendChild(ag);
    });
    if (i > 0) root.appendChild(svg("path", { d: `M${x - GAP + 2},${10 + height / 2} L${x - 4},${10 + height / 2}`, stroke: "#8c959f", "marker-end": "" }));
    root.appendChild(g);
  });
  return root;
}

function show(answer, text) {
  const r = answer.review;
  const v = $("verdict");
  v.className = r.verdict;
  v.replaceChildren(icon(r.verdict === "valid" ? "valid" : "invalid"), document.createTextNode(r.verdict === "valid"
    ? `pipeline "${r.pipeline.name}" of team "${r.pipeline.team}" is valid`
    : `${r.problems.length || 1} problem(s); nothing would deploy`));
  const list = $("problems");
  list.replaceChildren();
  const byLine = new Map();
  for (const p of r.problems) {
    const li = el("li", "", (p.line ? `line ${p.line}: ` : "") + p.message);
    if (p.line) li.dataset.line = String(p.line);
    if (p.help) li.appendChild(el("span", "help", "help: " + p.help));
    list.appendChild(li);
    if (p.line) { if (!byLine.has(p.line)) byLine.set(p.line, []); byLine.get(p.line).push(p); }
  }
  if (r.error) list.appendChild(el("li", "", r.error));
  $("annotated").replaceWith(Object.assign(codeBlock(text, "yaml", byLine), { id: "annotated" }));
  const d = $("diagram");
  d.replaceChildren();
  const files = $("files");
  files.replaceChildren();
  $("download").disabled = r.verdict !== "valid";
  if (!r.pipeline) return;
  const p = r.pipeline;
  d.appendChild(el("h2", "", "Pipeline"));
  d.appendChild(el("p", "meta", `${p.language} · tooling account ${p.tooling} · environments: ` +
    p.environments.map((e) => `${e.name} (${e.account}, ${e.region}${e.approval ? ", approval" : ""})`).join(", ")));
  d.appendChild(drawPipeline(p));
  if (p.secrets.length) d.appendChild(el("p", "meta", "Secrets (references only): " + p.secrets.map((s) => `${s.variable} from ${s.reference}`).join(", ")));
  files.appendChild(el("h2", "", "Files"));
  for (const f of answer.files) {
    const det = el("details", "file");
    det.dataset.path = f.path;
    det.appendChild(el("summary", "", f.path));
    det.appendChild(codeBlock(f.text, f.path.endsWith(".json") ? "json" : "yaml", null));
    files.appendChild(det);
  }
}

async function run() {
  const text = $("manifest").value;
  $("run").disabled = true;
  try {
    const res = await fetch("api/preview", { method: "POST", headers: { "content-type": "text/yaml" }, body: text });
    const answer = await res.json();
    if (!res.ok) { $("verdict").className = "invalid"; $("verdict").textContent = answer.error || ("error " + res.status); return; }
    show(answer, text);
  } finally { $("run").disabled = false; }
}

async function download() {
  const res = await fetch("api/bundle.zip", { method: "POST", headers: { "content-type": "text/yaml" }, body: $("manifest").value });
  if (!res.ok) return;
  const url = URL.createObjectURL(await res.blob());
  const a = el("a");
  a.href = url;
  a.download = (res.headers.get("x-pipeline") || "bundle") + ".zip";
  document.body.appendChild(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

async function init() {
  $("run").addEventListener("click", run);
  $("download").addEventListener("click", download);
  $("upload").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (f) { $("manifest").value = await f.text(); run(); }
  });
  const res = await fetch("api/examples");
  const examples = await res.json();
  const sel = $("examples");
  for (const x of examples) sel.appendChild(Object.assign(el("option", "", x.name), { value: x.name }));
  sel.addEventListener("change", () => {
    const x = examples.find((e) => e.name === sel.value);
    if (x) { $("manifest").value = x.text; run(); }
  });
}
init();
