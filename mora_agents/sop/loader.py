"""Finding, loading and validating SOP files. Errors name the file, the step and the field."""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

import yaml
from jinja2 import nodes
from pydantic import ValidationError

from mora_agents.errors import InputError, validation_summary
from mora_agents.jsonl import read_bounded
from mora_agents.settings import SOPS_VARIABLE, user_sops_dir
from mora_agents.sop.roles import ROLES
from mora_agents.sop.schema import SOP
from mora_agents.sop.template import (
    ITEM_ROOTS,
    expression,
    has_template,
    is_expression,
    reference,
    references,
)

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "sops"


class SOPError(InputError):
    """An SOP file that does not load or validate. `problems`: every problem found, a line each; the message is the
    first (and how many more, where `mora sops validate` lists them all)."""

    def __init__(self, problems: str | list[str], path: Path | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else problems
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more: `mora sops validate {path}` lists them)" if more
                                             else ""))


OLD_SOPS_VARIABLE = "MORA_SOPS_PATH"
"""Folders of SOPs before MORA_SOPS (a path list): still read, with a note."""


def sop_dirs(extra: Path | None = None) -> list[Path]:
    """Where SOPs are looked up, later entries overriding earlier ones by name: the shipped SOPs, then the person's
    folder: `extra` (`--sops DIR`, which must exist), else `settings.user_sops_dir()` when it exists. The folders of
    the old MORA_SOPS_PATH come before it."""
    dirs = [BUILTIN_DIR]
    if old := [Path(p) for p in os.environ.get(OLD_SOPS_VARIABLE, "").split(os.pathsep) if p]:
        _note_old_variable()
        dirs += old
    if extra is not None:
        if not extra.is_dir():
            raise InputError(f"--sops {extra}: not a directory")
        dirs.append(extra)
    elif user_sops_dir().is_dir():
        dirs.append(user_sops_dir())
    return dirs


@cache
def _note_old_variable() -> None:
    logging.getLogger("mora_agents").warning(
        f"{OLD_SOPS_VARIABLE} is read for now; name your SOP folder with {SOPS_VARIABLE}=DIR instead (one folder, "
        "the one `mora serve`'s SOP editor saves into; default ~/.mora/sops)")


def _where(data: dict, loc: tuple) -> str:
    """A pydantic error location as 'step 'id', field 'x'' (or 'field 'x'' outside steps)."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") or []
        step = steps[loc[1]] if loc[1] < len(steps) and isinstance(steps[loc[1]], dict) else {}
        rest = ".".join(str(p) for p in loc[2:]) or "(step)"
        return f"step '{step.get('id', f'#{loc[1] + 1}')}', field '{rest}'"
    return f"field '{'.'.join(str(p) for p in loc)}'" if loc else "(file)"


MAX_SOP_BYTES = 256 * 1024
MAX_DEPTH = 20
"""Nesting of YAML collections in one SOP file."""
MAX_VALUES = 10_000
"""YAML values in one SOP file, each alias counted as a full copy of what it names (so an alias bomb fails fast)."""


def read_sop_text(path: Path) -> str:
    """An SOP file's text: a regular file (never a pipe, which would block) of at most MAX_SOP_BYTES, in UTF-8."""
    data = read_bounded(path, MAX_SOP_BYTES, SOPError)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise SOPError(f"{path}: UTF-16 or binary, not UTF-8 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SOPError(f"{path}: not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
                       "save it as UTF-8") from None


def check_yaml_size(text: str) -> None:
    """Bound a YAML text before building it: MAX_DEPTH levels and MAX_VALUES values, aliases expanded
    (a streaming pass over the parser's events: no recursion, nothing built). Raises ValueError."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (values, depth) of the node it names
    stack: list[list] = []  # open collections: [values, depth of the deepest child, anchor]
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        node: tuple[int, int] | None = None
        if isinstance(event, yaml.CollectionStartEvent):
            total += 1
            stack.append([1, 0, event.anchor])
            if len(stack) > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            values, depth, anchor = stack.pop()
            node = (values, depth + 1)
            if anchor:
                sizes[anchor] = node
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in (frame[2] for frame in stack):
                raise ValueError(f"alias *{event.anchor} refers to a value that contains it")
            node = sizes.get(event.anchor, (1, 0))
            total += node[0]
        elif isinstance(event, yaml.ScalarEvent):
            node = (1, 0)
            total += 1
            if event.anchor:
                sizes[event.anchor] = node
        if total > MAX_VALUES:
            raise ValueError(f"more than {MAX_VALUES} values (aliases counted in full)")
        if node is not None and stack:
            stack[-1][0] += node[0]
            stack[-1][1] = max(stack[-1][1], node[1])
            if len(stack) + node[1] > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")


def load_sop(path: Path) -> SOP:
    """Load and validate one SOP file (its size, encoding and YAML shape bounded; see read_sop_text)."""
    text = read_sop_text(path)
    try:
        check_yaml_size(text)
        data = yaml.safe_load(text)
    except ValueError as e:
        raise SOPError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise SOPError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SOPError(f"{path}: an SOP file must be a YAML mapping")
    try:
        sop = SOP.model_validate(data)
    except ValidationError as e:
        raise SOPError([f"{path}: {_where(data, err['loc'])}: {err['msg']}" for err in e.errors()], path) from None
    check_references(sop, path)
    return sop


def check_references(sop: SOP, path: Path) -> None:
    """What can be checked without running: agents and tools exist; arguments exist and literal ones fit the tool's
    types and bounds (media paths inside the run directory); templates only read declared inputs and earlier
    steps; `repeat` fits a video step; `outputs.result` is a video. Raises SOPError with every problem found (one per
    check; a step whose agent or tools are unknown is not checked further)."""
    from mora_agents.sop.calls import step_calls
    from mora_agents.tools import REGISTRY

    problems: list[str] = []

    def check(run: Callable[[], None]) -> bool:
        try:
            run()
        except SOPError as e:
            problems.extend(e.problems)
            return False
        return True

    produces: dict[str, str] = {}
    for step in sop.steps:
        def fail(field: str, message: str, step=step) -> SOPError:
            return SOPError(f"{path}: step '{step.id}', field '{field}': {message}")

        fields = {f"args.{k}": v for k, v in step.args.items()}
        if check(lambda: _check_names(step, REGISTRY, fail)):  # else its calls cannot be told
            if step.repeat is not None:
                check(lambda: _check_repeat(step, REGISTRY, fail))
            if step.drift and (step.repeat is not None or step.tool is None or REGISTRY[step.tool].produces != "video"):
                problems.append(str(fail("drift", "measures one clip made in one call: a step that makes a video and "
                                         "does not repeat (a chained step is measured per segment anyway)")))
            for call in step_calls(step):
                check(lambda call=call: _check_call(call, fail))
            if step.edit is not None and step.edit not in REGISTRY[step.tool].parameters:
                problems.append(str(fail("edit", f"tool '{step.tool}' has no parameter '{step.edit}' "
                                         f"(it has: {', '.join(REGISTRY[step.tool].parameters)})")))
            fields.update({_arg_field(call, k): v for call in step_calls(step) if call.field != "args"
                           for k, v in call.args.items()})
        if step.for_each is not None and not is_expression(step.for_each):
            problems.append(str(fail("for_each", f"'{step.for_each}' is not one {{{{ expression }}}} giving a list")))
        if step.best_of is not None:
            fields.update({"best_of.prompt": step.best_of.prompt, "best_of.references": step.best_of.references})
        fields.update({"when": step.when, "repeat.until_seconds": step.repeat.until_seconds if step.repeat else None})
        for field, value in fields.items():
            check(lambda field=field, value=value: _check_template(
                value, sop, produces, lambda msg: fail(field, msg), each=step.for_each is not None and field != "when"))
        check(lambda: _check_template(step.for_each, sop, produces, lambda msg: fail("for_each", msg)))
        produces[step.id] = step.format or (REGISTRY[step.tool].produces if step.tool in REGISTRY else "text")
    for name, value in sop.outputs.items():
        check(lambda name=name, value=value: _check_template(
            value, sop, produces, lambda msg: SOPError(f"{path}: field 'outputs.{name}': {msg}")))
    if not problems and _result_kinds(sop.outputs["result"], sop, produces) != {"video"}:
        problems.append(f"{path}: field 'outputs.result': must be one {{{{ expression }}}} naming a video: "
                        "steps.ID.output of a step that makes a video (or a video input)")
    if problems:
        raise SOPError(problems, path)


def _check_names(step, registry, fail) -> None:
    """The step's agent and tools exist, and an agent without an LLM names a tool."""
    if step.agent not in ROLES:
        raise fail("agent", f"unknown agent '{step.agent}' (agents: {', '.join(ROLES)})")
    tools = [("tool", step.tool)] + ([("repeat.chain.tool", step.repeat.chain.tool)] if step.repeat and step.repeat.chain else [])
    for field, name in tools:
        if name is not None and name not in registry:
            raise fail(field, f"unknown tool '{name}' (registered: {', '.join(sorted(registry))})")
    if step.tool is None and not ROLES[step.agent].llm:
        raise fail("tool", f"agent '{step.agent}' has no LLM, so the step must name a tool")


def _arg_field(call, arg: str) -> str:
    """Where an argument of a call is written in its step: `args.steps`, `repeat.chain.refine.prompt`, ..."""
    if call.field == "args":
        return f"args.{arg}"
    if call.field == "repeat.chain":  # the chain's own options
        return call.field
    return f"{call.field}.{arg}" if arg in ("prompt", "strength") else f"{call.field}.args.{arg}"


def _check_call(call, fail) -> None:
    """A call's arguments name its tool's parameters (never its output, nor, in a chain, the media the chain
    gives); literal values fit them, one by one and (when each does) together (the backend's rules); a backend is
    literal. SOPError names every argument that does not."""
    from mora_agents.tools import REGISTRY

    spec = REGISTRY[call.tool]
    problems: list[str] = []
    for arg, value in call.args.items():
        try:
            _check_arg(spec, call, arg, value, lambda msg, field=_arg_field(call, arg): fail(field, msg))
        except SOPError as e:
            problems += e.problems
    if not problems:
        try:
            spec.check_combination(call.known({}))
        except ValueError as e:
            problems.append(str(fail(call.field, str(e))))
    if problems:
        raise SOPError(problems)


def _check_arg(spec, call, arg: str, value, fail) -> None:
    if arg not in spec.parameters:
        raise fail(f"tool '{call.tool}' has no parameter '{arg}' (it has: {', '.join(spec.parameters)})")
    if arg == "output":
        raise fail("set by the run (artifacts/<step id>); leave it out")
    if call.field != "args" and arg in spec.media:
        raise fail("set by the chain (the frame it works on); leave it out")
    if arg == "backend" and has_template(value):
        raise fail("a backend is a name, not a template: it decides which models a run checks first")
    _check_literal(spec, arg, value, fail)


def _check_literal(spec, arg: str, value, fail) -> None:
    """A literal argument (no template inside) fits the parameter: type and bounds, or a path inside the run."""
    if has_template(value):
        return
    if arg in spec.media:
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or Path(item).is_absolute() or ".." in Path(item).parts:
                raise fail(f"{item!r}: media arguments are templates or paths inside the run directory")
        return
    try:
        spec.validate_param(arg, value)
    except ValidationError as e:
        raise fail(validation_summary(e, locations=False)) from None


def _check_repeat(step, registry, fail) -> None:
    made = registry[step.tool].produces if step.tool else "text"
    if made != "video":
        raise fail("repeat", f"repeats are measured in seconds, so the step must make a video (it makes {made})")
    until = step.repeat.until_seconds
    if isinstance(until, str) and not is_expression(until):
        raise fail("repeat.until_seconds", f"'{until}' is neither a number of seconds nor one {{{{ expression }}}}")
    if chain := step.repeat.chain:
        media = registry[chain.tool].media
        if not media:
            raise fail("repeat.chain.tool", f"tool '{chain.tool}' takes no media to chain from")
        if chain.into not in registry[step.tool].media:
            raise fail("repeat.chain.into", f"tool '{step.tool}' has no media parameter '{chain.into}'")
        keyframes = chain.keyframes
        if keyframes is not None and (keyframes.into not in registry[step.tool].media or keyframes.into == chain.into):
            raise fail("repeat.chain.keyframes.into", f"tool '{step.tool}' has no other media parameter "
                       f"'{keyframes.into}' for the end frames")


def _check_template(value, sop: SOP, earlier: dict[str, str], fail, each: bool = False) -> None:
    """A field's templates read declared inputs and earlier steps (and, in a for_each step's fields, `item` and
    `index`)."""
    try:
        refs = references(value)
    except ValueError as e:
        raise fail(str(e)) from None
    for root, *path in refs:
        if root in ITEM_ROOTS or "[index]" in path:
            if not each:
                raise fail(f"'{'index' if root != 'item' else root}' is only defined in the fields of a for_each "
                           "step")
            if root in ITEM_ROOTS:
                continue
        name, *rest = path
        if root == "inputs" and name not in sop.inputs:
            raise fail(f"unknown input '{name}' (inputs: {', '.join(sop.inputs)})")
        if root == "inputs" and rest and sop.inputs[name].type not in ("image", "video"):
            raise fail(f"'inputs.{name}.{rest[0]}': input '{name}' is {sop.inputs[name].type}; only images and "
                       "videos have fields")
        if root == "steps" and name not in earlier:
            raise fail(f"'steps.{name}' is not an earlier step")


def _result_kinds(template: str, sop: SOP, produces: dict[str, str]) -> set[str]:
    """The kinds of value `outputs.result` can be: those of the values it reads (conditions aside)."""
    if not is_expression(template):
        return {"text"}
    kinds, branches = set(), [expression(template)]
    while branches:
        node = branches.pop()
        if isinstance(node, nodes.CondExpr):
            branches += [node.expr1, node.expr2 if node.expr2 is not None else nodes.Const(None)]
        elif isinstance(node, (nodes.Name, nodes.Getattr, nodes.Getitem)):
            root, name, *rest = reference(node)
            one_output = rest == ["output"] or (rest[:1] == ["outputs"] and len(rest) == 2)
            kinds.add(sop.inputs[name].type if root == "inputs" and not rest else
                      produces[name] if root == "steps" and one_output else "a field or a list")
        else:
            kinds.add(type(node).__name__)
    return kinds


_LOADED: dict[Path, tuple[tuple[int, int, int], SOP]] = {}
"""SOPs `find_sops` read, by path, with the file's state (inode, size, modification time) they were read in."""


def _load_once(path: Path) -> SOP:
    """`load_sop`, again only when the file changed (a server asks for every SOP at each request and run start)."""
    stat = path.stat()
    state = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if (known := _LOADED.get(path)) is None or known[0] != state:
        _LOADED[path] = known = (state, load_sop(path))
    return known[1]


def find_sops(extra: Path | None = None) -> dict[str, tuple[SOP, Path]]:
    """All SOPs by name; a user's file replaces a shipped one of the same name."""
    found: dict[str, tuple[SOP, Path]] = {}
    for folder in sop_dirs(extra):
        for path in sorted(folder.glob("*.y*ml")):
            sop = _load_once(path)
            found[sop.name] = (sop, path)
    return found


def get_sop(name: str, extra: Path | None = None) -> SOP:
    sops = find_sops(extra)
    if name not in sops:
        raise InputError(f"task '{name}': unknown (tasks: {', '.join(sorted(sops))})")
    return sops[name][0]
