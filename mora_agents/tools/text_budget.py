"""How much of a prompt a backend's text encoder reads; a note, never silence, when a prompt is longer.

The pipelines cut a prompt at their text encoder's length (CLIP: 77 tokens) and transformers only logs it. The
prompt agent is given the budget of the tool and backend that will read its answer (and its answer is checked),
so its prompts fit; a longer text that reaches a tool anyway (a person's own, an SOP literal) is cut as before,
and the tool records what was dropped in the step's notes (`settings.note`), which the transcript keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mora_agents.settings import note
from mora_agents.tools.backends import BACKENDS, Backend, backend_named

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def budget_tokenizer(backend: Backend) -> PreTrainedTokenizerBase:
    """The tokenizer of the text encoder that reads a backend's prompts (not its whole pipeline)."""
    from mora_agents.pipelines.loading import load_tokenizer

    assert backend.text is not None
    return load_tokenizer(backend.text.model, backend.text.tokenizer, backend.models[0], backend.text.subfolder)


def count_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """The tokens the encoder sees for `text`, its special tokens included (CLIP's start and end, T5's end)."""
    return len(tokenizer(text, verbose=False).input_ids)


def prompt_tokens(tool: str, backend: str | None, text: str) -> int:
    """The tokens of `text` for the text encoder of a tool's backend."""
    return count_tokens(budget_tokenizer(backend_named(BACKENDS[tool], backend)), text)


def note_cut_prompts(pipe: Any, backend: Backend, texts: Mapping[str, str | None]) -> None:
    """For each text (by parameter name) longer than what the text encoder of a backend's pipeline reads, note how
    long it is and what the encoder drops."""
    assert backend.text is not None
    budget = backend.text
    tokenizer = getattr(pipe, budget.tokenizer)
    special = count_tokens(tokenizer, "")
    for name, text in texts.items():
        ids = tokenizer(text or "", add_special_tokens=False, verbose=False).input_ids
        if len(ids) + special > budget.tokens:
            dropped = tokenizer.decode(ids[budget.tokens - special:], skip_special_tokens=True).strip()
            note(f"{name}: {len(ids) + special} {budget.encoder} tokens, but {backend.name} reads {budget.tokens}; "
                 f"the end is dropped: {dropped!r}")
