// The page of `mora serve`: chat (runs streamed over Server-Sent Events, review buttons), the SOP editor, the runs.
// Everything shown is put in with textContent or attributes, never parsed as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const VIDEO = /\.(mp4|mov|mkv|webm|avi|gif)$/i;
const ACTIVE = ["queued", "running", "waiting for review"];
const LABELS = {next: "Next", repeat: "Repeat", edit: "Edit", stop: "Stop"};
const cards = new Map();
let previous = null;  // the run whose result a follow-up refers to

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

async function api(method, url, body) {
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

const runUrl = (id, action = "") => `/api/runs/${encodeURIComponent(id)}${action}`;

function media(item) {
  if (!item.url) return el("div", {class: "missing"}, item.path);
  const size = `${item.width}x${item.height}` + (item.kind === "video" ? `, ${item.frames} frames @ ${item.fps} fps` : "");
  let view;
  if (item.kind === "video") {
    view = el("video", {src: item.url, controls: true, loop: true, preload: "metadata", playsinline: true});
    view.muted = true;
  } else {
    view = el("a", {href: item.url, target: "_blank"}, el("img", {src: item.url, alt: item.path}));
  }
  return el("figure", {class: "media"}, view, el("figcaption", {}, `${item.path} (${size})`));
}

// -- chat ------------------------------------------------------------------------------------------------------

function watch(id) {
  if (cards.has(id)) {
    cards.get(id).node.scrollIntoView({block: "start"});
    return;
  }
  const card = {id, lastSeq: -1, reviewSeq: null};
  card.status = el("span", {class: "status"}, "connecting");
  card.cancel = el("button", {type: "button", class: "cancel", onclick: () => act(card, "/cancel")}, "Cancel");
  card.resume = el("button", {type: "button", class: "resume", hidden: true, onclick: () => act(card, "/resume")}, "Resume");
  card.records = el("div", {class: "records"});
  card.progressLabel = el("span");
  card.progressBar = el("progress", {max: 1, value: 0});
  card.progress = el("div", {class: "progress", hidden: true}, card.progressLabel, card.progressBar);
  card.review = el("div", {class: "review", hidden: true});
  card.error = el("div", {class: "error", role: "alert"});
  card.node = el("article", {class: "run", "data-run": id},
    el("div", {class: "run-head"}, el("span", {class: "run-id"}, id), card.status, card.cancel, card.resume),
    card.records, card.progress, card.review, card.error);
  $("#messages").append(card.node);
  cards.set(id, card);
  card.source = new EventSource(runUrl(id, "/events"));
  card.source.addEventListener("record", (event) => addRecord(card, JSON.parse(event.data)));
  card.source.addEventListener("status", (event) => showStatus(card, JSON.parse(event.data)));
  card.source.addEventListener("progress", (event) => showProgress(card, JSON.parse(event.data)));
  card.source.addEventListener("end", (event) => {
    card.source.close();
    const run = JSON.parse(event.data);
    showStatus(card, run);
    showProgress(card, null);
    if (run.status === "finished" && run.result) previous = run.id;
  });
  card.source.onerror = () => { card.status.textContent = "reconnecting..."; };
}

async function act(card, action) {
  card.error.textContent = "";
  try {
    await api("POST", runUrl(card.id, action));
    if (action === "/resume" && card.source.readyState === EventSource.CLOSED) {
      cards.delete(card.id);
      card.node.remove();
      watch(card.id);
    }
  } catch (error) {
    card.error.textContent = error.message;
  }
}

function addRecord(card, record) {
  if (record.seq <= card.lastSeq) return;
  card.lastSeq = record.seq;
  const type = record.type.replace(/^StructuredMessage\[(.*)\]$/, "$1");
  const node = el("div", {class: `msg ${record.kind}`, "data-seq": record.seq, "data-type": type},
    el("div", {class: "meta"}, el("span", {class: "speaker"}, record.source), " ",
      el("span", {class: "type"}, type), " ", el("span", {class: "time"}, `+${record.elapsed.toFixed(1)}s`)),
    el("div", {class: "text", title: record.kind === "event" ? "click to unfold" : null,
      onclick: () => node.classList.toggle("open")}, record.text));
  for (const item of record.media) node.append(media(item));
  const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  card.records.append(node);
  if (atBottom) node.scrollIntoView({block: "end"});
}

function showStatus(card, run) {
  card.node.dataset.status = run.status;
  card.status.textContent = run.status + (run.position ? ` (number ${run.position} in the queue)` : "")
    + (run.error && run.status !== "finished" ? `: ${run.error}` : "");
  card.cancel.hidden = !(ACTIVE.includes(run.status) && !run.resumable);
  card.resume.hidden = !run.resumable;
  showReview(card, run.review);
}

function showProgress(card, progress) {
  card.progress.hidden = !progress;
  if (!progress) return;
  const part = progress.part ? ` ${progress.part} of ${progress.parts}` : "";
  card.progressLabel.textContent =
    `${progress.label} (${progress.step.split("#")[0]}${part}): step ${progress.done} of ${progress.total}`;
  card.progressBar.max = progress.total;
  card.progressBar.value = progress.done;
}

function showReview(card, review) {
  if (!review) {
    card.review.hidden = true;
    card.reviewSeq = null;
    return;
  }
  if (card.reviewSeq === review.seq) return;
  card.reviewSeq = review.seq;
  const edit = review.options.includes("edit")
    ? el("textarea", {class: "edit-text", rows: 2, "aria-label": `new ${review.edit}`}) : null;
  if (edit) edit.value = review.text || "";
  const note = el("span", {class: "error"});
  const decide = async (decision) => {
    note.textContent = "";
    try {
      await api("POST", runUrl(card.id, "/review"), {review: review.seq, decision, text: edit ? edit.value : null});
      card.review.hidden = true;
    } catch (error) {
      note.textContent = error.message;
    }
  };
  const buttons = review.options.map((option) =>
    el("button", {type: "button", class: `decide ${option}`, onclick: () => decide(option)}, LABELS[option]));
  card.review.replaceChildren(
    el("div", {}, el("strong", {}, `Review of step ${review.step}`),
      ` (${review.repeats_left} repeat${review.repeats_left === 1 ? "" : "s"} left)`),
    edit ? el("label", {}, `${review.edit} (for Edit):`, edit) : "",
    el("div", {class: "row"}, ...buttons, note));
  card.review.hidden = false;
}

$("#ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("#text").value.trim();
  if (!text) return;
  const request = {text, review: $("#review").checked};
  if ($("#task").value) request.task = $("#task").value;
  if (previous) request.previous = previous;
  const form = new FormData();
  form.append("request", JSON.stringify(request));
  for (const file of $("#files").files) form.append(VIDEO.test(file.name) ? "video" : "image", file, file.name);
  $("#ask-error").textContent = "";
  $("#send").disabled = true;
  try {
    const run = await api("POST", "/api/runs", form);
    $("#text").value = "";
    $("#files").value = "";
    watch(run.id);
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
  previous = null;
  for (const card of cards.values()) card.source.close();
  cards.clear();
  $("#messages").replaceChildren();
});

// -- SOP editor ------------------------------------------------------------------------------------------------

let checked = {count: 0, name: null};

async function loadSops() {
  const sops = await api("GET", "/api/sops");
  $("#sop-list").replaceChildren(...sops.map((sop) => el("li", {},
    el("button", {type: "button", class: `sop ${sop.origin}`, "data-name": sop.name, "data-origin": sop.origin,
      title: sop.error || sop.description, onclick: () => openSop(sop)},
    sop.name, " ", el("small", {}, sop.origin + (sop.error ? ", invalid" : sop.active ? "" : ", replaced"))))));
  const task = $("#task");
  const chosen = task.value;
  task.replaceChildren(el("option", {value: ""}, "chosen by the planner"),
    ...sops.filter((sop) => sop.active).map((sop) => el("option", {value: sop.name}, sop.name)));
  task.value = chosen;
}

async function openSop(sop) {
  const data = await api("GET", `/api/sops/${encodeURIComponent(sop.name)}?origin=${sop.origin}`);
  $("#sop-title").textContent = `${sop.name} (${sop.origin}: ${data.file})`;
  $("#sop-yaml").value = data.yaml;
  $("#sop-saved").textContent = "";
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
}

let checkTimer = null;
$("#sop-yaml").addEventListener("input", () => {
  $("#sop-save").disabled = $("#sop-run").disabled = true;
  clearTimeout(checkTimer);
  checkTimer = setTimeout(checkSop, 200);
});

$("#sop-save").addEventListener("click", async () => {
  try {
    const saved = await api("PUT", `/api/sops/${encodeURIComponent(checked.name)}`, {yaml: $("#sop-yaml").value});
    $("#sop-saved").textContent = `saved: ${saved.file}`;
    $("#sop-saved").className = "ok";
    await loadSops();
  } catch (error) {
    $("#sop-saved").textContent = error.message;
    $("#sop-saved").className = "error";
  }
});

$("#sop-run").addEventListener("click", async () => {
  await loadSops();
  showTab("chat");
  $("#task").value = checked.name;
  $("#text").focus();
});

// -- runs ------------------------------------------------------------------------------------------------------

const rows = new Map();  // run id -> [its JSON, its row]: a row is rebuilt only when its run changed

async function loadRuns() {
  let runs;
  try {
    runs = await api("GET", "/api/runs");
    $("#run-error").textContent = "";
  } catch (error) {
    $("#run-error").textContent = error.message;
    return;
  }
  const fresh = runs.reverse().map((run) => {
    const json = JSON.stringify(run);
    if (rows.get(run.id)?.[0] !== json) rows.set(run.id, [json, runRow(run)]);
    return rows.get(run.id)[1];
  });
  const body = $("#run-table tbody");
  if (fresh.length !== body.children.length || fresh.some((row, i) => body.children[i] !== row)) {
    body.replaceChildren(...fresh);
  }
}

function runRow(run) {
  return el("tr", {"data-run": run.id},
    el("td", {}, el("span", {title: run.request.text}, run.id)),
    el("td", {}, run.task || ""),
    el("td", {class: "status", "data-status": run.status}, run.status + (run.position ? ` (${run.position})` : "")),
    el("td", {}, run.started ? new Date(run.started).toLocaleString() : ""),
    el("td", {}, run.seconds.toFixed(1)),
    el("td", {}, run.result ? el("a", {href: run.result, target: "_blank"}, "result.mp4") : ""),
    el("td", {class: "actions"},
      el("button", {type: "button", class: "open", onclick: () => openTranscript(run)}, "Transcript"),
      el("button", {type: "button", class: "watch", onclick: () => { showTab("chat"); watch(run.id); }}, "Chat view"),
      run.resumable ? el("button", {type: "button", class: "resume", onclick: () => resumeRun(run.id)}, "Resume") : null,
      ACTIVE.includes(run.status) && !run.resumable
        ? el("button", {type: "button", class: "cancel", onclick: () => cancelRun(run.id)}, "Cancel") : null));
}

function openTranscript(run) {
  const frame = $("#transcript");
  frame.src = run.transcript;
  frame.hidden = false;
}

async function resumeRun(id) {
  try {
    await api("POST", runUrl(id, "/resume"));
    showTab("chat");
    const card = cards.get(id);
    if (card && card.source.readyState === EventSource.CLOSED) {
      cards.delete(id);
      card.node.remove();
    }
    watch(id);
  } catch (error) {
    $("#run-error").textContent = error.message;
  }
}

async function cancelRun(id) {
  try {
    await api("POST", runUrl(id, "/cancel"));
    await loadRuns();
  } catch (error) {
    $("#run-error").textContent = error.message;
  }
}

// -- tabs and start --------------------------------------------------------------------------------------------

let runsTimer = null;

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== name;
  clearInterval(runsTimer);
  if (name === "runs") {
    loadRuns();
    runsTimer = setInterval(loadRuns, 2000);
  }
  if (name === "sops") loadSops();
}

for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));

(async () => {
  const info = await api("GET", "/api/info");
  if (info.noise) $("#banner").textContent = "preset tiny: random-weight models, the videos are noise";
  await loadSops();
  for (const run of await api("GET", "/api/runs")) {  // what other tabs and clients started, still going
    if (ACTIVE.includes(run.status) && !run.resumable) watch(run.id);
  }
})();
