"""Templating of SOP arguments: Jinja2 (sandboxed) over `inputs` and `steps`, reading values only.

A string that is exactly one `{{ expression }}` evaluates to the expression's value (an artifact, a
number, a list); any other string with `{{ }}` renders to text.

A template may read `inputs.NAME`, `steps.ID.output`, `steps.ID.outputs` (and `outputs[i]`), of an image or
video the fields in ARTIFACT_FIELDS, of a structured output (a storyboard) the fields in STRUCTURED_FIELDS, and in
a `for_each` step its `item` (`item.FIELD`), its `index` (`outputs[index]`) and `steps.ID.named` (a `for_each`
step's outputs by their item's name), and combine them with literals, operators, conditions (`if`/`else`,
`{% if %}`) and the FILTERS (`pick`: the values of a mapping or list at the given names or indices). Everything
else (other attributes or methods, calls, loops, assignments, `**`, `%`) is refused when the template is read, so
no template runs code or loops; each `+` and `*` result and the whole output are bounded by MAX_RENDER_SIZE
characters (or list items).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from mora_agents.llm.storyboard import VIEW_FIELDS

ROOTS = ("inputs", "steps", "item", "index")
ITEM_ROOTS = ("item", "index")
"""What a `for_each` step's templates read besides inputs and steps: the current item and its position."""
STEP_FIELDS = ("output", "outputs", "named")
ARTIFACT_FIELDS = ("seconds", "frames", "fps", "width", "height")
STRUCTURED_FIELDS = VIEW_FIELDS
FILTERS = ("default", "round", "int", "float", "abs", "lower", "upper", "trim", "capitalize", "title", "length",
           "first", "last", "pick")
TESTS = ("defined", "undefined", "none", "number", "string", "sequence")
MAX_RENDER_SIZE = 10_000
"""Characters of a rendered string, items of a rendered list."""

_ALLOWED = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Const, nodes.List, nodes.Tuple, nodes.If,
            nodes.CondExpr, nodes.Not, nodes.And, nodes.Or, nodes.Compare, nodes.Operand, nodes.Add, nodes.Sub,
            nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Neg, nodes.Pos, nodes.Concat, nodes.Filter, nodes.Test)
_SINGLE = re.compile(r"\s*\{\{(.*?)\}\}\s*", re.S)


class TemplateLimitError(ValueError):
    """A render went over MAX_RENDER_SIZE."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _result_size(op: str, left: Any, right: Any) -> int:
    """Characters or items that `left op right` makes (0 for numbers)."""
    if op == "+":
        return _size(left) + _size(right)
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
            return len(sequence) * count
    return 0


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with `+` and `*` on strings and lists bounded, no calls, and only the readable fields."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op in ("**", "%"):
            raise TemplateLimitError(f"the operator {op} is not allowed in templates")
        if (size := _result_size(op, left, right)) > MAX_RENDER_SIZE:
            raise TemplateLimitError(f"'{op}' would make {size} characters or items (at most {MAX_RENDER_SIZE})")
        return super().call_binop(context, op, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):  # `inputs` and `steps`: their keys, never a dict's methods
            return obj[attribute] if attribute in obj else self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return attr in (*STEP_FIELDS, *ARTIFACT_FIELDS)  # items and structured outputs are dicts: their keys

    def is_safe_callable(self, obj: Any) -> bool:
        return False


def pick(values: Any, keys: Any) -> list[Any]:
    """The values of a mapping (or list) at `keys` (names, or indices), in their order: `steps.sheets.named |
    pick(item.cast)` is the sheets of a shot's characters and setting."""
    keys = keys if isinstance(keys, (list, tuple)) else [keys]
    if len(keys) > MAX_RENDER_SIZE:
        raise TemplateLimitError(f"pick of {len(keys)} keys (at most {MAX_RENDER_SIZE})")
    found = []
    for key in keys:
        try:
            found.append(values[key])
        except (KeyError, IndexError, TypeError):
            have = ", ".join(map(str, values)) if isinstance(values, dict) else f"{len(values)} values"
            raise ValueError(f"pick: no '{key}' (there are: {have})") from None
    return found


ENV = _BoundedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
ENV.filters = {name: ENV.filters[name] for name in FILTERS if name != "pick"} | {"pick": pick}
ENV.tests = {name: ENV.tests[name] for name in TESTS}


def _single_expression(text: str) -> str | None:
    match = _SINGLE.fullmatch(text)
    return match.group(1) if match and "{{" not in match.group(1) else None


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def has_template(value: Any) -> bool:
    """Whether a value (or any string inside a dict or list) is a template."""
    if isinstance(value, dict):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(has_template(v) for v in value)
    return is_template(value)


def is_expression(value: Any) -> bool:
    """A template that is exactly one `{{ expression }}` (so it keeps its value's type)."""
    return isinstance(value, str) and _single_expression(value) is not None


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render templates inside a value (strings, lists and dicts, recursively)."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not is_template(value):
        return value
    result = _compiled(value)(context)
    if _size(result) > MAX_RENDER_SIZE:
        raise TemplateLimitError(f"renders to {_size(result)} characters or items (at most {MAX_RENDER_SIZE})")
    return result


@functools.lru_cache(maxsize=512)
def _compiled(text: str) -> Callable[[dict[str, Any]], Any]:
    """The checked template, compiled once: a function of the context."""
    tree = parse(text)
    try:
        if (expression := _single_expression(text)) is not None:
            evaluate = ENV.compile_expression(expression, undefined_to_none=False)
            return lambda context: evaluate(**context)
        template = ENV.from_string(tree)
    except RecursionError:
        raise ValueError("template nested too deeply") from None
    return lambda context: _bounded_join(template.generate(**context))


def _bounded_join(chunks: Iterator[str]) -> str:
    out, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDER_SIZE:
            raise TemplateLimitError(f"renders to over {MAX_RENDER_SIZE} characters")
        out.append(chunk)
    return "".join(out)


def expression(text: str) -> nodes.Expr:
    """The checked expression of a template that is one `{{ expression }}`."""
    output = parse(f"{{{{{_single_expression(text)}}}}}").body[0]
    assert isinstance(output, nodes.Output)
    return output.nodes[0]


def parse(text: str) -> nodes.Template:
    """Parse and check a template: only the allowed nodes, filters, tests and readable values (ValueError)."""
    try:
        tree = ENV.parse(text)
        list(_references(tree))
    except TemplateSyntaxError as e:
        raise ValueError(f"template syntax error: {e.message}") from None
    except RecursionError:
        raise ValueError("template nested too deeply") from None
    return tree


def references(value: Any) -> list[tuple[str | int, ...]]:
    """The values templates read, as paths: ("inputs", "video", "seconds"), ("steps", "image", "output"), ...

    Raises ValueError for bad syntax or anything beyond reading values (see the module docstring)."""
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    if not is_template(value):
        return []
    return list(_references(parse(value)))


def _references(node: nodes.Node) -> Iterator[tuple[str | int, ...]]:
    if isinstance(node, (nodes.Name, nodes.Getattr, nodes.Getitem)):
        yield reference(node)
        return
    if not isinstance(node, _ALLOWED):
        raise ValueError(f"{_describe(node)} is not allowed in templates (they only read inputs and steps)")
    if isinstance(node, nodes.Filter) and node.name not in FILTERS:
        raise ValueError(f"filter '{node.name}' is not allowed (filters: {', '.join(FILTERS)})")
    if isinstance(node, nodes.Test) and node.name not in TESTS:
        raise ValueError(f"test '{node.name}' is not allowed (tests: {', '.join(TESTS)})")
    if isinstance(node, (nodes.Filter, nodes.Test)) and (node.kwargs or node.dyn_args or node.dyn_kwargs):
        raise ValueError(f"'{node.name}' takes positional arguments only in templates")
    for child in node.iter_child_nodes():
        yield from _references(child)


def _describe(node: nodes.Node) -> str:
    names = {nodes.For: "a for loop", nodes.Call: "a function or method call", nodes.Assign: "an assignment",
             nodes.Pow: "the operator **", nodes.Mod: "the operator %"}
    return names.get(type(node), type(node).__name__)


def reference(node: nodes.Node) -> tuple[str | int, ...]:
    """The path of a value a template reads; only the readable shapes pass."""
    path: list[str | int] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        path.append(node.attr if isinstance(node, nodes.Getattr) else _subscript(node.arg))
        node = node.node
    if not isinstance(node, nodes.Name) or node.name not in ROOTS:
        found = f"'{node.name}'" if isinstance(node, nodes.Name) else _describe(node)
        raise ValueError(f"{found} cannot be read (templates may use {', '.join(ROOTS)})")
    path.append(node.name)
    path.reverse()
    if not _readable(path):
        shown = ".".join(str(p) for p in path)
        raise ValueError(f"'{shown}' cannot be read: templates read inputs.NAME, steps.ID.output, steps.ID.outputs "
                         f"(or outputs[i]), of images and videos {', '.join(ARTIFACT_FIELDS)}, of a storyboard "
                         f"{', '.join(STRUCTURED_FIELDS)}, and in a for_each step item.FIELD, index and "
                         "steps.ID.named")
    return tuple(path)


def _subscript(node: nodes.Node) -> str | int:
    """A literal subscript: a name (`steps['image']`) or a whole number (`outputs[0]`, `outputs[-1]`), or a
    `for_each` step's `index` (`outputs[index]`)."""
    if isinstance(node, nodes.Name) and node.name == "index":
        return "[index]"
    negative = isinstance(node, nodes.Neg)
    literal = node.node if negative else node
    value = literal.value if isinstance(literal, nodes.Const) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or (negative and isinstance(value, str)):
        raise ValueError("subscripts in templates must be literal names or whole numbers")
    return -value if negative else value


def _readable(path: list[str | int]) -> bool:
    """inputs.NAME[.FIELD], steps.ID.output[.FIELD], steps.ID.outputs, steps.ID.outputs[i or index][.FIELD],
    steps.ID.named, item[.FIELD[i]], index."""
    root, *rest = path
    if root == "index":
        return not rest
    if root == "item":
        return len(rest) <= 2 and all(isinstance(p, str) for p in rest[:1])
    if not rest or not isinstance(rest[0], str):
        return False
    if root == "steps":
        if len(rest) < 2 or rest[1] not in STEP_FIELDS:
            return False
        if rest[1] == "named":
            return len(rest) == 2
        if rest[1] == "outputs" and len(rest) > 2 and not isinstance(rest[2], int) and rest[2] != "[index]":
            return False
        rest = rest[2:] if rest[1] == "output" else rest[3:] if len(rest) > 2 else []
    else:
        rest = rest[1:]
    return not rest or (len(rest) == 1 and rest[0] in (*ARTIFACT_FIELDS, *STRUCTURED_FIELDS))
