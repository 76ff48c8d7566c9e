"""`mora data make`: new prompts written from seed prompts, and C candidate runs of each, as one batch.

    DATA/
        make.json        the stage's settings (task, counts, seeds, preset, adapters, ...): a rerun must match them
        prompts.json     the written prompts and their tasks (written once; a rerun reads them, the LLM is not asked
                         again)
        runs/            one normal run directory per candidate (the batch's folder) and summary.jsonl
        sets.json        the candidate sets and their intermediates (`mora_agents.data.sets`)

The task may be a mix (`text_to_video,edit_video`): prompt i belongs to task i mod k, is written from the seeds
that fit that task's inputs, as a scene or, for a task whose prompt is an edit step's instruction, as an edit
instruction, and its candidates take their media from those seeds. Everything is checked before anything is
written, each task's runs as the batch will check them (`--set` included). A stopped make continues with the same
call: the batch finds its runs by their keys (finished ones are skipped, the others continue from their last
checkpoint), and nothing that is recorded is made again.
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
from mora_agents.batch.jobs import Notify
from mora_agents.data.seeds import Seed
from mora_agents.data.sets import Candidate, CandidateSet, intermediates, write_sets
from mora_agents.data.writer import write_prompts
from mora_agents.errors import InputError
from mora_agents.inputs import MAX_SEED, check_attachment, check_number, check_seed
from mora_agents.media import atomic_path
from mora_agents.jsonl import read_json_object
from mora_agents.runs.runner import RunOptions, check_options, run_adapters, validate_request
from mora_agents.settings import use_settings
from mora_agents.sop.loader import find_sops
from mora_agents.sop.schema import SOP

MAKE, PROMPTS, RUNS = "make.json", "prompts.json", "runs"
MAX_COUNT, MAX_CANDIDATES = 1000, 16
SEED_STRIDE = 1000
"""Candidate k's run seed is seed + 1000 k: a run's requests take seed, seed + 1, ..., so runs never share one."""


@dataclass
class MakeConfig:
    """What `mora data make` makes; the defaults are the paper's (16 prompts, 4 candidates each)."""

    task: str = "text_to_video"
    """The task (SOP) of the candidates, or a mix separated by commas (`text_to_video,edit_video`): prompt i is
    written for, and its candidates run as, task i mod k of the k."""
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

    @property
    def tasks(self) -> list[str]:
        return [name.strip() for name in self.task.split(",") if name.strip()]


@dataclass
class MakeResult:
    sets: list[CandidateSet]
    results: list[BatchResult]

    @property
    def failed(self) -> list[BatchResult]:
        return [r for r in self.results if r.status != "finished"]


@dataclass
class MakeTask:
    """One task of a make, checked: its SOP, the seeds that fit its inputs, its duration and its kind of prompt."""

    name: str
    seeds: list[Seed]
    """The seeds whose media fit its inputs: the writer's examples for its prompts, and its runs' media."""
    duration: float | None
    kind: str
    """What its prompt is: `edit` (an edit step's instruction) or `scene` (the writer's kinds)."""


def _misfit(sop: SOP, seed: Seed) -> str | None:
    """Why `seed`'s media do not fit the task's inputs (None: they fit)."""
    for kind in ("image", "video"):
        specs = [spec for spec in sop.inputs.values() if spec.type == kind]
        given = seed.images if kind == "image" else seed.videos
        if len(given) < sum(spec.required for spec in specs) or len(given) > len(specs):
            return (f"task '{sop.name}' takes {sum(s.required for s in specs)} to {len(specs)} {kind}(s) (JSONL field "
                    f"'{kind}s'), this seed has {len(given)}")
    return None


def _prompt_kind(sop: SOP) -> str:
    """`edit` when the task's prompt is the instruction of an edit step (InstructPix2Pix's), else `scene`."""
    return "edit" if any(step.tool == "edit_image" and "inputs.prompt" in str(step.args.get("instruction", ""))
                         for step in sop.steps) else "scene"


def _tasks(config: MakeConfig, options: RunOptions, seeds: Sequence[Seed]) -> list[MakeTask]:
    """Check the tasks (SOPs with an image-to-video step; every seed fits one, each has a seed that fits it), the
    seeds' media and the duration."""
    sops = {name: sop for name, (sop, _) in find_sops(options.sops_dir).items()}
    names = config.tasks
    if not names or len(set(names)) < len(names):
        raise InputError(f"--task {config.task}: give one task, or several different ones separated by commas")
    if config.count < len(names):
        raise InputError(f"--count {config.count}: a mix of {len(names)} tasks needs a prompt for each")
    for name in names:
        if name not in sops:
            raise InputError(f"--task {name}: unknown task (tasks: {', '.join(sorted(sops))})")
        if not any(step.tool == "image_to_video" for step in sops[name].steps):
            trainable = sorted(n for n, s in sops.items() if any(step.tool == "image_to_video" for step in s.steps))
            raise InputError(f"--task {name}: its SOP has no image_to_video step, so its runs give no training "
                             f"sample (tasks that do: {', '.join(trainable)})")
    for seed in seeds:
        misfits = [_misfit(sops[name], seed) for name in names]
        if all(misfits):
            raise InputError(f"{seed.label}: {misfits[0]}" if len(names) == 1
                             else f"{seed.label}: fits none of the tasks ({'; '.join(map(str, misfits))})")
        for kind, paths in (("image", seed.images), ("video", seed.videos)):
            for path in paths:
                check_attachment(path, kind, f"{seed.label}: {kind} {path}")
    timed = [name for name in names if "duration" in sops[name].inputs]
    if config.duration is not None and not timed:
        raise InputError(f"--duration: {'task' if len(names) == 1 else 'none of the tasks'} "
                         f"'{config.task}' takes no duration")
    tasks = []
    for name in names:
        fit = [seed for seed in seeds if _misfit(sops[name], seed) is None]
        if not fit:
            raise InputError(f"--task {name}: no seed fits it ({_misfit(sops[name], seeds[0])})")
        spec, duration = sops[name].inputs.get("duration"), None
        if spec is not None:
            duration = check_number(1.0 if config.duration is None else config.duration,
                                    f"--duration (task '{name}')", spec.min, spec.max)
        tasks.append(MakeTask(name, fit, duration, _prompt_kind(sops[name])))
    return tasks


def _record(config: MakeConfig, options: RunOptions, seeds: Sequence[Seed], tasks: Sequence[MakeTask]
            ) -> dict[str, Any]:
    """What a rerun must match."""
    duration = next((task.duration for task in tasks if task.duration is not None), None)
    return {"task": ",".join(config.tasks), "count": config.count, "candidates": config.candidates,
            "duration": duration, "seed": config.seed, "iteration": config.iteration, "overrides": config.overrides,
            "preset": options.preset, "sops_dir": str(options.sops_dir or ""),
            **({"system": options.system} if options.system else {}),  # no system: records as before
            **{k: str(v) if v else None for k, v in run_adapters(options.adapters, options.preset).items()},
            "seeds": [{"text": s.text, "images": [str(p) for p in s.images], "videos": [str(p) for p in s.videos]}
                      for s in seeds]}


@dataclass
class Checked:
    """A make's inputs, checked: its tasks, and the record a later call must match (make.json)."""

    tasks: list[MakeTask]
    record: dict[str, Any]

    def run_of(self, seed: Seed) -> tuple[str, float | None]:
        """The task (the first whose inputs the seed's media fit) and the duration of a run from `seed`."""
        task = next(task for task in self.tasks if seed in task.seeds)
        return task.name, task.duration


def check_inputs(seeds: Sequence[Seed], config: MakeConfig, options: RunOptions) -> Checked:
    """The seeds, counts, tasks, duration, `--set` values and run options (`options.out` included), as the
    candidates' runs will be checked; InputError."""
    if not 1 <= config.count <= MAX_COUNT:
        raise InputError(f"--count {config.count}: from 1 to {MAX_COUNT}")
    if not 2 <= config.candidates <= MAX_CANDIDATES:
        raise InputError(f"--candidates {config.candidates}: from 2 to {MAX_CANDIDATES} (a choice needs two)")
    check_seed(config.seed)
    check_options(options)
    tasks = _tasks(config, options, seeds)
    for task in tasks:  # a candidate's run as the batch checks it: the --set values against each task's calls
        seed = task.seeds[0]
        with use_settings(preset=options.preset, device=options.device, memory_profile=options.memory_profile):
            validate_request(seed.text, seed.images, seed.videos, task.name, task.duration,
                             replace(options, overrides=config.overrides))
    return Checked(tasks, _record(config, options, seeds, tasks))


def check_settings(path: Path, record: dict[str, Any], maker: str) -> None:
    """A rerun's settings against those recorded in `path` (InputError naming the first that differs); a folder
    without that file must be empty, since it belongs to something else."""
    folder = path.parent
    if path.is_file():
        old = read_json_object(path)
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


def _prompts(data_dir: Path, tasks: Sequence[MakeTask], config: MakeConfig, client: ChatCompletionClient | None,
             avoid: Sequence[str]) -> list[str]:
    """The written prompts, prompt i for task i mod k of k: read back if written before, else asked of the LLM
    (for each task, from the seeds that fit it, of its kind) and recorded."""
    path = data_dir / PROMPTS
    if path.is_file():
        prompts = read_json_object(path, ("prompts",))["prompts"]
        if not (isinstance(prompts, list) and len(prompts) == config.count
                and all(isinstance(prompt, str) for prompt in prompts)):
            raise InputError(f"{path}: damaged (not a list of {config.count} prompts); delete it to write them again")
        return prompts
    from mora_agents.llm import client_from_env

    client = client or client_from_env()
    written: list[list[str]] = []
    for t, task in enumerate(tasks):  # the first task's seed is the make's: a single task's prompts as before
        count = len(range(t, config.count, len(tasks)))
        written.append(asyncio.run(write_prompts([s.text for s in task.seeds], count, config.seed + t, client,
                                                 [*avoid, *(p for ps in written for p in ps)], task.kind)))
    prompts = [written[i % len(tasks)][i // len(tasks)] for i in range(config.count)]
    _write_json(path, {"prompts": prompts, "tasks": [tasks[i % len(tasks)].name for i in range(config.count)],
                       "writer": type(client).__name__, "created": datetime.now().isoformat()})
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
    checked = check_inputs(seeds, config, replace(options, out=data_dir))
    tasks, record = checked.tasks, checked.record
    check_settings(data_dir / MAKE, record, "`mora data make`")
    if not (data_dir / MAKE).is_file():
        _write_json(data_dir / MAKE, {**record, "created": datetime.now().isoformat()})
    prompts = _prompts(data_dir, tasks, config, client, avoid)
    requests, slots = [], []
    for i, prompt in enumerate(prompts):
        task = tasks[i % len(tasks)]
        seed = task.seeds[i // len(tasks) % len(task.seeds)]
        for number in range(1, config.candidates + 1):
            set_id = f"p{i + 1:03d}"
            run_seed = (config.seed + SEED_STRIDE * (i * config.candidates + number - 1)) % (MAX_SEED + 1)
            requests.append(BatchRequest(prompt, task=task.name, images=seed.images, videos=seed.videos,
                                         duration=task.duration, seed=run_seed, overrides=config.overrides,
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
        sets.setdefault(set_id, CandidateSet(id=set_id, prompt=result.request.text, task=str(result.request.task),
                                             candidates=[])).candidates.append(candidate)
    write_sets(data_dir, list(sets.values()))
    return MakeResult(list(sets.values()), results)
