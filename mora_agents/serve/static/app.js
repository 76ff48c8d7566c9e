// The page of `mora serve`: the views (Create, a run, Runs, Data review, Training, SOPs), chosen by the address's
// hash (#chat, #run/ID, #runs, #data, #training, #sops). The conversation of Create is kept on the server per
// session (its id in localStorage), so a reload or a second tab shows it.

import {$, $$, api, el} from "./core.js";
import {RunCard} from "./run.js";
import {showRuns} from "./runs.js";
import {showData} from "./data.js";
import {showTraining, trainings} from "./training.js";
import {loadSops, showSops} from "./sops.js";

const VIDEO = /\.(mp4|mov|mkv|webm|avi|gif)$/i;
const cards = new Map();  // run id -> its card in the conversation
let session = localStorage.getItem("mora.session") || newSession();
let previous = null;  // the run whose result a follow-up refers to
let single = null;  // the card of the run view

function newSession() {
  const id = crypto.randomUUID().replaceAll("-", "");
  localStorage.setItem("mora.session", id);
  return id;
}

// -- the conversation -------------------------------------------------------------------------------------------

async function loadSession() {
  const data = await api("GET", `/api/sessions/${session}`);
  previous = data.previous;
  for (const id of data.runs) {
    if (!cards.has(id)) {
      const card = new RunCard(id, $("#messages"));
      card.onEnd = () => loadSession();
      cards.set(id, card);
    }
  }
  $("#empty").hidden = cards.size > 0;
  $("#chat-tools").hidden = cards.size === 0;
}

function clearChat() {
  for (const card of cards.values()) card.close();
  cards.clear();
  previous = null;
  $("#empty").hidden = false;
  $("#chat-tools").hidden = true;
}

window.addEventListener("storage", (event) => {  // another tab started a new chat
  if (event.key === "mora.session" && event.newValue && event.newValue !== session) {
    session = event.newValue;
    clearChat();
    loadSession();
  }
});

function showFiles() {
  $("#attached").replaceChildren(...[...$("#files").files].map((file) => el("span", {class: "chip"}, file.name)));
}

$("#files").addEventListener("change", showFiles);

$("#ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("#text").value.trim();
  if (!text) return;
  const request = {text, review: $("#review").checked};
  if ($("#task").value) request.task = $("#task").value;
  if ($("#adapters").value) request.adapters = $("#adapters").value;
  if (!$("#candidates-field").hidden && Number($("#candidates").value) > 1) request.candidates = Number($("#candidates").value);
  if (previous) request.previous = previous;
  const form = new FormData();
  form.append("request", JSON.stringify(request));
  for (const file of $("#files").files) form.append(VIDEO.test(file.name) ? "video" : "image", file, file.name);
  $("#ask-error").textContent = "";
  $("#send").disabled = true;
  try {
    const run = await api("POST", "/api/runs", form);
    await api("POST", `/api/sessions/${session}/runs`, {run: run.id});
    $("#text").value = "";
    $("#files").value = "";
    showFiles();
    await loadSession();
    window.scrollTo({top: document.documentElement.scrollHeight});
  } catch (error) {
    $("#ask-error").textContent = error.message;
  } finally {
    $("#send").disabled = false;
  }
});

$("#text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#ask").requestSubmit();
  }
});

$("#new-chat").addEventListener("click", () => {
  session = newSession();
  clearChat();
});

for (const example of $$(".example")) {
  example.addEventListener("click", () => {
    $("#text").value = example.textContent;
    $("#text").focus();
  });
}

// the review panel sits above the composer: it needs the composer's height
new ResizeObserver(([entry]) => {
  document.documentElement.style.setProperty("--composer", `${entry.target.offsetHeight}px`);
}).observe($("#ask"));

let bestOf = new Set();  // the SOPs with best_of steps: runs of them take a number of candidates

// Candidates are offered when the task is an SOP with best_of steps.
function showCandidates() {
  $("#candidates-field").hidden = !bestOf.has($("#task").value);
}

$("#task").addEventListener("change", showCandidates);

export async function fillChoices() {
  const sops = (await loadSops()).filter((sop) => sop.active);
  const task = $("#task");
  const chosen = task.value;
  task.replaceChildren(el("option", {value: ""}, "chosen by the planner"),
    ...sops.map((sop) => el("option", {value: sop.name}, sop.name)));
  task.value = chosen;
  bestOf = new Set(sops.filter((sop) => sop.best_of).map((sop) => sop.name));
  showCandidates();
  const adapters = $("#adapters");
  const picked = adapters.value;
  const options = (await trainings()).flatMap((t) => t.adapters.map((a) => el("option", {value: a.path},
    t.kind === "loop" ? `${t.id}, iteration ${a.iteration}` : t.id)));
  adapters.replaceChildren(el("option", {value: ""}, "base models"), ...options);
  adapters.value = picked;
  adapters.parentElement.hidden = options.length === 0;
}

export async function compose({task = null, adapters = null} = {}) {
  await fillChoices();
  if (task !== null) $("#task").value = task;
  showCandidates();
  if (adapters !== null) $("#adapters").value = adapters;
  location.hash = "#chat";
  $("#text").focus();
}

// -- views ------------------------------------------------------------------------------------------------------

let leave = null;  // stops what the current view polls

async function route() {
  leave?.();
  leave = null;
  const [name, ...rest] = location.hash.slice(1).split("/");
  const view = ["chat", "run", "runs", "data", "training", "sops"].includes(name) ? name : "chat";
  for (const section of $$(".view")) section.hidden = section.id !== `view-${view}`;
  for (const link of $$("nav a")) {
    link.toggleAttribute("aria-current", link.dataset.view === view || (view === "run" && link.dataset.view === "runs"));
  }
  if (single && view !== "run") {
    single.close();
    single = null;
  }
  if (view === "chat") {
    const timer = setInterval(loadSession, 3000);  // runs another tab of this session started
    leave = () => clearInterval(timer);
    await loadSession();
  } else if (view === "run") {
    const id = decodeURIComponent(rest.join("/"));
    if (single?.id !== id) {
      single?.close();
      single = new RunCard(id, $("#run-one"));
    }
  } else if (view === "runs") leave = showRuns();
  else if (view === "data") leave = showData();
  else if (view === "training") leave = showTraining();
  else if (view === "sops") showSops();
}

window.addEventListener("hashchange", route);

(async () => {
  const info = await api("GET", "/api/info");
  if (info.noise) {
    $("#banner").textContent = "tiny preset: the videos are noise";
    $("#banner").hidden = false;
  }
  await fillChoices();
  await route();
})();
