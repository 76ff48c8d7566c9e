"""LLM clients: the offline default, or any OpenAI-compatible endpoint configured by environment."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from mora_agents.errors import InputError

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def client_from_env() -> ChatCompletionClient:
    """The configured LLM client.

    - `MORA_LLM_BASE_URL` + `MORA_LLM_MODEL` (+ `MORA_LLM_API_KEY`, the only key it is sent): an OpenAI-compatible
      server (vLLM, Ollama, LM Studio...); `MORA_LLM_MODEL_INFO` (JSON) describes a non-OpenAI model's abilities.
    - `OPENAI_API_KEY` alone: OpenAI, model `MORA_LLM_MODEL` (default gpt-4o-mini).
    - neither: the embedded offline client.
    """
    from autogen_core.models import ModelFamily, ModelInfo

    from mora_agents.llm.offline import OfflineChatCompletionClient  # autogen's modules load where a client is made

    base_url, model = os.environ.get("MORA_LLM_BASE_URL"), os.environ.get("MORA_LLM_MODEL")
    if not base_url and not os.environ.get("OPENAI_API_KEY"):
        return OfflineChatCompletionClient()
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    if not base_url:
        return OpenAIChatCompletionClient(model=model or DEFAULT_OPENAI_MODEL)
    if not model:
        raise InputError("MORA_LLM_BASE_URL is set but MORA_LLM_MODEL is not: name the model the server serves")
    info = ModelInfo(vision=False, function_calling=True, json_output=True, family=ModelFamily.UNKNOWN,
                     structured_output=True)
    if raw := os.environ.get("MORA_LLM_MODEL_INFO"):
        try:
            info.update(json.loads(raw))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise InputError(f"MORA_LLM_MODEL_INFO: not a JSON object ({e})") from None
    api_key = os.environ.get("MORA_LLM_API_KEY") or "not-needed"  # never OpenAI's key: it is for OpenAI's API only
    return OpenAIChatCompletionClient(model=model, base_url=base_url, api_key=api_key, model_info=info)
