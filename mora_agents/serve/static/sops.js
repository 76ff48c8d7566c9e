// The SOP editor: the shipped SOPs and the user's, YAML with syntax highlighting (a highlighted copy under a
// transparent textarea), validation on every change, and a live diagram of the steps.

import {$, api, el, fill, plural} from "./core.js";
import {compose} from "./app.js";

let checked = {count: 0, name: null};
let opened = null;  // the SOP entry in the editor

// One YAML line as highlighted parts: [class, text]; a small highlighter for the SOP files' subset of YAML.
const TOKEN = /(#.*$)|("?\{\{.*?\}\}"?)|("(?:[^"\\]|\\.)*"|'[^']*')|(^\s*-\s)|([\w.-]+(?=\s*:(?:\s|$)))|(\b(?:true|false|null|yes|no)\b)|(-?\b\d+(?:\.\d+)?\b)|([{}[\],:>|])/g;
const KINDS = ["comment", "template", "string", "dash", "key", "bool", "number", "punct"];

export function highlight(line) {
  const parts = [];
  let last = 0;
  for (const match of line.matchAll(TOKEN)) {
    if (match.index > last) parts.push(["", line.slice(last, match.index)]);
    const kind = KINDS[match.slice(1).findIndex((group) => group !== undefined)];
    parts.push([kind, match[0]]);
    last = match.index + match[0].length;
  }
  if (last < line.length) parts.push(["", line.slice(last)]);
  return parts;
}

function paint() {
  const lines = $("#sop-yaml").value.split("\n");
  fill($("#sop-highlight"), ...lines.flatMap((line, i) => [
    ...highlight(line).map(([kind, text]) => kind ? el("span", {class: `y-${kind}`}, text) : text),
    i < lines.length - 1 ? "\n" : " "]));
  syncScroll();
}

function syncScroll() {
  $("#sop-highlight").scrollTop = $("#sop-yaml").scrollTop;
  $("#sop-highlight").scrollLeft = $("#sop-yaml").scrollLeft;
}

function diagram(steps, stale) {
  const node = (step, i) => el("li", {class: "node", "data-step": step.id},
    el("div", {class: "node-head"}, el("span", {class: "node-number"}, String(i + 1)), el("strong", {}, step.id),
      step.review ? el("span", {class: "pill tone-review"}, "review") : null,
      step.repeat ? el("span", {class: "pill tone-run"}, "repeats") : null),
    el("div", {class: "small"}, step.agent.replaceAll("_", " "), step.tool ? el("code", {}, ` ${step.tool}`) : " (answers)"),
    step.uses.length ? el("div", {class: "muted small"}, `uses ${step.uses.join(", ")}`) : null,
    step.when ? el("div", {class: "muted small"}, `when ${step.when}`) : null);
  $("#sop-diagram").classList.toggle("stale", stale);
  fill($("#sop-diagram"), el("ol", {class: "flow"}, steps.map(node)));
}

export async function loadSops() {
  const sops = await api("GET", "/api/sops");
  const group = (origin, title) => {
    const items = sops.filter((sop) => sop.origin === origin);
    return items.length ? [el("li", {class: "list-title"}, title), ...items.map((sop) => el("li", {},
      el("button", {type: "button", class: `sop ${sop.origin}${opened?.name === sop.name && opened?.origin === sop.origin ? " current" : ""}`,
        "data-name": sop.name, "data-origin": sop.origin, title: sop.error || sop.description, onclick: () => openSop(sop)},
      el("span", {}, sop.name), el("span", {class: "muted small"}, sop.error ? "invalid" : sop.active ? plural(sop.steps.length, "step") : "replaced"))))] : [];
  };
  fill($("#sop-list"), ...group("user", "Yours"), ...group("shipped", "Shipped"));
  return sops;
}

function showTitle(name, origin, file) {
  fill($("#sop-title"), name, " ", el("span", {class: `pill tone-${origin === "user" ? "ok" : "plain"}`}, origin === "user" ? "yours" : "shipped"),
    " ", el("span", {class: "muted small mono", title: file}, file.split("/").pop()));
  document.title = `${name} · mora studio`;
}

async function openSop(sop) {
  const data = await api("GET", `/api/sops/${encodeURIComponent(sop.name)}?origin=${sop.origin}`);
  opened = sop;
  showTitle(sop.name, sop.origin, data.file);
  $("#sop-yaml").value = data.yaml;
  $("#sop-saved").textContent = "";
  paint();
  await loadSops();
  await checkSop();
}

async function checkSop() {
  const count = ++checked.count;
  const result = await api("POST", "/api/sops/validate", {yaml: $("#sop-yaml").value});
  if (count !== checked.count) return;  // a newer check is on its way
  checked.name = result.valid ? result.name : null;
  const node = $("#sop-check");
  node.className = result.valid ? "ok" : "error";
  node.textContent = result.valid ? `valid: ${result.name}` : result.error;
  $("#sop-save").disabled = !result.valid;
  $("#sop-run").disabled = !result.valid;
  if (result.valid) diagram(result.steps, false);
  else $("#sop-diagram").classList.add("stale");
}

let checkTimer = null;
$("#sop-yaml").addEventListener("input", () => {
  paint();
  $("#sop-save").disabled = $("#sop-run").disabled = true;
  clearTimeout(checkTimer);
  checkTimer = setTimeout(checkSop, 200);
});
$("#sop-yaml").addEventListener("scroll", syncScroll);

$("#sop-save").addEventListener("click", async () => {
  try {
    const saved = await api("PUT", `/api/sops/${encodeURIComponent(checked.name)}`, {yaml: $("#sop-yaml").value});
    $("#sop-saved").textContent = `saved: ${saved.file}`;
    $("#sop-saved").className = "ok";
    opened = {name: saved.name, origin: "user"};
    showTitle(saved.name, "user", saved.file);
    await loadSops();
  } catch (error) {
    $("#sop-saved").textContent = error.message;
    $("#sop-saved").className = "error";
  }
});

$("#sop-run").addEventListener("click", () => compose({task: checked.name}));

export function showSops() {
  loadSops();
}
