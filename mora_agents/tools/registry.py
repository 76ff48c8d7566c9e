"""The tool registry: plain typed functions, named, with what they consume and produce.

Agents and SOP steps refer to tools by name; a user SOP can use any registered tool, and
`register` adds new ones (a plain function with type hints and a docstring). A parameter's bounds are
part of its type (`mora_agents.tools.params`): the registry turns them into one argument model that
checks `--set` values, SOP arguments and the agents' tool calls, and gives the model its JSON schema.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from mora_agents.errors import validation_summary
from mora_agents.tools.backends import Backend, backend_named, check_backend_args

if TYPE_CHECKING:
    from mora_agents.tools.autogen_tool import SchemaTool

Produces = Literal["image", "video", "text", "candidate"]
"""What a tool makes; `candidate`: one of its inputs, kept (a pick)."""
SUFFIXES = {"image": ".png", "video": ".mp4", "text": ".txt"}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    func: Callable[..., Any]
    produces: Produces
    media: dict[str, str] = field(default_factory=dict)
    """Parameters that take media paths, with their kind: {"image": "image"} or {"videos": "video"}."""
    models: tuple[str, ...] = ()
    """Model keys the tool loads (see mora_agents.pipelines.sources.MODEL_IDS), for a tool without backends."""
    backends: Mapping[str, Backend] = field(default_factory=dict)
    """The models a tool with a `backend` parameter can run, by name, the default first (`tools.backends`)."""
    models_of: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
    """For a tool whose arguments decide its models otherwise (the transitions of `join_clips`): the model keys a
    call with those arguments loads (of the arguments known so far)."""

    @property
    def description(self) -> str:
        return inspect.getdoc(self.func).split("\n\n")[0]

    @cached_property
    def args_model(self) -> type[BaseModel]:
        """The arguments as a pydantic model: each parameter's type with its bounds, description and default, and
        the backend's rules over the arguments given (`check_combination`)."""
        return args_model(self.name, self.func, self._check_rules)

    @cached_property
    def params_model(self) -> type[BaseModel]:
        """The parameters' types and bounds alone, for checking them one at a time (`validate_param`)."""
        return args_model(self.name, self.func)

    @cached_property
    def function_tool(self) -> SchemaTool:
        """The autogen tool over the same function (its JSON schema and argument validation)."""
        from mora_agents.tools.autogen_tool import SchemaTool

        return SchemaTool(self)

    @cached_property
    def parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.func).parameters)

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.produces]

    def validate_args(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check names, types and bounds; returns the typed values (pydantic errors raise)."""
        model = self.args_model.model_validate(arguments)
        return {name: getattr(model, name) for name in arguments}

    def validate_param(self, name: str, value: Any) -> Any:
        """Check one parameter's value against its type and bounds, and return it typed (pydantic errors raise);
        `check_combination` checks several together (so a parameter that only another backend than the default reads
        passes here)."""
        partial = self.params_model.model_construct()
        self.params_model.__pydantic_validator__.validate_assignment(partial, name, value)
        return getattr(partial, name)

    def typed_args(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments as the tool call types them: pydantic's coercion, the same on every path in ("24", "24.0" and
        24.0 become 24; 24.5 and true are refused). Raises ValueError naming the first that does not fit."""
        typed = {}
        for name, value in values.items():
            try:
                typed[name] = self.validate_param(name, value)
            except ValidationError as e:
                raise ValueError(f"{name}={value!r}: {validation_summary(e, locations=False)}") from None
        return typed

    def check_combination(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments together (some of them: those known so far) against the backend they choose, if the tool
        has backends: what it reads, its frame and size rules. The values are typed first (`typed_args`), so the
        rules see the numbers the tool will get; returns them. Raises ValueError."""
        typed = self.typed_args(values)
        self._check_rules(typed)
        return typed

    def _check_rules(self, typed: Mapping[str, Any]) -> None:
        if self.backends:
            check_backend_args(self.backends, typed)

    def backend(self, arguments: Mapping[str, Any]) -> Backend | None:
        """The backend that arguments choose (the default if they name none); None for a tool without backends."""
        return backend_named(self.backends, arguments.get("backend")) if self.backends else None

    def models_for(self, arguments: Mapping[str, Any]) -> tuple[str, ...]:
        """The model keys a call with these arguments loads."""
        backend = self.backend(arguments)
        if backend is not None:
            return backend.models
        return self.models_of(arguments) if self.models_of is not None else self.models


def args_model(name: str, func: Callable[..., Any],
               check: Callable[[Mapping[str, Any]], None] | None = None) -> type[BaseModel]:
    """A function's parameters as a pydantic model; `Annotated[type, "description"]` gives the description, and
    `check` (of the arguments given, raising ValueError) runs after the fields are valid.

    (autogen's FunctionTool keeps only the first argument of `Annotated` and so drops bounds written beside
    the description, e.g. `Annotated[int, Field(ge=1), "steps"]`; this keeps them.)
    """
    hints = typing.get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        hint = hints[param.name]
        metadata = getattr(hint, "__metadata__", ())
        description = next((m for m in metadata if isinstance(m, str)), param.name)
        bounds = tuple(m for m in metadata if not isinstance(m, str))
        base = typing.get_args(hint)[0] if metadata else hint
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (Annotated[(base, *bounds)] if bounds else base, Field(default, description=description))
    validators = {}
    if check is not None:
        def _check(model: BaseModel) -> BaseModel:
            check({name: getattr(model, name) for name in model.model_fields_set})
            return model

        validators["check_combination"] = model_validator(mode="after")(_check)
    return create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), __validators__=validators, **fields)


REGISTRY: dict[str, ToolSpec] = {}


def register(produces: Produces, media: dict[str, str] | None = None, models: tuple[str, ...] = (),
             name: str | None = None, backends: Mapping[str, Backend] | None = None,
             models_of: Callable[[Mapping[str, Any]], tuple[str, ...]] | None = None
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a plain function as a tool (the function itself is returned unchanged). A tool with
    `backends` has a `backend` parameter naming one of them; `models_of` gives the models of a call whose arguments
    decide them otherwise."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        spec = ToolSpec(name or func.__name__, func, produces, media or {}, models, backends or {}, models_of)
        REGISTRY[spec.name] = spec
        return func

    return decorate


def get_tool(name: str) -> ToolSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown tool '{name}' (registered: {', '.join(sorted(REGISTRY))})") from None
