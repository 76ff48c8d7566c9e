"""Running a request end to end: validate inputs, make the run directory, run the group chat, record it.

    runs/<YYYYmmdd-HHMMSS>-<slug>/
        inputs/           copies of the person's files (the originals are never touched)
        artifacts/        every image and clip the agents made
        plan.json         the planner's Plan
        transcript.jsonl  every message, tool call and tool result
        run.json          status, preset, seed, timings, error
        result.mp4        the final video
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autogen_agentchat.base import TaskResult
from autogen_core.models import ChatCompletionClient

from mora_agents.agents.messages import PlanMessage, RequestMessage, RunFinishedMessage, UserRequest
from mora_agents.agents.team import build_team
from pydantic import ValidationError

from mora_agents.errors import InputError, MoraError, validation_summary
from mora_agents.media import atomic_path, probe
from mora_agents.runs.transcript import Record, TranscriptWriter
from mora_agents.sop.loader import find_sops
from mora_agents.settings import settings, use_settings
from mora_agents.tools.registry import get_tool


@dataclass
class RunOptions:
    preset: str = "full"
    device: str = "auto"
    out: Path = Path("runs")
    sops_dir: Path | None = None
    seed: int | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool parameters set by the person (`--set tool.param=value`); they win over the SOP's."""


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    result: Path | None
    noise: bool


def check_overrides(overrides: dict[str, dict[str, Any]]) -> None:
    for tool, params in overrides.items():
        try:
            spec = get_tool(tool)
        except KeyError as e:
            raise InputError(f"--set {tool}: {e.args[0]}") from None
        for param, value in params.items():
            if param not in spec.parameters or param in spec.media or param == "output":
                settable = [p for p in spec.parameters if p not in spec.media and p != "output"]
                raise InputError(f"--set {tool}.{param}: no such parameter (settable: {', '.join(settable)})")
            try:
                spec.validate_param(param, value)
            except ValidationError as e:
                raise InputError(f"--set {tool}.{param}={value}: {validation_summary(e)}") from None


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:40].strip("-") or "run"


def _new_run_dir(base: Path, text: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = base / f"{stamp}-{_slug(text)}{f'-{n}' if n else ''}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise MoraError(f"{base}: cannot create a new run directory")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def _copy_inputs(files: list[Path], run_dir: Path) -> list[str]:
    inputs = run_dir / "inputs"
    inputs.mkdir()
    copied = []
    for i, src in enumerate(files, 1):
        dst = inputs / f"{i}-{src.name}"
        shutil.copyfile(src, dst)
        copied.append(str(dst.relative_to(run_dir)))
    return copied


def validate_request(text: str, images: list[Path], videos: list[Path], task: str | None, duration: float | None,
                     options: RunOptions) -> dict:
    """Everything that can be checked before any work; raises InputError. Returns the SOPs by name."""
    if not text.strip():
        raise InputError("REQUEST: empty; say what video you want")
    for flag, paths, kind in (("--image", images, "image"), ("--video", videos, "video")):
        for path in paths:
            artifact = probe(path)
            if artifact.kind != kind:
                raise InputError(f"{flag} {path}: is a{'n' if artifact.kind == 'image' else ''} {artifact.kind}, not a{'n' if kind == 'image' else ''} {kind}")
            if kind == "video" and artifact.frames < 2:
                raise InputError(f"{flag} {path}: has {artifact.frames} frame; a video needs at least 2")
    sops = {name: sop for name, (sop, _) in find_sops(options.sops_dir).items()}
    if task is not None:
        if task not in sops:
            raise InputError(f"--task {task}: unknown task (tasks: {', '.join(sorted(sops))})")
        spec = sops[task].inputs.get("duration")
        if duration is not None and spec is None:
            raise InputError(f"--duration: task '{task}' takes no duration")
        if duration is not None and not (spec.min or 0) <= duration <= (spec.max or float("inf")):
            raise InputError(f"--duration {duration:g}: out of range [{spec.min:g}, {spec.max:g}] for task '{task}'")
    if duration is not None and duration <= 0:
        raise InputError(f"--duration {duration:g}: must be positive")
    check_overrides(options.overrides)
    return sops


async def run_request(text: str, *, images: list[Path] = (), videos: list[Path] = (), task: str | None = None,
                      duration: float | None = None, options: RunOptions | None = None,
                      model_client: ChatCompletionClient | None = None,
                      on_record: Callable[[Record], None] | None = None) -> RunOutcome:
    """Run one request through the group chat. Bad input raises InputError with nothing left on disk;
    a failure during work raises MoraError with the run directory kept (status and error recorded)."""
    from mora_agents.llm import client_from_env

    options = options or RunOptions()
    images, videos = [Path(p) for p in images], [Path(p) for p in videos]
    with use_settings(preset=options.preset, device=options.device):
        sops = validate_request(text, images, videos, task, duration, options)
        model_client = model_client or client_from_env()
        seed = options.seed if options.seed is not None else random.randrange(2**31)
        run_dir = _new_run_dir(options.out, text)
        with use_settings(out_dir=run_dir / "artifacts"):
            try:
                return await _run(run_dir, text, images, videos, task, duration, sops, seed, options,
                                  model_client, on_record)
            except InputError:
                shutil.rmtree(run_dir, ignore_errors=True)
                raise


async def _run(run_dir: Path, text: str, images: list[Path], videos: list[Path], task: str | None,
               duration: float | None, sops: dict, seed: int, options: RunOptions,
               model_client: ChatCompletionClient, on_record: Callable[[Record], None] | None) -> RunOutcome:
    copied = _copy_inputs([*images, *videos], run_dir)
    request = UserRequest(text=text, images=copied[:len(images)], videos=copied[len(images):], task=task,
                          duration=duration)
    noise = settings().preset == "tiny"
    info: dict[str, Any] = {"request": request.model_dump(), "preset": options.preset, "seed": seed,
                            "overrides": options.overrides, "noise": noise, "status": "running",
                            "started": datetime.now().isoformat()}
    _write_json(run_dir / "run.json", info)
    transcript = TranscriptWriter(run_dir / "transcript.jsonl")
    team = build_team(model_client, sops, run_dir, seed, options.overrides)
    start = time.monotonic()
    finished = None
    try:
        async for item in team.run_stream(task=RequestMessage(content=request, source="user")):
            if isinstance(item, TaskResult):
                continue
            record = transcript.write(item)
            if on_record:
                on_record(record)
            if isinstance(item, PlanMessage):
                _write_json(run_dir / "plan.json", item.content.model_dump())
            if isinstance(item, RunFinishedMessage):
                finished = item.content
    except Exception as e:
        transcript.error("runner", f"{type(e).__name__}: {e}")
        finished = None
        error = f"{type(e).__name__}: {e}"
    else:
        error = finished.error if finished else "the group chat ended without a result"
    status = finished.status if finished else "failed"
    info.update(status=status, error=None if status == "finished" else error,
                seconds=round(time.monotonic() - start, 3), finished=datetime.now().isoformat())
    _write_json(run_dir / "run.json", info)
    if status == "rejected":
        raise InputError(error)
    if status != "finished":
        raise MoraError(f"run failed: {error} (run directory kept: {run_dir})")
    return RunOutcome(run_dir=run_dir, status=status, result=run_dir / "result.mp4", noise=noise)
