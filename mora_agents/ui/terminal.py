"""The terminal face of a run: streamed messages with media thumbnails, progress bars, review prompts.

Used by `mora run`, `mora resume` and `mora chat`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.style import Style
from rich.text import Text

from mora_agents.media import VIDEO_SUFFIXES, read_video
from mora_agents.runs.render import describe
from mora_agents.runs.transcript import Record
from mora_agents.settings import use_settings

THUMB_WIDTH = 32


class RichProgress:
    """The tools' progress hook, drawn as a rich progress bar (one bar per denoising loop)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def start(self, label: str, total: int) -> None:
        self.stop()
        self.task = self.progress.add_task(label, total=total)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def thumbnail(path: Path, width: int = THUMB_WIDTH) -> Text:
    """An image (or a video's first frame) drawn with half-block characters: two pixels per cell."""
    frame = read_video(path)[0][0] if path.suffix.lower() in VIDEO_SUFFIXES else np.asarray(
        Image.open(path).convert("RGB"))
    height = max(2, round(width * frame.shape[0] / frame.shape[1] / 2) * 2)
    pixels = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
    text = Text()
    for y in range(0, height, 2):
        for top, bottom in zip(pixels[y], pixels[y + 1], strict=True):
            text.append("▀", Style(color=Color.from_rgb(*map(int, top)), bgcolor=Color.from_rgb(*map(int, bottom))))
        text.append("\n")
    return text


def _media(record: Record) -> list[dict[str, Any]]:
    content = record.message.get("content")
    if not isinstance(content, dict):
        return []
    found = [content.get(k) for k in ("output", "result")]
    return [a for a in found if isinstance(a, dict) and "kind" in a]


class TerminalUI:
    """Prints each record as it happens (speaker, type, text, media) and draws the tools' progress."""

    def __init__(self, console: Console, notice: str | None = None) -> None:
        self.console = console
        self.notice = notice
        """Printed once, before the first record (e.g. the tiny preset's warning)."""
        self.thumbnails = console.is_terminal and console.color_system in ("truecolor", "256")
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self._live = False

    @contextmanager
    def live(self) -> Iterator[TerminalUI]:
        """Draw the tools' progress bars while the block runs (on a terminal; elsewhere they would be noise)."""
        bars = self.progress if self.console.is_terminal else nullcontext()
        with bars, use_settings(progress=RichProgress(self.progress)):
            self._live = True
            try:
                yield self
            finally:
                self._live = False

    def show(self, record: Record, run_dir: Path) -> None:
        """One record: speaker, message type and text; media as path, size, frames and a thumbnail."""
        if self.notice:
            self.console.print(self.notice)
            self.notice = None
        kind = record.type.removeprefix("StructuredMessage[").rstrip("]")
        style = "red" if record.kind == "error" else "yellow" if record.kind == "note" else "bold cyan"
        self.console.print(f"[{style}]{escape(record.source)}[/] [dim]{escape(kind)}[/] {escape(describe(record))}")
        for artifact in _media(record):
            path = run_dir / artifact["path"]
            if self.thumbnails and path.is_file():
                self.console.print(thumbnail(path), end="")

    def ask(self, prompt: str) -> str:
        """Read a line from the person, with the progress display paused (line editing via readline)."""
        live = self._live
        if live:
            self.progress.stop()
        try:
            self.console.print(f"[bold magenta]{escape(prompt)}[/]", end="")
            return input()
        finally:
            if live:
                self.progress.start()
