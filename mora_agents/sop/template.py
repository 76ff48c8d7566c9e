"""Templating of SOP arguments: Jinja2 (sandboxed) over `inputs` and `steps`.

A string that is exactly one `{{ expression }}` evaluates to the expression's value (an artifact, a
number, a list); any other string with `{{ }}` renders to text.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
_SINGLE = re.compile(r"\s*\{\{(.*?)\}\}\s*", re.S)
ROOTS = ("inputs", "steps")


def _single_expression(text: str) -> str | None:
    match = _SINGLE.fullmatch(text)
    return match.group(1) if match and "{{" not in match.group(1) else None


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render templates inside a value (strings, lists and dicts, recursively)."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    if (expression := _single_expression(value)) is not None:
        return ENV.compile_expression(expression, undefined_to_none=False)(**context)
    return ENV.from_string(value).render(**context)


def references(value: Any) -> list[tuple[str, str]]:
    """The (root, name) pairs a template uses, e.g. ("steps", "image"); raises ValueError on bad syntax."""
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    if not is_template(value):
        return []
    try:
        tree = ENV.parse(value)
    except TemplateSyntaxError as e:
        raise ValueError(f"template syntax error: {e.message}") from None
    names = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    if unknown := sorted(names - set(ROOTS)):
        raise ValueError(f"unknown name(s) {', '.join(unknown)} (templates may use {' and '.join(ROOTS)})")
    return [(n.node.name, n.attr) for n in tree.find_all(nodes.Getattr)
            if isinstance(n.node, nodes.Name) and n.node.name in ROOTS]
