"""Seed prompt files: the few examples the prompt writer starts from (and held-out prompts for evaluation).

- text (any other suffix): one prompt per line; blank lines and lines starting with `#` are skipped;
- JSONL (`.jsonl`): one JSON object per line with a `prompt` (or `text`) string, and for tasks that take
  media, `images` / `videos` (a path or a list of paths, relative to the file);
- JSON (`.json`): a list of such objects or of strings;
- CSV (`.csv`): a header row with a `prompt` (or `text`) column; other columns are ignored.

Lines end at `\n` only (`mora_agents.jsonl`); the file must be a regular file of at most 16 MiB. Any problem is
one InputError naming the file (and the line); an empty file is one too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mora_agents.errors import InputError
from mora_agents.inputs import text_problem
from mora_agents.jsonl import loads_line, read_lines

TEXT_FIELDS = ("prompt", "text")
MAX_SEEDS_BYTES = 16 * 2**20


@dataclass
class Seed:
    text: str
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    label: str = ""
    """Where it came from: `seeds.jsonl:3`."""


def _paths(value: Any, base: Path, name: str) -> list[Path]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None or not all(isinstance(item, str) and item.strip() for item in items):
        raise ValueError(f"'{name}' must be a path or a list of paths")
    return [base / Path(item).expanduser() for item in items]


def _seed(item: Any, base: Path, label: str) -> Seed:
    """A seed from a JSON value: a string, or an object with a prompt (or text) and optional media."""
    if isinstance(item, str):
        item = {"prompt": item}
    if not isinstance(item, dict):
        raise ValueError("expected a JSON object with a 'prompt', or a string")
    key = next((k for k in TEXT_FIELDS if k in item), None)
    if key is None or not isinstance(item[key], str):
        raise ValueError("no 'prompt' (or 'text') string")
    return Seed(item[key], _paths(item.get("images", []), base, "images"), _paths(item.get("videos", []), base, "videos"),
                label)


def _csv_seeds(lines: list[str], path: Path) -> list[Seed]:
    rows = list(csv.reader(f"{line}\n" for line in lines))
    header = [name.strip().lower() for name in rows[0]] if rows else []
    column = next((header.index(k) for k in TEXT_FIELDS if k in header), None)
    if column is None:
        raise InputError(f"{path}: no 'prompt' (or 'text') column in the header row")
    return [Seed(row[column] if column < len(row) else "", label=f"{path}:{number}")
            for number, row in enumerate(rows[1:], 2) if any(cell.strip() for cell in row)]


def read_seeds(path: Path) -> list[Seed]:
    """The prompts of a seed file (see the module docstring); raises InputError naming the file and line."""
    path = Path(path)
    lines = read_lines(path, MAX_SEEDS_BYTES)
    suffix, base = path.suffix.lower(), path.parent
    if suffix == ".csv":
        seeds = _csv_seeds(lines, path)
    elif suffix == ".json":
        text = "\n".join(lines)
        try:
            items = json.loads(text) if text.strip() else []
            if not isinstance(items, list):
                raise ValueError("expected a JSON list of prompts")
            seeds = [_seed(item, base, f"{path}[{n}]") for n, item in enumerate(items)]
        except (json.JSONDecodeError, ValueError, RecursionError) as e:
            raise InputError(f"{path}: {e}") from None
    elif suffix == ".jsonl":
        seeds = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    seeds.append(_seed(loads_line(line), base, f"{path}:{number}"))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{number}: not valid JSON ({e.msg}, column {e.colno})") from None
                except ValueError as e:
                    raise InputError(f"{path}:{number}: {e}") from None
    else:
        seeds = [Seed(line.strip(), label=f"{path}:{number}") for number, line in enumerate(lines, 1)
                 if line.strip() and not line.lstrip().startswith("#")]
    if not seeds:
        raise InputError(f"{path}: no prompts (one per line; or JSONL / CSV with a 'prompt' field)")
    for seed in seeds:
        if (problem := text_problem(seed.text)) is not None:
            raise InputError(f"{seed.label}: prompt {problem}")
    return seeds
