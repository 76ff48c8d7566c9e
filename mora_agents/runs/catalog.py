"""What runs exist and in what state: `run.json` of each run directory, read back."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mora_agents.errors import InputError, read_problem
from mora_agents.sop.messages import UserRequest

ACTIVE = ("running", "waiting for review")


class RunFile(BaseModel):
    """What every reader of `run.json` relies on; other fields may be added freely."""

    model_config = ConfigDict(extra="allow")
    request: UserRequest
    preset: str
    device: str
    seed: int
    status: str
    overrides: dict[str, dict[str, Any]]
    noise: bool
    seconds: float
    task: str | None = None


def read_info(run_dir: Path) -> dict[str, Any]:
    """A run's `run.json`; InputError naming the file and the problem if it is missing or damaged."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no run.json)")
    try:
        info = json.loads(path.read_bytes())
        RunFile.model_validate(info)
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


def list_runs(base: Path) -> list[RunSummary]:
    """The run directories under `base`, oldest first; a damaged one is listed as such, with the reason."""
    runs = []
    for run_dir in sorted(p for p in base.iterdir() if (p / "run.json").exists()) if base.is_dir() else []:
        try:
            info = read_info(run_dir)
        except InputError as e:
            runs.append(RunSummary(run_dir, None, "damaged", 0.0, None, "", "", problem=str(e)))
            continue
        result = run_dir / "result.mp4"
        runs.append(RunSummary(run_dir, info.get("task"), run_status(info), float(info["seconds"]),
                               result if result.is_file() else None, info["request"]["text"], info.get("started", "")))
    return runs
