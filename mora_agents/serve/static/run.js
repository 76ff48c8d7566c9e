// A run as the page follows it: its result at the top, a strip of every step's output, the conversation with tool
// calls folded, the progress bar and the review panel in view. Records come over Server-Sent Events.

import {$, fill, ACTIVE, api, el, fileName, posterUrl, runUrl, seconds, statusPill} from "./core.js";
import {votes} from "./judges.js";
import {StoryView} from "./story.js";

const LABELS = {next: "Next", repeat: "Repeat", edit: "Edit", stop: "Stop"};
const KEY_ARGUMENTS = ["prompt", "instruction", "image", "video", "videos", "backend", "seed", "steps", "frames"];

let following = true;  // the page scrolls with new records until the person scrolls up
const latest = el("button", {type: "button", class: "latest", hidden: true,
  onclick: () => window.scrollTo({top: document.documentElement.scrollHeight, behavior: "smooth"})}, "New messages ↓");
document.body.append(latest);
window.addEventListener("scroll", () => {
  following = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  if (following) latest.hidden = true;
}, {passive: true});

function keepUp() {
  if (following) window.scrollTo({top: document.documentElement.scrollHeight});
  else latest.hidden = false;
}

function mediaView(item, runId) {
  if (!item.url) return el("p", {class: "muted small"}, item.path);
  const size = `${item.width}×${item.height}` + (item.kind === "video" ? `, ${item.frames} frames at ${item.fps} fps` : "");
  const view = item.kind === "video"
    ? el("video", {src: item.url, controls: true, loop: true, preload: "none", playsinline: true,
      poster: posterUrl(runId, item.path), "aria-label": `${fileName(item.path)} (${size})`})
    : el("a", {href: item.url, target: "_blank", rel: "noopener"}, el("img", {src: item.url, alt: `${fileName(item.path)} (${size})`}));
  view.muted = true;
  return el("figure", {class: "media"}, view, el("figcaption", {}, `${fileName(item.path)} · ${size}`));
}

function shortValue(value) {
  if (Array.isArray(value)) return value.map(shortValue).join(", ");
  if (typeof value === "string") {
    const text = value.includes("/") && !value.includes(" ") ? fileName(value) : value;
    return text.length > 48 ? `${text.slice(0, 47)}…` : text;
  }
  return JSON.stringify(value);
}

function parseArguments(call) {
  try { return JSON.parse(call.arguments); } catch { return {}; }
}

// The one-line form of a tool call: tool(key arguments).
function callLine(call) {
  const args = parseArguments(call);
  const keys = KEY_ARGUMENTS.filter((key) => key in args).slice(0, 3);
  return `${call.name}(${keys.map((key) => `${key}: ${shortValue(args[key])}`).join(", ")})`;
}

const pretty = (text) => { try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; } };

export class RunCard {
  constructor(id, container) {
    this.id = id;
    this.lastSeq = -1;
    this.reviewSeq = null;
    this.calls = new Map();  // tool call id -> its folded line
    this.status = el("span", {class: "pill tone-plain"}, "connecting");
    this.title = el("h2", {class: "run-title"}, id);
    this.task = el("span", {class: "chip"});
    this.meta = el("span", {class: "muted small"});
    this.cancelButton = el("button", {type: "button", class: "cancel ghost", hidden: true, onclick: () => this.act("/cancel")}, "Cancel");
    this.resumeButton = el("button", {type: "button", class: "resume", hidden: true, onclick: () => this.act("/resume")}, "Resume");
    this.reviseButton = el("button", {type: "button", class: "revise", hidden: true, title: "Edit the storyboard, then go on: the shots your edit does not change are kept",
      onclick: () => this.act("/resume?revise=storyboard")}, "Revise storyboard");
    this.transcript = el("a", {href: `/files/${encodeURIComponent(id)}/transcript.html`, target: "_blank", rel: "noopener", class: "small"}, "Transcript");
    this.progressLabel = el("span", {class: "small"});
    this.progressBar = el("progress", {max: 1, value: 0, "aria-label": "progress of the working step"});
    this.progress = el("div", {class: "progress", hidden: true}, this.progressLabel, this.progressBar);
    this.result = el("figure", {class: "result", hidden: true});
    this.strip = el("div", {class: "strip"});
    this.stripBox = el("nav", {class: "strip-box", hidden: true, "aria-label": "Steps"}, this.strip);
    this.story = new StoryView(id, (node) => this.jump(node));
    this.records = el("ol", {class: "records"});
    this.review = el("div", {class: "review", hidden: true, role: "region", "aria-label": "Review"});
    this.error = el("div", {class: "error", role: "alert"});
    this.node = el("article", {class: "run", "data-run": id},
      el("header", {class: "run-head"},
        el("div", {class: "run-line"}, this.title, el("div", {class: "run-actions"}, this.cancelButton, this.reviseButton, this.resumeButton, this.transcript)),
        el("div", {class: "run-line"}, el("div", {class: "run-meta"}, this.status, this.task, this.meta)),
        this.progress),
      this.result, this.stripBox, this.story.node, this.records, this.review, this.error);
    container.append(this.node);
    this.connect();
  }

  connect() {
    this.source = new EventSource(runUrl(this.id, "/events"));
    this.source.addEventListener("record", (event) => this.addRecord(JSON.parse(event.data)));
    this.source.addEventListener("status", (event) => this.showStatus(JSON.parse(event.data)));
    this.source.addEventListener("progress", (event) => this.showProgress(JSON.parse(event.data)));
    this.source.addEventListener("end", (event) => {
      this.source.close();
      this.showStatus(JSON.parse(event.data));
      this.showProgress(null);
      this.onEnd?.(this);
    });
    this.source.onerror = () => { if (this.source.readyState !== EventSource.CLOSED) this.status.textContent = "reconnecting…"; };
  }

  close() {
    this.source.close();
    this.node.remove();
  }

  async act(action) {
    this.error.textContent = "";
    try {
      await api("POST", runUrl(this.id, action));
      if (action.startsWith("/resume") && this.source.readyState === EventSource.CLOSED) this.connect();
    } catch (error) {
      this.error.textContent = error.message;
    }
  }

  line(record, className, ...content) {
    return el("li", {class: `rec ${className}`, "data-seq": record.seq, "data-type": record.type.replace(/^StructuredMessage\[(.*)\]$/, "$1")}, ...content);
  }

  addRecord(record) {
    if (record.seq <= this.lastSeq) return;
    this.lastSeq = record.seq;
    const node = this.render(record);
    if (!node) return;
    this.records.append(node);
    keepUp();
  }

  render(record) {
    const type = record.type.replace(/^StructuredMessage\[(.*)\]$/, "$1");
    const content = record.message.content;
    const time = el("span", {class: "time"}, `+${record.elapsed.toFixed(1)} s`);
    if (type === "ToolCallRequestEvent" && Array.isArray(content)) {
      const lines = content.map((call) => this.toolCall(record, call, time));
      return lines.length === 1 ? lines[0] : el("li", {class: "rec calls"}, el("ol", {}, lines));
    }
    if (type === "ToolCallExecutionEvent" && Array.isArray(content)) {
      const orphans = content.filter((result) => !this.finishCall(result, record));
      if (!orphans.length) return null;
      return this.line(record, "call", el("details", {}, el("summary", {}, el("span", {class: "agent"}, record.source), " ",
        el("span", {class: "call-text"}, `result of ${orphans.map((r) => r.name).join(", ")}`), time),
        el("pre", {class: "json", tabindex: "0"}, orphans.map((r) => pretty(r.content)).join("\n"))));
    }
    if (type === "UserRequest") {
      return this.line(record, "user", el("div", {class: "bubble"}, content.text), ...record.media.map((m) => mediaView(m, this.id)));
    }
    if (type === "StepRequest") {
      const step = content.step + (content.iteration ? ` #${content.iteration + 1}` : "");
      return this.line(record, "step", el("span", {}, `Step `, el("strong", {}, step), ` · ${content.agent.replaceAll("_", " ")}`), time);
    }
    if (type === "RunFinished") {
      return this.line(record, "done", el("span", {}, record.text.replace(/^run /, "Run ")), time);
    }
    // a long edit (a whole storyboard) folds under the decision's line
    const long = type === "ReviewDecision" && content.text?.length > 160;
    const node = this.line(record, `msg ${record.kind}`,
      el("div", {class: "who"}, el("span", {class: "agent"}, record.source.replaceAll("_", " ")), time),
      el("div", {class: "text"}, long ? `decision on ${content.step}: ${content.decision} (by ${content.by})` : record.text),
      long ? el("details", {class: "long-text"}, el("summary", {class: "small"}, "the edit"),
        el("pre", {class: "json", tabindex: "0"}, pretty(content.text))) : null,
      ...record.media.map((m) => mediaView(m, this.id)));
    if (type === "StepResult") {
      this.addThumb(record, node);
      this.story.addResult(record, node);
    }
    return node;
  }

  toolCall(record, call, time) {
    const pre = el("pre", {class: "json", tabindex: "0"}, pretty(call.arguments));
    const took = el("span", {class: "took"}, "running…");
    const node = this.line(record, "call", el("details", {},
      el("summary", {}, el("span", {class: "agent"}, record.source.replaceAll("_", " ")), " ",
        el("code", {class: "call-text"}, callLine(call)), took, time),
      el("div", {class: "call-body"}, el("p", {class: "small muted"}, "arguments"), pre)));
    this.calls.set(call.id, {node, took, record});
    return node;
  }

  finishCall(result, record) {
    const call = this.calls.get(result.call_id);
    if (!call) return false;
    call.took.textContent = `${result.is_error ? "failed after" : "took"} ${seconds(record.elapsed - call.record.elapsed)}`;
    call.took.classList.toggle("failed", Boolean(result.is_error));
    $(".call-body", call.node).append(el("p", {class: "small muted"}, "result"), el("pre", {class: "json", tabindex: "0"}, pretty(result.content)));
    return true;
  }

  addThumb(record, node) {
    const content = record.message.content;
    const item = record.media[0];
    const label = content.step + (content.iteration ? ` #${content.iteration + 1}` : "");
    const picture = !item?.url ? el("span", {class: "thumb-text", "aria-hidden": "true"}, "Aa")
      : el("img", {src: item.kind === "video" ? posterUrl(this.id, item.path) : item.url, alt: ""});
    this.strip.append(el("button", {type: "button", class: "thumb", title: record.text, onclick: () => this.jump(node)},
      picture, el("span", {class: "thumb-label"}, label)));
    this.stripBox.hidden = false;
  }

  // Go to a record, and make it flash.
  jump(node) {
    node.scrollIntoView({behavior: "smooth", block: "center"});
    node.classList.remove("flash");
    void node.offsetWidth;
    node.classList.add("flash");
  }

  showStatus(run) {
    this.node.dataset.status = run.status;
    this.title.textContent = run.request.text || run.id;
    this.title.title = run.id;
    this.status.replaceWith(this.status = statusPill(run.status + (run.position ? ` · #${run.position} in queue` : "")));
    this.task.textContent = run.task || "planning";
    this.meta.textContent = [run.seconds ? `took ${seconds(run.seconds)}` : "", run.noise ? "noise (tiny preset)" : "",
      run.adapters ? `fine-tuned: ${run.adapters.split("/").slice(-2).join("/")}` : ""].filter(Boolean).join(" · ");
    this.cancelButton.hidden = !(ACTIVE.includes(run.status) && !run.resumable);
    this.resumeButton.hidden = !run.resumable;
    this.reviseButton.hidden = !run.revisable;
    this.error.textContent = run.error && !["finished", "running", "queued"].includes(run.status) ? run.error : "";
    if (run.result && this.result.hidden) {
      fill(this.result,
        el("video", {src: run.result, poster: run.poster, controls: true, loop: true, playsinline: true, preload: "metadata",
          "aria-label": `result of ${run.request.text}`}),
        el("figcaption", {}, el("a", {href: run.result, download: "", class: "small"}, "Download result.mp4")));
      $("video", this.result).muted = true;
      this.result.hidden = false;
    }
    this.story.show(run.storyboard);
    this.showReview(run.review);
  }

  showProgress(progress) {
    this.progress.hidden = !progress;
    if (!progress) return;
    const part = progress.part ? ` ${progress.part} of ${progress.parts}` : "";
    this.progressLabel.textContent = `${progress.label} (${progress.step.split("#")[0]}${part}): step ${progress.done} of ${progress.total}`;
    this.progressBar.max = progress.total;
    this.progressBar.value = progress.done;
  }

  showReview(review) {
    if (!review) {
      this.review.hidden = true;
      this.reviewSeq = null;
      this.story.stopEditing();
      return;
    }
    if (this.reviewSeq === review.seq) return;
    this.reviewSeq = review.seq;
    this.story.stopEditing();
    const note = el("span", {class: "error"});
    // sends a decision; null once taken, else the one line that says why it was refused
    const send = async (decision, text = null) => {
      note.textContent = "";
      try {
        await api("POST", runUrl(this.id, "/review"), {review: review.seq, decision, text});
        this.review.hidden = true;
        return null;
      } catch (error) {
        return note.textContent = error.message.split("\n")[0];
      }
    };
    const kind = review.format === "storyboard" && typeof review.output === "string" ? this.storyboardReview(review, send)
      : review.edit === "choice" ? this.pickReview(review, send) : this.textReview(review, send);
    const head = el("div", {class: "review-head"}, el("strong", {}, `Review · step ${review.step}`),
      review.options.includes("repeat") || !review.options.includes("edit")  // not at a revision (next or edit)
        ? el("span", {class: "muted small"}, `${review.repeats_left} repeat${review.repeats_left === 1 ? "" : "s"} left`) : null);
    const row = el("div", {class: "row"}, review.options.filter((option) => option !== "edit" || kind.edit).map((option) =>
      el("button", {type: "button", class: `decide ${option}${option === "next" ? " primary" : ""}${option === "stop" ? " danger" : ""}`,
        onclick: () => (kind.decide?.[option] || (() => send(option)))()}, kind.labels?.[option] || LABELS[option])),
    kind.extra, note);
    this.review.classList.toggle("compact", Boolean(kind.compact));
    fill(this.review, head, kind.place ? kind.place(row) : [kind.body, row]);
    this.review.hidden = false;
    if (kind.ready) kind.ready();  // the storyboard comes into view instead of the latest records
    else keepUp();
  }

  // Any step: its output, and its prompt (or what the SOP's `edit` names) to edit.
  textReview(review, send) {
    const edit = review.options.includes("edit")
      ? el("textarea", {class: "edit-text", rows: 2, "aria-label": `new ${review.edit}`}) : null;
    if (edit) edit.value = review.text || "";
    const output = typeof review.output === "string" ? el("blockquote", {}, review.output) : mediaView(review.output, this.id);
    return {body: [output, edit ? el("label", {class: "field block"}, `${review.edit} (for Edit)`, edit) : null],
      edit: true, decide: {edit: () => send("edit", edit.value)}};
  }

  // The storyboard: edited in place in the storyboard view; Approve sends it whole (as JSON) when it changed.
  storyboardReview(review, send) {
    const editable = review.options.includes("edit");
    const approve = el("span", {}, "Approve");
    const reset = el("button", {type: "button", class: "reset ghost", hidden: true, onclick: () => this.story.reset()}, "Undo edits");
    const hint = el("p", {class: "small review-hint"}, editable
      ? "Edit it above: any field, shots, characters, settings."
      : "No edit left: approve it or stop.");
    const next = async () => {
      const edited = this.story.edited();
      this.story.sending(edited);  // the run may say the review is decided before the answer comes
      const refused = await (edited ? send("edit", JSON.stringify(edited)) : send("next"));
      if (refused === null) this.story.stopEditing(edited);
      else {
        this.story.sending(null);
        this.story.markInvalid(refused);
      }
    };
    return {body: hint, extra: reset, labels: {next: approve, repeat: "Write again"}, decide: {next}, compact: true,
      ready: () => {
        const board = JSON.parse(review.output);
        if (!editable) return this.story.show(board);
        this.story.edit(board, (edited) => {
          approve.textContent = edited ? "Approve edits" : "Approve";
          reset.hidden = !edited;
        });
        this.story.node.scrollIntoView({block: "start"});
      }};
  }

  // A best-of pick: the candidates side by side beside the judges' votes and reasons; Pick N overrules them.
  pickReview(review, send) {
    const details = review.details || {};
    const canPick = review.options.includes("edit");
    const chosen = Number(review.text || details.chosen);
    const grid = el("div", {class: "candidates pick"}, review.candidates.map((item, i) => {
      const number = i + 1;
      const points = details.points?.[String(number)];
      const media = !item.url ? el("p", {class: "muted small"}, item.path)
        : item.kind === "video" ? el("video", {src: item.url, autoplay: true, loop: true, playsinline: true, preload: "auto",
          poster: posterUrl(this.id, item.path), "aria-label": `candidate ${number}`})
          : el("img", {src: item.url, alt: `candidate ${number}`});
      if (media.tagName === "VIDEO") media.muted = true;
      return el("figure", {class: `candidate${number === chosen ? " chosen" : ""}`, "data-candidate": number},
        el("span", {class: "number"}, String(number)), media,
        el("figcaption", {},
          el("span", {class: "muted small"}, points === undefined ? "" : `${points} point${points === 1 ? "" : "s"}`),
          number === chosen ? el("span", {class: "pill tone-ok"}, details.by === "person" ? "your pick" : "judges' pick")
            : canPick ? el("button", {type: "button", class: "pick", onclick: () => send("edit", String(number))}, `Pick ${number}`) : null));
    }));
    const judges = details.votes
      ? el("details", {class: "judges", open: matchMedia("(min-width: 641px)").matches},  // folded on a phone
        el("summary", {}, `The judges' votes (${details.votes.length})`), votes(details.votes))
      : null;
    return {place: (row) => [details.why ? el("p", {class: "small why"}, details.why) : null,
      el("div", {class: "pick-layout"}, el("div", {}, grid, row), judges)],
    labels: {next: `Keep ${chosen}`, repeat: "New candidates"}};
  }
}
