"""The conductor: follows the chosen SOP, sending each step request to its agent and collecting results.

It holds no task logic of its own: what comes next is `Execution.next_request()`, read off the SOP. After
a step marked `review: true` it asks for a review and acts on the decision (next, repeat, edit, stop).
Its state is the execution's, so a team restored with `load_state` continues where it stopped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_core import CancellationToken

from mora_agents.agents.base import StreamingAgent
from mora_agents.agents.messages import (
    PlanMessage,
    ReviewDecisionMessage,
    ReviewRequestMessage,
    RunFinishedMessage,
    StepFailedMessage,
    StepRequestMessage,
    StepResultMessage,
)
from mora_agents.errors import InputError
from mora_agents.media import Artifact, atomic_copy
from mora_agents.pipelines.sources import check_available
from mora_agents.pipelines.speed import check_speed
from mora_agents.settings import settings
from mora_agents.sop.calls import check_calls, required_models, sop_calls
from mora_agents.sop.execution import Execution, validate_inputs
from mora_agents.sop.formats import display
from mora_agents.sop.messages import (
    ReviewDecision,
    ReviewRequest,
    RunFinished,
    StepResult,
    step_key,
)
from mora_agents.sop.schema import SOP
from mora_agents.tools.registry import get_tool


def review_request(execution: Execution, result: StepResult, max_repeats: int) -> ReviewRequest:
    """The question for a person about `result`: its output, what they may answer and what they may edit (a
    structured output shown as YAML; a pick with its candidates, the judges' votes and the candidate they chose)."""
    left = max(0, max_repeats - execution.repeats.get(result.key, 0))
    target = execution.edit_target(result)
    format_ = execution.format_of(result.step) if target == "output" else None
    options = ["next", *(["repeat"] + (["edit"] if target else []) if left else []), "stop"]
    text = result.output if target == "output" else result.arguments.get(target) if target else None
    if format_ is not None and isinstance(text, str):
        text = display(format_, text)
    elif target == "choice":
        text = str(result.details.get("chosen", ""))
    return ReviewRequest(step=result.step, iteration=result.iteration, agent=result.agent, output=result.output,
                         options=options, repeats_left=left, edit=target or None,
                         text=text if isinstance(text, str) else None, format=format_,
                         candidates=execution.candidates_of(result), details=result.details)


class ConductorAgent(StreamingAgent):
    def __init__(self, sops: dict[str, SOP], run_dir: Path, seed: int,
                 overrides: dict[str, dict[str, Any]] | None = None, max_repeats: int = 3, candidates: int = 1) -> None:
        super().__init__("conductor", "Follows the SOP: sends each step to its agent and collects the results.")
        self.sops, self.run_dir, self.seed, self.overrides = sops, run_dir, seed, overrides or {}
        self.max_repeats, self.candidates = max_repeats, candidates
        self.execution: Execution | None = None

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (StepRequestMessage, ReviewRequestMessage, RunFinishedMessage)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.execution = None

    async def save_state(self) -> Mapping[str, Any]:
        return {"execution": self.execution.state() if self.execution else None}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("execution")
        self.execution = Execution.from_state(saved, self.run_dir) if saved else None

    def revise(self, decision: ReviewDecision) -> None:
        """A person's edit of a step's output after the run went on (`mora resume RUN --revise STEP`): the later
        steps whose inputs it changes run again, the others keep their results. ValueError if it is no edit of a
        finished text step's output."""
        if self.execution is None or (result := self.execution.results.get(step_key(decision.step, decision.iteration))
                                      ) is None:
            raise ValueError(f"step '{decision.step}' has no result to revise yet")
        if self.execution.edit_target(result) != "output":
            raise ValueError(f"step '{decision.step}' is not a text step: only a text step's output (a storyboard, a "
                             "prompt) can be revised")
        if decision.decision == "edit":
            self.execution.replace_output(result.key, decision.text or "")

    def _apply(self, decision: ReviewDecision) -> Response | None:
        """Act on a review decision; a Response when the run ends here (stop)."""
        assert self.execution is not None
        key = step_key(decision.step, decision.iteration)
        request = review_request(self.execution, self.execution.results[key], self.max_repeats)
        if decision.decision not in request.options:
            raise ValueError(f"review of {key}: '{decision.decision}' is not allowed (options: {', '.join(request.options)})")
        if decision.decision == "stop":
            return self._finish("stopped", error=f"stopped by {decision.by} at the review of step '{key}'")
        if decision.decision == "edit" and request.edit == "output":
            self.execution.replace_output(key, decision.text or "")
            self.execution.repeats[key] = self.execution.repeats.get(key, 0) + 1
        elif decision.decision in ("repeat", "edit"):
            self.execution.redo(key, decision.text if decision.decision == "edit" else None)
        return None

    def _finish(self, status: str, result: Artifact | None = None, error: str | None = None,
                details: str | None = None) -> Response:
        finished = RunFinished(status=status, result=result, error=error, details=details)
        return Response(chat_message=RunFinishedMessage(content=finished, source=self.name))

    async def on_messages_stream(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
                                 ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        last = messages[-1]
        if isinstance(last, StepFailedMessage):
            failure = last.content
            yield self._finish("rejected" if failure.rejected else "failed",
                               error=f"step '{failure.step}' ({failure.agent}): {failure.error}", details=failure.details)
            return
        if isinstance(last, PlanMessage):
            sop = self.sops[last.content.task]
            try:
                inputs = validate_inputs(sop, last.content.inputs, self.run_dir)
                check_calls(sop, self.overrides, settings().adapters)
                check_speed(settings().speed, [b.name for c in sop_calls(sop) if (b := c.backend(self.overrides))])
                if settings().preset == "full":
                    check_available(required_models(sop, self.overrides))
                self.execution = Execution(sop, inputs, self.run_dir, self.seed, self.overrides, self.candidates)
                self.execution.check_repeats()
            except InputError as e:
                self.execution = None
                yield self._finish("rejected", error=str(e))
                return
        elif isinstance(last, StepResultMessage) and self.execution is not None:
            self.execution.record(last.content)
            if self.execution.is_review_point(last.content):
                review = review_request(self.execution, last.content, self.max_repeats)
                yield Response(chat_message=ReviewRequestMessage(content=review, source=self.name))
                return
        elif isinstance(last, ReviewDecisionMessage) and self.execution is not None:
            if (stopped := self._apply(last.content)) is not None:
                yield stopped
                return
        else:
            raise RuntimeError(f"the conductor cannot act on {type(last).__name__}")
        request = self.execution.next_request()
        if request is not None:
            if request.tool is not None and settings().preset == "full":  # models its arguments decide (a join's)
                try:
                    check_available(get_tool(request.tool).models_for(request.arguments))
                except InputError as e:
                    yield self._finish("failed", error=f"step '{request.key}': {e}")
                    return
            yield Response(chat_message=StepRequestMessage(content=request, source=self.name))
            return
        result = self.execution.outputs()["result"]
        if not isinstance(result, Artifact) or result.kind != "video":
            yield self._finish("failed", error=f"the SOP's result is not a video: {result!r}")
            return
        atomic_copy(self.run_dir / result.path, self.run_dir / "result.mp4")
        yield self._finish("finished", result=result.model_copy(update={"path": "result.mp4"}))
