"""The base of our agents: the work is in `on_messages_stream`; `on_messages` returns its Response."""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken


class StreamingAgent(BaseChatAgent):
    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        async for item in self.on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                return item
        raise RuntimeError(f"{self.name} produced no response")

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        """Nothing to reset: each turn reads what it needs from the messages."""
