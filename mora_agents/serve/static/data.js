// Data review: the tie-break of `mora data review` in the browser. The sets the judges disagree on, one at a time:
// the candidates' videos side by side, each judge's vote and reason, and a decision (keys: 1-9 pick, d discard,
// s skip), recorded by the server as `mora data review` records it.

import {$, fill, api, el, statusPill} from "./core.js";
import {votes} from "./judges.js";

let folder = null;  // the folder shown: {id, sets}
let current = null;  // the set shown
const skipped = new Set();

const folderUrl = (id) => `/api/data/${encodeURIComponent(id)}`;

async function loadFolders() {
  const folders = await api("GET", "/api/data");
  const select = $("#data-folder");
  const chosen = select.value;
  select.replaceChildren(...folders.map((f) => el("option", {value: f.id},
    `${f.id}${f.sets.undecided ? ` (${f.sets.undecided} to decide)` : ""}`)));
  $("#data-none").hidden = folders.length > 0;
  select.parentElement.hidden = folders.length === 0;
  if (!folders.length) return;
  select.value = folders.some((f) => f.id === chosen) ? chosen
    : (folders.find((f) => f.sets.undecided) || folders[0]).id;
  await loadFolder(select.value);
}

async function loadFolder(id) {
  folder = await api("GET", folderUrl(id));
  const next = folder.sets.find((s) => s.id === current?.id) || nextUndecided() || folder.sets[0];
  renderList();
  show(next);
}

function nextUndecided(after = null) {
  const open = folder.sets.filter((s) => s.status === "undecided");
  const start = after ? open.findIndex((s) => s.id === after) + 1 : 0;
  return [...open.slice(start), ...open.slice(0, start)].find((s) => !skipped.has(s.id) && s.id !== after)
    || open.find((s) => s.id !== after) || null;
}

function renderList() {
  fill($("#set-list"), ...folder.sets.map((s) => el("li", {},
    el("button", {type: "button", class: `set-item${s.id === current?.id ? " current" : ""}`, "data-set": s.id,
      "aria-current": s.id === current?.id ? "true" : null, onclick: () => show(s)},
    el("span", {class: "set-id"}, s.id), el("span", {class: "set-prompt"}, s.prompt), statusPill(s.status)))));
}

function show(set) {
  current = set;
  renderList();
  if (!set) {
    fill($("#set-view"), el("p", {class: "muted"}, "No candidate set in this folder."));
    return;
  }
  const open = set.status === "undecided";
  const decision = set.decision
    ? el("p", {class: "decision"}, statusPill(set.status), ` by ${set.decision.by}: ${set.decision.why}`
      + (set.sample ? ` (sample ${set.sample})` : "")) : null;
  fill($("#set-view"),
    el("div", {class: "set-head"}, el("h2", {class: "panel-title"}, `Set ${set.id}`), statusPill(set.status)),
    el("p", {class: "prompt"}, set.prompt),
    set.enhanced_prompt && set.enhanced_prompt !== set.prompt ? el("p", {class: "muted small"}, `enhanced: ${set.enhanced_prompt}`) : null,
    decision,
    el("div", {class: "candidates"}, set.candidates.map((c) => {
      const video = c.video ? el("video", {src: c.video, autoplay: true, loop: true, playsinline: true, preload: "auto",
        "aria-label": `candidate ${c.number}`}) : el("p", {class: "muted"}, c.error || c.status);
      if (c.video) video.muted = true;
      const chosen = set.decision?.candidate === c.number;
      return el("figure", {class: `candidate${chosen ? " chosen" : ""}`, "data-candidate": c.number},
        el("span", {class: "number"}, String(c.number)), video,
        el("figcaption", {}, el("span", {class: "muted small"}, `seed ${c.seed}`),
          open ? el("button", {type: "button", class: "pick primary", onclick: () => decide(c.number)}, `Pick ${c.number}`) : null));
    })),
    open ? el("div", {class: "row"},
      el("button", {type: "button", class: "discard danger", onclick: () => decide(null)}, "Discard set"),
      el("button", {type: "button", class: "skip ghost", onclick: skip}, "Skip for now"),
      el("span", {class: "muted small"}, "Keys: 1–9 pick · d discard · s skip")) : null,
    el("h3", {class: "section-title"}, "Judges"),
    votes(set.votes));
}

async function decide(choice) {
  $("#data-error").textContent = "";
  const name = $("#data-name").value.trim() || "web";
  localStorage.setItem("mora.reviewer", name);
  try {
    const decided = await api("POST", `${folderUrl(folder.id)}/sets/${encodeURIComponent(current.id)}`, {choice, name});
    folder.sets = folder.sets.map((s) => s.id === decided.id ? decided : s);
    show(nextUndecided(decided.id) || decided);
  } catch (error) {
    $("#data-error").textContent = error.message;
    await loadFolder(folder.id);
  }
}

function skip() {
  skipped.add(current.id);
  show(nextUndecided(current.id) || current);
}

document.addEventListener("keydown", (event) => {
  if ($("#view-data").hidden || !current || current.status !== "undecided") return;
  if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
  const number = Number(event.key);
  if (Number.isInteger(number) && number >= 1 && current.candidates.some((c) => c.number === number)) decide(number);
  else if (event.key === "d") decide(null);
  else if (event.key === "s") skip();
  else return;
  event.preventDefault();
});

$("#data-folder").addEventListener("change", () => loadFolder($("#data-folder").value));
$("#data-name").value = localStorage.getItem("mora.reviewer") || "web";

export function showData() {
  loadFolders().catch((error) => { $("#data-error").textContent = error.message; });
}
