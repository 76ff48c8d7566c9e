"""What runs exist and in what state: `run.json` of each run directory, read back."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora_agents.errors import InputError

ACTIVE = ("running", "waiting for review")


def read_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a run directory (no run.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg})") from None


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
    seconds: float
    result: Path | None
    request: str
    started: str


def list_runs(base: Path) -> list[RunSummary]:
    """The run directories under `base`, oldest first."""
    runs = []
    for run_dir in sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []:
        info = read_info(run_dir)
        result = run_dir / "result.mp4"
        runs.append(RunSummary(run_dir, info.get("task"), run_status(info), float(info.get("seconds") or 0.0),
                               result if result.is_file() else None, info["request"]["text"], info.get("started", "")))
    return runs
