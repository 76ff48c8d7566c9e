"""The prompt writer: the LLM writes new, varied prompts from a few seed prompts (few-shot)."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from autogen_core.models import AssistantMessage, ChatCompletionClient, LLMMessage, SystemMessage, UserMessage
from pydantic import ValidationError

from mora_agents.errors import MoraError, validation_summary
from mora_agents.inputs import text_problem
from mora_agents.llm.prompts import PROMPT_WRITER_SYSTEM, WrittenPrompts, writer_prompt

MAX_EXAMPLES = 20
"""Seeds shown to the writer at most (a seeded sample of them when there are more)."""
TRIES = 3


def normal(text: str) -> str:
    """A text's words, lower-case: two prompts that differ only in case, spaces or punctuation are the same."""
    return " ".join(re.findall(r"\w+", text.lower()))


def check_written(content: object, count: int, taken: set[str]) -> list[str]:
    """The first `count` prompts of a writer's answer; ValueError (pydantic's included; meant for the model) when it
    is not usable."""
    if not isinstance(content, str):
        raise ValueError("answer with JSON text, not a tool call")
    prompts = [p.strip() for p in WrittenPrompts.model_validate_json(content).prompts]
    seen = set(taken)
    for number, prompt in enumerate(prompts[:count], 1):
        if (problem := text_problem(prompt)) is not None:
            raise ValueError(f"prompt {number} is {problem}")
        if normal(prompt) in seen:
            raise ValueError(f"prompt {number} ({prompt!r}) copies an example or an earlier prompt")
        seen.add(normal(prompt))
    if len(prompts) < count:
        raise ValueError(f"{len(prompts)} prompts; write exactly {count}")
    return prompts[:count]


async def write_prompts(seeds: Sequence[str], count: int, seed: int, client: ChatCompletionClient,
                        avoid: Sequence[str] = (), kind: str = "scene") -> list[str]:
    """`count` new prompts of a kind (`scene`, or `edit`: instructions) in the manner of `seeds`, none a copy of a
    seed, of `avoid` or of each other.

    Malformed answers go back to the model with the error; after 3 tries MoraError. `seed` picks the examples
    (at most 20) and is given to the model (the offline writer draws from it).
    """
    examples = random.Random(seed).sample(list(seeds), min(MAX_EXAMPLES, len(seeds)))
    history: list[LLMMessage] = [SystemMessage(content=PROMPT_WRITER_SYSTEM),
                                 UserMessage(content=writer_prompt(examples, count, seed, kind), source="user")]
    taken = {normal(text) for text in [*seeds, *avoid]}
    error = ""
    for _ in range(TRIES):
        try:  # a structured-output client parses the answer itself: its ValidationError is a bad answer too
            reply = await client.create(history, json_output=WrittenPrompts)
            history.append(AssistantMessage(content=reply.content, source="prompt_writer"))
            return check_written(reply.content, count, taken)
        except ValueError as e:
            error = (f"the JSON does not match the schema ({validation_summary(e)})"
                     if isinstance(e, ValidationError) else str(e))
            history.append(UserMessage(content=f"Error: {error}. Answer again.", source="user"))
    raise MoraError(f"the prompt writer gave no usable prompts in {TRIES} tries; last error: {error}")
