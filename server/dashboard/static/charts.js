// Plain SVG charts: a line chart (numbers or times on x) and a bar chart. No library:
// the dashboard draws a few series of at most a few thousand points, which one <path>
// per series does in well under a frame, and nothing has to be vendored or built.
const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 220, PAD = { left: 48, right: 12, top: 12, bottom: 34 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}

function fmt(value) {
  const a = Math.abs(value);
  if (a >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (value / 1e3).toFixed(0) + "k";
  if (a >= 100 || Number.isInteger(value)) return value.toFixed(0);
  return value.toPrecision(2);
}

function clock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 5);
}

function empty(svg, message) {
  svg.replaceChildren(el("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, message));
  svg.dataset.points = "0";
}

// series: [{name, cls, points: [[x, y], ...]}]; options: {time, yMin, yMax, emptyText}
export function lineChart(svg, series, options = {}) {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  svg.dataset.points = String(series.length ? series[0].points.length : 0);
  if (!all.length) return empty(svg, options.emptyText || "no data yet");
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let y0 = options.yMin ?? Math.min(...all.map((p) => p[1]));
  let y1 = options.yMax ?? Math.max(...all.map((p) => p[1]));
  if (options.time && x1 - x0 < 60) x0 = x1 - 60; // at least a minute of axis
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const nodes = [];
  for (const t of ticks(y0, y1)) {
    nodes.push(el("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(t), y2: sy(t), class: "grid" }));
    nodes.push(el("text", { x: PAD.left - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t)));
  }
  for (const t of ticks(x0, x1, 5)) {
    const label = options.time ? clock(t) : fmt(t);
    nodes.push(el("text", { x: sx(t), y: H - PAD.bottom + 16, "text-anchor": "middle", class: "tick" }, label));
  }
  nodes.push(el("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
  series.forEach((s, i) => {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!pts.length) return;
    const d = pts.map(([x, y], j) => (j ? "L" : "M") + sx(x).toFixed(1) + " " + sy(y).toFixed(1)).join("");
    nodes.push(el("path", { d, class: `line s${i} ${s.cls || ""}`, "data-series": s.name }));
    if (pts.length === 1) nodes.push(el("circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, class: `dot s${i}` }));
  });
  let lx = PAD.left;
  series.forEach((s, i) => {
    nodes.push(el("rect", { x: lx, y: H - 12, width: 10, height: 3, class: `key s${i}` }));
    const label = el("text", { x: lx + 14, y: H - 8, class: "legend" }, s.name);
    nodes.push(label);
    lx += 22 + 7 * s.name.length;
  });
  svg.replaceChildren(...nodes);
}

// bars: [{label, value}]
export function barChart(svg, bars, options = {}) {
  svg.dataset.points = String(bars.length);
  if (!bars.length) return empty(svg, options.emptyText || "no data yet");
  const top = Math.max(...bars.map((b) => b.value), 1);
  const span = (W - PAD.left - PAD.right) / bars.length;
  const sy = (y) => H - PAD.bottom - (y / top) * (H - PAD.top - PAD.bottom);
  const nodes = [];
  for (const t of ticks(0, top)) {
    nodes.push(el("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(t), y2: sy(t), class: "grid" }));
    nodes.push(el("text", { x: PAD.left - 6, y: sy(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t)));
  }
  const every = Math.ceil(bars.length / 12);
  bars.forEach((b, i) => {
    const x = PAD.left + i * span;
    const bar = el("rect", { x: x + span * 0.1, y: sy(b.value), width: span * 0.8, height: sy(0) - sy(b.value), class: "bar" });
    bar.appendChild(el("title", {}, `${b.label}: ${b.value}`));
    nodes.push(bar);
    if (i % every === 0) nodes.push(el("text", { x: x + span / 2, y: H - PAD.bottom + 16, "text-anchor": "middle", class: "tick" }, b.label));
  });
  if (options.xLabel) nodes.push(el("text", { x: W / 2, y: H - 4, "text-anchor": "middle", class: "legend" }, options.xLabel));
  svg.replaceChildren(...nodes);
}
