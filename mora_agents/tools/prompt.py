"""Prompt enhancement as a plain function (the prompt agent does the same inside a group chat)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient


async def enhance_prompt_async(prompt: str, client: ChatCompletionClient | None = None) -> str:
    from autogen_core.models import SystemMessage, UserMessage

    from mora_agents.llm import client_from_env
    from mora_agents.llm.prompts import PROMPT_AGENT_SYSTEM, step_prompt

    client = client or client_from_env()
    result = await client.create([SystemMessage(content=PROMPT_AGENT_SYSTEM),
                                  UserMessage(content=step_prompt("enhance", None, {"prompt": prompt}), source="user")])
    if not isinstance(result.content, str) or not result.content.strip():
        raise ValueError("the LLM returned no enhanced prompt")
    return result.content.strip()


def enhance_prompt(prompt: str, client: ChatCompletionClient | None = None) -> str:
    """Enhance a prompt with visual detail using the configured LLM (the offline client by default)."""
    return asyncio.run(enhance_prompt_async(prompt, client))
