"""What runs exist and in what state: `run.json` of each run directory, read back."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mora_agents.errors import InputError, read_problem
from mora_agents.inputs import MAX_SEED
from mora_agents.settings import MemoryProfile, Preset
from mora_agents.sop.messages import ReviewRequest, UserRequest

ACTIVE = ("running", "waiting for review")
Status = Literal["queued", "running", "waiting for review", "finished", "failed", "rejected", "stopped", "interrupted"]


class RunFile(BaseModel):
    """`run.json`: every field the runner, the server and the batch read, each value checked (strictly: `"5"` is no
    seed), so that an edited or damaged file is named with its field when it is read, not with a KeyError later.
    Other fields (the measures of a finished run, a batch's) may be added freely."""

    model_config = ConfigDict(extra="allow", strict=True)
    request: UserRequest
    preset: Preset
    device: str = Field(min_length=1)
    memory_profile: MemoryProfile = "resident"
    seed: int = Field(ge=0, le=MAX_SEED)
    status: Status
    overrides: dict[str, dict[str, Any]]
    noise: bool
    seconds: float = Field(ge=0, allow_inf_nan=False)
    task: str | None = None
    system: str | None = None
    max_repeats: int = Field(3, ge=0)
    review: bool = False
    sops_dir: str = ""
    adapters: str | None = None
    adapters_sha256: str | None = None
    pending_review: ReviewRequest | None = None
    resumable: bool = False
    pid: int | None = None
    host: str | None = None
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    error_details: str | None = None


def read_info(run_dir: Path) -> dict[str, Any]:
    """A run's `run.json`; InputError naming the file and the problem (the field and its value) if it is missing or
    damaged."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no run.json)")
    try:
        data = path.read_bytes()
        RunFile.model_validate_json(data)
        info = json.loads(data)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: damaged ({read_problem(e)})") from None
    return info


def _alive(info: dict[str, Any]) -> bool:
    """Whether the process that wrote `info` still runs (known only on the same host)."""
    if info.get("host") != socket.gethostname() or not info.get("pid"):
        return False
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(info: dict[str, Any]) -> str:
    """finished, failed, stopped, running, waiting for review, or interrupted (its process is gone)."""
    status = info.get("status", "interrupted")
    if status == "running" and not _alive(info):
        return "interrupted"
    return status


def can_resume(info: dict[str, Any]) -> bool:
    """Whether a run (its run.json) can be run on: queued, interrupted, failed, waiting, or stopped on request."""
    status = run_status(info)
    return status in ("queued", "interrupted", "failed", "waiting for review") or (
        status == "stopped" and bool(info.get("resumable")))


def check_resumable(run_dir: Path, info: dict[str, Any]) -> None:
    """InputError unless `can_resume(info)`: checked before any model library loads."""
    if not can_resume(info):
        raise InputError(f"{run_dir}: the run is {run_status(info)}; only queued, interrupted, failed, waiting or "
                         "stopped-on-request runs can be run")


@dataclass
class RunSummary:
    path: Path
    task: str | None
    status: str
    """As `run_status`, or `damaged` (then `problem` says what is wrong)."""
    seconds: float
    result: Path | None
    request: str
    started: str
    problem: str | None = None


def list_runs(base: Path, links: bool = True) -> list[RunSummary]:
    """The run directories under `base`, oldest first; a damaged one is listed as such, with the reason.
    `links=False` leaves out those that are links (the server shows only what lies inside its folder)."""
    runs = []
    found = sorted(p for p in base.iterdir() if (p / "run.json").exists()) if base.is_dir() else []
    for run_dir in found if links else [p for p in found if not (p.is_symlink() or (p / "run.json").is_symlink())]:
        try:
            info = read_info(run_dir)
        except InputError as e:
            runs.append(RunSummary(run_dir, None, "damaged", 0.0, None, "", "", problem=str(e)))
            continue
        result = run_dir / "result.mp4"
        runs.append(RunSummary(run_dir, info.get("task"), run_status(info), float(info["seconds"]),
                               result if result.is_file() else None, info["request"]["text"], info.get("started", "")))
    return runs
