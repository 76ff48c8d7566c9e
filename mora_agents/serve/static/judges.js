// The judges' votes on a candidate set, as the data reviewer and a best-of pick show them: each judge's ranking and
// reason, and the labels it was shown mapped back to the candidates (a judge saw them shuffled).

import {el} from "./core.js";

function vote(v) {
  const labels = v.labels ? Object.entries(v.labels).map(([label, n]) => `${label}→${n}`).join(", ") : null;
  const scores = v.scores ? Object.entries(v.scores).map(([n, score]) => `${n}: ${score.toFixed(3)}`).join(" · ") : null;
  return el("li", {class: "vote"},
    el("div", {class: "vote-head"}, el("strong", {}, v.judge), el("span", {class: "chip"}, v.kind === "mllm" ? "MLLM" : "metric"),
      v.aspect ? el("span", {class: "muted small"}, v.aspect.split(":")[0]) : null,
      v.ranking ? el("span", {class: "ranking"}, "ranks ", el("strong", {}, v.ranking.join(" › ")))
        : el("span", {class: "ranking error small"}, `abstained: ${v.error}`)),
    v.reason ? el("blockquote", {}, v.reason) : null,
    labels || scores ? el("p", {class: "muted small"}, [
      labels ? `Its reason names candidates by the labels it was shown (label→candidate): ${labels}` : "",
      scores ? `scores ${scores}` : ""].filter(Boolean).join(" · ")) : null);
}

export function votes(list) {
  return list.length ? el("ul", {class: "votes"}, list.map(vote)) : el("p", {class: "muted small"}, "no vote recorded");
}
