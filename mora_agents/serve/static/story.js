// A story's storyboard in the run view: its title, characters and settings (each with its reference sheet once
// drawn) and a card per shot (description, characters, setting, camera, duration, transition, and its keyframe and
// clip once made: a click goes to their message). It follows the run as its status and results come. At the
// storyboard's review the cards become a form: fields edited in place, shots, characters and settings added or
// removed; `edited()` is the storyboard as the person left it.

import {$, el, fileName, fill, plural, posterUrl, seconds} from "./core.js";

const TRANSITIONS = {cut: "cut", seine: "SEINE transition", flf2v: "first-last-frame clip"};
// the steps of the shipped story SOP whose outputs belong to the storyboard's entries (an iteration per entry)
const MADE = {sheets: "sheet", keyframes: "keyframe", clips: "clip"};

const same = (a, b) => a.toLowerCase() === b.toLowerCase();
const copy = (value) => JSON.parse(JSON.stringify(value));

export class StoryView {
  constructor(runId, jump) {
    this.runId = runId;
    this.jump = jump;  // goes to a record's node
    this.board = null;  // as shown
    this.reported = "";  // the storyboard as the run last reported it (JSON)
    this.made = new Map();  // "step#iteration" -> {item, node}: the latest result of each
    this.slots = new Map();  // "step#iteration" -> the node its thumbnail goes in
    this.draft = null;  // at the review: {start, board: the person's, changed: called on each change, sent}
    this.node = el("section", {class: "story", hidden: true, "aria-label": "Storyboard"});
  }

  // -- following the run ------------------------------------------------------------------------------------------

  // The storyboard as the run reports it; a change shows (an approved edit shows at once, until the run reports it).
  show(board) {
    if (!board || JSON.stringify(board) === this.reported) return;
    this.reported = JSON.stringify(board);
    this.board = board;
    if (!this.draft) this.render();
  }

  addResult(record, node) {
    const {step, iteration} = record.message.content;
    if (!(step in MADE) || !record.media[0]?.url) return;
    const key = `${step}#${iteration}`;
    this.made.set(key, {item: record.media[0], node});
    const slot = this.slots.get(key);
    if (slot) this.fillSlot(slot, key);
  }

  slot(step, index) {
    const key = `${step}#${index}`;
    const node = el("div", {class: `slot slot-${MADE[step]}`});
    this.slots.set(key, node);
    this.fillSlot(node, key);
    return node;
  }

  fillSlot(node, key) {
    const made = this.made.get(key);
    const what = MADE[key.split("#")[0]];
    if (!made) {
      fill(node, el("span", {class: "slot-empty"}, what));
      return;
    }
    const src = made.item.kind === "video" ? posterUrl(this.runId, made.item.path) : made.item.url;
    fill(node, el("button", {type: "button", class: "slot-thumb", title: `${what}: go to its message`,
      onclick: () => this.jump(made.node)},
    el("img", {src, alt: `${what} ${fileName(made.item.path)}`}),
    el("span", {class: "slot-label", "aria-hidden": "true"}, what),
    made.item.kind === "video" ? el("span", {class: "slot-play", "aria-hidden": "true"}, "▶") : null));
  }

  render() {
    const board = this.board;
    this.slots.clear();
    this.node.hidden = !board;
    if (!board) return;
    const total = board.shots.reduce((sum, shot) => sum + Number(shot.duration || 0), 0);
    const cast = [...board.characters.map((c) => ["character", c]), ...board.settings.map((s) => ["setting", s])];
    fill(this.node,
      el("div", {class: "story-head"},
        el("span", {class: "eyebrow"}, "Storyboard"),
        el("h3", {class: "story-title"}, board.title),
        el("span", {class: "muted small"}, `${plural(board.shots.length, "shot")} · ${seconds(total)}`)),
      el("ul", {class: "cast", "aria-label": "Characters and settings"}, cast.map(([kind, entry], i) =>
        el("li", {class: `cast-card ${kind}`, "data-name": entry.name},
          this.slot("sheets", i),
          el("div", {class: "cast-text"},
            el("div", {class: "cast-name"}, el("strong", {}, entry.name), el("span", {class: `kind ${kind}`}, kind)),
            el("p", {}, entry.description))))),
      el("ol", {class: "shots"}, board.shots.map((shot, i) =>
        el("li", {class: "shot", "data-shot": i + 1},
          el("div", {class: "shot-media"}, this.slot("keyframes", i), this.slot("clips", i)),
          el("div", {class: "shot-body"},
            el("div", {class: "shot-head"}, el("strong", {class: "shot-number"}, `Shot ${i + 1}`),
              el("span", {class: "chip"}, seconds(Number(shot.duration))),
              i ? el("span", {class: "chip transition", title: "how it follows the shot before"}, `after a ${TRANSITIONS[shot.transition] || shot.transition}`) : null),
            el("p", {class: "shot-text"}, shot.description),
            el("dl", {class: "facts"},
              el("dt", {}, "Characters"), el("dd", {class: "characters"}, shot.characters.length ? shot.characters.join(", ") : "none"),
              el("dt", {}, "Setting"), el("dd", {class: "setting"}, shot.setting),
              el("dt", {}, "Camera"), el("dd", {class: "camera"}, shot.camera)))))));
  }

  // -- editing at the review --------------------------------------------------------------------------------------

  // Edit a copy of `board`; `changed(edited)` is called after every change.
  edit(board, changed) {
    this.draft = {start: copy(board), board: copy(board), changed};
    this.renderForm();
  }

  // The storyboard as the person left it, or null when unchanged.
  edited() {
    if (!this.draft) return null;
    return JSON.stringify(this.draft.board) === JSON.stringify(this.draft.start) ? null : this.draft.board;
  }

  // Point at the field a refusal names (`shots.1.camera: ...`, as the server's checks say), if it names one.
  markInvalid(message) {
    for (const node of this.node.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    const match = /^(characters|settings|shots)\.(\d+)\.(\w+)/.exec(message || "");
    const field = match && this.node.querySelector(`[data-key="${match[1].slice(0, -1)}-${match[2]}-${match[3]}"]`);
    if (!field) return;
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }

  reset() {
    this.draft.board = copy(this.draft.start);
    this.renderForm();
  }

  // The edit being sent (null: none): once the review is decided it shows until the run reports it.
  sending(board) {
    if (this.draft) this.draft.sent = board;
  }

  // Back to following the run; `board`: what to show until the run reports its storyboard again.
  stopEditing(board = null) {
    board ||= this.draft?.sent;
    if (!this.draft && !board) return;
    this.draft = null;
    if (board) this.board = board;
    this.render();
  }

  touch(rebuild = false) {
    if (rebuild) this.renderForm();
    this.draft.changed(this.edited());
  }

  renderForm() {
    const board = this.draft.board;
    const focused = this.node.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    this.slots.clear();
    this.node.hidden = false;
    const input = (key, label, value, set, attrs = {}) => {
      const node = el(attrs.rows ? "textarea" : "input", {"data-key": key, ...attrs, rows: attrs.rows || null});
      node.value = value;
      node.addEventListener("input", () => { set(node.value); this.touch(); });
      return el("label", {class: "edit-field"}, el("span", {}, label), node);
    };
    const cast = (kind, list) => list.map((entry, i) => {
      const used = kind === "setting" ? board.shots.findIndex((shot) => same(shot.setting, entry.name)) : -1;
      const name = input(`${kind}-${i}-name`, "Name", entry.name, (value) => { entry.name = value; });
      const before = {name: entry.name};
      $("input", name).addEventListener("change", () => this.rename(kind, before, entry));
      return el("li", {class: `cast-card ${kind} editing`, "data-name": entry.name},
        el("div", {class: "cast-name"}, el("span", {class: `kind ${kind}`}, kind),
          el("button", {type: "button", class: "ghost small-button remove-entry", "data-key": `${kind}-${i}-remove`,
            disabled: (kind === "setting" && (list.length === 1 || used >= 0)) || null,
            title: used >= 0 ? `the setting of shot ${used + 1}: change that shot first` : null,
            "aria-label": `remove the ${kind} ${entry.name}`, onclick: () => this.removeEntry(kind, i)}, "Remove")),
        name,
        input(`${kind}-${i}-description`, "Description", entry.description, (value) => { entry.description = value; },
          {rows: 2, placeholder: kind === "character" ? "look: who, age, build, clothes, colours" : "look: what it is, light, colours, time of day"}));
    });
    fill(this.node,
      el("div", {class: "story-head editing"},
        el("span", {class: "eyebrow"}, "Storyboard · editing"),
        input("title", "Title", board.title, (value) => { board.title = value; }, {class: "title-input"})),
      el("ul", {class: "cast", "aria-label": "Characters and settings"},
        cast("character", board.characters), cast("setting", board.settings),
        el("li", {class: "cast-add"},
          el("button", {type: "button", class: "add-character", "data-key": "add-character", onclick: () => this.addEntry("character")}, "+ Character"),
          el("button", {type: "button", class: "add-setting", "data-key": "add-setting", onclick: () => this.addEntry("setting")}, "+ Setting"))),
      el("ol", {class: "shots"}, board.shots.map((shot, i) => this.shotForm(shot, i))),
      el("div", {class: "row"}, el("button", {type: "button", class: "add-shot", "data-key": "add-shot",
        onclick: () => this.addShot(board.shots.length - 1)}, "+ Add a shot at the end")));
    if (focused) this.node.querySelector(`[data-key="${focused}"]`)?.focus();
  }

  shotForm(shot, i) {
    const board = this.draft.board;
    const key = (field) => `shot-${i}-${field}`;
    const field = (name, label, control) => {
      control.dataset.key = key(name);
      control.classList.add(`shot-${name}`);
      return el("label", {class: `edit-field ${name}`}, el("span", {}, label), control);
    };
    const description = el("textarea", {rows: 2, placeholder: "what happens in the shot"});
    description.value = shot.description;
    description.addEventListener("input", () => { shot.description = description.value; this.touch(); });
    const camera = el("input", {placeholder: "shot size and camera motion"});
    camera.value = shot.camera;
    camera.addEventListener("input", () => { shot.camera = camera.value; this.touch(); });
    const duration = el("input", {type: "number", min: 0.5, max: 20, step: 0.5, inputmode: "decimal"});
    duration.value = shot.duration;
    duration.addEventListener("input", () => { shot.duration = duration.value === "" ? duration.value : Number(duration.value); this.touch(); });
    const setting = el("select", {}, board.settings.map((s) => el("option", {value: s.name}, s.name)));
    setting.value = board.settings.find((s) => same(s.name, shot.setting))?.name ?? "";
    setting.addEventListener("change", () => { shot.setting = setting.value; this.touch(true); });
    const transition = el("select", {}, Object.entries(TRANSITIONS).map(([value, text]) => el("option", {value}, text)));
    transition.value = shot.transition;
    transition.addEventListener("change", () => { shot.transition = transition.value; this.touch(); });
    const who = board.characters.map((c) => {
      const box = el("input", {type: "checkbox", "data-key": key(`character-${c.name}`)});
      box.checked = shot.characters.some((n) => same(n, c.name));
      box.addEventListener("change", () => {
        shot.characters = board.characters.filter((d) => d === c ? box.checked : shot.characters.some((n) => same(n, d.name))).map((d) => d.name);
        this.touch();
      });
      return el("label", {class: "check"}, box, c.name);
    });
    return el("li", {class: "shot editing", "data-shot": i + 1},
      el("div", {class: "shot-head"}, el("strong", {class: "shot-number"}, `Shot ${i + 1}`), el("span", {class: "grow"}),
        el("button", {type: "button", class: "ghost small-button add-after", "data-key": key("add"),
          "aria-label": `add a shot after shot ${i + 1}`, onclick: () => this.addShot(i)}, "+ After"),
        el("button", {type: "button", class: "ghost small-button remove-shot danger", "data-key": key("remove"),
          disabled: board.shots.length === 1 || null, "aria-label": `remove shot ${i + 1}`, onclick: () => this.removeShot(i)}, "Remove")),
      field("description", "Description", description),
      el("fieldset", {class: "edit-field who"}, el("legend", {}, "Characters"),
        who.length ? el("div", {class: "checks"}, who) : el("span", {class: "muted small"}, "no character")),
      el("div", {class: "field-pair"}, field("setting", "Setting", setting), field("duration", "Seconds", duration)),
      field("camera", "Camera", camera),
      i ? field("transition", "Comes after the shot before by", transition) : null);
  }

  // A character or setting renamed: the shots that named it follow.
  rename(kind, before, entry) {
    for (const shot of this.draft.board.shots) {
      if (kind === "character") shot.characters = shot.characters.map((n) => same(n, before.name) ? entry.name : n);
      else if (same(shot.setting, before.name)) shot.setting = entry.name;
    }
    before.name = entry.name;
    this.touch(true);
  }

  addEntry(kind) {
    const list = kind === "character" ? this.draft.board.characters : this.draft.board.settings;
    const taken = [...this.draft.board.characters, ...this.draft.board.settings].map((e) => e.name.toLowerCase());
    let n = list.length + 1;
    while (taken.includes(`${kind} ${n}`)) n += 1;
    list.push({name: `${kind[0].toUpperCase()}${kind.slice(1)} ${n}`, description: ""});
    this.touch(true);
    this.node.querySelector(`[data-key="${kind}-${list.length - 1}-description"]`)?.focus();
  }

  removeEntry(kind, index) {
    const board = this.draft.board;
    const [gone] = (kind === "character" ? board.characters : board.settings).splice(index, 1);
    if (kind === "character") for (const shot of board.shots) shot.characters = shot.characters.filter((n) => !same(n, gone.name));
    this.touch(true);
  }

  addShot(after) {
    const shots = this.draft.board.shots;
    shots.splice(after + 1, 0, {...copy(shots[after]), description: "", transition: "cut"});
    this.touch(true);
    this.node.querySelector(`[data-key="shot-${after + 1}-description"]`)?.focus();
  }

  removeShot(index) {
    this.draft.board.shots.splice(index, 1);
    this.touch(true);
  }
}
