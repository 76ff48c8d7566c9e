"""The autogen messages agents exchange: our structured contents (`mora_agents.sop.messages`) wrapped
as `StructuredMessage`s, and a message factory that knows them (to rebuild messages from transcripts).
"""

from __future__ import annotations

from typing import Any

from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    MessageFactory,
    StructuredMessage,
)

from mora_agents.sop.messages import (
    Plan,
    ReviewDecision,
    ReviewRequest,
    RunFinished,
    StepFailed,
    StepRequest,
    StepResult,
    UserRequest,
)

RequestMessage = StructuredMessage[UserRequest]
PlanMessage = StructuredMessage[Plan]
StepRequestMessage = StructuredMessage[StepRequest]
StepResultMessage = StructuredMessage[StepResult]
StepFailedMessage = StructuredMessage[StepFailed]
ReviewRequestMessage = StructuredMessage[ReviewRequest]
ReviewDecisionMessage = StructuredMessage[ReviewDecision]
RunFinishedMessage = StructuredMessage[RunFinished]
MESSAGE_TYPES: list[type[BaseChatMessage]] = [
    RequestMessage, PlanMessage, StepRequestMessage, StepResultMessage, StepFailedMessage, ReviewRequestMessage,
    ReviewDecisionMessage, RunFinishedMessage,
]


def message_factory() -> MessageFactory:
    """An autogen MessageFactory that also knows our structured message types."""
    factory = MessageFactory()
    for message_type in MESSAGE_TYPES:
        factory.register(message_type)
    return factory


def load_message(data: dict[str, Any]) -> BaseAgentEvent | BaseChatMessage:
    return message_factory().create(data)
