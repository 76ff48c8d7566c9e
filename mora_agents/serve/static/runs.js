// Runs: every run under --out as a card (its result's first frame, request, task, status, time), with filters, and
// open, resume, cancel and delete.

import {$, ACTIVE, ago, api, el, runUrl, seconds, statusPill} from "./core.js";

const shown = new Map();  // run id -> [its JSON, its card]: a card is rebuilt only when its run changed
let runs = [];

function matches(run) {
  const text = $("#run-search").value.trim().toLowerCase();
  const status = $("#run-status").value;
  const task = $("#run-task").value;
  return (!text || run.request.text.toLowerCase().includes(text) || run.id.includes(text))
    && (!status || (status === "active" ? ACTIVE.includes(run.status) && !run.resumable : run.status === status))
    && (!task || run.task === task);
}

async function act(method, run, action) {
  $("#run-error").textContent = "";
  try {
    await api(method, runUrl(run.id, action));
    await load();
  } catch (error) {
    $("#run-error").textContent = error.message;
  }
}

function card(run) {
  const open = () => { location.hash = `#run/${encodeURIComponent(run.id)}`; };
  const picture = run.poster
    ? el("img", {src: run.poster, alt: "", loading: "lazy"})
    : el("span", {class: "placeholder", "aria-hidden": "true"}, ACTIVE.includes(run.status) ? "…" : "—");
  const length = run.request.duration ? `${run.request.duration} s video` : "";
  const remove = async () => {
    if (confirm(`Delete run ${run.id} and all its files?`)) await act("DELETE", run, "");
  };
  return el("article", {class: "run-card", "data-run": run.id, "data-status": run.status},
    el("button", {type: "button", class: "cover", onclick: open, "aria-label": `open ${run.request.text || run.id}`}, picture),
    el("div", {class: "card-body"},
      el("h2", {class: "card-title", title: run.id}, run.request.text || run.id),
      el("div", {class: "run-meta"}, statusPill(run.status + (run.position ? ` · #${run.position}` : "")),
        run.task ? el("span", {class: "chip"}, run.task) : null),
      el("p", {class: "muted small"}, [ago(run.created), length, run.seconds ? `took ${seconds(run.seconds)}` : ""]
        .filter(Boolean).join(" · ")),
      run.error && run.status !== "finished" ? el("p", {class: "error small clamp"}, run.error) : null,
      el("div", {class: "row"},
        el("button", {type: "button", class: "open", onclick: open}, "Open"),
        run.resumable ? el("button", {type: "button", class: "resume", onclick: () => act("POST", run, "/resume")}, "Resume") : null,
        ACTIVE.includes(run.status) && !run.resumable
          ? el("button", {type: "button", class: "cancel ghost", onclick: () => act("POST", run, "/cancel")}, "Cancel") : null,
        !ACTIVE.includes(run.status) || run.resumable
          ? el("button", {type: "button", class: "delete ghost danger", onclick: remove}, "Delete") : null)));
}

function render() {
  const body = $("#run-grid");
  const fresh = runs.filter(matches).map((run) => {
    const json = JSON.stringify(run);
    if (shown.get(run.id)?.[0] !== json) shown.set(run.id, [json, card(run)]);
    return shown.get(run.id)[1];
  });
  if (fresh.length !== body.children.length || fresh.some((node, i) => body.children[i] !== node)) body.replaceChildren(...fresh);
  $("#run-none").hidden = fresh.length > 0;
}

async function load() {
  try {
    runs = (await api("GET", "/api/runs")).reverse();  // newest first
  } catch (error) {
    $("#run-error").textContent = error.message;
    return;
  }
  const tasks = [...new Set(runs.map((run) => run.task).filter(Boolean))].sort();
  const select = $("#run-task");
  if (select.options.length - 1 !== tasks.length) {
    const chosen = select.value;
    select.replaceChildren(el("option", {value: ""}, "all"), ...tasks.map((task) => el("option", {}, task)));
    select.value = chosen;
  }
  render();
}

for (const id of ["#run-search", "#run-status", "#run-task"]) $(id).addEventListener("input", render);

export function showRuns() {
  load();
  const timer = setInterval(load, 3000);
  return () => clearInterval(timer);
}
