"""Selection: judges rank each candidate set, people decide where they disagree, accepted samples become a dataset.

The rule (the paper's): when at least two judges voted and all their top-1 candidates agree, that candidate is
accepted; otherwise a person picks one or discards the set (with `no_human`, the set is discarded: the paper's
ablation). A set with fewer than two finished candidates is discarded. Judges that abstain do not vote.

`DATA/selection.json` records every set: the criteria and the orders of the candidates drawn per judge (and the
draw's seed), every vote, the decision, who made it and when, and the sample it became. It is written after every
change, atomically, so a stopped selection continues without asking judges (or people) again. Accepted candidates
are written into `DATA/dataset/` with `mora_agents.train.write_sample`.

People: any callable of a `PendingSet` that returns a candidate number, None (discard) or `SKIP` (decide later) is
a reviewer: `scripted_choices([...])`, `TextChooser(input)`, `mora data review` (a terminal with thumbnails), a
notebook function, the page of `mora serve` (`decide`: one set at a time).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from mora_agents.data.make import MAKE
from mora_agents.data.sets import Candidate, CandidateSet, read_sets, sample_frames
from mora_agents.errors import InputError, MoraError, read_problem
from mora_agents.judges import (
    CRITERIA,
    Judge,
    JudgeSpec,
    Showing,
    Vote,
    build_judges,
    describe_judges,
    judge_specs,
    rank_all,
)
from mora_agents.jsonl import read_json_object, text_lines
from mora_agents.media import atomic_path
from mora_agents.train import write_sample
from mora_agents.train.dataset import IMAGE_FIELDS, METADATA

SELECTION, DATASET = "selection.json", "dataset"
SKIP = "skip"
Choice = int | None | Literal["skip"]
"""A person's answer: a candidate number (accept it), None (discard the set) or SKIP (decide later)."""


class Decision(BaseModel):
    status: Literal["accepted", "discarded"]
    by: str
    """`judges`, `person:NAME` or `rule` (no person: too few candidates, or --no-human)."""
    candidate: int | None = None
    why: str
    time: str = Field(default_factory=lambda: datetime.now().isoformat())


class Draw(BaseModel):
    """What was drawn for a set's judges, from one seed (of the selection's seed and the set)."""

    seed: int
    criteria: dict[str, int]
    """Judge -> the criterion it ranks by."""
    orders: dict[str, list[int]] = {}
    """Judge -> the candidates in the order it is shown them (each judge its own; none in selections made before
    the shuffle)."""


class SetRecord(BaseModel):
    """Everything about one candidate set's selection."""

    id: str
    candidates: list[int]
    """The candidates shown (those whose runs finished)."""
    excluded: dict[str, str] = {}
    """Candidate -> why it was not shown (its run did not finish)."""
    frames: int
    draw: Draw
    votes: list[Vote] = []
    status: Literal["undecided", "accepted", "discarded"] = "undecided"
    decision: Decision | None = None
    sample: str | None = None
    """The dataset sample an accepted set became."""


class SelectionLog(BaseModel):
    judges: list[dict] = []
    """The judges as first configured (each vote names its own)."""
    sets: dict[str, SetRecord] = {}


@dataclass
class PendingSet:
    """A set that waits for a person: what to show and what the judges said."""

    id: str
    prompt: str
    enhanced_prompt: str
    candidates: list[Candidate]
    videos: dict[int, Path]
    votes: list[Vote]
    frames: int


Reviewer = Callable[[PendingSet], Choice]


@dataclass
class SelectionResult:
    log: SelectionLog
    dataset: Path

    def count(self) -> Counter[str]:
        return Counter(record.status for record in self.log.sets.values())


class ReviewStopped(Exception):
    """A person stopped reviewing (the sets left stay undecided)."""


# -- people ---------------------------------------------------------------------------------------------------


def parse_choice(answer: str, candidates: Sequence[int]) -> Choice:
    """`2` (accept candidate 2), `d` / `discard`, `s` / `skip`, `q` / `quit` (ReviewStopped); ValueError otherwise."""
    word = answer.strip().lower()
    if word.isdigit() and int(word) in candidates:
        return int(word)
    if word in ("d", "discard", "none"):
        return None
    if word in ("s", "skip"):
        return SKIP
    if word in ("q", "quit"):
        raise ReviewStopped("stopped by the person")
    raise ValueError(f"'{answer.strip()}' is not an answer: a candidate number ({', '.join(map(str, candidates))}), "
                     "d (discard the set), s (skip for now) or q (quit)")


def question(pending: PendingSet) -> str:
    return (f"set {pending.id}: pick a candidate ({', '.join(map(str, pending.videos))}), d to discard the set, "
            "s to skip it for now, q to quit > ")


class TextChooser:
    """A person answering in text through an input function (`input`, a notebook widget's reader, ...)."""

    def __init__(self, input_func: Callable[[str], str] = input, name: str = "human") -> None:
        self.input_func, self.name = input_func, name

    def __call__(self, pending: PendingSet) -> Choice:
        prompt = question(pending)
        while True:
            try:
                return parse_choice(self.input_func(prompt), list(pending.videos))
            except EOFError:
                raise ReviewStopped("the input ended") from None
            except ValueError as e:
                prompt = f"{e}\n{question(pending)}"


def scripted_choices(answers: Iterable[Choice], name: str = "script") -> Reviewer:
    """A reviewer giving `answers` in order; once they run out it stops (ReviewStopped)."""
    remaining = iter(answers)

    def choose(pending: PendingSet) -> Choice:
        try:
            return next(remaining)
        except StopIteration:
            raise ReviewStopped(f"review script: no answer left for set {pending.id}") from None

    choose.name = name  # type: ignore[attr-defined]
    return choose


# -- the selection --------------------------------------------------------------------------------------------


def _log_path(data_dir: Path) -> Path:
    return data_dir / SELECTION


def read_log(data_dir: Path) -> SelectionLog:
    """The selection log (empty before the first set is judged); InputError naming the file if it is damaged."""
    path = _log_path(data_dir)
    if not path.is_file():
        return SelectionLog()
    try:
        return SelectionLog.model_validate(json.loads(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: damaged ({read_problem(e)}); restore it, or delete it to judge every set "
                         "again") from None


def _save(data_dir: Path, log: SelectionLog) -> None:
    with atomic_path(_log_path(data_dir)) as tmp:
        tmp.write_text(log.model_dump_json(indent=1) + "\n", encoding="utf-8")


def _check_files(data_dir: Path, sets: Sequence[CandidateSet]) -> None:
    """Every finished candidate's files are there (InputError naming the first missing one)."""
    for cset in sets:
        for candidate in cset.finished():
            assert candidate.intermediates is not None and candidate.video is not None
            made = candidate.intermediates.model_dump()
            named = {"video": candidate.video, "clip": made["clip"], **{k: made[k] for k in IMAGE_FIELDS if made[k]}}
            for field_name, relative in named.items():
                if not (data_dir / relative).is_file():
                    raise InputError(f"{data_dir}: set {cset.id} candidate {candidate.number}: {field_name} "
                                     f"{relative}: no such file")


def _shared_prompt(cset: CandidateSet) -> tuple[str, dict[int, str]]:
    """The prompt every candidate was drawn from, and each one's own when their enhanced prompts differ."""
    enhanced = cset.enhanced_prompts()
    if len(set(enhanced.values())) == 1:
        return next(iter(enhanced.values())), {}
    return cset.prompt, enhanced


def draw_set(seed: int, set_id: str, specs: Sequence[JudgeSpec], candidates: Sequence[int]) -> Draw:
    """One criterion per judge, then one order of the candidates per judge, drawn independently from a seed of
    (selection seed, set)."""
    draw_seed = int(hashlib.sha256(f"{seed}:{set_id}".encode()).hexdigest()[:8], 16)
    rng = random.Random(draw_seed)
    criteria = {spec.label: rng.randint(1, len(CRITERIA)) for spec in specs}
    return Draw(seed=draw_seed, criteria=criteria,
                orders={spec.label: rng.sample(list(candidates), len(candidates)) for spec in specs})


def judge_set(showing: Showing, judges: Sequence[Judge], draw: Draw) -> list[Vote]:
    """Every judge's vote on one set, at once: each by its drawn criterion, shown the candidates in its drawn order
    (its answer mapped back to the candidates' numbers)."""
    return rank_all(judges, showing, draw.criteria, draw.orders)


def _judge(data_dir: Path, cset: CandidateSet, judges: Sequence[Judge], frames: int, seed: int) -> SetRecord:
    finished = cset.finished()
    draw = draw_set(seed, cset.id, [judge.spec for judge in judges], [c.number for c in finished])
    record = SetRecord(id=cset.id, candidates=[c.number for c in finished], frames=frames, draw=draw,
                       excluded={str(c.number): c.error or c.status for c in cset.candidates if not c.finished})
    if len(finished) < 2:
        record.status = "discarded"
        record.decision = Decision(status="discarded", by="rule", why=f"{len(finished)} candidate(s) finished; "
                                   "a choice needs two")
        return record
    prompt, own = _shared_prompt(cset)
    videos = {c.number: data_dir / str(c.video) for c in finished}
    showing = Showing(prompt, videos, {n: sample_frames(path, frames) for n, path in videos.items()}, own)
    record.votes = judge_set(showing, judges, draw)
    tops = {vote.judge: vote.top for vote in record.votes if vote.top is not None}
    if len(tops) >= 2 and len(set(tops.values())) == 1:
        top = next(iter(tops.values()))
        record.status = "accepted"
        record.decision = Decision(status="accepted", by="judges", candidate=top,
                                   why=f"all {len(tops)} voting judges ranked candidate {top} first")
    return record


def _why_undecided(record: SetRecord) -> str:
    tops = ", ".join(f"{v.judge}: {v.top}" for v in record.votes if v.top is not None) or "none"
    abstained = [v.judge for v in record.votes if v.top is None]
    return f"top-1 votes {tops}" + (f"; abstained: {', '.join(abstained)}" if abstained else "")


def _pending(data_dir: Path, cset: CandidateSet, record: SetRecord) -> PendingSet:
    prompt = _shared_prompt(cset)[0]
    shown = [c for c in cset.candidates if c.number in record.candidates]
    return PendingSet(cset.id, cset.prompt, prompt, shown, {c.number: data_dir / str(c.video) for c in shown},
                      record.votes, record.frames)


def _ask(reviewer: Reviewer, pending: PendingSet, record: SetRecord) -> bool:
    """Ask a person about an undecided set; False when they skip it."""
    choice = reviewer(pending)
    if choice == SKIP:
        return False
    by = f"person:{getattr(reviewer, 'name', 'human')}"
    if choice is None:
        record.decision = Decision(status="discarded", by=by, why=f"no acceptable candidate ({_why_undecided(record)})")
    elif choice in record.candidates:
        record.decision = Decision(status="accepted", by=by, candidate=choice,
                                   why=f"picked by a person ({_why_undecided(record)})")
    else:
        raise MoraError(f"reviewer: {choice!r} is not a candidate of set {record.id} ({record.candidates})")
    record.status = record.decision.status
    return True


def _existing_sample(dataset: Path, set_id: str) -> str | None:
    """The id of the sample a set already became (a write finished just before a stop), if any."""
    path = dataset / METADATA
    for number, line in enumerate(text_lines(path.read_bytes(), path) if path.is_file() else [], 1):
        try:
            item = json.loads(line) if line.strip() else {}
        except ValueError as e:
            raise InputError(f"{path}:{number}: damaged ({read_problem(e)})") from None
        if isinstance(item, dict) and item.get("set") == set_id:
            return str(item.get("id"))
    return None


def _write(data_dir: Path, cset: CandidateSet, record: SetRecord, iteration: int) -> str:
    """Write the accepted candidate into DATA/dataset (once): its intermediates and the selection's record."""
    dataset = data_dir / DATASET
    if (existing := _existing_sample(dataset, cset.id)) is not None:
        return existing
    assert record.decision is not None
    candidate = next(c for c in cset.candidates if c.number == record.decision.candidate)
    assert candidate.intermediates is not None
    made = candidate.intermediates.model_dump(exclude={"clip"})
    media = {name: data_dir / made.pop(name) for name in IMAGE_FIELDS if made[name]}
    sample = write_sample(
        dataset, clip=data_dir / candidate.intermediates.clip, task=cset.task, prompt=cset.prompt, seed=candidate.seed,
        **{k: v for k, v in made.items() if v is not None}, **media, iteration=iteration,
        votes=[vote.model_dump(mode="json") for vote in record.votes], decision=record.decision.model_dump(mode="json"),
        criteria=record.draw.model_dump(), run_dir=os.path.relpath(data_dir / candidate.run_dir, dataset), set=cset.id,
        candidate=candidate.number)
    return sample.id


def select(data_dir: Path, judges: Sequence[JudgeSpec] | None = None, *, reviewer: Reviewer | None = None,
           no_human: bool = False, frames: int = 4, seed: int | None = None,
           on_set: Callable[[SetRecord], None] | None = None) -> SelectionResult:
    """Select the candidates of a `mora data make` folder; accepted ones go to DATA/dataset.

    `judges`: their specs (default: `judge_specs()`, i.e. MORA_JUDGES or the offline metric judges). Sets the
    judges disagree on go to `reviewer` (a person); without one they stay undecided (`mora data review` decides
    them later), with `no_human` they are discarded. `frames`: K frames per candidate shown to the judges; `seed`
    draws the criteria (default: the make's seed). A set already judged is not judged again; a stopped selection continues where it was.
    `on_set` is called with each set's record as it changes.
    """
    if not 1 <= frames <= 16:
        raise InputError(f"--judge-frames {frames}: from 1 to 16")
    specs = list(judges) if judges is not None else judge_specs()
    data_dir = Path(data_dir).resolve()
    return _run(data_dir, specs, reviewer, no_human, frames, _made(data_dir)["seed"] if seed is None else seed, on_set)


def review(data_dir: Path, reviewer: Reviewer, on_set: Callable[[SetRecord], None] | None = None) -> SelectionResult:
    """People decide the sets the judges left undecided (no judge is asked); the same log and dataset as `select`."""
    data_dir = Path(data_dir).resolve()
    if not _log_path(data_dir).is_file():
        raise InputError(f"{data_dir}: no {SELECTION} (run `mora data select {data_dir}` first)")
    return _run(data_dir, None, reviewer, False, 0, 0, on_set)


def decide(data_dir: Path, set_id: str, choice: int | None, name: str = "web") -> SetRecord:
    """One person's decision on one undecided set, recorded as `mora data review` records it (through `review`):
    `choice` a candidate number (accepted, written into the dataset) or None (discarded). InputError when the set
    is unknown or not waiting for a person, or `choice` is not one of its candidates."""
    data_dir = Path(data_dir).resolve()
    record = read_log(data_dir).sets.get(set_id)
    if record is None or record.status != "undecided":
        state = "not judged yet" if record is None else record.status
        raise InputError(f"set {set_id}: {state}, not waiting for a person")
    if choice is not None and choice not in record.candidates:
        raise InputError(f"set {set_id}: {choice} is not one of its candidates "
                         f"({', '.join(map(str, record.candidates))})")

    def person(pending: PendingSet) -> Choice:
        return choice if pending.id == set_id else SKIP

    person.name = name  # type: ignore[attr-defined]
    return review(data_dir, person).log.sets[set_id]


def _made(data_dir: Path) -> dict:
    """The make's record (make.json)."""
    read_sets(data_dir)  # a data folder: InputError otherwise
    return read_json_object(data_dir / MAKE, ("seed", "iteration"))


def _run(data_dir: Path, specs: Sequence[JudgeSpec] | None, reviewer: Reviewer | None, no_human: bool, frames: int,
         seed: int, on_set: Callable[[SetRecord], None] | None) -> SelectionResult:
    """Judge the sets not yet judged (unless `specs` is None), then apply the rule, the person and the dataset."""
    sets = read_sets(data_dir)
    _check_files(data_dir, sets)
    iteration = _made(data_dir)["iteration"]
    log = read_log(data_dir)
    judges = build_judges(specs) if specs is not None else None
    if specs is not None:
        log.judges = log.judges or describe_judges(specs)
    notify = on_set or (lambda record: None)
    try:
        for cset in sets:
            record = log.sets.get(cset.id)
            if record is None and judges is not None:
                record = log.sets[cset.id] = _judge(data_dir, cset, judges, frames, seed)
                _save(data_dir, log)
                notify(record)
            if record is None:
                continue
            if record.status == "undecided" and no_human:
                record.status = "discarded"
                record.decision = Decision(status="discarded", by="rule", why="judges disagree and no person decides "
                                           f"(--no-human): {_why_undecided(record)}")
                _save(data_dir, log)
                notify(record)
            elif record.status == "undecided" and reviewer is not None and _ask(
                    reviewer, _pending(data_dir, cset, record), record):
                _save(data_dir, log)
                notify(record)
            if record.status == "accepted" and record.sample is None:
                record.sample = _write(data_dir, cset, record, iteration)
                _save(data_dir, log)
    except ReviewStopped:
        pass
    return SelectionResult(log, data_dir / DATASET)
