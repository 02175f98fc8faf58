"""The ``chargen viz`` page: one HTML file with its CSS, script and data inline (no network at all).

The data is one JSON object (see ``viz.page_data``) in a ``<script type="application/json">``
element; the script decodes the quantized activations of the quantity picked and colours one
``<span class="ch">`` per character through a 256-entry palette, so switching units is one pass
over the spans.
"""

from __future__ import annotations

import html
import json

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { padding: 10px 16px; background: #24292f; color: #fff; }
header h1 { font-size: 17px; margin: 0; display: inline; } header .sub { color: #bbb; margin-left: 10px; }
#controls { padding: 8px 16px; background: #fff; border-bottom: 1px solid #ddd; position: sticky; top: 0; z-index: 2; }
#controls label { margin-right: 14px; } select { font-size: 13px; max-width: 360px; }
#legend { color: #555; font-size: 12px; } #note { color: #777; font-size: 12px; margin-left: 8px; }
#main { display: flex; gap: 16px; padding: 12px 16px; align-items: flex-start; }
#text { flex: 1; font: 13px/1.55 ui-monospace, Menlo, Consolas, monospace; background: #fff; padding: 10px;
        border: 1px solid #ddd; white-space: pre-wrap; word-break: break-all; tab-size: 4; min-width: 0; }
.ch { white-space: pre; border-radius: 2px; } .nl { color: #bbb; }
aside { width: 360px; flex: none; background: #fff; border: 1px solid #ddd; padding: 8px 10px; position: sticky; top: 48px;
        max-height: calc(100vh - 70px); overflow: auto; }
aside h2 { font-size: 14px; margin: 4px 0 6px; } table { border-collapse: collapse; width: 100%; font-size: 12px; }
td, th { padding: 2px 4px; text-align: left; border-bottom: 1px solid #eee; }
tr.unit-row { cursor: pointer; } tr.unit-row:hover, tr.unit-row.on { background: #e8f0fe; }
.features { font-size: 11px; color: #666; } .features dt { font-weight: 600; }
#tip { position: fixed; display: none; background: #24292f; color: #fff; padding: 6px 8px; border-radius: 4px;
       font-size: 12px; pointer-events: none; z-index: 5; max-width: 320px; }
#tip b { font-family: ui-monospace, monospace; }
"""

SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const chars = Array.from(D.text);
const cache = new Map();
function bytes(b64) {
  if (cache.has(b64)) return cache.get(b64);
  const s = atob(b64), a = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
  cache.set(b64, a);
  return a;
}
const GATES = new Set(["i", "f", "o"]);
function palette(kind, lo, hi) {
  const pal = new Array(256), step = hi > lo ? (hi - lo) / 255 : 0;
  const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  for (let q = 0; q < 256; q++) {
    const v = lo + q * step;
    let a, rgb;
    // Gates and norms over their own range: a gate that moves between 0.45 and 0.55 still shows.
    if (GATES.has(kind)) { a = hi > lo ? (v - lo) / (hi - lo) : 0; rgb = "44,160,44"; }
    else if (kind === "surprisal" || kind === "norm") { a = hi > lo ? (v - lo) / (hi - lo) : 0; rgb = "255,127,14"; }
    else { a = Math.abs(v) / m; rgb = v >= 0 ? "214,39,40" : "31,119,180"; }
    pal[q] = "rgba(" + rgb + "," + (a * 0.85).toFixed(3) + ")";
  }
  return pal;
}
function value(series, q) { return series.lo + q * (series.hi > series.lo ? (series.hi - series.lo) / 255 : 0); }

const box = document.getElementById("text"), cells = new Array(chars.length);
const frag = document.createDocumentFragment();
for (let k = 0; k < chars.length; k++) {
  const ch = chars[k], s = document.createElement("span");
  s.className = ch === "\n" ? "ch nl" : "ch";
  s.textContent = ch === "\n" ? "\u21b5" : ch;
  s.dataset.i = k;
  cells[k] = s;
  frag.appendChild(s);
  if (ch === "\n") frag.appendChild(document.createElement("br"));
}
box.appendChild(frag);

const qSel = document.getElementById("quantity"), uSel = document.getElementById("unit");
D.quantities.forEach((Q, n) => qSel.add(new Option(Q.label, n)));
function fillUnits() {
  const Q = D.quantities[qSel.value];
  uSel.length = 0;
  uSel.disabled = !Q.units;
  if (Q.units) Q.units.forEach((u, n) => uSel.add(new Option("unit " + u.unit + "  (" + u.note + ")", n)));
  document.getElementById("note").textContent = Q.note || "";
}
let current = null;
function show() {
  const Q = D.quantities[qSel.value], series = Q.units ? Q.units[uSel.value] : Q;
  const q = bytes(series.q), pal = palette(Q.kind, series.lo, series.hi);
  for (let k = 0; k < cells.length; k++) cells[k].style.backgroundColor = pal[q[k]];
  current = {Q: Q, series: series, q: q};
  const signed = !GATES.has(Q.kind) && Q.kind !== "surprisal" && Q.kind !== "norm";
  document.getElementById("legend").textContent = (signed ? "blue < 0 < red" : "white = low, dark = high") +
    ", range " + series.lo.toFixed(3) + " .. " + series.hi.toFixed(3);
  document.querySelectorAll("tr.unit-row").forEach(row => row.classList.toggle("on",
    +row.dataset.q === +qSel.value && Q.units && +row.dataset.unit === series.unit));
}
qSel.addEventListener("change", () => { fillUnits(); show(); });
uSel.addEventListener("change", show);

const table = document.getElementById("featured");
D.featured.forEach((f, n) => {
  const row = table.insertRow();
  row.className = "unit-row";
  row.dataset.q = f.quantity;
  row.dataset.unit = f.unit;
  [n + 1, D.quantities[f.quantity].label, f.unit, f.feature, (f.r >= 0 ? "+" : "") + f.r.toFixed(2)]
    .forEach(v => { row.insertCell().textContent = v; });
  row.addEventListener("click", () => {
    qSel.value = f.quantity;
    fillUnits();
    uSel.value = D.quantities[f.quantity].units.findIndex(u => u.unit === f.unit);
    show();
  });
});
const dl = document.getElementById("features");
Object.entries(D.features).forEach(([name, what]) => {
  dl.appendChild(Object.assign(document.createElement("dt"), {textContent: name}));
  dl.appendChild(Object.assign(document.createElement("dd"), {textContent: what}));
});

const tip = document.getElementById("tip"), sur = D.quantities[0];
const topIds = bytes(D.top.ids), topProbs = bytes(D.top.probs), K = D.top.k;
function topId(k, j) {
  const n = k * K + j;
  return D.top.wide ? topIds[2 * n] | (topIds[2 * n + 1] << 8) : topIds[n];
}
function visible(ch) { return {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}[ch] || ch; }
box.addEventListener("mouseover", e => {
  const i = e.target.dataset && e.target.dataset.i;
  if (i === undefined || !current) { tip.style.display = "none"; return; }
  const k = +i, lines = ["<b>" + esc(visible(chars[k])) + "</b>  character " + (k + 1)];
  lines.push(esc(current.Q.label) + (current.Q.units ? " " + current.series.unit : "") + ": " +
    value(current.series, current.q[k]).toFixed(3));
  if (k > 0 && topProbs[k * K] > 0) {
    lines.push("surprisal: " + value(sur, bytes(sur.q)[k]).toFixed(2) + " nats");
    const preds = [];
    for (let j = 0; j < K; j++) preds.push("<b>" + esc(D.vocab[topId(k, j)]) + "</b> " +
      Math.round(topProbs[k * K + j] / 2.55) + "%");
    lines.push("expected: " + preds.join("  "));
  }
  tip.innerHTML = lines.join("<br>");
  tip.style.display = "block";
});
box.addEventListener("mousemove", e => {
  tip.style.left = Math.min(e.clientX + 14, innerWidth - 330) + "px";
  tip.style.top = (e.clientY + 16) + "px";
});
box.addEventListener("mouseleave", () => { tip.style.display = "none"; });
function esc(s) { return String(s).replace(/[&<>]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;"})[c]); }

if (D.featured.length) table.rows[0].click(); else { fillUnits(); show(); }
document.body.dataset.ready = "1";
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>chargen viz · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{style}</style></head>
<body><header><h1>chargen viz</h1><span class="sub">{title}</span></header>
<div id="controls"><label>show <select id="quantity"></select></label>
<label>unit <select id="unit"></select></label><span id="legend"></span><span id="note"></span></div>
<div id="main"><div id="text"></div><aside><h2>Interpretable units</h2>
<table><thead><tr><th>#</th><th>quantity</th><th>unit</th><th>follows</th><th>r</th></tr></thead>
<tbody id="featured"></tbody></table>
<p class="features">Each unit's correlation (Pearson r) with simple properties of this text. Click a row to show it.
{stored} of {total} units are stored in this page.</p><dl class="features" id="features"></dl></aside></div>
<div id="tip"></div>
<script type="application/json" id="data">{data}</script>
<script>{script}</script></body></html>
"""


def dumps_for_script(data: dict) -> str:
    """JSON that is safe inside a <script> element: no "<" at all, so nothing can close it early."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def render_page(data: dict) -> str:
    """The page for ``data`` (``viz.page_data``'s dict)."""
    return PAGE.format(title=html.escape(data["title"]), style=STYLE, script=SCRIPT, data=dumps_for_script(data),
                       stored=f"{data['stored_units']:,}", total=f"{data['total_units']:,}")
