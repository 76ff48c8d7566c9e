"""The terminal face of a run: a line per step (every record with `-v`), progress bars, review prompts.

Used by `mora run`, `mora resume` and `mora chat`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from rich.color import Color
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.style import Style
from rich.text import Text

from mora_agents.console import DescriptionColumn
from mora_agents.jsonl import escape_separators
from mora_agents.media import VIDEO_SUFFIXES, read_video
from mora_agents.runs.log import LOG, log_lines
from mora_agents.runs.progress import ProgressReport, StepProgress
from mora_agents.runs.render import describe, describe_artifact, record_media
from mora_agents.runs.transcript import Record
from mora_agents.settings import use_settings

if TYPE_CHECKING:
    from mora_agents.runs.runner import RunOutcome

THUMB_ROWS = 6
"""A thumbnail's height in text rows (two pixels a row): small beside the text."""


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


def thumbnail(path: Path, rows: int = THUMB_ROWS) -> Text:
    """An image (or a video's first frame) drawn with half-block characters, `rows` text rows tall (at most four
    times as wide)."""
    frame = read_video(path)[0][0] if path.suffix.lower() in VIDEO_SUFFIXES else np.asarray(
        Image.open(path).convert("RGB"))
    return half_blocks(frame, max(1, min(8 * rows, round(2 * rows * frame.shape[1] / frame.shape[0]))))


def half_blocks(frame: np.ndarray, width: int) -> Text:
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
    """Prints a run as it happens and draws the tools' progress.

    `verbosity` 0: one line per step (its output and time), the plan, notes, errors and the reviews a person answers;
    1 (`-v`): every record, tool calls included, in words; 2 (`-vv`): the records as they are (JSON lines)."""

    def __init__(self, console: Console, notice: str | None = None, verbosity: int = 0) -> None:
        self.console = console
        self.notice = notice
        """Printed once, before the first record (e.g. the tiny preset's warning)."""
        self.verbosity = verbosity
        self.reviewing = False
        """Whether a person answers the review points (then they are shown at every verbosity)."""
        self.run_dir: Path | None = None
        """The run whose records were shown last (what an interrupted command names)."""
        self.thumbnails = console.is_terminal and console.color_system in ("truecolor", "256")
        self.progress = Progress(DescriptionColumn(), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self._tracker: StepProgress | None = None
        self._parts: dict[str, int] = {}
        """Per repeated step, how many times it runs, once known."""
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
        """One record, as `verbosity` says; media with a small thumbnail (on a colour terminal)."""
        self.run_dir = run_dir
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
        if self.verbosity >= 2:
            self.console.print(escape_separators(record.model_dump_json()), markup=False)
            return
        line = self._line(record, run_dir) if self.verbosity == 0 else self._record_line(record, run_dir)
        if line is None:
            return
        self.console.print(line)
        if self.thumbnails and (self.verbosity or record.type.endswith(("[ReviewRequest]", "[RunFinished]"))):
            for artifact in record_media(record):
                if (path := run_dir / artifact["path"]).is_file():
                    self.console.print(thumbnail(path), end="")

    def _record_line(self, record: Record, run_dir: Path) -> str:
        """`-v`: speaker, message type and the record in words."""
        kind = record.type.removeprefix("StructuredMessage[").rstrip("]")
        style = "red" if record.kind == "error" else "yellow" if record.kind == "note" else "bold cyan"
        return f"[{style}]{escape(record.source)}[/] [dim]{escape(kind)}[/] {escape(describe(record, run_dir))}"

    def _line(self, record: Record, run_dir: Path) -> str | None:
        """The default: a line for a finished step, the plan, a note or an error, a review a person answers;
        None for the rest (requests, tool calls, automatic decisions, chain sub-steps without notes)."""
        content = record.message.get("content")
        if record.type.endswith("[StepRequest]") and content.get("iterations"):
            self._parts[content["step"]] = content["iterations"]
        if record.type.endswith("[StepResult]"):
            return self._step_line(content)
        shown = (record.kind in ("error", "note") or record.type.endswith(("[Plan]", "[StepFailed]"))
                 or (record.type.endswith("[ReviewRequest]") and self.reviewing)
                 or (record.type.endswith("[ReviewDecision]") and content.get("by") != "auto")
                 or (record.type.endswith("[RunFinished]") and content.get("status") != "finished"))
        if not shown:
            return None
        style = "red" if record.kind == "error" or record.type.endswith("[StepFailed]") else (
            "yellow" if record.kind == "note" else "cyan")
        return f"[{style}]{escape(describe(record, run_dir))}[/]"

    def _step_line(self, result: dict) -> str | None:
        """`✓ segments 2/6  artifacts/segments-1.mp4 (64x64, 5 frames @ 1 fps)  0.4 s`; a chain's sub-step (part of
        its segment) only for its notes."""
        step, notes = result["step"], result.get("notes") or []
        if "." in step:
            return "\n".join(f"[yellow]note[/] {escape(step)}: {escape(text)}" for text in notes) or None
        part = result.get("iteration", 0) + 1
        parts = self._parts.get(step)
        label = f"{step} {part}/{parts}" if parts else f"{step} {part}" if part > 1 else step
        output = result["output"]
        shown = describe_artifact(output) if isinstance(output, dict) else repr(
            output if len(output) <= 72 else output[:71] + "…")
        line = f"[green]✓[/] [bold]{escape(label)}[/]  {escape(shown)}  [dim]{result['seconds']:.1f} s[/]"
        return "\n".join([line, *(f"[yellow]note[/] {escape(step)}: {escape(text)}" for text in notes)])

    def done(self, outcome: RunOutcome) -> None:
        """The run's last lines: its result and, if the libraries logged anything, where it is."""
        note = " [yellow](noise: tiny preset)[/]" if outcome.noise else ""
        self.console.print(f"[green]done:[/] {escape(str(outcome.result))}{note}")
        if lines := log_lines(outcome.run_dir):
            self.console.print(f"[dim]library messages: {lines} line(s) in {escape(str(outcome.run_dir / LOG))}[/]")

    def resume_hint(self) -> str:
        """How to continue the run it showed last, once interrupted: `mora resume` with its directory."""
        return f"`mora resume {self.run_dir}`" if self.run_dir is not None else "`mora resume RUN` (see `mora runs`)"

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
