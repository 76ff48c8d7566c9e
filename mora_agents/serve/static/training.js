// Training: a data-free loop's iterations (accepted samples, held-out metrics, validation loss) and the adapters
// each training produced (its loss per step), each usable in a run.

import {$, ago, api, el, fill, lineChart, plural} from "./core.js";
import {compose} from "./app.js";

let all = [];

export async function trainings() {
  all = await api("GET", "/api/training");
  return all;
}

function adapterCard(training, adapters) {
  const names = [...new Set(adapters.losses.flatMap((entry) => Object.keys(entry)).filter((k) => k !== "step"))];
  const series = names.map((name) => ({name, points: adapters.losses.filter((e) => name in e).map((e) => [e.step, e[name]])}));
  const title = training.kind === "loop" ? `Iteration ${adapters.iteration}` : training.id;
  return el("article", {class: "panel adapters", "data-adapters": adapters.path},
    el("div", {class: "set-head"}, el("h3", {class: "panel-title"}, title),
      el("span", {class: "muted small"}, [`${adapters.steps} steps`, adapters.dataset ? `${adapters.dataset} samples` : "",
        ago(adapters.created)].filter(Boolean).join(" · "))),
    el("p", {class: "small"}, `Agents: ${adapters.agents.map((a) => a.replaceAll("_", " ")).join(", ")}`),
    lineChart("Training loss per step", series, "step", "loss"),
    el("div", {class: "row"},
      el("button", {type: "button", class: "use primary", onclick: () => compose({adapters: adapters.path})}, "Use in a run"),
      el("code", {class: "small command"}, `mora run --adapters ${adapters.path} "..."`)));
}

function render(training) {
  const view = $("#training-view");
  if (!training) {
    fill(view);
    return;
  }
  const rows = training.iterations;
  const metricSeries = training.metrics.map((name) => ({name,
    dashed: rows.some((r) => r.metrics[name] && r.metrics[name].backend !== "reference"),
    points: rows.filter((r) => name in r.metrics).map((r) => [r.iteration, r.metrics[name].mean])}));
  const lossSeries = training.validation.map((name) => ({name,
    points: rows.filter((r) => r.validation_loss && name in r.validation_loss).map((r) => [r.iteration, r.validation_loss[name]])}));
  const table = rows.length ? el("div", {class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Held-out metrics per iteration"},
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "iteration"), el("th", {scope: "col"}, "accepted"),
        training.metrics.map((m) => el("th", {scope: "col"}, m)), training.validation.map((v) => el("th", {scope: "col"}, `validation ${v}`)))),
      el("tbody", {}, rows.map((r) => el("tr", {},
        el("th", {scope: "row"}, r.iteration === 0 ? "0 (untrained)" : String(r.iteration)),
        el("td", {}, r.accepted ?? "–"),
        training.metrics.map((m) => el("td", {title: r.metrics[m]?.backend || null}, r.metrics[m] ? r.metrics[m].mean.toFixed(4) : "–")),
        training.validation.map((v) => el("td", {}, r.validation_loss?.[v] !== undefined ? r.validation_loss[v].toPrecision(4) : "–"))))))) : null;
  fill(view,
    el("p", {class: "muted small"}, training.path),
    training.error ? el("p", {class: "error"}, training.error) : null,
    training.kind === "loop" ? el("div", {class: "charts"},
      lineChart("Validation loss per iteration (lower is better)", lossSeries, "iteration (0: untrained)", "loss"),
      lineChart("Held-out metrics per iteration (dashed: fallback backend)", metricSeries, "iteration (0: untrained)", "mean")) : null,
    table,
    el("h2", {class: "section-title"}, "Adapters"),
    training.adapters.length ? el("div", {class: "adapter-grid"}, training.adapters.map((a) => adapterCard(training, a)))
      : el("p", {class: "muted"}, "No iteration has trained adapters yet."));
}

async function load() {
  await trainings();
  const select = $("#training-pick");
  const chosen = select.value;
  select.replaceChildren(...all.map((t) => el("option", {value: t.id}, t.kind === "loop" ? `${t.id} · loop of ${plural(Math.max(0, t.iterations.length - 1), "iteration")}` : `${t.id} · training`)));
  select.parentElement.hidden = all.length === 0;
  $("#training-none").hidden = all.length > 0;
  select.value = all.some((t) => t.id === chosen) ? chosen : all[0]?.id ?? "";
  render(all.find((t) => t.id === select.value));
}

$("#training-pick").addEventListener("change", () => render(all.find((t) => t.id === $("#training-pick").value)));

export function showTraining() {
  load();
}
