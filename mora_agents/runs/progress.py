"""Progress of a run's working step: which step (segment k of K) and how far its model loop is (step i of N).

Tools report their loops through the settings' progress hook (`start`, `advance`, `stop`, called from the
tool's worker thread). `StepProgress` is such a hook that also follows the run's records, so that each report
names the step it belongs to; it hands every report to a function (the terminal's bar, the web server's stream).
Progress is live state, not history: it never enters the transcript (see docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from mora_agents.runs.transcript import Record
from mora_agents.sop.messages import step_key


class ProgressReport(BaseModel):
    step: str
    """The step's key: `image`, `segments#1`."""
    part: int | None = None
    """For a repeated step: which run of it this is (1-based), once the number of runs is known."""
    parts: int | None = None
    """For a repeated step: how many times it runs."""
    label: str
    """The tool's loop: `text_to_image: base`, `image_to_video`."""
    done: int = 0
    total: int

    @property
    def title(self) -> str:
        """`image_to_video (segments 2 of 3)`."""
        part = f" {self.part} of {self.parts}" if self.part else ""
        return f"{self.label} ({self.step.partition('#')[0]}{part})"


class StepProgress:
    """A progress hook for the tools that reports a `ProgressReport` (None once a loop ends) to `report`.

    `follow(record)` must see the run's records (pass it along `on_record`): a step request sets the step that the
    following reports name. `report` is called from the tool's thread.
    """

    def __init__(self, report: Callable[[ProgressReport | None], None]) -> None:
        self.report = report
        self.step: dict[str, int | str | None] = {"step": "run"}
        self.current: ProgressReport | None = None

    def follow(self, record: Record) -> None:
        if record.type.endswith("[StepRequest]"):
            content = record.message["content"]
            parts = content.get("iterations")
            self.step = {"step": step_key(content["step"], content["iteration"]),
                         "part": content["iteration"] + 1 if parts else None, "parts": parts}

    def start(self, label: str, total: int) -> None:
        self.current = ProgressReport(**self.step, label=label, total=total)
        self.report(self.current)

    def advance(self) -> None:
        if self.current is not None:
            self.current = self.current.model_copy(update={"done": self.current.done + 1})
            self.report(self.current)

    def stop(self) -> None:
        self.current = None
        self.report(None)
