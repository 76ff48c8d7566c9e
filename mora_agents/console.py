"""The terminal's consoles: text that came from a model, a file or a person is printed as written.

`make_console` is the one place a rich Console is made. Its consoles never turn `:100:` into an emoji and never
highlight, and every string they print passes through `printable`, which drops escape sequences and other
control characters: a model's text (a judge's reason, an enhanced prompt, a transcript) cannot retitle the
terminal, clear the screen or fake colours. Markup stays on for the package's own styles (`[red]error:[/]`), so
foreign text inside markup is escaped with `rich.markup.escape`; progress bars take their text from
`DescriptionColumn`, which applies the same rules.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.table import Column
from rich.text import Text

_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, screen clears
    r"|(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (titles, links), DCS, ...
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls but tab and newline, DEL and C1 controls."""


def printable(text: str) -> str:
    """`text` without terminal escape sequences and control characters (tabs and newlines are kept)."""
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


class _Console(Console):
    def render_str(self, text: str, **options: Any) -> Text:  # every str printed, table cells included
        return super().render_str(printable(text), **options)


def make_console(*, stderr: bool = False, **options: Any) -> Console:
    """A console for the package's output: no emoji codes, no highlighting, no control characters, no wrapping of
    long lines (a path stays whole); `options` as rich's Console takes them (e.g. `width`)."""
    return _Console(stderr=stderr, **{"highlight": False, "soft_wrap": True, "emoji": False, **options})


class DescriptionColumn(ProgressColumn):
    """A progress bar's description under the console's rules (rich's TextColumn would turn emoji codes into
    emoji): markup for the package's styles, foreign parts escaped by whoever writes the description."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        return Text.from_markup(printable(task.description), emoji=False)
