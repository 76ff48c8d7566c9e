"""The terminal face of a run: streamed messages with media thumbnails, progress bars, review prompts.

Used by `mora run`, `mora resume` and `mora chat`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from PIL import Image
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.style import Style
from rich.text import Text

from mora_agents.console import DescriptionColumn
from mora_agents.media import VIDEO_SUFFIXES, read_video
from mora_agents.runs.progress import ProgressReport, StepProgress
from mora_agents.runs.render import describe, record_media
from mora_agents.runs.transcript import Record
from mora_agents.settings import use_settings

THUMB_WIDTH = 32


class RichProgress:
    """Progress reports drawn as a rich progress bar: one bar per tool loop, titled with its step."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task, self.loop = progress, None, None

    def __call__(self, report: ProgressReport | None) -> None:
        loop = (report.step, report.label) if report else None
        if loop != self.loop and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.loop = loop
        if report is not None:
            if self.task is None:
                self.task = self.progress.add_task(escape(report.title), total=report.total)
            self.progress.update(self.task, completed=report.done)


def thumbnail(path: Path, width: int = THUMB_WIDTH) -> Text:
    """An image (or a video's first frame) drawn with half-block characters: two pixels per cell."""
    frame = read_video(path)[0][0] if path.suffix.lower() in VIDEO_SUFFIXES else np.asarray(
        Image.open(path).convert("RGB"))
    return half_blocks(frame, width)


def half_blocks(frame: np.ndarray, width: int = THUMB_WIDTH) -> Text:
    """RGB pixels [H, W, 3] scaled to `width` cells, two pixels per cell (upper half-block on a background)."""
    height = max(2, round(width * frame.shape[0] / frame.shape[1] / 2) * 2)
    pixels = np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
    text = Text()
    for y in range(0, height, 2):
        for top, bottom in zip(pixels[y], pixels[y + 1], strict=True):
            text.append("▀", Style(color=Color.from_rgb(*map(int, top)), bgcolor=Color.from_rgb(*map(int, bottom))))
        text.append("\n")
    return text


class TerminalUI:
    """Prints each record as it happens (speaker, type, text, media) and draws the tools' progress."""

    def __init__(self, console: Console, notice: str | None = None) -> None:
        self.console = console
        self.notice = notice
        """Printed once, before the first record (e.g. the tiny preset's warning)."""
        self.thumbnails = console.is_terminal and console.color_system in ("truecolor", "256")
        self.progress = Progress(DescriptionColumn(), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self._tracker: StepProgress | None = None
        self._held: dict[Path, list[Record]] = {}
        """Per run, its request and planning records, held until the plan is accepted: a rejected request (bad input
        found once the planner chose the task) then shows as its one error line, like any other bad input."""
        self._accepted: set[Path] = set()

    @contextmanager
    def live(self) -> Iterator[TerminalUI]:
        """Draw the tools' progress bars while the block runs (on a terminal; elsewhere they would be noise)."""
        tracker = StepProgress(RichProgress(self.progress))
        bars = self.progress if self.console.is_terminal else nullcontext()
        with bars, use_settings(progress=tracker):
            self._tracker = tracker
            try:
                yield self
            finally:
                self._tracker = None

    def show(self, record: Record, run_dir: Path) -> None:
        """One record: speaker, message type and text; media as path, size, frames and a thumbnail."""
        if run_dir not in self._accepted:
            if record.source in ("user", "planner"):
                self._held.setdefault(run_dir, []).append(record)
                return
            self._accepted.add(run_dir)
            held = self._held.pop(run_dir, [])
            content = record.message.get("content")
            if record.type.endswith("[RunFinished]") and isinstance(content, dict) and content.get("status") == "rejected":
                return
            for earlier in held:
                self.show(earlier, run_dir)
        if self.notice:
            self.console.print(self.notice)
            self.notice = None
        if self._tracker is not None:
            self._tracker.follow(record)
        kind = record.type.removeprefix("StructuredMessage[").rstrip("]")
        style = "red" if record.kind == "error" else "yellow" if record.kind == "note" else "bold cyan"
        self.console.print(f"[{style}]{escape(record.source)}[/] [dim]{escape(kind)}[/] {escape(describe(record))}")
        for artifact in record_media(record):
            path = run_dir / artifact["path"]
            if self.thumbnails and path.is_file():
                self.console.print(thumbnail(path), end="")

    def ask(self, prompt: str) -> str:
        """Read a line from the person, with the progress display paused (line editing via readline)."""
        live = self._tracker is not None and self.console.is_terminal  # bars drawn (see `live`)
        if live:
            self.progress.stop()
        try:
            self.console.print(f"[bold magenta]{escape(prompt)}[/]", end="")
            return input()
        finally:
            if live:
                self.progress.start()
