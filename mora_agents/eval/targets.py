"""What to evaluate: a video file, or a run directory (``plan.json`` + ``result.mp4``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mora_agents.eval.video import BadInputError

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"}
PLAN, RESULT, INFO = "plan.json", "result.mp4", "run.json"


@dataclass
class Target:
    """One video with the conditioning a metric may need."""

    source: str
    video: Path
    prompt: str | None = None
    task: str | None = None
    input_videos: list[Path] = field(default_factory=list)
    input_caption: str | None = None
    output_caption: str | None = None
    drift: dict[str, list[dict]] = field(default_factory=dict)
    """A run's drift per chained step (its `run.json`; see `mora_agents.eval.drift.chain_drift`)."""
    system: str | None = None
    """The paper's system the run was made with (its `run.json`), if any."""
    noise: bool = False
    """A run of random-weight models (`--preset tiny`, its `run.json`): its scores measure noise."""
    story: dict[str, Any] = field(default_factory=dict)
    """A story's storyboard, clips (paths in the run) and parts (its `run.json`'s `story`), measured again."""


def load_target(path: str | Path) -> Target:
    """A :class:`Target` for a video file or a run directory; :class:`BadInputError` otherwise."""
    path = Path(path)
    if path.is_dir():
        return _load_run(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file or directory")
    return Target(source=str(path), video=path)


def _load_run(run: Path) -> Target:
    try:
        plan = json.loads((run / PLAN).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{run}: not a run directory (no {PLAN})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{run / PLAN}: invalid JSON ({exc})") from None
    if not isinstance(plan, dict):
        raise BadInputError(f"{run / PLAN}: expected a JSON object")
    video = run / RESULT
    if not video.is_file():
        raise BadInputError(f"{run}: run has no {RESULT}")
    inputs = plan.get("inputs") if isinstance(plan.get("inputs"), dict) else {}
    info = _run_info(run)
    input_videos = [
        run / value
        for value in inputs.values()
        if isinstance(value, str) and Path(value).suffix.lower() in VIDEO_SUFFIXES
    ]
    return Target(
        source=str(run),
        video=video,
        prompt=inputs.get("prompt") if isinstance(inputs.get("prompt"), str) else None,
        task=plan.get("task") if isinstance(plan.get("task"), str) else None,
        input_videos=input_videos,
        input_caption=inputs.get("input_caption"),
        output_caption=inputs.get("output_caption"),
        drift=_recorded(info, "drift"),
        story=_recorded(info, "story"),
        system=info.get("system") if isinstance(info.get("system"), str) else None,
        noise=info.get("noise") is True,
    )


def _run_info(run: Path) -> dict:
    """A run's run.json (empty when it cannot be read)."""
    try:
        info = json.loads((run / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _recorded(info: dict, key: str) -> dict[str, Any]:
    """What a run recorded in its run.json under `key` (its drift, its story; none for a run from before it was
    measured)."""
    value = info.get(key)
    return value if isinstance(value, dict) else {}
