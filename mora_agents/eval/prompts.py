"""Prompt files: plain text (one prompt per line) or JSON / JSONL entries with optional fields.

An entry may carry ``prompt``, ``type`` (I, II or III: number of moving objects, for ``--suite t2v``),
``video`` (relative to the file), ``input_caption`` and ``output_caption``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mora_agents.errors import InputError
from mora_agents.eval.video import BadInputError
from mora_agents.jsonl import read_lines

MAX_PROMPTS_BYTES = 16 * 2**20

TYPES = {"1": "I", "2": "II", "3": "III", "i": "I", "ii": "II", "iii": "III"}


@dataclass(frozen=True)
class PromptEntry:
    prompt: str
    type: str | None = None
    video: Path | None = None
    input_caption: str | None = None
    output_caption: str | None = None


def _normalise_type(value: object) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower().removeprefix("type").strip()
    if key not in TYPES:
        raise ValueError(f"unknown prompt type {value!r} (use I, II or III)")
    return TYPES[key]


def _entry(item: object, base: Path) -> PromptEntry:
    if isinstance(item, str):
        return PromptEntry(item)
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
        raise ValueError("each entry needs a 'prompt' string")
    return PromptEntry(
        prompt=item["prompt"],
        type=_normalise_type(item.get("type")),
        video=base / item["video"] if item.get("video") else None,
        input_caption=item.get("input_caption"),
        output_caption=item.get("output_caption"),
    )


def load_prompts(path: str | Path) -> list[PromptEntry]:
    """Entries of a prompt file; :class:`BadInputError` names the file on any problem."""
    path = Path(path)
    try:
        lines = read_lines(path, MAX_PROMPTS_BYTES)  # a regular file, split at \n only (U+2028 is valid in JSON)
        text = "\n".join(lines)
        if path.suffix == ".json":
            items = json.loads(text)
            if not isinstance(items, list):
                raise ValueError("expected a JSON list")
        elif path.suffix == ".jsonl":
            items = [json.loads(line) for line in lines if line.strip()]
        else:
            items = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return [_entry(item, path.parent) for item in items]
    except InputError as exc:  # the file itself: it names it
        raise BadInputError(str(exc)) from None
    except ValueError as exc:
        raise BadInputError(f"{path}: invalid prompts file ({exc})") from None
