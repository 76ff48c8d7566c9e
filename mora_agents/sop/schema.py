"""The SOP file format: a pydantic schema. Unknown fields are errors."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = r"^[a-z_][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Number = Annotated[float, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class InputSpec(_Strict):
    type: Literal["text", "number", "image", "video"]
    required: bool = False
    default: Any = None
    min: Number | None = None
    max: Number | None = None
    max_seconds: Seconds | None = None
    """A video input's longest accepted length (it may decide how many segments a step runs)."""
    description: str = ""

    @model_validator(mode="after")
    def _bounds_fit_the_type(self) -> InputSpec:
        if (self.min is not None or self.max is not None) and self.type != "number":
            raise ValueError("min/max apply to number inputs only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        if self.max_seconds is not None and self.type != "video":
            raise ValueError("max_seconds applies to video inputs only")
        return self


class ChainSpec(_Strict):
    """Before each further iteration, the media agent calls `tool` on the previous iteration's output
    (its first media parameter) and the result becomes the argument `into`."""

    tool: str
    into: str


class RepeatSpec(_Strict):
    until_seconds: float | str
    """Target length, a positive number or a template: the step runs max(1, round(target / first_clip_seconds))
    times (at most 100)."""
    chain: ChainSpec | None = None

    @field_validator("until_seconds")
    @classmethod
    def _positive(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{value} is not a positive number of seconds")
        return value


class StepSpec(_Strict):
    id: str = Field(pattern=IDENTIFIER)
    agent: str
    tool: str | None = None
    """The registered tool the agent calls; none: the agent answers in text (prompt agent)."""
    args: dict[str, Any] = {}
    """Tool arguments; strings may be Jinja templates over `inputs` and earlier `steps`."""
    when: str | None = None
    """A template expression; the step is skipped when it is false."""
    repeat: RepeatSpec | None = None
    review: bool = False
    """A human review point: with review on, a person accepts, repeats or edits this step's output."""
    edit: str | None = None
    """At a review point, the text argument a person may rewrite before the step runs again (e.g.
    `prompt`). A text step (no tool) needs none: its output itself is what a person edits."""
    description: str = ""


    @model_validator(mode="after")
    def _edit_needs_review(self) -> StepSpec:
        if self.edit is not None and not self.review:
            raise ValueError("edit applies to review points only (set review: true)")
        if self.edit is not None and self.tool is None:
            raise ValueError("a text step needs no edit: a person edits its output directly")
        return self


class SOP(_Strict):
    name: str = Field(pattern=IDENTIFIER)
    description: str
    inputs: dict[str, InputSpec]
    steps: list[StepSpec] = Field(min_length=1)
    outputs: dict[str, str]
    """Templates of the run's outputs; `result` is the final video."""

    @model_validator(mode="after")
    def _check_structure(self) -> SOP:
        ids = [s.id for s in self.steps]
        if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate step ids: {', '.join(duplicates)}")
        if "result" not in self.outputs:
            raise ValueError("outputs must define 'result' (the final video)")
        return self
