"""`mora data make`: new prompts written from seed prompts, and C candidate runs of each, as one batch.

    DATA/
        make.json        the stage's settings (task, counts, seeds, preset, adapters, ...): a rerun must match them
        prompts.json     the written prompts (written once; a rerun reads them, the LLM is not asked again)
        runs/            one normal run directory per candidate (the batch's folder) and summary.jsonl
        sets.json        the candidate sets and their intermediates (`mora_agents.data.sets`)

A stopped make continues with the same call: the batch finds its runs by their keys (finished ones are skipped,
the others continue from their last checkpoint), and nothing that is recorded is made again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from autogen_core.models import ChatCompletionClient

from mora_agents.batch import BatchRequest, BatchResult, run_batch
from mora_agents.batch.engine import Notify
from mora_agents.data.seeds import Seed
from mora_agents.data.sets import Candidate, CandidateSet, intermediates, write_sets
from mora_agents.data.writer import write_prompts
from mora_agents.errors import InputError
from mora_agents.inputs import MAX_SEED, check_attachment, check_number, check_seed
from mora_agents.media import atomic_path
from mora_agents.runs.runner import RunOptions, check_options, run_adapters
from mora_agents.sop.loader import find_sops

MAKE, PROMPTS, RUNS = "make.json", "prompts.json", "runs"
MAX_COUNT, MAX_CANDIDATES = 1000, 16
SEED_STRIDE = 1000
"""Candidate k's run seed is seed + 1000 k: a run's requests take seed, seed + 1, ..., so runs never share one."""


@dataclass
class MakeConfig:
    """What `mora data make` makes; the defaults are the paper's (16 prompts, 4 candidates each)."""

    task: str = "text_to_video"
    count: int = 16
    """S: prompts to write."""
    candidates: int = 4
    """C: runs per prompt, each with its own seed."""
    duration: float | None = None
    """Seconds per candidate; None: 1 (one segment, the clip the agents learn from) for tasks that take a duration."""
    seed: int = 0
    """Picks the writer's examples (and varies the offline writer) and the candidates' seeds."""
    iteration: int = 0
    """The data-free loop's iteration (recorded with every sample)."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool parameters of every candidate run (`--set`)."""


@dataclass
class MakeResult:
    sets: list[CandidateSet]
    results: list[BatchResult]

    @property
    def failed(self) -> list[BatchResult]:
        return [r for r in self.results if r.status != "finished"]


def _task_duration(config: MakeConfig, options: RunOptions, seeds: Sequence[Seed]) -> float | None:
    """Check the task (an SOP with an image-to-video step, whose media inputs the seeds fill) and the duration."""
    sops = {name: sop for name, (sop, _) in find_sops(options.sops_dir).items()}
    sop = sops.get(config.task)
    if sop is None:
        raise InputError(f"--task {config.task}: unknown task (tasks: {', '.join(sorted(sops))})")
    if not any(step.tool == "image_to_video" for step in sop.steps):
        trainable = sorted(n for n, s in sops.items() if any(step.tool == "image_to_video" for step in s.steps))
        raise InputError(f"--task {config.task}: its SOP has no image_to_video step, so its runs give no training "
                         f"sample (tasks that do: {', '.join(trainable)})")
    for kind in ("image", "video"):
        specs = [spec for spec in sop.inputs.values() if spec.type == kind]
        for seed in seeds:
            given = seed.images if kind == "image" else seed.videos
            if len(given) < sum(spec.required for spec in specs) or len(given) > len(specs):
                raise InputError(f"{seed.label}: task '{config.task}' takes {sum(s.required for s in specs)} to "
                                 f"{len(specs)} {kind}(s) (JSONL field '{kind}s'), this seed has {len(given)}")
            for path in given:
                check_attachment(path, kind, f"{seed.label}: {kind} {path}")
    spec = sop.inputs.get("duration")
    if spec is None:
        if config.duration is not None:
            raise InputError(f"--duration: task '{config.task}' takes no duration")
        return None
    duration = 1.0 if config.duration is None else config.duration
    return check_number(duration, f"--duration (task '{config.task}')", spec.min, spec.max)


def _record(config: MakeConfig, options: RunOptions, seeds: Sequence[Seed], duration: float | None) -> dict[str, Any]:
    """What a rerun must match."""
    return {"task": config.task, "count": config.count, "candidates": config.candidates, "duration": duration,
            "seed": config.seed, "iteration": config.iteration, "overrides": config.overrides,
            "preset": options.preset, "sops_dir": str(options.sops_dir or ""),
            **({"system": options.system} if options.system else {}),  # no system: records as before
            **{k: str(v) if v else None for k, v in run_adapters(options.adapters, options.preset).items()},
            "seeds": [{"text": s.text, "images": [str(p) for p in s.images], "videos": [str(p) for p in s.videos]}
                      for s in seeds]}


def check_inputs(seeds: Sequence[Seed], config: MakeConfig, options: RunOptions) -> dict[str, Any]:
    """The seeds, counts, task, duration and run options (`options.out` included); InputError. Returns the record
    a later call must match (make.json)."""
    if not 1 <= config.count <= MAX_COUNT:
        raise InputError(f"--count {config.count}: from 1 to {MAX_COUNT}")
    if not 2 <= config.candidates <= MAX_CANDIDATES:
        raise InputError(f"--candidates {config.candidates}: from 2 to {MAX_CANDIDATES} (a choice needs two)")
    check_seed(config.seed)
    check_options(options)
    return _record(config, options, seeds, _task_duration(config, options, seeds))


def check_make(seeds: Sequence[Seed], data_dir: Path, config: MakeConfig, options: RunOptions) -> dict[str, Any]:
    """Everything about a make that can be checked before work (InputError); returns its record for make.json."""
    record = check_inputs(seeds, config, replace(options, out=data_dir))
    check_settings(data_dir / MAKE, record, "`mora data make`")
    return record


def check_settings(path: Path, record: dict[str, Any], maker: str) -> None:
    """A rerun's settings against those recorded in `path` (InputError naming the first that differs); a folder
    without that file must be empty, since it belongs to something else."""
    folder = path.parent
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = next((key for key in record if old.get(key) != record[key]), None)
        if changed is not None:
            values = f"{old.get(changed)!r}, now {record[changed]!r}"
            raise InputError(f"--out {folder}: was started with other settings ({changed}: "
                             f"{values if len(values) <= 100 else 'differs'}); use the same ones to continue, or a "
                             "new folder")
    elif folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"--out {folder}: not empty and not made by {maker}; choose a new folder")


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _prompts(data_dir: Path, seeds: Sequence[Seed], config: MakeConfig, client: ChatCompletionClient | None,
             avoid: Sequence[str]) -> list[str]:
    """The written prompts: read back if written before, else asked of the LLM and recorded."""
    path = data_dir / PROMPTS
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["prompts"]
    from mora_agents.llm import client_from_env

    client = client or client_from_env()
    prompts = asyncio.run(write_prompts([s.text for s in seeds], config.count, config.seed, client, avoid))
    _write_json(path, {"prompts": prompts, "writer": type(client).__name__, "created": datetime.now().isoformat()})
    return prompts


def make_data(seeds: Sequence[Seed], data_dir: Path, config: MakeConfig, options: RunOptions, *,
              ray: str | None = None, client: ChatCompletionClient | None = None, avoid: Sequence[str] = (),
              on_update: Notify | None = None) -> MakeResult:
    """Write `config.count` prompts from `seeds` and run `config.candidates` candidates of each into `data_dir`.

    `options`: preset, device, memory profile, SOP folder and adapters of every candidate run (they go to
    DATA/runs). `client`: the prompt writer's LLM (default: the planner's, `client_from_env()`); `avoid`: prompts
    the writer must not copy (held-out ones). All candidates run as one `run_batch` (`ray` as there). Bad input
    raises InputError before anything is written; a second call with the same arguments continues a stopped one.
    Candidates that failed are in the result (`failed`); the same call runs them again.
    """
    data_dir = Path(data_dir).resolve()
    record = check_make(seeds, data_dir, config, options)
    if not (data_dir / MAKE).is_file():
        _write_json(data_dir / MAKE, {**record, "created": datetime.now().isoformat()})
    prompts = _prompts(data_dir, seeds, config, client, avoid)
    requests, slots = [], []
    for i, prompt in enumerate(prompts):
        seed = seeds[i % len(seeds)]
        for number in range(1, config.candidates + 1):
            set_id = f"p{i + 1:03d}"
            run_seed = (config.seed + SEED_STRIDE * (i * config.candidates + number - 1)) % (MAX_SEED + 1)
            requests.append(BatchRequest(prompt, task=config.task, images=seed.images, videos=seed.videos,
                                         duration=record["duration"], seed=run_seed, overrides=config.overrides,
                                         name=f"{set_id}-c{number}", label=f"{set_id} candidate {number}"))
            slots.append((set_id, number))
    runs = data_dir / RUNS
    results = run_batch(requests, replace(options, out=runs), ray=ray, summary=runs / "summary.jsonl",
                        on_update=on_update)
    sets: dict[str, CandidateSet] = {}
    for (set_id, number), result in zip(slots, results):
        assert result.run_dir is not None and result.seed is not None
        made = intermediates(result.run_dir, data_dir, options.preset) if result.status == "finished" else None
        candidate = Candidate(number=number, seed=result.seed, run_dir=str(result.run_dir.relative_to(data_dir)),
                              status=result.status, error=result.error, intermediates=made,
                              video=str(result.result.relative_to(data_dir)) if result.result else None)
        sets.setdefault(set_id, CandidateSet(id=set_id, prompt=result.request.text, task=config.task,
                                             candidates=[])).candidates.append(candidate)
    write_sets(data_dir, list(sets.values()))
    return MakeResult(list(sets.values()), results)
