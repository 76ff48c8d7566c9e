"""The tool registry: plain typed functions, named, with what they consume and produce.

Agents and SOP steps refer to tools by name; a user SOP can use any registered tool, and
`register` adds new ones (a plain function with type hints and a docstring).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from autogen_core.tools import FunctionTool
from pydantic import TypeAdapter

Produces = Literal["image", "video", "text"]
SUFFIXES = {"image": ".png", "video": ".mp4", "text": ".txt"}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    func: Callable[..., Any]
    produces: Produces
    media: dict[str, str] = field(default_factory=dict)
    """Parameters that take media paths, with their kind: {"image": "image"} or {"videos": "video"}."""
    models: tuple[str, ...] = ()
    """Model keys the tool loads (see mora_agents.pipelines.loading.MODEL_IDS)."""

    @property
    def description(self) -> str:
        return inspect.getdoc(self.func).split("\n\n")[0]

    @cached_property
    def function_tool(self) -> FunctionTool:
        """The autogen tool over the same function (its JSON schema and argument validation)."""
        return FunctionTool(self.func, description=self.description, name=self.name)

    @cached_property
    def parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.func).parameters)

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.produces]

    def validate_args(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check names and types against the signature; returns the typed values (pydantic errors raise)."""
        model = self.function_tool.args_type().model_validate(arguments)
        return {name: getattr(model, name) for name in arguments}

    def validate_param(self, name: str, value: Any) -> Any:
        """Check one parameter's value against its type (pydantic errors raise)."""
        return TypeAdapter(self.function_tool.args_type().model_fields[name].annotation).validate_python(value)


REGISTRY: dict[str, ToolSpec] = {}


def register(produces: Produces, media: dict[str, str] | None = None, models: tuple[str, ...] = (),
             name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a plain function as a tool (the function itself is returned unchanged)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        spec = ToolSpec(name or func.__name__, func, produces, media or {}, models)
        REGISTRY[spec.name] = spec
        return func

    return decorate


def get_tool(name: str) -> ToolSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown tool '{name}' (registered: {', '.join(sorted(REGISTRY))})") from None
