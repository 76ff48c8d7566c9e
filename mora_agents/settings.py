"""Process-wide settings the tools read: model preset, device, output folder and a progress hook.

Tools are plain functions; these settings say *which* models they use and where unnamed outputs go.
A process-wide object (not a contextvar) because tools may run in worker threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

Preset = Literal["full", "tiny"]
MemoryProfile = Literal["resident", "24gb"]
PRESETS: tuple[str, ...] = get_args(Preset)
MEMORY_PROFILES: tuple[str, ...] = get_args(MemoryProfile)
RUNS_DIR = Path("runs")
"""Where runs go and are listed unless `--out` says otherwise: the default of every command (run, chat, resume's
listing, batch, serve, mcp) and of `RunOptions.out`."""
SOPS_VARIABLE = "MORA_SOPS"


def user_sops_dir() -> Path:
    """The person's SOP folder: $MORA_SOPS, else ~/.mora/sops. Run, chat, batch, `mora sops` and serve read it (beside
    the shipped SOPs) unless `--sops DIR` names another; the page's SOP editor saves into it."""
    return Path(os.environ.get(SOPS_VARIABLE) or Path.home() / ".mora" / "sops").expanduser()


class ProgressHook(Protocol):
    def start(self, label: str, total: int) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


class _NoProgress:
    def start(self, label: str, total: int) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Speed:
    """How the denoisers run: a `--speed` profile resolved with its options (`mora_agents.pipelines.speed`); hashable,
    as part of a loaded pipeline's identity. The defaults change nothing."""

    profile: str = "exact"
    cache: str = "none"
    cache_threshold: float | None = None
    """None: each model's own."""
    attention: str = "default"
    compile: str = "none"
    quantize: str = "none"
    distill: str = "none"
    parallel: str = "ulysses"
    notes: tuple[str, ...] = field(default=(), compare=False)
    """What the profile left out on this device, and why."""

    @property
    def exact(self) -> bool:
        """Whether it changes nothing a pipeline computes (`parallel` only matters with several GPUs)."""
        return self == Speed(parallel=self.parallel)

    def record(self) -> dict[str, Any]:
        """For run.json: every setting, and the notes."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    def describe(self) -> str:
        """One line for the transcript."""
        changed = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                   if f.name not in ("profile", "notes") and getattr(self, f.name) != f.default]
        return f"{self.profile}: " + (", ".join(changed) or "nothing changed") + "".join(
            f"; {n}" for n in self.notes)


@dataclass
class ToolSettings:
    preset: str = "full"
    """`full` (real weights) or `tiny` (random small models: noise output, for tests and demos)."""
    device: str = "auto"
    out_dir: Path = field(default_factory=lambda: Path("mora-outputs"))
    """Where a tool writes when no `output` path is given."""
    models: dict[str, str] = field(default_factory=dict)
    """Overrides of model ids or local directories, by model key (e.g. {"svd": "/models/svd-xt"})."""
    memory_profile: str = "resident"
    """`resident`: every model stays on the device (fastest); `24gb`: each model is on the GPU only while it
    runs (FLUX and Wan 14B a block at a time), SEINE's VAE decodes a frame at a time, SVD's feed-forwards run a
    frame at a time and the newer video VAEs decode in tiles, so every task fits a 24 GB GPU (slower; the same
    outputs up to float rounding, except the tiled decodes, which blend their tiles' overlaps)."""
    adapters: Path | None = None
    """A folder written by `mora train` (LoRA or full weights and modulation tokens): the pipelines of the agents
    it trained load with it (see `mora_agents.pipelines.adapters`)."""
    speed: Speed = field(default_factory=Speed)
    """How the denoisers run (`--speed`, `--speed-option`)."""
    gpus: int = 1
    """GPUs one request's denoiser is split across (`--gpus`, `mora_agents.pipelines.parallel`)."""
    progress: ProgressHook = field(default_factory=_NoProgress)


_settings = ToolSettings()


def settings() -> ToolSettings:
    return _settings


@contextmanager
def use_settings(**changes) -> Iterator[ToolSettings]:
    """Temporarily change the tool settings: `with use_settings(preset="tiny"): text_to_image(...)`."""
    global _settings
    previous = _settings
    _settings = replace(previous, **changes)
    try:
        yield _settings
    finally:
        _settings = previous


def configure(**changes) -> ToolSettings:
    """Change the tool settings for the rest of the process."""
    global _settings
    _settings = replace(_settings, **changes)
    return _settings


def output_path(output: str | None, tool: str, suffix: str) -> Path:
    """The path a tool writes to: `output` if given, else a fresh name in the settings' out_dir."""
    if output:
        return Path(output)
    out_dir = Path(_settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 1
    while (path := out_dir / f"{tool}-{n:03d}{suffix}").exists():
        n += 1
    return path


def denoise_callback(label: str, total: int) -> Callable:
    """A diffusers `callback_on_step_end` that advances the progress hook once per denoising step."""
    hook = _settings.progress
    hook.start(label, total)

    def callback(pipe, step: int, timestep, kwargs: dict) -> dict:
        hook.advance()
        return kwargs

    return callback


def steps_callback(label: str) -> Callable[[int, int], None]:
    """A `callback(step, total)` for this project's own pipelines (SEINE, Open-Sora-Plan): the progress hook counts
    their denoiser calls (with PNDM's warm-up, more than the steps), started at the first."""
    hook = _settings.progress

    def callback(step: int, total: int) -> None:
        if step == 1:
            hook.start(label, total)
        hook.advance()

    return callback


_notes: ContextVar[list[str] | None] = ContextVar("mora_tool_notes", default=None)


def note(text: str) -> None:
    """Report what a person must know about a tool call (e.g. a prompt cut to its text encoder's length): kept for
    the step's result (so for the transcript) within `collect_notes`, logged as a warning otherwise."""
    notes = _notes.get()
    if notes is None:
        logging.getLogger("mora_agents").warning(text)
    else:
        notes.append(text)


@contextmanager
def collect_notes() -> Iterator[list[str]]:
    """Collect the notes of the tool calls made within the block (in this thread or task)."""
    notes: list[str] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


_details: ContextVar[dict | None] = ContextVar("mora_tool_details", default=None)


def report(**values: object) -> None:
    """Report structured facts of a tool call beside its output (e.g. a pick's judges, votes and reasons): kept for the
    step's result (so for the transcript) within `collect_details`, dropped otherwise (the caller has the output)."""
    details = _details.get()
    if details is not None:
        details.update(values)


@contextmanager
def collect_details() -> Iterator[dict]:
    """Collect what the tool calls made within the block report (`report`), in this thread or task."""
    details: dict = {}
    token = _details.set(details)
    try:
        yield details
    finally:
        _details.reset(token)
