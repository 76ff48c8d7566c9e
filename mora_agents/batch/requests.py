"""Batch requests: what `mora run` takes, one JSON object per line of a REQUESTS.jsonl file.

    {"text": "a lighthouse in a storm", "duration": 8, "seed": 42, "name": "lighthouse"}
    {"text": "the cat starts to dance", "images": ["cat.png"], "set": {"image_to_video.motion_bucket_id": 127}}

Fields (as the flags of `mora run`): `text` (the request, required), `task`, `images`, `videos` (paths,
relative to the file's folder), `duration`, `seed`, `set` (`{"TOOL.PARAM": value}`, as `--set`), `candidates` (as
`--candidates`), `adapters` (a
`mora train` output, relative to the file's folder; default: the batch's `--adapters`) and `name` (a label for the
progress display and the summary). Unknown fields are errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from mora_agents.errors import InputError, validation_summary
from mora_agents.jsonl import loads_line, read_lines

MAX_REQUESTS_BYTES = 64 * 2**20


@dataclass
class BatchRequest:
    """One request of a batch: text, task, files, duration, seed and tool overrides, as `mora run` takes them.

    Without a seed, the batch derives one from the request's content, so running the batch again makes the
    same run. `label` says where the request came from in messages (`REQUESTS.jsonl:3`; default `request N`).
    """

    text: str
    task: str | None = None
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    duration: float | None = None
    seed: int | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool parameters, {tool: {param: value}}, as `RunOptions.overrides` (`--set tool.param=value`)."""
    adapters: Path | None = None
    """A `mora train` output this request runs with (None: the batch's `RunOptions.adapters`)."""
    name: str | None = None
    label: str = ""
    candidates: int = 1
    """Best of N for the SOP's `best_of` steps (`--candidates`)."""


class _Line(BaseModel):
    """One line of a requests file. A new field of `mora run` is one more field here."""

    model_config = ConfigDict(extra="forbid")
    text: str
    task: str | None = None
    images: list[str] = []
    videos: list[str] = []
    duration: float | None = None
    seed: StrictInt | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    candidates: StrictInt = 1
    adapters: str | None = None
    name: str | None = None


FIELDS = tuple(_Line.model_fields)


def _overrides(items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{"tool.param": value}` as {tool: {param: value}}."""
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in items.items():
        tool, _, param = key.partition(".")
        if not tool or not param:
            raise InputError(f"set: '{key}' is not TOOL.PARAM (e.g. image_to_video.motion_bucket_id)")
        overrides.setdefault(tool, {})[param] = value
    return overrides


def parse_line(text: str, base: Path, label: str) -> BatchRequest:
    """A request from one line of JSON; file paths are relative to `base`. Raises InputError."""
    try:
        item = loads_line(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg}, column {e.colno})") from None
    except ValueError as e:  # nested too deeply
        raise InputError(str(e)) from None
    if not isinstance(item, dict):
        raise InputError("expected a JSON object, e.g. {\"text\": \"a red fox\"}")
    unknown = [key for key in item if key not in FIELDS]
    if unknown:
        raise InputError(f"unknown field '{unknown[0]}' (fields: {', '.join(FIELDS)})")
    try:
        line = _Line.model_validate(item)
    except ValidationError as e:
        raise InputError(validation_summary(e)) from None
    return BatchRequest(text=line.text, task=line.task, images=[base / Path(p).expanduser() for p in line.images],
                        videos=[base / Path(p).expanduser() for p in line.videos], duration=line.duration,
                        seed=line.seed, overrides=_overrides(line.set),
                        adapters=base / Path(line.adapters).expanduser() if line.adapters else None, name=line.name,
                        label=label, candidates=line.candidates)


def read_requests(path: Path) -> tuple[list[BatchRequest], list[str]]:
    """The requests of a JSONL file, and a `FILE:LINE: problem` message for each line that is no request.

    Lines end at `\n` only (see `mora_agents.jsonl`). Raises InputError if the file is not a regular file of at
    most 64 MiB, a line is not UTF-8, or it holds no lines.
    """
    lines = read_lines(path, MAX_REQUESTS_BYTES)
    requests, errors = [], []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        label = f"{path}:{number}"
        try:
            requests.append(parse_line(text, path.parent, label))
        except InputError as e:
            errors.append(f"{label}: {e}")
    if not requests and not errors:
        raise InputError(f"{path}: no requests (one JSON object per line, e.g. {{\"text\": \"a red fox\"}})")
    return requests, errors
