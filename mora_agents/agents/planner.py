"""The planner: turns a person's request into a Plan (the SOP to follow and its filled inputs).

The LLM classifies the request and extracts the prompt and duration (structured output, `PlanChoice`);
attachments are then assigned to the SOP's media inputs in order, by kind.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, ThoughtEvent
from autogen_core import CancellationToken
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from pydantic import ValidationError

from mora_agents.agents.base import StreamingAgent
from mora_agents.agents.messages import PlanMessage, RequestMessage, StepFailedMessage
from mora_agents.errors import InputError, validation_summary
from mora_agents.llm.prompts import PLANNER_SYSTEM, planner_prompt
from mora_agents.sop.messages import Plan, PlanChoice, StepFailed, UserRequest
from mora_agents.sop.schema import SOP


def fill_plan(choice: PlanChoice, request: UserRequest, sop: SOP) -> Plan:
    """Fill the SOP's inputs: text from the choice, duration, and attachments in order by kind.

    In a chat follow-up, the previous result comes first among the videos when the SOP needs more
    videos than were attached ("extend it", "connect it with clip.mp4"); an optional video input (`long_video`'s)
    takes only attached ones.
    """
    queues = {"image": list(request.images), "video": list(request.videos)}
    if request.previous and sum(spec.type == "video" and spec.required for spec in sop.inputs.values()) > len(
            request.videos):
        queues["video"].insert(0, request.previous)
    inputs: dict[str, object] = {}
    for name, spec in sop.inputs.items():
        if spec.type == "text" and name == "prompt":
            inputs[name] = choice.prompt
        elif spec.type == "number" and name == "duration":
            duration = request.duration if request.duration is not None else choice.duration
            if duration is not None:
                inputs[name] = duration
        elif spec.type in queues and queues[spec.type]:
            inputs[name] = queues[spec.type].pop(0)
    if unused := queues["image"] + queues["video"]:
        raise InputError(f"{', '.join(unused)}: attached but task '{sop.name}' has no input for it")
    if request.duration is not None and "duration" not in sop.inputs:
        raise InputError(f"--duration: task '{sop.name}' takes no duration")
    return Plan(task=sop.name, inputs=inputs, reason=choice.reason)


class PlannerAgent(StreamingAgent):
    def __init__(self, model_client: ChatCompletionClient, sops: dict[str, SOP], max_retries: int = 3) -> None:
        super().__init__("planner", "Chooses the SOP for a request and fills its inputs.")
        self.model_client, self.sops, self.max_retries = model_client, sops, max_retries

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (PlanMessage, StepFailedMessage)

    async def _ask(self, history: list[LLMMessage], request: UserRequest,
                   cancellation_token: CancellationToken) -> PlanChoice:
        """One structured-output call; raises ValueError when the answer is not a valid choice."""
        reply = await self.model_client.create(history, json_output=PlanChoice, cancellation_token=cancellation_token)
        history.append(AssistantMessage(content=reply.content, source=self.name))
        if not isinstance(reply.content, str):
            raise ValueError("answer with JSON, not a tool call")
        choice = PlanChoice.model_validate_json(reply.content)
        if request.task:
            choice.task = request.task
        if choice.task not in self.sops:
            raise ValueError(f"unknown task '{choice.task}' (choose from {', '.join(self.sops)})")
        return choice

    async def on_messages_stream(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
                                 ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        request = next(m.content for m in reversed(messages) if isinstance(m, RequestMessage))
        catalog = [{"name": s.name, "description": s.description,
                    "inputs": {k: v.type for k, v in s.inputs.items()}} for s in self.sops.values()]
        history: list[LLMMessage] = [SystemMessage(content=PLANNER_SYSTEM),
                                     UserMessage(content=planner_prompt(request.model_dump(), catalog), source="user")]
        error = ""
        for _ in range(self.max_retries):
            try:
                choice = await self._ask(history, request, cancellation_token)
            except ValueError as e:  # pydantic's ValidationError included: the model's JSON did not fit
                error = validation_summary(e) if isinstance(e, ValidationError) else str(e)
                yield ThoughtEvent(content=f"invalid plan: {error}", source=self.name)
                history.append(UserMessage(content=f"Error: {error}. Answer again.", source="user"))
                continue
            try:
                plan = fill_plan(choice, request, self.sops[choice.task])
            except InputError as e:
                failed = StepFailed(step="plan", agent=self.name, error=str(e), rejected=True)
                yield Response(chat_message=StepFailedMessage(content=failed, source=self.name))
                return
            yield Response(chat_message=PlanMessage(content=plan, source=self.name))
            return
        failed = StepFailed(step="plan", agent=self.name,
                            error=f"the model gave no valid plan in {self.max_retries} tries; last error: {error}")
        yield Response(chat_message=StepFailedMessage(content=failed, source=self.name))
