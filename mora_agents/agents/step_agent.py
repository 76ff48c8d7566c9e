"""Agents that carry out SOP steps: an LLM-backed agent that calls its step's tool (or answers in text),
and the media agent, which runs its tool as requested with no LLM.

Malformed model output (invalid JSON, an unknown tool, wrong argument types, a path outside the run
directory, a structured answer that does not fit its schema) goes back to the model with the error; after
`max_retries` tries the step fails cleanly. A text step with a `format` (a storyboard) is asked for that message as
structured output; the result is its JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import traceback
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from autogen_agentchat.base import Response
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from pydantic import ValidationError

from mora_agents.agents.base import StreamingAgent
from mora_agents.agents.messages import (
    StepFailedMessage,
    StepRequestMessage,
    StepResultMessage,
)
from mora_agents.errors import describe_error, validation_summary
from mora_agents.llm.prompts import step_prompt
from mora_agents.media import Artifact
from mora_agents.settings import collect_details, collect_notes, settings
from mora_agents.sop.formats import FORMATS
from mora_agents.sop.messages import PromptBudget, StepFailed, StepRequest, StepResult
from mora_agents.tools.registry import REGISTRY, get_tool
from mora_agents.tools.text_budget import prompt_tokens


def out_of_memory(request: StepRequest, error: torch.OutOfMemoryError) -> str:
    """The one-line message for a step that ran out of GPU memory: what it needed and what to do."""
    needed = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", str(error))
    profile = settings().memory_profile
    advice = ("`mora resume RUN --memory-profile 24gb` continues with the models offloaded"
              if profile == "resident" else "free GPU memory (other processes) or use a smaller size")
    return (f"out of GPU memory in step '{request.key}'"
            f"{f' (it needed {needed.group(1)} more)' if needed else ''} under memory profile '{profile}': {advice}")


class StepAgent(StreamingAgent):
    """Runs the tool of the last step request addressed to it; subclasses decide the arguments."""

    def __init__(self, name: str, description: str, run_dir: Path) -> None:
        super().__init__(name, description)
        self.run_dir = run_dir

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (StepResultMessage, StepFailedMessage)

    def _request(self, messages: Sequence[BaseChatMessage]) -> StepRequest:
        for message in reversed(messages):
            if isinstance(message, StepRequestMessage) and message.content.agent == self.name:
                return message.content
        raise RuntimeError(f"{self.name} was selected without a step request")

    def _fail(self, request: StepRequest, error: str, details: str | None = None) -> Response:
        failed = StepFailed(step=request.step, iteration=request.iteration, agent=self.name, error=error, details=details)
        return Response(chat_message=StepFailedMessage(content=failed, source=self.name))

    def check_arguments(self, request: StepRequest, call: FunctionCall) -> dict[str, Any]:
        """The call's arguments, typed; raises ValueError with a message meant for the model."""
        if call.name != request.tool:
            known = "unknown tool" if call.name not in REGISTRY else "wrong tool"
            raise ValueError(f"{known} '{call.name}': this step calls '{request.tool}'")
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError as e:
            raise ValueError(f"arguments are not valid JSON ({e.msg} at position {e.pos})") from None
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be a JSON object")
        spec = get_tool(call.name)
        try:
            typed = spec.validate_args(arguments)
        except ValidationError as e:
            raise ValueError(f"invalid arguments: {validation_summary(e)}") from None
        for param in [*spec.media, "output"]:
            value = typed.get(param)
            for path in value if isinstance(value, list) else [value] if value is not None else []:
                if not Path(path).resolve().is_relative_to(self.run_dir.resolve()):
                    raise ValueError(f"argument '{param}': {path} is outside the run directory {self.run_dir}")
        return typed

    async def _run_tool(self, request: StepRequest, call: FunctionCall, arguments: dict[str, Any]
                        ) -> AsyncGenerator[BaseAgentEvent | Response, None]:
        """Run the tool; yields the execution event and the step's Response."""
        start = time.perf_counter()
        try:
            output, notes, details = await asyncio.to_thread(_call_tool, get_tool(call.name).func, arguments)
        except Exception as e:  # a tool failure ends the step; the conductor reports it
            error = (out_of_memory(request, e) if isinstance(e, torch.OutOfMemoryError)
                     else f"{call.name} failed: {describe_error(e)}")
            yield ToolCallExecutionEvent(content=[FunctionExecutionResult(
                content=error, call_id=call.id, is_error=True, name=call.name)], source=self.name)
            yield self._fail(request, error, traceback.format_exc())
            return
        seconds = time.perf_counter() - start
        if isinstance(output, Artifact):
            output = output.relative_to(self.run_dir)
            if any(a.noise for media in request.media.values() for a in media):  # made of noise (a tiny model's)
                output = output.model_copy(update={"noise": True})
        text = output.model_dump_json() if isinstance(output, Artifact) else str(output)
        yield ToolCallExecutionEvent(content=[FunctionExecutionResult(
            content=text, call_id=call.id, is_error=False, name=call.name)], source=self.name)
        result = StepResult(step=request.step, iteration=request.iteration, agent=self.name, tool=call.name,
                            arguments=json.loads(json.dumps(arguments, default=str)), output=output, seconds=seconds,
                            notes=notes, details=json.loads(json.dumps(details, default=str)), inputs=request.inputs)
        yield Response(chat_message=StepResultMessage(content=result, source=self.name))


def _call_tool(func: Callable[..., Any], arguments: dict[str, Any]) -> tuple[Any, list[str], dict[str, Any]]:
    """Run a tool (in a worker thread), with the notes it makes (`settings.note`) and what it reports
    (`settings.report`)."""
    with collect_notes() as notes, collect_details() as details:
        return func(**arguments), notes, details


def over_budget(budget: PromptBudget, text: str) -> tuple[str, str] | None:
    """Why a text step's answer does not fit its budget, and the same as JSON for the model; None if it fits."""
    tokens = prompt_tokens(budget.tool, budget.backend, text)
    if tokens <= budget.tokens:
        return None
    return (f"the answer has {tokens} {budget.encoder} tokens, but {budget.tool} ({budget.backend}) reads "
            f"{budget.tokens}: shorten it", json.dumps({"tokens": tokens, "budget": budget.tokens}))


class MediaAgent(StepAgent):
    """Runs frame and clip tools exactly as requested (no LLM: nothing to decide)."""

    async def on_messages_stream(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
                                 ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        request = self._request(messages)
        call = FunctionCall(id=f"{request.key}", name=request.tool or "", arguments=json.dumps(request.arguments))
        yield ToolCallRequestEvent(content=[call], source=self.name)
        try:
            arguments = self.check_arguments(request, call)
        except ValueError as e:
            yield self._fail(request, str(e))
            return
        async for item in self._run_tool(request, call, arguments):
            yield item


class ModelAgent(StepAgent):
    """An LLM-backed agent: the model reads the step request and calls the tool (or answers in text)."""

    def __init__(self, name: str, description: str, run_dir: Path, model_client: ChatCompletionClient,
                 system_message: str, max_retries: int = 3) -> None:
        super().__init__(name, description, run_dir)
        self.model_client, self.system_message, self.max_retries = model_client, system_message, max_retries

    async def on_messages_stream(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
                                 ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        request = self._request(messages)
        budget = request.budget.model_dump() if request.budget else None
        history: list[LLMMessage] = [
            SystemMessage(content=self.system_message),
            UserMessage(content=step_prompt(request.step, request.tool, request.arguments, budget, request.format),
                        source="conductor"),
        ]
        tools = [get_tool(request.tool).function_tool] if request.tool else []
        error, answer = "", None
        for _ in range(self.max_retries):
            if request.format is not None:
                try:
                    yield self._answer(request, await self._structured(history, request.format, cancellation_token))
                    return
                except ValueError as e:  # pydantic's ValidationError included: the answer does not fit the schema
                    error = validation_summary(e) if isinstance(e, ValidationError) else str(e)
                    history.append(UserMessage(content=f"Error: {error}. Answer again with the whole {request.format}"
                                               " as JSON.", source="conductor"))
                    continue
            reply = await self.model_client.create(history, tools=tools, cancellation_token=cancellation_token)
            history.append(AssistantMessage(content=reply.content, source=self.name))
            if request.tool is None:
                detail = ""
                if isinstance(reply.content, str) and reply.content.strip():
                    answer = reply.content.strip()
                    if request.budget is None or (too_long := over_budget(request.budget, answer)) is None:
                        yield self._answer(request, answer)
                        return
                    error, counts = too_long
                    detail = f"\n```json\n{counts}\n```"
                else:
                    error = "the reply must be text (no tool calls), and not empty"
                history.append(UserMessage(content=f"Error: {error}. Try again.{detail}", source="conductor"))
                continue
            if isinstance(reply.content, str) or len(reply.content) != 1:
                error = f"call the tool '{request.tool}' exactly once"
                history.append(UserMessage(content=f"Error: {error}. Try again.", source="conductor"))
                continue
            call = reply.content[0]
            yield ToolCallRequestEvent(content=[call], source=self.name)
            try:
                arguments = self.check_arguments(request, call)
            except ValueError as e:
                error = str(e)
                failure = FunctionExecutionResult(content=f"Error: {error}", call_id=call.id, is_error=True, name=call.name)
                yield ToolCallExecutionEvent(content=[failure], source=self.name)
                history.append(FunctionExecutionResultMessage(content=[failure]))
                continue
            async for item in self._run_tool(request, call, arguments):
                yield item
            return
        if answer is not None:  # text, only too long: the tool that reads it cuts it, and the result says so
            yield self._answer(request, answer, [f"over its budget after {self.max_retries} tries: {error}"])
            return
        yield self._fail(request, f"the model gave no valid answer in {self.max_retries} tries; last error: {error}")

    async def _structured(self, history: list[LLMMessage], format_: str, cancellation_token: CancellationToken) -> str:
        """One structured-output call for a `format` step: the answer as checked JSON; ValueError (for the model)
        when it is no such message."""
        model = FORMATS[format_]
        reply = await self.model_client.create(history, json_output=model, cancellation_token=cancellation_token)
        history.append(AssistantMessage(content=reply.content, source=self.name))
        if not isinstance(reply.content, str):
            raise ValueError(f"answer with the {format_} as JSON, not a tool call")
        return model.model_validate_json(reply.content).model_dump_json()

    def _answer(self, request: StepRequest, text: str, notes: list[str] | None = None) -> Response:
        result = StepResult(step=request.step, iteration=request.iteration, agent=self.name, tool=None,
                            arguments=request.arguments, output=text, seconds=0.0, notes=notes or [],
                            inputs=request.inputs)
        return Response(chat_message=StepResultMessage(content=result, source=self.name))
