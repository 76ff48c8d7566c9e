// Helpers of the page: DOM building (text is always put in as text, never parsed as HTML), the API, formats, and
// a small SVG line chart.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
export const ACTIVE = ["queued", "running", "waiting for review"];

export function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "path", "line", "circle", "text", "polyline", "title", "rect"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.setAttribute("class", value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

// Replace a node's children, leaving out null, undefined and false (as `el` does).
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
}

export async function api(method, url, body) {
  const init = {method, headers: {}};
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || `${response.status} ${response.statusText}`);
  return data;
}

export const runUrl = (id, action = "") => `/api/runs/${encodeURIComponent(id)}${action}`;
export const posterUrl = (runId, path) => `/api/runs/${encodeURIComponent(runId)}/poster/${path.split("/").map(encodeURIComponent).join("/")}`;

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(value / 60);
  return `${minutes} min ${Math.round(value - 60 * minutes)} s`;
}

export function ago(iso) {
  if (!iso) return "";
  const delta = (Date.now() - new Date(iso).getTime()) / 1000;
  if (delta < 60) return "just now";
  if (delta < 3600) return `${Math.floor(delta / 60)} min ago`;
  if (delta < 86400) return `${Math.floor(delta / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function statusPill(status) {
  const kind = {finished: "ok", failed: "bad", damaged: "bad", rejected: "bad", "waiting for review": "review",
    running: "run", queued: "run", accepted: "ok", discarded: "bad", undecided: "review"}[status] || "plain";
  return el("span", {class: `pill tone-${kind}`}, status);
}

export const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

export function fileName(path) {
  return String(path).split("/").pop();
}

// -- a line chart --------------------------------------------------------------------------------------------------

const COLORS = ["#4f46e5", "#0891b2", "#d97706", "#db2777", "#059669", "#7c3aed", "#dc2626", "#475569"];

function ticks(low, high, count = 4) {
  if (low === high) return [low];
  const step = (high - low) / count;
  return Array.from({length: count + 1}, (_, i) => low + i * step);
}

const short = (value) => Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 1 ? value.toFixed(2)
  : value.toPrecision(2);

// series: [{name, points: [[x, y], ...]}]; a chart of lines with its axes and a legend, described in its title.
export function lineChart(title, series, xLabel, yLabel) {
  const shown = series.filter((s) => s.points.length);
  const width = 560, height = 260, left = 56, right = 16, top = 16, bottom = 40;
  const xs = shown.flatMap((s) => s.points.map((p) => p[0]));
  const ys = shown.flatMap((s) => s.points.map((p) => p[1]));
  const figure = el("figure", {class: "chart"}, el("figcaption", {}, title));
  if (!xs.length) {
    figure.append(el("p", {class: "muted small"}, "nothing to plot yet"));
    return figure;
  }
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad; y1 += pad;
  const X = (x) => left + (x - x0) / (x1 - x0) * (width - left - right);
  const Y = (y) => top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom);
  const summary = shown.map((s) => `${s.name}: ${s.points.map((p) => `${p[0]} → ${short(p[1])}`).join(", ")}`).join("; ");
  const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}. ${summary}`},
    el("title", {}, title));
  for (const y of ticks(y0, y1)) {
    svg.append(el("line", {x1: left, x2: width - right, y1: Y(y), y2: Y(y), class: "grid-line"}),
      el("text", {x: left - 6, y: Y(y) + 4, class: "tick", "text-anchor": "end"}, short(y)));
  }
  const wholeX = [...new Set(xs)].sort((a, b) => a - b);
  for (const x of wholeX.length <= 12 ? wholeX : ticks(x0, x1, 6).map(Math.round)) {
    svg.append(el("text", {x: X(x), y: height - bottom + 16, class: "tick", "text-anchor": "middle"}, String(x)));
  }
  svg.append(el("text", {x: (left + width - right) / 2, y: height - 6, class: "axis", "text-anchor": "middle"}, xLabel));
  svg.append(el("text", {x: 12, y: (top + height - bottom) / 2, class: "axis", "text-anchor": "middle",
    transform: `rotate(-90 12 ${(top + height - bottom) / 2})`}, yLabel));
  shown.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    svg.append(el("polyline", {points: s.points.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none",
      stroke: color, "stroke-width": s.name === "total" ? 3 : 2, "stroke-dasharray": s.dashed ? "5 4" : null}));
    if (s.points.length <= 30) {
      for (const p of s.points) svg.append(el("circle", {cx: X(p[0]), cy: Y(p[1]), r: 3.5, fill: color}));
    }
  });
  const legend = el("ul", {class: "legend"}, shown.map((s, i) =>
    el("li", {}, el("span", {class: "swatch", style: `background:${COLORS[i % COLORS.length]}`}), s.name)));
  figure.append(svg, legend);
  return figure;
}
