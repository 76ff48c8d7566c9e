"""The data-free loop (the paper's Algorithm 1): N iterations of make data -> select -> train, each generating with
the weights of the one before, and the held-out prompts scored and the validation loss computed after each.

    DIR/
        loop.json                  the loop's settings and the held-out prompts: a rerun must match them
        iter-1/                    a data folder (make.json, prompts.json, runs/, sets.json, selection.json, dataset/)
        iter-1/train/              the accepted samples it trains on, when some were held out for validation
        iter-1/adapters/           what iteration 1 trained (a `mora train` output; absent if nothing was accepted)
        validation/                held-out accepted samples (a dataset; from the first iteration with two or more)
        eval/iter-0/, eval/iter-1/ the held-out runs of each iteration (0: untrained), scores.json, validation.json
        metrics.json, .md, .png    held-out metrics and validation loss per iteration
        logs/                      the tracker's files (`--report-to`), the trainings' in iter-n/adapters/logs/

Resumable: the same call continues where it stopped; a finished stage is not done again (the candidates' batch
skips finished runs, the selection log keeps every vote and decision, a training with a card is done and one
without continues from its checkpoint, an iteration's evaluation with its scores.json is done).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mora_agents.batch import BatchRequest, run_batch
from mora_agents.batch.engine import Notify
from mora_agents.data.make import Checked, MakeConfig, check_inputs, check_settings, make_data
from mora_agents.data.report import summarise, write_report
from mora_agents.data.seeds import Seed
from mora_agents.data.select import Reviewer, read_log, select
from mora_agents.data.sets import SETS, read_sets
from mora_agents.errors import InputError, MoraError
from mora_agents.eval import Evaluator, load_target, resolve_metrics
from mora_agents.eval.metrics.summary import VIDEO_QUALITY
from mora_agents.eval.report import write_json
from mora_agents.judges import JudgeSpec
from mora_agents.media import atomic_path
from mora_agents.runs.runner import RunOptions
from mora_agents.train import TrainConfig, read_dataset, run_training, validation_loss
from mora_agents.train.dataset import copy_samples
from mora_agents.train.trainer import TRAIN_JSON, StepCallback, check_device, check_tracker

LOOP, SCORES, VALIDATION = "loop.json", "scores.json", "validation.json"
MAX_ITERATIONS = 100
VALIDATION_REPEATS = 4
"""Noise draws per validation sample (fixed seeds), averaged."""


@dataclass
class LoopConfig:
    iterations: int
    make: MakeConfig = field(default_factory=MakeConfig)
    """Per iteration n: its seed is make.seed + n and its iteration n."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Per iteration n: iteration n, starting from iteration n - 1's adapters; preset and device are the runs'."""
    no_human: bool = False
    frames: int = 4
    """K frames per candidate shown to the judges."""
    eval_share: float = 0.25
    """Without held-out prompts given: this share of the seeds (at least one) is held out, seeded; 0: no evaluation."""
    eval_metrics: list[str] = field(default_factory=lambda: [VIDEO_QUALITY])
    """`mora eval` metrics of the held-out videos (video_quality brings its six dimensions)."""
    val_share: float = 0.25
    """This share (at least one) of the first iteration's accepted samples that has two or more is held out of
    training, seeded, for the validation loss of every iteration; 0: none."""
    processes: int = 1
    """Processes of each training (GPUs, or CPU processes with --device cpu); the global batch stays the same."""


class LoopUI:
    """How the loop reports its progress (this one: silently). The command line draws bars."""

    def stage(self, text: str) -> None:
        pass

    @contextmanager
    def batch(self) -> Iterator[Notify | None]:
        yield None

    @contextmanager
    def training(self) -> Iterator[StepCallback | None]:
        yield None


@dataclass
class LoopResult:
    out: Path
    rows: list[dict[str, Any]]
    """Per iteration: {"iteration", "adapters", "accepted", "metrics", "validation_loss"}."""
    report: dict[str, Path]


def split_seeds(seeds: Sequence[Seed], share: float, seed: int) -> tuple[list[Seed], list[Seed]]:
    """(seeds for the writer, held-out seeds): `share` of them (at least one when share > 0), drawn with `seed`."""
    if not 0 <= share < 1:
        raise InputError(f"--eval-share {share:g}: from 0 to below 1")
    count = max(1, round(share * len(seeds))) if share > 0 else 0
    if len(seeds) - count < 1:
        raise InputError(f"--prompts: {len(seeds)} seed prompt(s) cannot both feed the writer and hold {count} out; "
                         "give more seeds, --eval-prompts FILE or --eval-share 0")
    held = set(random.Random(seed).sample(range(len(seeds)), count))
    return [s for i, s in enumerate(seeds) if i not in held], [s for i, s in enumerate(seeds) if i in held]


def _texts(seeds: Sequence[Seed]) -> list[dict[str, Any]]:
    return [{"text": s.text, "images": [str(p) for p in s.images], "videos": [str(p) for p in s.videos]} for s in seeds]


@dataclass
class HeldOut:
    """How held-out prompts are generated and scored: the same for every set of agents compared."""

    seeds: list[Seed]
    make: MakeConfig
    """The task, overrides and base seed of the runs: prompt i runs at make.seed + 1000 i (+ offset)."""
    checked: Checked
    """Each seed's task (of a task mix) and duration."""
    options: RunOptions
    metrics: list[str]
    ray: str | None = None

    def scores(self, folder: Path, adapters: Path | None, ui: LoopUI, label: str, offset: int = 0) -> dict[str, Any]:
        """The held-out prompts generated with `adapters` into `folder` and scored with `mora eval`'s evaluator
        (cached in folder/scores.json): metric -> mean, backend and count (`report.summarise`)."""
        if not (folder / SCORES).is_file():
            ui.stage(f"{label}: held-out prompts ({len(self.seeds)})" + (f" with {adapters}" if adapters else ", untrained"))
            runs = [(s, *self.checked.run_of(s)) for s in self.seeds]
            requests = [BatchRequest(s.text, task=task, images=s.images, videos=s.videos, duration=duration,
                                     seed=self.make.seed + 1000 * i + offset, overrides=self.make.overrides,
                                     name=f"held-out {i + 1}") for i, (s, task, duration) in enumerate(runs)]
            folder.parent.mkdir(parents=True, exist_ok=True)
            with ui.batch() as on_update:
                results = run_batch(requests, replace(self.options, out=folder, adapters=adapters), ray=self.ray,
                                    summary=folder / "summary.jsonl", on_update=on_update)
            if failed := [r for r in results if r.status != "finished"]:
                raise MoraError(f"{label}: {len(failed)} held-out run(s) did not finish (see "
                                f"{folder / 'summary.jsonl'}); run the same command again to retry them")
            evaluator = Evaluator(self.metrics)
            evaluations = [evaluator.evaluate(load_target(r.run_dir)) for r in results if r.run_dir]
            with atomic_path(folder / SCORES) as tmp:
                write_json(evaluations, tmp)
        return summarise(json.loads((folder / SCORES).read_text(encoding="utf-8")))


def open_tracker(kind: str, logs: Path, name: str, config: dict[str, Any]):
    """An accelerate tracker (`--report-to`) writing into `logs`, or None for `none`."""
    if kind == "none":
        return None
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    check_tracker(kind)
    tracker = LOGGER_TYPE_TO_CLASS[kind](name, logging_dir=str(logs)) if kind == "tensorboard" else \
        LOGGER_TYPE_TO_CLASS[kind](name)
    tracker.start()
    tracker.store_init_configuration({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                      for k, v in config.items()})
    return tracker


def make_candidates(seeds: Sequence[Seed], data: Path, make: MakeConfig, options: RunOptions, ray: str | None,
                    avoid: Sequence[str], ui: LoopUI, stage: str) -> None:
    """`make_data` into `data` unless all its candidates finished; MoraError if some did not."""
    if (data / SETS).is_file() and all(c.finished for s in read_sets(data) for c in s.candidates):
        return
    ui.stage(stage)
    with ui.batch() as on_update:
        result = make_data(seeds, data, make, options, ray=ray, avoid=avoid, on_update=on_update)
    if result.failed:
        raise MoraError(f"{data.name}: {len(result.failed)} candidate run(s) did not finish (see "
                        f"{data / 'runs' / 'summary.jsonl'}); run the same command again to retry them")


def select_all(data: Path, judges: Sequence[JudgeSpec] | None, reviewer: Reviewer | None, no_human: bool,
               frames: int, seed: int) -> int:
    """`select` every set of `data`; the number accepted. MoraError if some wait for a person."""
    counts = select(data, judges, reviewer=reviewer, no_human=no_human, frames=frames, seed=seed).count()
    if counts["undecided"]:
        raise MoraError(f"{data.name}: {counts['undecided']} candidate set(s) wait for a person: "
                        f"`mora data review {data}`, then run this command again")
    return counts["accepted"]


def train_once(adapters: Path, dataset: Path, config: TrainConfig, processes: int, ui: LoopUI, stage: str) -> None:
    """Train `config` on `dataset` into `adapters`, or continue the training a stop left there."""
    ui.stage(f"{stage} on {len(read_dataset(dataset))} sample(s)")
    with ui.training() as on_step:
        if (adapters / TRAIN_JSON).is_file():
            run_training(adapters, processes=processes, on_step=on_step)
        else:
            run_training(adapters, dataset, config, processes, on_step)


class _Loop:
    def __init__(self, out: Path, config: LoopConfig, options: RunOptions, train_seeds: list[Seed],
                 heldout: list[Seed], judges: Sequence[JudgeSpec] | None, reviewer: Reviewer | None,
                 ray: str | None, ui: LoopUI) -> None:
        self.out, self.config, self.options, self.seeds = out, config, options, train_seeds
        self.judges, self.reviewer, self.ray, self.ui = judges, reviewer, ray, ui
        checked = check_inputs([*train_seeds, *heldout], self.make_config(1), replace(options, out=out))
        self.heldout = HeldOut(heldout, config.make, checked, options, config.eval_metrics, ray)
        self.validation = out / "validation"

    def make_config(self, n: int) -> MakeConfig:
        return replace(self.config.make, seed=self.config.make.seed + n, iteration=n)

    def trained(self, n: int) -> int:
        """The iteration whose training iteration n ends with (its own, or an earlier one's when it accepted
        nothing); 0: the untrained agents."""
        while n and not (self.out / f"iter-{n}" / "adapters" / "card.json").is_file():
            n -= 1
        return n

    def adapters(self, n: int) -> Path | None:
        """The adapters iteration n ends with (None: the untrained agents)."""
        k = self.trained(n)
        return self.out / f"iter-{k}" / "adapters" if k else None

    def iteration(self, n: int) -> None:
        data, previous = self.out / f"iter-{n}", self.adapters(n - 1)
        total, make = self.config.iterations, self.config.make
        make_candidates(self.seeds, data, self.make_config(n), replace(self.options, adapters=previous), self.ray,
                        [s.text for s in self.heldout.seeds], self.ui,
                        f"iteration {n}/{total}: candidates ({make.count} prompts x {make.candidates})"
                        + (f", generating with {previous}" if previous else ""))
        self.ui.stage(f"iteration {n}/{total}: selection (judges, then people)")
        accepted = select_all(data, self.judges, None if self.config.no_human else self.reviewer, self.config.no_human,
                              self.config.frames, self.make_config(n).seed)
        if not accepted:
            self.ui.stage(f"iteration {n}/{total}: no sample accepted; the agents stay as they were")
        elif not (data / "adapters" / "card.json").is_file():
            config = self.config.train.model_copy(update={"iteration": n, "init_adapters": previous})
            train_once(data / "adapters", self.training_data(n), config, self.config.processes, self.ui,
                       f"iteration {n}/{total}: training")

    def training_data(self, n: int) -> Path:
        """Iteration n's training dataset: its accepted samples, less those held out for validation if this is the
        first iteration with two or more (written to train/ and validation/, atomically, train/ first)."""
        data = self.out / f"iter-{n}"
        if (data / "train").is_dir():
            return data / "train"
        samples = read_dataset(data / "dataset")
        count = max(1, round(self.config.val_share * len(samples))) if self.config.val_share > 0 else 0
        if (self.validation / "metadata.jsonl").is_file() or not count or len(samples) - count < 1:
            return data / "dataset"
        held = set(random.Random(self.make_config(n).seed).sample(range(len(samples)), count))
        for folder, chosen in ((data / "train", [s for i, s in enumerate(samples) if i not in held]),
                               (self.validation, [s for i, s in enumerate(samples) if i in held])):
            temporary = folder.with_name(f".{folder.name}.tmp")
            shutil.rmtree(temporary, ignore_errors=True)
            copy_samples(data / "dataset", chosen, temporary)
            temporary.rename(folder)
        return data / "train"

    def validation_loss(self, k: int) -> dict[str, float] | None:
        """The validation loss of iteration k's agents (0: untrained) at fixed noise (cached in
        eval/iter-k/validation.json); None without a validation set."""
        if not (self.validation / "metadata.jsonl").is_file():
            return None
        path = self.out / "eval" / f"iter-{k}" / VALIDATION
        if not path.is_file():
            self.ui.stage(f"validation loss of iteration {k}'s agents")
            losses = validation_loss(self.validation, self.config.train, adapters=self.adapters(k),
                                     seed=self.config.make.seed, repeats=VALIDATION_REPEATS)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(losses, indent=1) + "\n", encoding="utf-8")
        return json.loads(path.read_text(encoding="utf-8"))

    def row(self, n: int) -> dict[str, Any]:
        """Iteration n's agents (0: untrained) on the held-out prompts (fixed seeds: only the weights change) and the
        validation samples; an iteration that trained nothing has the scores of the one whose agents it kept."""
        k, adapters = self.trained(n), self.adapters(n)
        metrics = self.heldout.scores(self.out / "eval" / f"iter-{k}", adapters, self.ui, f"iteration {n}") \
            if self.heldout.seeds else {}
        accepted = read_log(self.out / f"iter-{n}").sets.values() if n else []
        return {"iteration": n, "adapters": str(adapters) if adapters else None,
                "accepted": sum(r.status == "accepted" for r in accepted) if n else None, "metrics": metrics,
                "validation_loss": self.validation_loss(k)}


def run_loop(seeds: Sequence[Seed], out: Path, config: LoopConfig, options: RunOptions, *,
             eval_seeds: Sequence[Seed] | None = None, judges: Sequence[JudgeSpec] | None = None,
             reviewer: Reviewer | None = None, ray: str | None = None, ui: LoopUI | None = None) -> LoopResult:
    """Run (or continue) the loop in `out`: `config.iterations` iterations from `seeds`.

    `options`: preset, device, memory profile and SOP folder of every run (the adapters are the loop's). Held-out
    prompts: `eval_seeds`, else `config.eval_share` of `seeds` (held out of the writer's examples too). `judges`
    and `reviewer` as in `select`: without a reviewer (and without `no_human`) sets the judges disagree on stop the
    loop until `mora data review` decides them. Bad input raises InputError before anything is written.
    """
    out, ui = Path(out).resolve(), ui or LoopUI()
    if not 1 <= config.iterations <= MAX_ITERATIONS:
        raise InputError(f"--iterations {config.iterations}: from 1 to {MAX_ITERATIONS}")
    if not 0 <= config.val_share < 1:
        raise InputError(f"--val-share {config.val_share:g}: from 0 to below 1")
    try:
        config = replace(config, eval_metrics=resolve_metrics(config.eval_metrics))
    except ValueError as e:
        raise InputError(f"--eval-metrics: {e}") from None
    if eval_seeds is not None:
        train_seeds, heldout = list(seeds), list(eval_seeds)
    else:
        train_seeds, heldout = split_seeds(seeds, config.eval_share, config.make.seed)
    options = replace(options, system=options.system or config.train.system)  # the runs' system trains
    train_config = TrainConfig.parse(**{**config.train.model_dump(), "preset": options.preset, "device": options.device,
                                        "memory_profile": options.memory_profile, "system": options.system})
    check_device(train_config.device)  # the runs take cuda:N too; training, after them, would not
    check_tracker(train_config.report_to)
    config = replace(config, train=train_config)
    record = {"seeds": _texts(train_seeds), "heldout": _texts(heldout),
              "make": {k: v for k, v in asdict(config.make).items() if k != "iteration"},
              "train": train_config.model_dump(mode="json", exclude={"iteration", "init_adapters", "device",
                                                                     "memory_profile", "report_to"}),
              "no_human": config.no_human, "frames": config.frames, "eval_metrics": config.eval_metrics,
              "val_share": config.val_share, "preset": options.preset, "sops_dir": str(options.sops_dir or "")}
    check_settings(out / LOOP, record, "`mora train --iterations`")
    loop = _Loop(out, config, options, train_seeds, heldout, judges, reviewer, ray, ui)
    if not (out / LOOP).is_file():
        with atomic_path(out / LOOP) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tracker = open_tracker(train_config.report_to, out / "logs", "mora-loop", {
        "iterations": config.iterations, **record["train"]})
    rows: list[dict[str, Any]] = []
    logged: dict[tuple[int, str], float] = {}
    try:
        for n in range(config.iterations + 1):
            if n:
                loop.iteration(n)
            rows = [loop.row(k) for k in range(n + 1)]  # cached; the first validation set fills the earlier rows
            report = write_report(out, rows)
            for row in rows if tracker is not None else []:
                values = {**{f"heldout/{m}": v["mean"] for m, v in row["metrics"].items()},
                          **{f"validation/{a}": v for a, v in (row["validation_loss"] or {}).items()}}
                if new := {k: v for k, v in values.items() if logged.get((row["iteration"], k)) != v}:
                    tracker.log(new, step=row["iteration"])
                    logged.update({(row["iteration"], k): v for k, v in new.items()})
    finally:
        if tracker is not None:
            tracker.finish()
    return LoopResult(out, rows, report)
