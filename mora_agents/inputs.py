"""What a person may give, checked in one place before any run directory exists.

Each check raises InputError with one line that names the input (`--image cat.png: ...`) and the problem.
The command line, `mora chat`, the runner (`validate_request`), SOP inputs and the tools' parameter types
(`mora_agents.tools.params`) all use these functions and limits; so will web uploads and batch lines.
The decoding limits themselves (image pixels, video size, frame rate, decoded pixels) are in `media`.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mora_agents.errors import InputError
from mora_agents.media import (
    Artifact,
    article,
    atomic_copy,
    load_image,
    media_kind,
    probe,
    save_image,
    shrink_image,
)

MAX_TEXT_CHARS = 2000
"""Prompts, instructions and requests (a text encoder reads 77 tokens; an LLM reads the rest)."""
MAX_SEED = 2**32 - 1
"""Seeds are 0..2^32-1; a run's later requests use (seed + n) mod 2^32."""
MIN_SIDE = 16
"""Images and video frames need at least this many pixels per side."""
MAX_ASPECT_RATIO = 4.0
"""Longer side / shorter side of an input image: a wider picture would be mostly cropped away."""
MAX_WORK_SIDE = 2048
"""The largest side a model works at (tool `width`/`height`); input images are copied scaled down to fit it."""
MIN_VIDEO_FRAMES = 2


def text_problem(text: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """What is wrong with a prompt-like text, or None."""
    if not text.strip():
        return "empty (only spaces); say what you want"
    if len(text) > max_chars:
        return f"{len(text)} characters; at most {max_chars}"
    if "\x00" in text:
        return "contains a NUL character"
    return None


def check_text(text: str, label: str) -> str:
    if (problem := text_problem(text)) is not None:
        raise InputError(f"{label}: {problem}")
    return text


def check_number(value: Any, label: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number within [minimum, maximum]."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{label}: '{value}' is not a number") from None
    if not math.isfinite(number):
        raise InputError(f"{label}: {value} is not a finite number")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"[{'-inf' if minimum is None else f'{minimum:g}'}, {'inf' if maximum is None else f'{maximum:g}'}]"
        raise InputError(f"{label}: {number:g} is out of range {bounds}")
    return number


def check_duration(value: Any, label: str = "--duration") -> float:
    """A length in seconds: finite and positive (an SOP narrows the range)."""
    seconds = check_number(value, label)
    if seconds <= 0:
        raise InputError(f"{label} {seconds:g}: must be positive")
    return seconds


def check_seed(value: Any, label: str = "--seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InputError(f"{label}: {value} is not a whole number from 0 to {MAX_SEED} (2^32 - 1)")
    return value


def check_attachment(path: Path, kind: str, label: str, max_seconds: float | None = None) -> Artifact:
    """A person's image or video (`kind`), decoded in full and within the limits; `max_seconds` bounds a video.

    Images: at least MIN_SIDE px per side, at most MAX_ASPECT_RATIO:1 and `media.MAX_IMAGE_PIXELS`. Videos: at
    least 2 frames of MIN_SIDE px per side, no decoding error, and `media`'s frame rate and size limits.
    """
    artifact = probe(path, label=label)
    if artifact.kind != kind:
        raise InputError(f"{label}: is {article(artifact.kind)}, not {article(kind)}")
    size, short, long = f"{artifact.width}x{artifact.height} pixels", *sorted((artifact.width, artifact.height))
    if short < MIN_SIDE:
        raise InputError(f"{label}: {size} is too small (at least {MIN_SIDE} px per side)")
    if kind == "image" and long > MAX_ASPECT_RATIO * short:
        raise InputError(f"{label}: {size} is wider than {MAX_ASPECT_RATIO:g}:1 (most of it would be cropped away); "
                         "crop it first")
    if kind == "video" and artifact.frames < MIN_VIDEO_FRAMES:
        raise InputError(f"{label}: has {artifact.frames} frame; a video needs at least {MIN_VIDEO_FRAMES}")
    if kind == "video" and max_seconds is not None and artifact.seconds > max_seconds:
        raise InputError(f"{label}: lasts {artifact.seconds:g} s ({artifact.frames} frames at {artifact.fps:g} fps); "
                         f"at most {max_seconds:g} s")
    return artifact


def copy_input(src: Path, folder: Path, index: int) -> Path:
    """Copy a checked input into a run's `inputs/` folder as `<index>-<name>`; the person's file is only read.

    Images become RGB PNG files scaled down to fit MAX_WORK_SIDE (EXIF orientation applied): no model ever
    sees a larger picture. Videos are copied byte for byte.
    """
    if media_kind(src) == "image":
        dst = folder / f"{index}-{src.stem}.png"
        save_image(shrink_image(load_image(src), MAX_WORK_SIDE), dst)
    else:
        dst = folder / f"{index}-{src.name}"
        atomic_copy(src, dst)
    return dst


def _check_writable(folder: Path, label: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise InputError(f"{label}: cannot write in {folder} ({e.strerror or e})") from None


def check_output_dir(path: Path, label: str) -> Path:
    """A folder to write into: an existing writable folder, or a new one in an existing writable folder."""
    name = f"{label} {path}"
    if path.exists() and not path.is_dir():
        raise InputError(f"{name}: is a file, not a folder")
    parent = path if path.is_dir() else path.parent
    if not parent.is_dir():
        raise InputError(f"{name}: the folder {parent} does not exist")
    _check_writable(parent, name)
    return path


def check_output_file(path: Path, label: str) -> Path:
    """A file to (re)write atomically: not a folder, in an existing writable folder."""
    name = f"{label} {path}"
    if path.is_dir():
        raise InputError(f"{name}: is a folder, not a file")
    if path.exists() and not path.is_file():
        raise InputError(f"{name}: not a regular file")
    if not path.parent.is_dir():
        raise InputError(f"{name}: the folder {path.parent} does not exist")
    _check_writable(path.parent, name)
    return path


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """`tool.param=value` items as {tool: {param: value}}; values are read as plain YAML scalars (12, 0.5, true,
    text), lists or mappings; tags (`!!python/...`) and malformed YAML are errors."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        tool, dot, param = key.partition(".")
        if not sep or not dot or not tool or not param:
            raise InputError(f"--set {item}: expected TOOL.PARAM=VALUE, e.g. image_to_video.motion_bucket_id=127")
        overrides.setdefault(tool, {})[param] = _plain_value(raw, f"--set {item}")
    return overrides


def _plain_value(raw: str, label: str) -> Any:
    try:
        if any(isinstance(token, (yaml.TagToken, yaml.AnchorToken, yaml.AliasToken)) for token in yaml.scan(raw)):
            raise InputError(f"{label}: YAML tags, anchors and aliases are not allowed; give a plain value")
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as e:
        raise InputError(f"{label}: not a valid value ({str(e).splitlines()[0]})") from None
    plain = (str, int, float, bool, list, dict, type(None))
    return value if isinstance(value, plain) else raw  # e.g. a date-like text stays text
