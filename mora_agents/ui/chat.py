"""`mora chat`: an interactive group chat in the terminal.

Each request is one run (its own run directory); a follow-up ("extend it by 4 seconds") gets the last
result as `previous`, so the planner can use it as the video the request refers to.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mora_agents.errors import InputError, MoraError
from mora_agents.inputs import check_attachment
from mora_agents.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from mora_agents.runs.catalog import list_runs
from mora_agents.runs.review import TextReviewer, auto_accept
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.sop.loader import find_sops
from mora_agents.ui.terminal import TerminalUI

HELP = """\
Type what you want, e.g. `a red fox running through snow, 8 seconds`; follow-ups refer to the last result
(`extend it by 4 seconds`, `now make it 1920s style`, `connect it with clip.mp4`). Commands:
  /image PATH     attach an image to the next request      /video PATH   attach a video
  /task NAME      force a task (an SOP name); /task off    /review on|off  human review at review points
  /runs           list this chat's runs                    /help          this text
  /quit           leave (Ctrl-D too)"""
_FILE_WORD = re.compile(r"[\w./~-]+\.(?:" + "|".join(s.lstrip(".") for s in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)) + r")\b",
                        re.I)


@dataclass
class ChatSession:
    """The chat's state between turns: pending attachments, forced task, review switch, last result."""

    options: RunOptions
    ui: TerminalUI
    ask: Callable[[str], str]
    review: bool = False
    task: str | None = None
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    last_result: Path | None = None
    runs: list[Path] = field(default_factory=list)

    @property
    def console(self) -> Console:
        return self.ui.console

    def attach(self, kind: str, raw: str) -> None:
        path = Path(raw).expanduser()
        artifact = check_attachment(path, kind, raw)
        (self.images if kind == "image" else self.videos).append(path)
        frames = f", {artifact.frames} frames" if artifact.kind == "video" else ""
        self.console.print(f"[green]attached[/] {escape(str(path))} ({artifact.width}x{artifact.height}{frames})")

    def command(self, line: str) -> bool:
        """Run a /command; False to leave the chat."""
        try:
            name, *args = shlex.split(line)
        except ValueError as e:  # an unclosed quote, a trailing backslash
            raise InputError(f"{line}: {e} (quote a path with spaces: /image \"my cat.png\")") from None
        arg = " ".join(args)
        if name in ("/quit", "/exit"):
            return False
        if name in ("/image", "/video") and arg:
            self.attach(name[1:], arg)
        elif name == "/task" and arg:
            tasks = find_sops(self.options.sops_dir)
            if arg != "off" and arg not in tasks:
                raise InputError(f"/task {arg}: unknown task (tasks: {', '.join(sorted(tasks))})")
            self.task = None if arg == "off" else arg
            self.console.print(f"task: {escape(self.task or 'chosen by the planner')}")
        elif name == "/review" and arg in ("on", "off"):
            self.review = arg == "on"
            self.console.print(f"review {arg}")
        elif name == "/runs":
            self.show_runs()
        elif name == "/help":
            self.console.print(escape(HELP))
        else:
            raise InputError(f"{line}: unknown command or missing argument (see /help)")
        return True

    def show_runs(self) -> None:
        table = Table("run", "task", "status", "seconds", "result")
        mine = {run.resolve() for run in self.runs}  # the runner's paths are absolute; --out may be relative
        for summary in list_runs(self.options.out):
            if summary.path.resolve() in mine:
                table.add_row(escape(summary.path.name), escape(summary.task or ""), summary.status,
                              f"{summary.seconds:.1f}", escape(str(summary.result or "")))
        self.console.print(table)

    def files_in(self, text: str) -> None:
        """Attach the media files a request names ("connect it with clip.mp4"); a missing one is an error."""
        for word in _FILE_WORD.findall(text):
            kind = "video" if Path(word).suffix.lower() in VIDEO_SUFFIXES else "image"
            if not Path(word).expanduser().is_file():
                raise InputError(f"{word}: no such file")
            if Path(word).expanduser() not in (*self.images, *self.videos):
                self.attach(kind, word)

    def request(self, text: str) -> None:
        self.files_in(text)
        reviewer = TextReviewer(self.ask, "human") if self.review else auto_accept
        self.ui.reviewing, self.ui.run_dir = self.review, None
        try:
            with self.ui.live():
                outcome = asyncio.run(run_request(
                    text, images=self.images, videos=self.videos, task=self.task, previous=self.last_result,
                    options=self.options, on_record=self.ui.show, reviewer=reviewer))
        finally:
            self.images, self.videos = [], []
            if self.ui.run_dir is not None and self.ui.run_dir not in self.runs:  # stopped or failed ones too
                self.runs.append(self.ui.run_dir)
        self.last_result = outcome.result
        self.ui.done(outcome)

    def turn(self, line: str) -> bool:
        """One line from the person; False to leave. Errors are reported and the chat goes on."""
        line = line.strip()
        if not line:
            return True
        try:
            if line.startswith("/"):
                return self.command(line)
            self.request(line)
        except MoraError as e:
            self.console.print(f"[red]error:[/] {escape(str(e))}")
        except KeyboardInterrupt:
            self.console.print(f"[yellow]interrupted[/]: {escape(self.ui.resume_hint())} continues the run")
        return True


def chat_loop(session: ChatSession) -> None:
    """Read lines until /quit or end of input."""
    session.console.print("[bold]mora chat[/]: describe a video, or /help")
    while True:
        try:
            line = session.ask("you> ")
        except EOFError:
            break
        except KeyboardInterrupt:
            session.console.print()
            continue
        if not session.turn(line):
            break


def enable_line_editing(history: Path = Path.home() / ".mora_history") -> None:
    """Up/down history and line editing for `input()` (readline), kept across sessions."""
    try:
        import readline
    except ImportError:  # not on every platform; the chat works without it
        return
    import atexit

    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)
    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline, history: Path) -> None:  # noqa: ANN001 - the readline module
    try:
        readline.write_history_file(history)
    except OSError:
        pass
