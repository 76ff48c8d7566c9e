"""The structured contents agents exchange (pydantic models): requests, plans, step results, reviews.

Requests carry explicit tool arguments; results carry artifact references, never pixels. The agents send
them as autogen `StructuredMessage`s (`mora_agents.agents.messages`); the SOP execution reads and makes them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mora_agents.media import Artifact


class UserRequest(BaseModel):
    """What a person asked for: free text plus attached files (paths inside the run directory)."""

    text: str
    images: list[str] = []
    videos: list[str] = []
    task: str | None = None
    """A task forced by the person (`--task`); the planner then only fills the inputs."""
    duration: float | None = None
    previous: str | None = None
    """In a chat, the result of the turn before (copied into the run directory): what "it" refers to."""


class PlanChoice(BaseModel):
    """What the planner's LLM decides: the SOP and the textual inputs."""

    task: str = Field(description="name of the SOP to follow")
    prompt: str = Field(description="the request's description of the video, without file references")
    duration: float | None = Field(default=None, description="requested length in seconds, if stated")
    reason: str = Field(description="one sentence: why this SOP")


class Plan(BaseModel):
    """The SOP to run and its filled inputs (media inputs as paths inside the run directory)."""

    task: str
    inputs: dict[str, Any]
    reason: str = ""


def step_key(step: str, iteration: int) -> str:
    """A request's or result's identity within a run: `segments`, `segments#2`, `segments.chain#2`."""
    return step if iteration == 0 else f"{step}#{iteration}"


class PromptBudget(BaseModel):
    """How long a text step's answer may be: the text encoder of the tool and backend that read it."""

    tool: str
    backend: str
    encoder: str
    tokens: int
    """Tokens the encoder reads, its special ones included; beyond them the pipeline cuts the text."""
    step: str
    """The step that reads the answer."""


class StepRequest(BaseModel):
    step: str
    iteration: int = 0
    agent: str
    tool: str | None
    """None: the agent answers in text (e.g. the prompt agent's enhanced prompt)."""
    arguments: dict[str, Any]
    media: dict[str, list[Artifact]] = {}
    """The media files among the arguments, with their sha256, by parameter."""
    iterations: int | None = None
    """A repeated step's number of runs, once known (from its second iteration on): segment 2 of `iterations`."""
    budget: PromptBudget | None = None
    """A text step's token budget (given to the agent, and its answer checked against it)."""
    format: str | None = None
    """A text step's structured answer (`storyboard`): the agent must write that message (JSON), which is checked."""
    inputs: str | None = None
    """The digest of what the step was asked with (its SOP arguments rendered, before seeds and file names): a result
    stays valid while its step would be asked the same, so an edit upstream (a storyboard's) keeps the work it does
    not change."""

    @property
    def key(self) -> str:
        return step_key(self.step, self.iteration)


class StepResult(BaseModel):
    step: str
    iteration: int = 0
    agent: str
    tool: str | None
    arguments: dict[str, Any]
    """The arguments the tool actually ran with."""
    output: Artifact | str
    seconds: float
    notes: list[str] = []
    """What a person must know about the result, e.g. a prompt longer than its text encoder reads (what it cut)."""
    details: dict[str, Any] = {}
    """What the tool reported beside its output (`settings.report`): a pick's judges, their votes and reasons."""
    inputs: str | None = None
    """The request's `inputs` digest."""

    @property
    def key(self) -> str:
        return step_key(self.step, self.iteration)


class StepFailed(BaseModel):
    step: str
    iteration: int = 0
    agent: str
    error: str
    """One line: what failed and why."""
    rejected: bool = False
    """True when the cause is bad user input (nothing is generated; the CLI exits with code 2)."""
    details: str | None = None
    """The traceback of a tool's exception."""


Decision = Literal["next", "repeat", "edit", "stop"]


class ReviewRequest(BaseModel):
    """A review point: the conductor asks a person to judge a step's output."""

    step: str
    iteration: int = 0
    agent: str
    output: Artifact | str
    options: list[Decision]
    """What the person may answer; repeat and edit are gone once `repeats_left` is 0."""
    repeats_left: int
    edit: str | None = None
    """What an edit rewrites: a tool argument (e.g. `prompt`), `output` for a text step, None: no edit."""
    text: str | None = None
    """The current value of what an edit rewrites, to start the person's edit from."""
    format: str | None = None
    """A structured output (`storyboard`): `text` is it as YAML, and an edit is a whole new one or edit commands."""
    candidates: list[Artifact] = []
    """A best-of step's candidates (number k is `candidates[k - 1]`); an edit names the one to keep instead."""
    details: dict[str, Any] = {}
    """The result's details (a pick's votes and reasons)."""

    @property
    def key(self) -> str:
        return step_key(self.step, self.iteration)


class ReviewDecision(BaseModel):
    """A person's (or the automatic reviewer's) answer to a ReviewRequest."""

    step: str
    iteration: int = 0
    decision: Decision
    text: str | None = None
    """The rewritten prompt or instruction (edit only)."""
    by: str
    """Who decided: `auto` when review is off, otherwise the input source's name (e.g. `terminal`)."""


class RunFinished(BaseModel):
    status: Literal["finished", "failed", "rejected", "stopped"]
    """rejected: the plan's inputs were invalid (bad user input); nothing was generated.
    stopped: a person chose stop at a review point."""
    result: Artifact | None = None
    error: str | None = None
    """One line: the step, the agent and the cause."""
    details: str | None = None
    """The traceback behind `error`, if any."""
