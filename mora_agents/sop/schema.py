"""The SOP file format: a pydantic schema. Unknown fields are errors."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
NAME_LENGTH = 64
"""At most so many characters in an SOP's name or a step's id: they name files (`NAME.yaml`, `STEP-2.mp4`)."""


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


class RefineSpec(_Strict):
    """A light redraw of each chain frame by the text-to-image agent (`text_to_image` from that image: img2img with
    its backend), before the next segment starts from it."""

    prompt: str
    """What the frame shows (a template, e.g. `{{ steps.enhance.output }}`)."""
    strength: float = Field(0.25, gt=0, le=0.5)
    """How much of the frame is redrawn: low, so that the next segment continues the same picture."""
    args: dict[str, Any] = {}
    """More `text_to_image` arguments (e.g. `backend`, `steps`)."""


class KeyframesSpec(_Strict):
    """Keyframes planned ahead, for a first-last-frame tool: before each segment the text-to-image agent redraws the
    first keyframe (img2img, from the chain's first `into` argument) into the segment's end frame, so every segment
    ends on a clean picture and the drift of one segment does not carry into the next."""

    into: str
    """The media parameter of the step's tool that takes the end frame (e.g. `last_image`)."""
    prompt: str
    strength: float = Field(0.6, gt=0, le=1)
    """How far each keyframe departs from the first one."""
    args: dict[str, Any] = {}
    """More `text_to_image` arguments."""


class ChainSpec(_Strict):
    """Before each further iteration, the media agent calls `tool` on the previous iteration's output
    (its first media parameter) and the result becomes the argument `into`.

    Against drift, the chain frame can then be matched to the first keyframe (the first iteration's `into`
    argument): `color_match` (mean and spread of each CIELAB channel), `sharpen` (its sharpness, if lower), and
    `refine`d; the previous segment is then eased into the corrected frame (`ease_into`), so each segment still ends
    on the frame the next one starts from. `keyframes` plans each segment's end frame ahead."""

    tool: str
    into: str
    color_match: bool = False
    sharpen: bool = False
    refine: RefineSpec | None = None
    keyframes: KeyframesSpec | None = None

    @property
    def corrects(self) -> bool:
        """Whether the chain frame is changed before the next segment starts from it."""
        return self.color_match or self.sharpen or self.refine is not None


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


class BestOfSpec(_Strict):
    """Best of N: with `--candidates N` (N > 1) each iteration of the step is made N times (each with its own seed),
    and the critic agent's judges rank the candidates (`pick_best`) and keep one; a person may overrule them at the
    step's review point. With one candidate (the default) the step runs as if it had no `best_of`."""

    prompt: str
    """What the candidates should show, as the judges read it (a template)."""
    references: str | None = None
    """Images the candidates must stay consistent with (a template, e.g. the reference sheets of a shot's cast): the
    judges rank by that consistency."""


class StepSpec(_Strict):
    id: str = Field(pattern=IDENTIFIER, max_length=NAME_LENGTH)
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
    drift: bool = False
    """Record in run.json how this step's video drifts over time: every 4 s of it, the frame there against the clip's
    first frame and against the frame before it (for a long clip made in one call; chained steps are measured per
    segment without it)."""
    edit: str | None = None
    """At a review point, the text argument a person may rewrite before the step runs again (e.g.
    `prompt`). A text step (no tool) needs none: its output itself is what a person edits."""
    format: Literal["storyboard"] | None = None
    """A text step's answer: free text (none), or a structured message the LLM must write and that is checked (a
    `storyboard`); its fields are readable in templates (`steps.ID.output.shots`)."""
    for_each: str | None = None
    """One `{{ expression }}` giving a list: the step runs once per item (`item` and `index` in its templates)."""
    best_of: BestOfSpec | None = None
    description: str = ""

    @model_validator(mode="after")
    def _edit_needs_review(self) -> StepSpec:
        if self.edit is not None and not self.review:
            raise ValueError("edit applies to review points only (set review: true)")
        if self.edit is not None and self.tool is None:
            raise ValueError("a text step needs no edit: a person edits its output directly")
        if self.format is not None and self.tool is not None:
            raise ValueError("format applies to text steps (no tool): it is the structure of the agent's answer")
        if self.for_each is not None and self.repeat is not None:
            raise ValueError("a step either repeats until a length (repeat) or runs once per item (for_each)")
        if self.best_of is not None and (self.tool is None or self.repeat is not None):
            raise ValueError("best_of needs a tool, and a step without repeat (each segment of a chain starts from "
                             "the one before)")
        return self


class SOP(_Strict):
    name: str = Field(pattern=IDENTIFIER, max_length=NAME_LENGTH)
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
