"""The data-free loop (the paper's Algorithm 1): N iterations of make data -> select -> train, each generating with
the weights of the one before, and the held-out prompts scored after each.

    DIR/
        loop.json                  the loop's settings and the held-out prompts: a rerun must match them
        iter-1/                    a data folder (make.json, prompts.json, runs/, sets.json, selection.json, dataset/)
        iter-1/adapters/           what iteration 1 trained (a `mora train` output; absent if nothing was accepted)
        eval/iter-0/, eval/iter-1/ the held-out runs of each iteration (0: untrained) and their scores.json
        metrics.json, .md, .png    held-out metrics per iteration

Resumable: the same call continues where it stopped; a finished stage is not done again (the candidates' batch
skips finished runs, the selection log keeps every vote and decision, a training with a card is done and one
without continues from its checkpoint, an iteration's evaluation with its scores.json is done).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mora_agents.batch import BatchRequest, run_batch
from mora_agents.batch.engine import Notify
from mora_agents.data.make import MakeConfig, check_inputs, check_settings, make_data
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
from mora_agents.train import TrainConfig, resume, train
from mora_agents.train.trainer import TRAIN_JSON, StepCallback, check_device

LOOP, SCORES = "loop.json", "scores.json"
MAX_ITERATIONS = 100


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
    """Per evaluated iteration: {"iteration", "adapters", "accepted", "metrics"}."""
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


class _Loop:
    def __init__(self, out: Path, config: LoopConfig, options: RunOptions, train_seeds: list[Seed],
                 heldout: list[Seed], judges: Sequence[JudgeSpec] | None, reviewer: Reviewer | None,
                 ray: str | None, ui: LoopUI) -> None:
        self.out, self.config, self.options, self.seeds, self.heldout = out, config, options, train_seeds, heldout
        self.judges, self.reviewer, self.ray, self.ui = judges, reviewer, ray, ui
        self.checked = check_inputs([*train_seeds, *heldout], self.make_config(1), replace(options, out=out))

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
        total = self.config.iterations
        made = (data / SETS).is_file() and all(c.finished for s in read_sets(data) for c in s.candidates)
        if not made:
            self.ui.stage(f"iteration {n}/{total}: candidates ({self.config.make.count} prompts x "
                          f"{self.config.make.candidates})" + (f", generating with {previous}" if previous else ""))
            with self.ui.batch() as on_update:
                result = make_data(self.seeds, data, self.make_config(n), replace(self.options, adapters=previous),
                                   ray=self.ray, avoid=[s.text for s in self.heldout], on_update=on_update)
            if result.failed:
                raise MoraError(f"iteration {n}: {len(result.failed)} candidate run(s) did not finish (see "
                                f"{data / 'runs' / 'summary.jsonl'}); run the same command again to retry them")
        self.ui.stage(f"iteration {n}/{total}: selection (judges, then people)")
        counts = select(data, self.judges, reviewer=None if self.config.no_human else self.reviewer,
                        no_human=self.config.no_human, frames=self.config.frames,
                        seed=self.make_config(n).seed).count()
        if counts["undecided"]:
            raise MoraError(f"iteration {n}: {counts['undecided']} candidate set(s) wait for a person: "
                            f"`mora data review {data}`, then run this command again")
        adapters = data / "adapters"
        if not counts["accepted"]:
            self.ui.stage(f"iteration {n}/{total}: no sample accepted; the agents stay as they were")
        elif not (adapters / "card.json").is_file():
            self.ui.stage(f"iteration {n}/{total}: training on {counts['accepted']} sample(s)")
            config = self.config.train.model_copy(update={"iteration": n, "init_adapters": previous})
            with self.ui.training() as on_step:
                if (adapters / TRAIN_JSON).is_file():
                    resume(adapters, on_step)
                else:
                    train(data / "dataset", adapters, config, on_step)

    def evaluate(self, n: int) -> dict[str, Any]:
        """Iteration n's held-out videos (fixed seeds: only the weights change) and their `mora eval` scores; an
        iteration that trained nothing has the scores of the one whose agents it kept (`eval/iter-k`)."""
        folder, adapters = self.out / "eval" / f"iter-{self.trained(n)}", self.adapters(n)
        if not (folder / SCORES).is_file():
            self.ui.stage(f"iteration {n}: held-out prompts ({len(self.heldout)})"
                          + (f" with {adapters}" if adapters else ", untrained"))
            runs = [(s, *self.checked.run_of(s)) for s in self.heldout]  # each seed's task (of a mix) and duration
            requests = [BatchRequest(s.text, task, images=s.images, videos=s.videos, duration=duration,
                                     seed=self.config.make.seed + 1000 * i, overrides=self.config.make.overrides,
                                     name=f"held-out {i + 1}") for i, (s, task, duration) in enumerate(runs)]
            folder.parent.mkdir(exist_ok=True)
            with self.ui.batch() as on_update:
                results = run_batch(requests, replace(self.options, out=folder, adapters=adapters), ray=self.ray,
                                    summary=folder / "summary.jsonl", on_update=on_update)
            if failed := [r for r in results if r.status != "finished"]:
                raise MoraError(f"iteration {n}: {len(failed)} held-out run(s) did not finish (see "
                                f"{folder / 'summary.jsonl'}); run the same command again to retry them")
            evaluator = Evaluator(self.config.eval_metrics)
            evaluations = [evaluator.evaluate(load_target(r.run_dir)) for r in results if r.run_dir]
            with atomic_path(folder / SCORES) as tmp:
                write_json(evaluations, tmp)
        scores = json.loads((folder / SCORES).read_text(encoding="utf-8"))
        accepted = read_log(self.out / f"iter-{n}").sets.values() if n else []
        return {"iteration": n, "adapters": str(adapters) if adapters else None,
                "accepted": sum(r.status == "accepted" for r in accepted) if n else None, "metrics": summarise(scores)}


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
    try:
        config = replace(config, eval_metrics=resolve_metrics(config.eval_metrics))
    except ValueError as e:
        raise InputError(f"--eval-metrics: {e}") from None
    if eval_seeds is not None:
        train_seeds, heldout = list(seeds), list(eval_seeds)
    else:
        train_seeds, heldout = split_seeds(seeds, config.eval_share, config.make.seed)
    train_config = config.train.model_copy(update={"preset": options.preset, "device": options.device,
                                                   "memory_profile": options.memory_profile})
    check_device(train_config.device)  # the runs take cuda:N too; training, after them, would not
    config = replace(config, train=train_config)
    record = {"seeds": _texts(train_seeds), "heldout": _texts(heldout),
              "make": {k: v for k, v in asdict(config.make).items() if k != "iteration"},
              "train": train_config.model_dump(mode="json", exclude={"iteration", "init_adapters", "device",
                                                                     "memory_profile"}),
              "no_human": config.no_human, "frames": config.frames, "eval_metrics": config.eval_metrics,
              "preset": options.preset, "sops_dir": str(options.sops_dir or "")}
    check_settings(out / LOOP, record, "`mora train --iterations`")
    loop = _Loop(out, config, options, train_seeds, heldout, judges, reviewer, ray, ui)
    if not (out / LOOP).is_file():
        with atomic_path(out / LOOP) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    rows: list[dict[str, Any]] = []
    report: dict[str, Path] = {}

    def evaluated(n: int) -> None:
        nonlocal report
        if heldout:
            rows.append(loop.evaluate(n))
            report = write_report(out, rows)

    evaluated(0)
    for n in range(1, config.iterations + 1):
        loop.iteration(n)
        evaluated(n)
    return LoopResult(out, rows, report)
