"""Running many requests: each checked, keyed and given its run directory first, then run here or on Ray.

Every request becomes a normal run, made by the runner's `prepare_run` (status `queued`) and run by its
`resume_run`, the code path of `mora run` and `mora resume`. Its directory is `OUT/<slug>-<key>`, where the
key is a digest of the request's content (text, task, the sha256 of its files, duration, overrides, preset,
system, adapters' card) and its seed; a request without a seed gets one derived from its content. So a second batch
with the same requests finds their runs: finished ones are skipped, the others continue from their last checkpoint.
A run directory that lost its run.json but holds work gets it back from its transcript (`recover_run`): nothing
finished is made again. One batch at a time per `--out`: it holds `OUT/batch.lock` while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mora_agents.batch.requests import BatchRequest
from mora_agents.errors import InputError, MoraError
from mora_agents.jsonl import dumps
from mora_agents.media import atomic_path, sha256_file
from mora_agents.pipelines.adapters import card_sha256
from mora_agents.runs.catalog import read_info, run_status
from mora_agents.runs.lock import file_lock
from mora_agents.runs.runner import RunOptions, prepare_run, recover_run, resume_run, slug, validate_request
from mora_agents.settings import use_settings

FAILED = ("failed", "rejected", "stopped", "damaged")
LOCK = "batch.lock"


@dataclass
class BatchResult:
    """What became of one request of a batch."""

    request: BatchRequest
    label: str
    """The request's label, or `request N` (its place in the batch, from 1)."""
    status: str = "queued"
    """queued, running, finished, failed (rejected, stopped: as the runner says), interrupted, invalid, or damaged
    (a run directory without run.json whose transcript holds no request: left alone, see `error`)."""
    run_dir: Path | None = None
    result: Path | None = None
    """The run's result.mp4, once finished."""
    error: str | None = None
    seconds: float = 0.0
    """The run's working time (run.json), over all its attempts and resumes."""
    seed: int | None = None
    key: str | None = None
    skipped: bool = False
    """Finished by an earlier batch: not run again."""
    attempts: int = 0
    """How many workers took it in this batch (more than one: a worker died while running it)."""
    worker: str | None = None
    """The Ray actor that ran it last."""

    def record(self) -> dict[str, Any]:
        """The result as one line of summary.jsonl."""
        data = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()
                if key not in ("request", "label")}
        return {"request": self.label, "name": self.request.name, **data}


Notify = Callable[[BatchResult], None]


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _run_options(request: BatchRequest, options: RunOptions, seed: int | None) -> RunOptions:
    """The batch's options with what the request itself sets: seed, overrides, adapters and candidates."""
    return replace(options, seed=seed, overrides=request.overrides, adapters=request.adapters or options.adapters,
                   candidates=request.candidates)


def _content(request: BatchRequest, options: RunOptions) -> dict[str, Any]:
    """What makes the request's result, its seed aside; files by their sha256, not their paths."""
    adapters = _run_options(request, options, None).adapters
    content = {"text": request.text, "task": request.task, "images": [sha256_file(p) for p in request.images],
               "videos": [sha256_file(p) for p in request.videos], "overrides": request.overrides,
               "preset": options.preset, "duration": None if request.duration is None else float(request.duration)}
    content |= {"system": options.system} if options.system else {}  # no system: keys as before
    content |= {"candidates": request.candidates} if request.candidates != 1 else {}  # one: keys as before
    speed = {"speed": [options.speed, options.speed_options]} if options.speed != "exact" or options.speed_options else {}
    return content | ({"adapters": card_sha256(adapters)} if adapters else {}) | speed  # none of them: keys as before


def _seed_and_key(request: BatchRequest, options: RunOptions, copies: Counter[str]) -> tuple[int, str]:
    """The request's seed (given, or derived from its content and the copies of it counted so far) and key."""
    content = _content(request, options)
    seed = request.seed
    if seed is None:
        same = _digest(content)
        seed = int(_digest({**content, "copy": copies[same]})[:8], 16) % 2**31
        copies[same] += 1
    return seed, _digest({**content, "seed": seed})


def check_requests(requests: Sequence[BatchRequest], options: RunOptions) -> list[BatchResult]:
    """Check every request as `mora run` checks its flags, and give each its seed, key and run directory.

    A bad request's result has status `invalid` and the error; nothing is written. Without a seed, the n-th
    request of the same content gets a seed derived from the content and n: a rerun makes the same runs.
    """
    results: list[BatchResult] = []
    keys: dict[str, BatchResult] = {}
    copies: Counter[str] = Counter()
    for number, request in enumerate(requests, 1):
        result = BatchResult(request, request.label or f"request {number}")
        results.append(result)
        try:
            with use_settings(preset=options.preset, device=options.device, memory_profile=options.memory_profile):
                validate_request(request.text, list(request.images), list(request.videos), request.task,
                                 request.duration, _run_options(request, options, request.seed))
            seed, key = _seed_and_key(request, options, copies)
            if key in keys:
                raise InputError(f"the same request as {keys[key].label} (same content and seed); give it another seed")
        except InputError as e:
            result.status, result.error = "invalid", str(e)
            continue
        keys[key] = result
        result.seed, result.key = seed, key
        result.run_dir = options.out.resolve() / f"{slug(request.text)}-{key[:12]}"
    return results


def refresh(result: BatchResult, error: str | None = None) -> None:
    """Read the result's status, error, time and video back from its run.json; `error`: the runner's message."""
    assert result.run_dir is not None
    info = read_info(result.run_dir)
    result.status = run_status(info)
    result.seconds = float(info.get("seconds") or 0.0)
    finished = result.status == "finished"
    result.result = result.run_dir / "result.mp4" if finished else None
    result.error = None if finished else info.get("error") or error


def _prepare(result: BatchResult, options: RunOptions) -> None:
    """Make the request's run directory (status queued), or find the one an earlier batch made."""
    assert result.run_dir is not None and result.key is not None
    request = result.request
    if not (result.run_dir / "run.json").is_file() and (result.run_dir / "transcript.jsonl").is_file():
        try:  # work was done, and run.json lost: rebuilt, and the run goes on from its transcript and state
            recover_run(result.run_dir, _run_options(request, options, result.seed))
        except MoraError as e:
            result.status, result.error = "damaged", str(e)
            return
    if (result.run_dir / "run.json").is_file():
        refresh(result)
        result.skipped = result.status == "finished"
        return
    if result.run_dir.exists():  # left by a process killed inside prepare_run, before run.json was written
        shutil.rmtree(result.run_dir)
    prepare_run(request.text, images=request.images, videos=request.videos, task=request.task,
                duration=request.duration, options=_run_options(request, options, result.seed), run_dir=result.run_dir)
    result.status = "queued"


async def drive_run(run_dir: Path) -> str | None:
    """Run or continue one prepared run with the runner (as `mora resume` does); the error, if it did not finish.

    Used in this process and by the Ray workers. Every failure is recorded and returned, so the batch goes on.
    """
    try:
        await resume_run(run_dir)
    except Exception as e:  # the runner recorded the run's own failures in run.json and its transcript
        return str(e) or type(e).__name__
    return None


async def _run_here(jobs: list[BatchResult], notify: Notify) -> None:
    """One run after another in this process; the runner's pipelines stay loaded between them."""
    for result in jobs:
        assert result.run_dir is not None
        result.status, result.attempts = "running", result.attempts + 1
        notify(result)
        refresh(result, await drive_run(result.run_dir))
        notify(result)


def write_summary(results: Sequence[BatchResult], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(dumps(r.record()) + "\n" for r in results), encoding="utf-8")


def run_batch(requests: Sequence[BatchRequest], options: RunOptions, *, ray: str | None = None,
              gpus_per_worker: float = 1.0, workers: int | None = None, retries: int = 2, skip_invalid: bool = False,
              summary: Path | None = None, on_update: Notify | None = None) -> list[BatchResult]:
    """Run many requests, each as a normal run under `options.out`; one result per request, in their order.

    `options`: preset, device, memory profile and SOP folder of every run; seeds and overrides are each
    request's own. All requests are checked first: bad ones raise one InputError naming each (one line each),
    and nothing runs, unless `skip_invalid` (then their results say `invalid`). Runs finished by an earlier
    batch are skipped; interrupted or failed ones continue from their last checkpoint. InputError if another batch
    runs in `options.out` (its lock, `OUT/batch.lock`, names the process).

    `ray`: None runs here, one run after another; else on Ray (`local`: a Ray instance started here; `auto`:
    the running cluster, or the one this process already joined with `ray.init`; or a cluster's address),
    see `mora_agents.batch.cluster.run_on_ray` for `gpus_per_worker`, `workers` and `retries`. `summary`: a
    JSONL file of the results, written at the end (also when interrupted). `on_update` is called with a result
    whenever it changes. Ctrl-C (KeyboardInterrupt) stops the runs, which record it; finished runs are kept.
    """
    if options.seed is not None or options.overrides:
        raise ValueError("run_batch: seeds and overrides belong to each request, not to the options")
    session: AbstractContextManager[None] = nullcontext()
    if ray is not None:
        try:  # before any work: fails at once without Ray
            from mora_agents.batch.cluster import ray_session, run_on_ray
        except ModuleNotFoundError as e:
            if e.name != "ray":
                raise
            raise InputError("--ray: Ray is not installed (pip install 'mora-agents[batch]')") from None
        if gpus_per_worker <= 0:
            raise InputError(f"--gpus-per-worker {gpus_per_worker:g}: must be positive")
        if gpus_per_worker < options.gpus:
            raise InputError(f"--gpus-per-worker {gpus_per_worker:g}: each run takes --gpus {options.gpus}")
        session = ray_session(ray)
    options = replace(options, out=options.out.resolve(), sops_dir=options.sops_dir and options.sops_dir.resolve())
    results = check_requests(requests, options)
    invalid = [r for r in results if r.status == "invalid"]
    if invalid and not skip_invalid:
        raise InputError("\n".join(f"{r.label}: {r.error}" for r in invalid))
    notify = on_update or (lambda result: None)
    options.out.mkdir(parents=True, exist_ok=True)
    with file_lock(options.out / LOCK, lambda owner: InputError(
            f"--out {options.out}: another batch is running in this folder ({owner}); wait for it to end, or use "
            "another folder")), session:
        try:
            for result in results:
                if result.status != "invalid":
                    _prepare(result, options)
                notify(result)
            jobs = [r for r in results if r.status not in ("invalid", "finished", "damaged")]
            for result in jobs:
                result.status = "queued"
            if jobs and ray is None:
                asyncio.run(_run_here(jobs, notify))
            elif jobs:
                run_on_ray(jobs, notify, gpus_per_worker=gpus_per_worker, workers=workers, retries=retries)
        except KeyboardInterrupt:
            for result in results:
                if result.status == "running":
                    refresh(result)
            raise
        finally:
            if summary is not None:
                write_summary(results, summary)
    return results
