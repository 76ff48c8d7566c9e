"""The conductor: follows the chosen SOP, sending each step request to its agent and collecting results.

It holds no task logic of its own: what comes next is `Execution.next_request()`, read off the SOP.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_core import CancellationToken

from mora_agents.agents.base import StreamingAgent
from mora_agents.agents.messages import (
    PlanMessage,
    RunFinished,
    RunFinishedMessage,
    StepFailedMessage,
    StepRequestMessage,
    StepResultMessage,
)
from mora_agents.errors import InputError
from mora_agents.media import Artifact, atomic_copy
from mora_agents.models.loading import check_available
from mora_agents.sop.execution import Execution, validate_inputs
from mora_agents.sop.schema import SOP
from mora_agents.settings import settings
from mora_agents.tools.registry import get_tool


def required_models(sop: SOP) -> list[str]:
    tools = [s.tool for s in sop.steps if s.tool] + [s.repeat.chain.tool for s in sop.steps if s.repeat and s.repeat.chain]
    return list(dict.fromkeys(m for t in tools for m in get_tool(t).models))


class ConductorAgent(StreamingAgent):
    def __init__(self, sops: dict[str, SOP], run_dir: Path, seed: int,
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__("conductor", "Follows the SOP: sends each step to its agent and collects the results.")
        self.sops, self.run_dir, self.seed, self.overrides = sops, run_dir, seed, overrides or {}
        self.execution: Execution | None = None

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (StepRequestMessage, RunFinishedMessage)

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.execution = None

    def _finish(self, status: str, result: Artifact | None = None, error: str | None = None) -> Response:
        finished = RunFinished(status=status, result=result, error=error)
        return Response(chat_message=RunFinishedMessage(content=finished, source=self.name))

    async def on_messages_stream(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
                                 ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        last = messages[-1]
        if isinstance(last, StepFailedMessage):
            failure = last.content
            yield self._finish("rejected" if failure.rejected else "failed",
                               error=f"step '{failure.step}' ({failure.agent}): {failure.error}")
            return
        if isinstance(last, PlanMessage):
            sop = self.sops[last.content.task]
            try:
                inputs = validate_inputs(sop, last.content.inputs, self.run_dir)
                if settings().preset == "full":
                    check_available(required_models(sop))
            except InputError as e:
                yield self._finish("rejected", error=str(e))
                return
            self.execution = Execution(sop, inputs, self.run_dir, self.seed, self.overrides)
        elif isinstance(last, StepResultMessage) and self.execution is not None:
            self.execution.record(last.content)
        else:
            raise RuntimeError(f"the conductor cannot act on {type(last).__name__}")
        request = self.execution.next_request()
        if request is not None:
            yield Response(chat_message=StepRequestMessage(content=request, source=self.name))
            return
        result = self.execution.outputs()["result"]
        if not isinstance(result, Artifact) or result.kind != "video":
            yield self._finish("failed", error=f"the SOP's result is not a video: {result!r}")
            return
        atomic_copy(self.run_dir / result.path, self.run_dir / "result.mp4")
        yield self._finish("finished", result=result.model_copy(update={"path": "result.mp4"}))
