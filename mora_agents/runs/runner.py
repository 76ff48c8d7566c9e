"""Running a request end to end: validate inputs, make the run directory, run the group chat, record it.

    runs/<YYYYmmdd-HHMMSS>-<slug>/
        inputs/           copies of the person's files (the originals are never touched)
        artifacts/        every image and clip the agents made
        plan.json         the planner's Plan
        transcript.jsonl  every message, tool call, tool result and review decision
        state.json        the team's saved state (autogen save_state) after the last checkpoint, with the records
                          it covers (see `mora_agents.runs.state`)
        run.json          status, preset, seed, timings, error (one line) and error_details
        run.lock          locked by the process that runs the run (see `mora_agents.runs.lock`)
        log.txt           what the model libraries logged and warned during the run (`mora_agents.runs.log`)
        result.mp4        the final video

The team runs in turns that end at checkpoints (a plan, a step result, a review request); after each the
team's state is saved, so a run killed at any moment is continued by `resume_run` from its last
checkpoint, with the same seeds and so the same result.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, ToolCallExecutionEvent
from autogen_core.models import ChatCompletionClient
from pydantic import ValidationError

from mora_agents.agents.conductor import ConductorAgent, review_request
from mora_agents.agents.messages import (
    PlanMessage,
    RequestMessage,
    ReviewDecisionMessage,
    ReviewRequestMessage,
    RunFinishedMessage,
    StepRequestMessage,
    StepResultMessage,
)
from mora_agents.agents.team import CHECKPOINTS, build_team, select_speaker
from mora_agents.errors import InputError, MoraError, describe_error, validation_summary
from mora_agents.inputs import (
    check_attachment,
    check_duration,
    check_number,
    check_output_dir,
    check_seed,
    check_text,
    copy_input,
)
from mora_agents.media import Artifact, atomic_path, sha256_file
from mora_agents.pipelines.adapters import card_sha256, check_adapters, read_card
from mora_agents.pipelines.loading import MEMORY_PROFILES, resolve_device
from mora_agents.pipelines.parallel import check_gpus, parallel_attention
from mora_agents.pipelines.speed import resolve_speed
from mora_agents.runs.catalog import can_resume, check_resumable, read_info, run_status
from mora_agents.runs.lock import run_lock
from mora_agents.runs.log import run_log
from mora_agents.runs.review import Reviewer, auto_accept, decide
from mora_agents.runs.state import (
    STATE_FILE,
    Resumption,
    SavedState,
    read_state,
    reconcile,
    write_state,
)
from mora_agents.runs.transcript import Record, TranscriptWriter, read_transcript
from mora_agents.settings import RUNS_DIR, Speed, use_settings
from mora_agents.sop.calls import check_calls
from mora_agents.sop.loader import find_sops
from mora_agents.sop.measures import run_measures
from mora_agents.sop.messages import ReviewRequest, RunFinished, UserRequest
from mora_agents.sop.schema import SOP
from mora_agents.tools.backends import SYSTEMS, system_overrides
from mora_agents.tools.pick import MAX_CANDIDATES
from mora_agents.tools.registry import get_tool


@dataclass
class RunOptions:
    preset: str = "full"
    device: str = "auto"
    out: Path = RUNS_DIR
    sops_dir: Path | None = None
    seed: int | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool parameters set by the person (`--set tool.param=value`); they win over the SOP's."""
    max_repeats: int = 3
    """Review repeats (and edits) allowed per step; then a person must accept or stop."""
    memory_profile: str = "resident"
    """`resident` or `24gb` (see `ToolSettings.memory_profile`)."""
    review: bool = False
    """Whether a person reviews the run (recorded in run.json for whoever resumes it; the reviewer decides)."""
    adapters: Path | None = None
    """A `mora train` output folder: the agents it trained run with its weights and modulation tokens."""
    system: str | None = None
    """The paper's system to run (`svd` or `osp`, `tools.backends.SYSTEMS`): every model tool runs its backend, as if
    set with `--set TOOL.backend=...`, unless `overrides` names one. None: the SOPs' backends (the tools' defaults,
    the `svd` system's, unless an SOP names others)."""
    speed: str = "exact"
    """`exact`, `fast` or `fastest` (`--speed`, see `mora_agents.pipelines.speed`)."""
    speed_options: dict[str, Any] = field(default_factory=dict)
    """Settings over the profile (`--speed-option NAME=VALUE`)."""
    gpus: int = 1
    """GPUs one request's denoiser is split across (`--gpus`, see `mora_agents.pipelines.parallel`)."""
    candidates: int = 1
    """Candidates of each iteration of the SOP's `best_of` steps (a story's keyframes and clips); the judges keep the
    best (`--candidates`)."""

    @property
    def tool_overrides(self) -> dict[str, dict[str, Any]]:
        """The overrides with the system's backends: what the run's SOP calls see (and run.json records)."""
        return system_overrides(self.system, self.overrides) if self.system in SYSTEMS else self.overrides


def run_speed(profile: str, options: dict[str, Any], device: str, gpus: int, memory_profile: str) -> Speed:
    """The speed settings of a run on its device (and `--gpus` there); raises InputError (one line)."""
    try:
        resolved = resolve_device(device)
    except RuntimeError as e:
        raise InputError(f"--device {device}: {str(e).splitlines()[0]}") from None
    speed = resolve_speed(profile, options, resolved)
    check_gpus(gpus, resolved)
    if gpus > 1 and memory_profile != "resident":
        raise InputError(f"--gpus {gpus}: with --memory-profile resident (each GPU holds the models it runs)")
    if speed.quantize != "none" and memory_profile != "resident":
        raise InputError(f"--speed-option quantize={speed.quantize}: with --memory-profile resident")
    if gpus > 1:  # every GPU would decide on its own part of the sequence whether to skip
        parallel_attention(speed, resolved)
        if speed.cache != "none":
            speed = replace(speed, cache="none", notes=(*speed.notes, f"no cache with --gpus {gpus}"))
    return speed


@dataclass
class RunOutcome:
    run_dir: Path
    status: str
    result: Path | None
    noise: bool


def check_overrides(overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`--set` values: known tools and settable parameters, each value within the parameter's type and bounds, all
    of a tool's together within its backend's rules. Returns them typed ("24" and 24.0 frames as 24: the numbers
    the rules checked, which the run then records and uses)."""
    typed = {}
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
                raise InputError(f"--set {tool}.{param}={value}: {validation_summary(e, locations=False)}") from None
        try:
            typed[tool] = spec.check_combination(params)
        except ValueError as e:
            raise InputError(f"--set {tool}: {e}") from None
    return typed


def check_options(options: RunOptions) -> None:
    """The options a person gives (`--out`, `--seed`, `--device`, `--memory-profile`, `--system`, `--set`: typed in
    place); raises InputError."""
    check_output_dir(options.out, "--out")
    if options.seed is not None:
        check_seed(options.seed)
    try:
        device = resolve_device(options.device)
    except RuntimeError as e:
        raise InputError(f"--device {options.device}: {str(e).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {options.device}: CUDA is not available on this machine")
    if options.memory_profile not in MEMORY_PROFILES:
        raise InputError(f"--memory-profile {options.memory_profile}: unknown "
                         f"(choose from {', '.join(MEMORY_PROFILES)})")
    if options.system is not None and options.system not in SYSTEMS:
        raise InputError(f"--system {options.system}: unknown (choose from {', '.join(SYSTEMS)})")
    run_speed(options.speed, options.speed_options, options.device, options.gpus, options.memory_profile)
    options.overrides = check_overrides(options.overrides)
    check_overrides(options.tool_overrides)  # the system's backends with the person's parameters
    check_candidates(options.candidates)
    run_adapters(options.adapters, options.preset)
    if options.adapters and options.system and (trained := read_card(options.adapters).system) != options.system:
        raise InputError(f"--adapters {options.adapters}: trained the {trained} system's agents, but this run uses "
                         f"--system {options.system}")


def check_candidates(candidates: Any) -> int:
    """`--candidates`: a whole number from 1 to MAX_CANDIDATES; raises InputError."""
    if isinstance(candidates, bool) or not isinstance(candidates, int) or not 1 <= candidates <= MAX_CANDIDATES:
        raise InputError(f"--candidates {candidates}: a whole number from 1 to {MAX_CANDIDATES}")
    return candidates


def slug(text: str) -> str:
    """A short file-name form of a request: lower-case words joined by hyphens."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:40].strip("-") or "run"


def _new_run_dir(base: Path, text: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = base / f"{stamp}-{slug(text)}{f'-{n}' if n else ''}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:  # a full disk, say (--out was checked to be writable)
            raise MoraError(f"{base}: cannot make a run directory ({e.strerror or e})") from None
    raise MoraError(f"{base}: cannot create a new run directory")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def _copy_inputs(files: list[Path], run_dir: Path) -> list[str]:
    inputs = run_dir / "inputs"
    inputs.mkdir()
    return [str(copy_input(src, inputs, i).relative_to(run_dir)) for i, src in enumerate(files, 1)]


def validate_request(text: str, images: list[Path], videos: list[Path], task: str | None, duration: float | None,
                     options: RunOptions) -> dict:
    """Everything that can be checked before any work; raises InputError. Returns the SOPs by name.

    The request text, every attached file (decoded in full), the duration, the task and the options. Without a
    task, the duration and the videos' lengths must fit at least one SOP (the widest range); the planner's task
    is checked again against its own SOP before any step runs.
    """
    check_text(text, "REQUEST")
    if duration is not None:
        check_duration(duration)
    check_options(options)
    sops = {name: sop for name, (sop, _) in find_sops(options.sops_dir).items()}
    max_seconds: list[float | None] = []  # of the task's video inputs, in the order attachments fill them
    if task is not None:
        if task not in sops:
            raise InputError(f"--task {task}: unknown task (tasks: {', '.join(sorted(sops))})")
        spec = sops[task].inputs.get("duration")
        if duration is not None and spec is None:
            raise InputError(f"--duration: task '{task}' takes no duration")
        if duration is not None:
            check_number(duration, f"--duration (task '{task}')", spec.min, spec.max)
        max_seconds = [s.max_seconds for s in sops[task].inputs.values() if s.type == "video"]
        check_calls(sops[task], options.tool_overrides, options.adapters and Path(options.adapters).resolve())
    else:
        durations = [spec for sop in sops.values() if (spec := sop.inputs.get("duration")) is not None]
        if duration is not None and durations:
            lows, highs = [d.min for d in durations], [d.max for d in durations]
            check_number(duration, "--duration (any task)", None if None in lows else min(lows),
                         None if None in highs else max(highs))
        longest = [s.max_seconds for sop in sops.values() for s in sop.inputs.values() if s.type == "video"]
        max_seconds = [None if not longest or None in longest else max(longest)] * len(videos)
    for path in images:
        check_attachment(path, "image", f"--image {path}")
    for i, path in enumerate(videos):
        check_attachment(path, "video", f"--video {path}", max_seconds[i] if i < len(max_seconds) else None)
    return sops


def prepare_run(text: str, *, images: Sequence[Path] = (), videos: Sequence[Path] = (), task: str | None = None,
                duration: float | None = None, previous: Path | None = None, options: RunOptions | None = None,
                run_dir: Path | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Check a request and make its run directory (inputs copied, run.json with status `queued`); nothing runs yet.

    Bad input raises InputError with nothing left on disk. `run_dir`: the exact directory to make (it must not
    exist; its folder must be writable), else a new `<time>-<slug>` folder under `options.out`. `resume_run` then
    runs it from the start. `extra`: more fields for run.json (what an API was asked, say); its own fields win.
    """
    options = options or RunOptions()
    images, videos = [Path(p) for p in images], [Path(p) for p in videos]
    with use_settings(preset=options.preset, device=options.device, memory_profile=options.memory_profile):
        validate_request(text, images, videos, task, duration, options)
        adapters = run_adapters(options.adapters, options.preset)
        if previous is not None:
            check_attachment(previous, "video", f"the previous result {previous}")
        if run_dir is not None:
            check_output_dir(run_dir.parent, "the folder of the run directory")
    seed = options.seed if options.seed is not None else random.randrange(2**31)
    if run_dir is None:
        run_dir = _new_run_dir(options.out.resolve(), text)  # absolute: tools may run in another cwd
    else:
        run_dir = run_dir.resolve()
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            raise InputError(f"{run_dir}: already exists; a new run needs a new directory") from None
    try:
        copied = _copy_inputs([*images, *videos, *([previous] if previous else [])], run_dir)
        n_images, n_files = len(images), len(images) + len(videos)
        request = UserRequest(text=text, images=copied[:n_images], videos=copied[n_images:n_files], task=task,
                              duration=duration, previous=copied[-1] if previous else None)
        _write_json(run_dir / "run.json", {**(extra or {}), **_run_info(request, options, seed, adapters)})
    except OSError as e:  # a full disk, say: nothing half-made is left
        shutil.rmtree(run_dir, ignore_errors=True)
        raise MoraError(f"{run_dir}: cannot write the new run directory ({e.strerror or e}); nothing was kept") from None
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def _run_info(request: UserRequest, options: RunOptions, seed: int, adapters: dict[str, Any]) -> dict[str, Any]:
    """A new run's run.json (status queued)."""
    return {"request": request.model_dump(), "task": None, "preset": options.preset, "device": options.device,
            "memory_profile": options.memory_profile, "speed": options.speed, "speed_options": options.speed_options,
            "gpus": options.gpus, "seed": seed, "system": options.system,
            "overrides": options.tool_overrides,
            "max_repeats": options.max_repeats, "review": options.review, "sops_dir": str(options.sops_dir or ""),
            "candidates": options.candidates,
            "noise": options.preset == "tiny", "status": "queued", "seconds": 0.0, **adapters,
            "created": datetime.now().isoformat()}


def recover_run(run_dir: Path, options: RunOptions) -> None:
    """Write run.json anew for a run directory that lost it but holds work (a transcript): the request as the
    transcript recorded it, the task as plan.json has it, the rest from `options` (those the run was made with, its
    seed included), and status interrupted, so that `resume_run` goes on from the transcript and the saved state:
    a finished run ends at once as finished, nothing is made again. MoraError (the run is damaged) when the
    transcript holds no request."""
    path = run_dir / "transcript.jsonl"
    request = None
    for record in read_transcript(path) if path.is_file() else []:
        try:
            message = record.to_message() if record.kind == "message" else None
        except ValueError:
            continue
        if isinstance(message, RequestMessage):
            request = message.content
            break
    if request is None:
        raise MoraError(f"{run_dir}: damaged: no run.json, and no request in its transcript; move it away to run "
                        "the request again")
    assert options.seed is not None
    try:
        task = json.loads((run_dir / "plan.json").read_bytes()).get("task")
    except (OSError, ValueError, AttributeError):  # no plan yet (or a damaged one: the resumed run plans again)
        task = None
    _write_json(run_dir / "run.json", _run_info(request, options, options.seed, run_adapters(options.adapters,
                                                                                            options.preset))
                | {"task": task, "status": "interrupted",
                   "recovered": "run.json was missing: rebuilt from the transcript and the options the run was "
                                "made with"})


async def run_request(text: str, *, images: Sequence[Path] = (), videos: Sequence[Path] = (), task: str | None = None,
                      duration: float | None = None, previous: Path | None = None, options: RunOptions | None = None,
                      run_dir: Path | None = None, model_client: ChatCompletionClient | None = None,
                      on_record: Callable[[Record, Path], None] | None = None, reviewer: Reviewer = auto_accept
                      ) -> RunOutcome:
    """Run one request through the group chat. Bad input raises InputError with nothing left on disk;
    a failure during work raises MoraError with the run directory kept (status and error recorded).

    `previous` is the video a follow-up refers to ("extend it"); `reviewer` answers the SOP's review
    points (`auto_accept` unless a person reviews, see `mora_agents.runs.review`); `run_dir` as in `prepare_run`.
    """
    run_dir = prepare_run(text, images=images, videos=videos, task=task, duration=duration, previous=previous,
                          options=options, run_dir=run_dir)
    try:
        return await resume_run(run_dir, model_client=model_client, on_record=on_record, reviewer=reviewer)
    except InputError:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


async def resume_run(run_dir: Path, *, device: str | None = None, memory_profile: str | None = None,
                     model_client: ChatCompletionClient | None = None,
                     on_record: Callable[[Record, Path], None] | None = None, reviewer: Reviewer = auto_accept,
                     stop: asyncio.Event | None = None, revise: str | None = None) -> RunOutcome:
    """Run a queued run, or continue an interrupted, failed or stopped one from its last checkpoint.

    The one entry point that drives a run, whatever killed it before: the run is locked first (`RunLocked` if
    another process runs it, see `mora_agents.runs.lock`); the saved state is reconciled with the transcript, so
    a step recorded as finished is never run again (see `mora_agents.runs.state`); the files of every finished
    step are checked against the sha256 recorded when they were made. `device` and `memory_profile` change
    where the rest runs (e.g. after running out of GPU memory). Once `stop` is set, the run stops at its next
    checkpoint with status `stopped` (resumable) and MoraError is raised. `revise`: a text step that ran (a
    storyboard) whose output `reviewer` may edit first; the later results its edit does not change are kept.
    """
    from mora_agents.llm import client_from_env

    run_dir = run_dir.resolve()
    read_info(run_dir)  # a run directory: the lock file goes nowhere else
    with run_lock(run_dir):
        info = read_info(run_dir)
        if info["status"] == "running":  # we hold the lock: the process that said so is gone
            info["status"] = "interrupted"
        status = run_status(info)
        check_resumable(run_dir, info)
        if device is not None:
            info["device"] = device
        if memory_profile is not None and memory_profile not in MEMORY_PROFILES:
            raise InputError(f"--memory-profile {memory_profile}: unknown (choose from {', '.join(MEMORY_PROFILES)})")
        info["memory_profile"] = memory_profile or info.get("memory_profile", "resident")
        adapters = run_adapters(info.get("adapters"), info["preset"], info.get("adapters_sha256"))
        gpus = info.get("gpus", 1)
        speed = run_speed(info.get("speed", "exact"), info.get("speed_options", {}), info["device"], gpus,
                          info["memory_profile"])
        with use_settings(preset=info["preset"], device=info["device"], memory_profile=info["memory_profile"],
                          adapters=adapters["adapters"], speed=speed, gpus=gpus), run_log(run_dir):
            sops_dir = info.get("sops_dir")
            sops = {name: sop for name, (sop, _) in find_sops(Path(sops_dir) if sops_dir else None).items()}
            info["speed_settings"] = speed.record()  # as resolved on this device (saved when the run starts)
            session = _Session(run_dir, info, sops, model_client or client_from_env(), on_record, reviewer)
            if status == "queued" and adapters["adapters"]:
                session.note("Adapters", f"agents fine-tuned by {adapters['adapters']} "
                                         f"(sha256 {adapters['adapters_sha256']})")
            if not speed.exact or gpus > 1:
                session.note("Speed", speed.describe() + (f"; the denoisers split across {gpus} GPUs where "
                                                          "diffusers can" if gpus > 1 else ""))
            return await session.start(status, stop, revise)


def mark_stopped(run_dir: Path) -> None:
    """Mark a run that is not running (e.g. one taken off a queue) as stopped on request: resumable, like a run
    stopped at a checkpoint, and left alone until then. RunLocked if a process runs it."""
    with run_lock(run_dir.resolve()):
        info = read_info(run_dir)
        if not can_resume(info):
            raise InputError(f"{run_dir}: the run is {run_status(info)}; only a run that is not running can be stopped")
        _write_json(run_dir / "run.json", {**info, "status": "stopped", "resumable": True})


def run_adapters(folder: Path | str | None, preset: str, sha256: str | None = None) -> dict[str, Any]:
    """A run's adapter folder and its sha256, checked against the preset and models (and `sha256` when given)."""
    if not folder:
        return {"adapters": None, "adapters_sha256": None}
    folder = Path(folder).resolve()
    with use_settings(preset=preset):
        check_adapters(folder)
    if sha256 is not None and card_sha256(folder) != sha256:
        raise InputError(f"adapters {folder}: changed since the run started (sha256 differs)")
    return {"adapters": folder, "adapters_sha256": card_sha256(folder)}


class CannotRecord(MoraError):
    """Writing the run directory failed (a full disk, a quota, a read-only folder): the run stops where its records
    end, as if killed there, and resumes from there. Its text is the whole one-line message."""


@contextmanager
def recording(run_dir: Path, name: str) -> Iterator[None]:
    """A write of the file `name` of the run directory: an OSError becomes CannotRecord, which says what failed,
    that nothing recorded is lost, and how to continue."""
    try:
        yield
    except OSError as e:
        raise CannotRecord(f"run {run_dir}: cannot write {name} ({e.strerror or e}); the run stopped and nothing it "
                           f"recorded is lost: make room, then `mora resume {run_dir}`") from None


class _ReviewEnded(Exception):
    """The reviewer gave no decision (input closed, script exhausted): the run keeps waiting for review."""


class _StopRequested(Exception):
    """A stop was requested: the run stops at this checkpoint, resumable; args: the review it would ask, if any."""


HELD = (ToolCallExecutionEvent, *CHECKPOINTS)
"""From the first of these on, a turn's records wait for the state that covers them (see `runs.state`)."""


def _cause(error: Exception) -> str:
    """A failure inside the team on one line. autogen re-raises a participant's exception as a RuntimeError
    whose text is `Type: message\nTraceback: ...`: its first line is the cause."""
    text = str(error)
    if isinstance(error, RuntimeError) and "\nTraceback:\n" in text:
        return text.partition("\n")[0].rstrip(": ")
    return describe_error(error)


class _Session:
    """One process driving one run directory: the team, its transcript and run.json."""

    def __init__(self, run_dir: Path, info: dict[str, Any], sops: dict[str, SOP], model_client: ChatCompletionClient,
                 on_record: Callable[[Record, Path], None] | None, reviewer: Reviewer) -> None:
        self.run_dir, self.info, self.on_record, self.reviewer = run_dir, info, on_record, reviewer
        self.conductor = ConductorAgent(sops, run_dir, info["seed"], info["overrides"], info.get("max_repeats", 3),
                                        info.get("candidates", 1))
        self.team = build_team(model_client, sops, self.conductor)
        with recording(run_dir, "transcript.jsonl"):  # it completes or drops a last line cut short
            self.transcript = TranscriptWriter(run_dir / "transcript.jsonl")
        self.held: list[Record] = []
        self.last_message: BaseChatMessage | None = None
        """The last message of the group chat: it says who acts next (for the error line of a failure)."""
        self.started, self.previous_seconds = time.monotonic(), float(info.get("seconds") or 0.0)

    def save_info(self, **changes: Any) -> None:
        self.info.update(changes)
        with recording(self.run_dir, "run.json"):
            _write_json(self.run_dir / "run.json", self.info)

    def _emit(self, record: Record) -> None:
        with recording(self.run_dir, "transcript.jsonl"):
            self.transcript.append(record)
        if self.on_record:
            self.on_record(record, self.run_dir)

    def _flush(self) -> None:
        """Append the held records."""
        while self.held:
            self._emit(self.held.pop(0))

    def note(self, type_: str, text: str) -> None:
        self._emit(self.transcript.make("note", "runner", type_, {"text": text}))

    async def start(self, status: str, stop: asyncio.Event | None, revise: str | None = None) -> RunOutcome:
        """Reconcile the saved state with the transcript (and revise a step's output, if asked), then run from
        there."""
        state = read_state(self.run_dir)
        if state is not None:
            try:
                await self.team.load_state(state.team)
            except Exception as e:  # a state.json that parses but that the team cannot take
                raise InputError(f"{self.run_dir / STATE_FILE}: damaged ({describe_error(e)}); the run cannot continue "
                                 "from it (delete it to run the request again from the start)") from None
            self.verify_artifacts(state)
            if isinstance(checkpoint := state.checkpoint.to_message(), BaseChatMessage):
                self.last_message = checkpoint
        resumption = reconcile(state, self.transcript.records)
        for record in resumption.recovered:
            self._emit(record)
        recovered = [f"transcript.jsonl: {problem}" for problem in self.transcript.problems]
        if resumption.recovered:
            recovered.append(f"appended {len(resumption.recovered)} record(s) of the last checkpoint that a crash "
                             "kept out of the transcript (from state.json)")
        if recovered:
            self.note("Recovered", "; ".join(recovered))
        if status != "queued":
            self.note("Resumed", f"resumed a run that was {status}"
                       + (" from its last checkpoint" if state is not None else " from the start"))
        if resumption.finished is not None and self.result_intact(resumption.finished):
            return await self.end(resumption.finished)
        if revise is not None:
            await self.revise(revise, resumption)
        task, replay = resumption.task, resumption.task is not None
        if state is None and task is None:
            task = RequestMessage(content=UserRequest.model_validate(self.info["request"]), source="user")
        return await self.drive(task, replay, resumption.review, stop)

    async def revise(self, step: str, resumption: Resumption) -> None:
        """Ask the reviewer for an edit of a finished text step's output (`--revise STEP`) and apply it to the saved
        execution: the state that covers it is written first (with the decision as its last record), then the
        decision is appended to the transcript, as a turn's records are."""
        execution = self.conductor.execution
        result = execution.results.get(step) if execution is not None else None
        if resumption.review is not None or resumption.task is not None:
            waiting = resumption.review.key if resumption.review is not None else "its last turn"
            raise InputError(f"--revise {step}: the run waits at {waiting}; continue it first (mora resume RUN)")
        if result is None or execution.edit_target(result) != "output":
            texts = [key for key, r in execution.results.items() if r.tool is None] if execution else []
            raise InputError(f"--revise {step}: the run has no finished text step '{step}' (text steps that ran: "
                             f"{', '.join(texts) or 'none yet'})")
        request = review_request(execution, result, 1).model_copy(update={"options": ["next", "edit"]})
        decision = (await self.review(request)).content
        try:
            self.conductor.revise(decision)
        except ValueError as e:
            raise InputError(f"--revise {step}: {e}") from None
        record = self.transcript.make_message(ReviewDecisionMessage(content=decision, source=decision.by))
        write_state(self.run_dir, SavedState(seq=record.seq, records=[record], team=dict(await self.team.save_state())))
        self._emit(record)

    def verify_artifacts(self, state: SavedState) -> None:
        """Every file a finished step made is still the one it made (sha256), the last checkpoint's included."""
        execution = self.conductor.execution
        made = [*(execution.artifacts() if execution else []),
                *(m.content.output for m in map(Record.to_message, state.records)
                  if isinstance(m, StepResultMessage) and isinstance(m.content.output, Artifact))]
        for artifact in made:
            path = self.run_dir / artifact.path
            if not path.is_file():
                raise MoraError(f"{path}: missing; the run cannot be resumed without it")
            if sha256_file(path) != artifact.sha256:
                raise MoraError(f"{path}: changed since the run made it (sha256 differs); the run cannot be resumed")

    def result_intact(self, finished: RunFinished) -> bool:
        result = self.run_dir / "result.mp4"
        return finished.result is None or (result.is_file() and sha256_file(result) == finished.result.sha256)

    async def review(self, request: ReviewRequest) -> ReviewDecisionMessage:
        """Ask the reviewer; meanwhile run.json says the run waits for review."""
        self.save_info(status="waiting for review", pending_review=request.model_dump(mode="json"))
        try:
            decision = await decide(self.reviewer, request)
        except Exception as e:
            raise _ReviewEnded(str(e) or type(e).__name__) from e
        self.save_info(status="running", pending_review=None)
        return ReviewDecisionMessage(content=decision, source=decision.by)

    async def _turn(self, task: BaseChatMessage | None, replay: bool) -> tuple[RunFinished | None, ReviewRequest | None]:
        """One turn of the team: until the next checkpoint. Returns RunFinished (if any) and a review request.

        `replay`: the task is already in the transcript (a resumed turn's). The turn's records from its first
        tool execution or checkpoint on are kept in `self.held`."""
        finished = review = None
        self.held = []
        if task is not None:
            self.last_message = task
        # closed however the loop ends (recording failed, say): the team ends its turn unrecorded and leaves no task
        # behind in the event loop
        async with aclosing(self.team.run_stream(task=task, output_task_messages=not replay)) as stream:
            async for item in stream:
                if isinstance(item, TaskResult):
                    continue
                record = self.transcript.make_message(item)
                if self.held or isinstance(item, HELD):
                    self.held.append(record)
                else:
                    self._emit(record)
                if isinstance(item, BaseChatMessage):
                    self.last_message = item
                if isinstance(item, PlanMessage):
                    with recording(self.run_dir, "plan.json"):
                        _write_json(self.run_dir / "plan.json", item.content.model_dump())
                    self.info["task"] = item.content.task
                elif isinstance(item, ReviewRequestMessage):
                    review = item.content
                elif isinstance(item, RunFinishedMessage):
                    finished = item.content
        if not isinstance(self.last_message, CHECKPOINTS):
            raise MoraError("the group chat stopped without reaching a checkpoint")
        return finished, review

    def _storyboard(self) -> dict[str, Any]:
        """run.json's `storyboard`: a story's storyboard as it stands (for pages and scripts while the run goes on)."""
        board = self.conductor.execution.structured("storyboard") if self.conductor.execution else None
        return {"storyboard": board} if board is not None else {}

    def _elapsed(self) -> float:
        return round(self.previous_seconds + time.monotonic() - self.started, 3)

    async def drive(self, task: BaseChatMessage | None, replay: bool, pending: ReviewRequest | None,
                    stop: asyncio.Event | None) -> RunOutcome:
        """Run turns until the run ends (or `stop` is set); `pending`: a review to answer first (a resumed run that
        waited)."""
        self.info.pop("resumable", None)
        self.save_info(status="running", pid=os.getpid(), host=socket.gethostname(),
                       started=self.info.get("started") or datetime.now().isoformat())
        try:
            if pending is not None:
                task, replay = await self.review(pending), False
            while True:
                finished, review = await self._turn(task, replay)
                if finished is None:  # the state that covers the held records first, then the records
                    team = await self.team.save_state()
                    with recording(self.run_dir, STATE_FILE):
                        write_state(self.run_dir, SavedState(seq=self.held[-1].seq, records=self.held, team=dict(team)))
                self._flush()
                self.save_info(seconds=self._elapsed(), **self._storyboard())
                if finished is not None:
                    break
                if stop is not None and stop.is_set():
                    raise _StopRequested(review)
                task, replay = (await self.review(review) if review is not None else None), False
        except _StopRequested as e:
            review = e.args[0]
            self.note("Stopped", "stopped on request (resume with `mora resume RUN`)")
            self.save_info(status="stopped", resumable=True,
                           pending_review=review.model_dump(mode="json") if review else None)
            raise MoraError(f"stopped on request; `mora resume {self.run_dir}` continues") from None
        except _ReviewEnded as e:
            self.note("Interrupted", f"the review ended: {e}")
            raise MoraError(f"the review ended ({e}); the run waits for review: "
                            f"mora resume {self.run_dir} --review") from None
        except CannotRecord:  # as if killed here; run.json says so if it still can be written
            with suppress(CannotRecord):
                self.save_info(status="interrupted")
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            self.note("Interrupted", "interrupted (resume with `mora resume RUN`)")
            if self.info["status"] == "running":
                self.save_info(status="interrupted")
            raise
        except Exception as e:  # one line for the person; the traceback in the transcript and run.json
            details = traceback.format_exc()
            self._flush()  # what the failed turn did is kept, though no state covers it
            error = f"{self._where()}: {_cause(e)}"
            self._emit(self.transcript.make("error", "runner", "Error", {"error": error, "details": details}))
            finished = RunFinished(status="failed", error=error, details=details)
        return await self.end(finished)

    def _where(self) -> str:
        """Who was acting when the team failed: a step and its agent, the planner or the conductor."""
        if self.last_message is None:
            return "the team"
        agent = select_speaker([self.last_message])
        if isinstance(self.last_message, StepRequestMessage):
            return f"step '{self.last_message.content.key}' ({agent})"
        return agent

    async def end(self, finished: RunFinished) -> RunOutcome:
        """Record how the run ended in run.json, with its measures (read from its videos in a thread: the event loop
        may be a server's); raise for anything but finished."""
        ok = finished.status == "finished"
        measures = await asyncio.to_thread(run_measures, self.conductor.execution, ok)
        self.save_info(status=finished.status, error=None if ok else finished.error,
                       error_details=None if ok else finished.details, seconds=self._elapsed(),
                       finished=datetime.now().isoformat(), **measures)
        if finished.status == "rejected":
            raise InputError(finished.error)
        if finished.status == "stopped":
            raise MoraError(f"{finished.error} (run directory kept: {self.run_dir})")
        if not ok:
            raise MoraError(f"run failed: {finished.error} (run directory kept: {self.run_dir})")
        return RunOutcome(run_dir=self.run_dir, status=finished.status, result=self.run_dir / "result.mp4",
                          noise=self.info["noise"])
