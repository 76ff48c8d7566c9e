"""JSON Lines and the text files a person gives: a line ends at `\\n`, and only there.

`str.splitlines()` also ends lines at \\v, \\f, \\x1c, \\x1d, \\x1e, U+0085, U+2028 and U+2029, and the last three may
stand unescaped inside a JSON string: a line split there is two broken lines. So every JSONL reader splits at `\\n`
only (`text_lines`), and every writer escapes U+0085, U+2028 and U+2029 (`dumps`, `escape_separators`), so that
no other reader breaks a line either; other text stays UTF-8 as it is.

Files a person gives are read with `read_bounded`: regular files only (a pipe would block, a device never end), up
to a size limit.
"""

from __future__ import annotations

import codecs
import json
import os
import stat
from pathlib import Path
from typing import Any

from mora_agents.errors import InputError, read_problem

_SEPARATORS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})
MAX_DEPTH = 20
"""Nesting of lists and objects in one line a person gives (a request, a seed)."""


def escape_separators(json_text: str) -> str:
    """JSON text with U+0085, U+2028 and U+2029 escaped (in JSON text they can only stand inside strings)."""
    return json_text.translate(_SEPARATORS)


def dumps(value: Any, **kwargs: Any) -> str:
    """`value` as one JSON line, without its newline: UTF-8 text kept, line separators escaped."""
    return escape_separators(json.dumps(value, ensure_ascii=False, **kwargs))


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"


def read_bounded(path: Path, limit: int, error: type[InputError] = InputError) -> bytes:
    """A regular file's bytes, at most `limit` of them; `error` naming the file otherwise (missing, a folder, pipe
    or device, unreadable or larger). The file is opened without blocking and checked before it is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: not a regular file (a folder, pipe or device)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{path}: larger than {_size(limit)}")
    return data


def text_lines(data: bytes, label: object) -> list[str]:
    """The lines of a UTF-8 text, split at `\\n` only: a `\\r` before it and a byte-order mark at the start dropped,
    no empty line after a last newline. InputError names the first line (`LABEL:N`) that is not UTF-8."""
    lines = data.removeprefix(codecs.BOM_UTF8).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    text = []
    for number, line in enumerate(lines, 1):
        try:
            text.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as e:
            raise InputError(f"{label}:{number}: not UTF-8 text (byte {line[e.start]:#04x} at column {e.start + 1})"
                             ) from None
    return text


def read_lines(path: Path, limit: int) -> list[str]:
    """The lines of a text file a person gives (`read_bounded`, then `text_lines`)."""
    return text_lines(read_bounded(path, limit), path)


def loads_line(line: str) -> Any:
    """One line's JSON value, nested at most MAX_DEPTH levels; ValueError (json's JSONDecodeError included)."""
    try:
        value = json.loads(line)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


def read_json_object(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object the project recorded (settings, a log), with `keys` in it; InputError naming the file and what
    is wrong when it is damaged (truncated, edited, not UTF-8)."""
    try:
        data = json.loads(Path(path).read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if missing := [key for key in keys if key not in data]:
            raise ValueError(f"no '{missing[0]}'")
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{path}: damaged ({read_problem(e)})") from None
    return data
