// igpt serve's page script: SVG line charts, the run page (chain, live
// metrics, step slider, completions) and the compare page. No libraries.
"use strict";
const $ = (tag, attrs = {}, ...kids) => {
  const svg = ["svg", "path", "line", "text", "g", "rect", "circle"].includes(tag);
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const getJSON = async (url) => { const r = await fetch(url); if (!r.ok) throw new Error(url + ": " + await r.text()); return r.json(); };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// Chart draws named series of [x, y] points as SVG paths; hover shows the
// nearest point's x and value, a button toggles a log y axis. add() appends
// points and redraws (live updates).
class Chart {
  constructor(parent, title, xLabel) {
    this.series = new Map(); this.log = false; this.title = title; this.xLabel = xLabel;
    this.W = 560; this.H = 240; this.m = { l: 56, r: 12, t: 22, b: 30 };
    this.box = $("div", { class: "chart", "data-title": title });
    this.svg = $("svg", { width: this.W, height: this.H });
    this.tip = $("div", { class: "tip" });
    const btn = $("button", { class: "logtoggle", on: { click: () => { this.log = !this.log; btn.textContent = this.log ? "linear" : "log"; this.draw(); } } }, "log");
    this.box.append(this.svg, this.tip, $("br"), btn);
    this.svg.addEventListener("mousemove", (e) => this.hover(e));
    this.svg.addEventListener("mouseleave", () => { this.tip.style.display = "none"; });
    parent.append(this.box);
  }
  add(name, pts) {
    if (!this.series.has(name)) this.series.set(name, []);
    const s = this.series.get(name);
    for (const p of pts) if (Number.isFinite(p[1]) && (!this.log || p[1] > 0)) s.push(p);
    this.draw();
  }
  ys(y) { return this.log ? Math.log10(Math.max(y, 1e-12)) : y; }
  draw() {
    const { W, H, m } = this; const svg = this.svg; svg.replaceChildren();
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.series.values()) for (const [x, y] of s) {
      if (this.log && y <= 0) continue;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, this.ys(y)); y1 = Math.max(y1, this.ys(y));
    }
    svg.append($("text", { x: m.l, y: 15, "font-size": 13 }, this.title + (this.log ? " (log)" : "")));
    if (!(x1 >= x0)) { svg.append($("text", { x: m.l, y: H / 2, fill: "#777" }, "no points yet")); return; }
    if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
    this.scale = { x0, x1, y0, y1 };
    const X = (x) => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (y) => H - m.b - (this.ys(y) - y0) / (y1 - y0) * (H - m.t - m.b);
    this.X = X; this.Y = Y;
    const axis = $("g", { "font-size": 10, fill: "#555" });
    for (let i = 0; i <= 4; i++) {
      const v = y0 + (y1 - y0) * i / 4, py = H - m.b - i / 4 * (H - m.t - m.b);
      axis.append($("line", { x1: m.l, x2: W - m.r, y1: py, y2: py, stroke: "#eee" }),
        $("text", { x: 2, y: py + 3 }, (this.log ? 10 ** v : v).toPrecision(3)));
      const xv = x0 + (x1 - x0) * i / 4;
      axis.append($("text", { x: X(xv) - 10, y: H - m.b + 14 }, Math.round(xv).toString()));
    }
    axis.append($("text", { x: W - m.r - 60, y: H - 4 }, this.xLabel));
    svg.append(axis);
    let i = 0;
    for (const [name, s] of this.series) {
      const pts = s.filter(([, y]) => !this.log || y > 0);
      const color = COLORS[i % COLORS.length];
      if (pts.length) {
        const d = pts.map(([x, y], k) => (k ? "L" : "M") + X(x).toFixed(1) + " " + Y(y).toFixed(1)).join(" ");
        svg.append($("path", { d, fill: "none", stroke: color, "stroke-width": 1.5, class: "series", "data-name": name, "data-n": pts.length }));
        if (pts.length < 4) for (const [x, y] of pts) svg.append($("circle", { cx: X(x), cy: Y(y), r: 3, fill: color }));
      }
      svg.append($("text", { x: W - m.r - 150, y: m.t + 12 * i + 8, fill: color, "font-size": 11 }, name));
      i++;
    }
  }
  hover(e) {
    if (!this.scale) return;
    const r = this.svg.getBoundingClientRect(), px = e.clientX - r.left;
    const { x0, x1 } = this.scale, m = this.m;
    const x = x0 + (px - m.l) / (this.W - m.l - m.r) * (x1 - x0);
    const lines = [];
    for (const [name, s] of this.series) {
      let best = null;
      for (const p of s) if (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
      if (best) lines.push(`${name} ${this.xLabel} ${best[0]}: ${(+best[1]).toPrecision(5)}`);
    }
    this.tip.textContent = lines.join(" · ");
    this.tip.style.display = "block"; this.tip.style.left = (px + 10) + "px"; this.tip.style.top = (e.clientY - r.top + 10) + "px";
  }
}

// Which fields of a metrics line are drawn, and in which chart.
const SKIP = new Set(["step", "epoch", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s", "index", "threads"]);
const chartOf = (k) => /acc/.test(k) ? "accuracy" : /loss/.test(k) ? "loss" : k;

// MetricCharts keeps one chart per group of metrics fields, by step (and by
// tokens seen when lines carry tokens).
class MetricCharts {
  constructor(parent, prefix = "") { this.parent = parent; this.charts = new Map(); this.prefix = prefix; }
  chart(name, xl) {
    const id = name + "|" + xl;
    if (!this.charts.has(id)) this.charts.set(id, new Chart(this.parent, name + " by " + xl, xl));
    return this.charts.get(id);
  }
  add(lines, byTokens = false) {
    const groups = new Map();
    for (const l of lines) for (const [k, v] of Object.entries(l)) {
      if (SKIP.has(k) || typeof v !== "number") continue;
      const g = chartOf(k); if (!groups.has(g)) groups.set(g, new Map());
      const s = groups.get(g); if (!s.has(k)) s.set(k, { step: [], tokens: [] });
      s.get(k).step.push([l.step, v]);
      if (typeof l.tokens === "number") s.get(k).tokens.push([l.tokens, v]);
    }
    for (const [g, s] of groups) for (const [k, pts] of s) {
      this.chart(g, "step").add(this.prefix + k, pts.step);
      if (byTokens && pts.tokens.length) this.chart(g, "tokens").add(this.prefix + k, pts.tokens);
    }
  }
}

function overviewPage() {
  document.getElementById("compare").addEventListener("click", () => {
    const picked = [...document.querySelectorAll(".pick:checked")].map((c) => "run=" + encodeURIComponent(c.value));
    if (picked.length < 2 || picked.length > 6) { alert("tick 2 to 6 runs"); return; }
    location.href = "/compare?" + picked.join("&");
  });
}

function table(rows, cols) {
  const t = $("table", {}, $("tr", {}, ...cols.map((c) => $("th", {}, c))));
  for (const r of rows) t.append($("tr", {}, ...cols.map((c) => {
    const v = r[c]; return $("td", {}, typeof v === "number" ? (Math.abs(v) < 1 && /acc/.test(c) ? (100 * v).toFixed(1) + "%" : String(+v.toPrecision(4))) : v == null ? "" : String(v));
  })));
  return t;
}

function probeTables(card, rep) {
  const cols = ["name", "dim", "val_acc", "test_acc", "l2"];
  if (Array.isArray(rep.rows)) { card.append($("h3", {}, "probe accuracy by layer")); card.append(table([...rep.rows, ...(rep.baselines || [])], cols)); }
  if (rep.summary && rep.rows) {
    const c = new Chart(card, "test accuracy by layer", "layer");
    c.add("model", rep.rows.map((r) => [r.layer, r.test_acc]));
    for (const b of rep.baselines || []) c.add(b.name, rep.rows.map((r) => [r.layer, b.test_acc]));
  }
  if (rep.concat && rep.concat.length) { card.append($("h3", {}, "concatenated layers")); card.append(table(rep.concat, cols)); }
  if (rep.low_data && rep.low_data.length) {
    card.append($("h3", {}, "low-data probes"));
    card.append(table(rep.low_data, Object.keys(rep.low_data[0]).filter((k) => typeof rep.low_data[0][k] !== "object")));
  }
}

function fmtETA(s) { return s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? (s / 60).toFixed(1) + " min" : s.toFixed(0) + " s"; }

async function runPage() {
  const root = document.getElementById("chain");
  const self = root.dataset.stage + "/" + root.dataset.key;
  const data = await getJSON("/api/run/" + self);
  root.replaceChildren();
  for (const it of data.chain) {
    const ref = it.stage + "/" + it.key;
    const card = $("div", { class: "card", id: "card-" + it.stage, "data-ref": ref });
    card.append($("h2", {}, $("a", { href: "/run/" + ref }, it.stage + " " + it.key), " ", $("span", { class: "state" }, it.state), ref === self ? " (this run)" : ""));
    card.append($("div", {}, it.headline || "-"));
    if (it.config) card.append($("details", {}, $("summary", {}, "config"), $("pre", {}, JSON.stringify(it.config, null, 1))));
    root.append(card);
    if (it.has_metrics) metricsSection(card, it);
    if (it.report) probeTables(card, it.report);
    if (it.images.length) card.append($("div", { class: "imgs" }, ...it.images.map((u) => $("figure", {}, $("img", { src: u, alt: u }), $("figcaption", { class: "muted" }, u.split("/").pop())))));
    if (it.stage === "train" && it.state.startsWith("done")) { stepSlider(card, it.key); completeForm(card, it.key); }
  }
}

async function metricsSection(card, it) {
  const ref = it.stage + "/" + it.key;
  const box = $("div", { class: "metrics" }); card.append(box);
  const prog = $("div", { class: "live" }); box.append(prog);
  const charts = new MetricCharts(box);
  const lines = await getJSON("/api/metrics/" + ref);
  charts.add(lines, true);
  let count = lines.length;
  if (it.state === "done") return;
  prog.textContent = "live: waiting for the next metrics line…";
  const es = new EventSource("/api/events/" + ref);
  es.addEventListener("metrics", (e) => {
    const d = JSON.parse(e.data);
    if (d.reset) { box.querySelectorAll(".chart").forEach((c) => c.remove()); charts.charts.clear(); count = 0; }
    charts.add(d.lines, true); count += d.lines.length;
  });
  es.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    prog.replaceChildren(`live: step ${p.step}` + (p.total ? ` of ${p.total}` : ""), " ",
      $("span", { class: "progress" }, $("div", { style: `width:${(p.percent || 0).toFixed(1)}%` })),
      p.eta_s ? ` ETA ${fmtETA(p.eta_s)}` : "", p.checkpoint ? ` · checkpoint ${p.checkpoint}` : "");
  });
  es.addEventListener("done", () => { es.close(); prog.textContent = "finished: reloading"; setTimeout(() => location.reload(), 500); });
}

async function stepSlider(card, key) {
  const steps = await getJSON("/api/steps/" + key);
  if (!steps.length) return;
  const box = $("div", { class: "steps" }, $("h3", {}, "every kept checkpoint"));
  const label = $("span", { class: "steplabel" });
  const slider = $("input", { type: "range", min: 0, max: steps.length - 1, value: steps.length - 1, id: "stepslider" });
  const panels = ["samples.png", "completions.png"].map((k) => $("img", { class: "steppanel", "data-kind": k, alt: k }));
  const show = () => {
    const s = steps[slider.value];
    label.textContent = `step ${s.step} (${s.checkpoint})`;
    for (const p of panels) p.src = `/img/step/${key}/${s.checkpoint}/${p.dataset.kind}`;
  };
  slider.addEventListener("input", show);
  box.append(slider, " ", label, $("div", { class: "panels" }, ...panels.map((p) => $("figure", {}, p, $("figcaption", { class: "muted" }, p.dataset.kind.replace(".png", ""))))));
  card.append(box); show();
}

function completeForm(card, key) {
  const f = $("form", { class: "complete" });
  f.innerHTML = `<h3>complete your picture</h3>
  <label>picture <input type="file" name="picture" accept="image/png,image/jpeg"></label>
  <label>or test image <input type="number" name="test" value="0" min="0" max="63" style="width:4em"></label><br>
  <label>rows kept <input type="range" name="keep" min="0.1" max="0.9" step="0.05" value="0.5"></label>
  <label>temperature <input type="number" name="temperature" value="1" step="0.1" min="0.1" max="10" style="width:4em"></label>
  <label>top-k <input type="number" name="top_k" value="0" min="0" style="width:4em"></label>
  <label>completions <input type="number" name="n" value="3" min="1" max="4" style="width:3em"></label>
  <label>seed <input type="number" name="seed" value="0" min="0" style="width:5em"></label>
  <button type="submit">complete</button> <span class="status"></span><div class="completions"></div>`;
  const status = f.querySelector(".status"), out = f.querySelector(".completions");
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(f); fd.set("run", key);
    if (!f.picture.files.length) fd.delete("picture");
    const r = await fetch("/api/complete", { method: "POST", body: fd });
    if (!r.ok) { status.textContent = await r.text(); return; }
    const j = await r.json();
    const row = $("div", { class: "completion", "data-job": j.job }); out.prepend(row);
    const es = new EventSource(j.events);
    const draw = (d) => { row.replaceChildren(...(d.images || []).map((u) => $("img", { src: u }))); };
    es.addEventListener("queue", (e) => { status.textContent = `queued: position ${JSON.parse(e.data).position}`; });
    es.addEventListener("tokens", (e) => { const d = JSON.parse(e.data); draw(d); status.textContent = `${d.done} of ${d.total} tokens, ${d.tokens_per_s ? d.tokens_per_s.toFixed(0) : "-"} tokens/s`; });
    es.addEventListener("done", (e) => { const d = JSON.parse(e.data); draw(d); row.dataset.done = "1"; status.textContent = `done: first token after ${d.first_token_ms.toFixed(0)} ms, ${d.tokens_per_s.toFixed(0)} tokens/s`; es.close(); });
    es.addEventListener("error", (e) => { if (e.data) status.textContent = "error: " + JSON.parse(e.data).error; es.close(); });
  });
  card.append(f);
}

async function comparePage() {
  const root = document.getElementById("compare");
  const refs = JSON.parse(root.dataset.refs);
  root.replaceChildren();
  const curves = $("div", { class: "curves" }), probes = $("div", { class: "probes" }), grids = $("div", { class: "side" });
  root.append($("h2", {}, "loss curves"), curves, $("h2", {}, "probe accuracy by layer"), probes, $("h2", {}, "pictures"), grids);
  const charts = new MetricCharts(curves);
  const probeChart = new Chart(probes, "test accuracy by layer", "layer");
  for (const r of refs) {
    const name = r.stage + "/" + r.key, short = r.key.slice(0, 6) + " ";
    const run = await getJSON("/api/run/" + name);
    for (const it of run.chain) {
      if (it.has_metrics && it.stage === r.stage) { charts.add(await getJSON(`/api/metrics/${it.stage}/${it.key}`), true); relabel(charts, short); }
      if (it.stage === "probe" && it.report && it.report.rows) probeChart.add(short + "probe", it.report.rows.map((x) => [x.layer, x.test_acc]));
    }
    const col = $("div", { class: "col" }, $("h3", {}, $("a", { href: "/run/" + name }, name)));
    for (const it of run.chain) for (const u of it.images) if (/sample|reconstruction|completion/.test(u)) col.append($("img", { src: u, style: "max-width:300px;image-rendering:pixelated;display:block" }));
    grids.append(col);
  }
}

// relabel prefixes the series just added (unprefixed names) with the run.
function relabel(charts, prefix) {
  for (const c of charts.charts.values()) {
    for (const [k, v] of [...c.series]) if (!/^[0-9a-f]{6} /.test(k)) { c.series.delete(k); c.series.set(prefix + k, v); }
    c.draw();
  }
}
