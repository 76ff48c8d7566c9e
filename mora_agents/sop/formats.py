"""Structured answers of text steps (`format:` in an SOP): the message an LLM must write, how templates see it, how
a person reads and edits it at a review point.

A text step's output stays text in the results (the answer as JSON); its format parses it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mora_agents.llm.storyboard import EDIT_HELP, Storyboard, edit_storyboard

FORMATS: dict[str, type[BaseModel]] = {"storyboard": Storyboard}
"""The structured messages a text step may answer with, by name."""
EDITS = {"storyboard": EDIT_HELP}
"""What a person's edit of each format may be."""


def parse(format_: str, text: str) -> Storyboard:
    """A structured output (its JSON text) as its model; ValueError (pydantic's) if it does not fit."""
    return FORMATS[format_].model_validate_json(text)


def view(format_: str, text: str) -> dict[str, Any]:
    """What templates read of a structured output."""
    return parse(format_, text).view()


def display(format_: str, text: str) -> str:
    """A structured output as a person reads and edits it (YAML)."""
    return parse(format_, text).to_yaml()


def revise(format_: str, text: str, edit: str) -> str:
    """A structured output (JSON) after a person's edit (a whole new one, or commands); ValueError, meant for the
    person, if the edit is not understood or the result does not fit its schema."""
    return edit_storyboard(parse(format_, text), edit).model_dump_json()
