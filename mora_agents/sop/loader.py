"""Finding, loading and validating SOP files. Errors name the file, the step and the field."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from mora_agents.errors import InputError
from mora_agents.sop.roles import ROLES
from mora_agents.sop.schema import SOP
from mora_agents.sop.template import references

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "sops"


class SOPError(InputError):
    """An SOP file that does not load or validate."""


def sop_dirs(extra: Path | None = None) -> list[Path]:
    """Where SOPs are looked up, later entries overriding earlier ones by name:
    the shipped SOPs, then the folders in MORA_SOPS_PATH, then `extra` (`--sops DIR`)."""
    dirs = [BUILTIN_DIR]
    dirs += [Path(p) for p in os.environ.get("MORA_SOPS_PATH", "").split(os.pathsep) if p]
    if extra is not None:
        if not extra.is_dir():
            raise InputError(f"--sops {extra}: not a directory")
        dirs.append(extra)
    return dirs


def _where(data: dict, loc: tuple) -> str:
    """A pydantic error location as 'step 'id', field 'x'' (or 'field 'x'' outside steps)."""
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") or []
        step = steps[loc[1]] if loc[1] < len(steps) and isinstance(steps[loc[1]], dict) else {}
        rest = ".".join(str(p) for p in loc[2:]) or "(step)"
        return f"step '{step.get('id', f'#{loc[1] + 1}')}', field '{rest}'"
    return f"field '{'.'.join(str(p) for p in loc)}'" if loc else "(file)"


def load_sop(path: Path) -> SOP:
    """Load and validate one SOP file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SOPError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SOPError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SOPError(f"{path}: an SOP file must be a YAML mapping")
    try:
        sop = SOP.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise SOPError(f"{path}: {_where(data, err['loc'])}: {err['msg']}{more}") from None
    check_references(sop, path)
    return sop


def check_references(sop: SOP, path: Path) -> None:
    """Agents and tools exist, tool arguments exist, templates refer to declared inputs and earlier steps."""
    from mora_agents.tools import REGISTRY

    seen: list[str] = []
    for step in sop.steps:
        def fail(field: str, message: str) -> SOPError:
            return SOPError(f"{path}: step '{step.id}', field '{field}': {message}")

        if step.agent not in ROLES:
            raise fail("agent", f"unknown agent '{step.agent}' (agents: {', '.join(ROLES)})")
        tools = [("tool", step.tool)] + ([("repeat.chain.tool", step.repeat.chain.tool)] if step.repeat and step.repeat.chain else [])
        for field, name in tools:
            if name is not None and name not in REGISTRY:
                raise fail(field, f"unknown tool '{name}' (registered: {', '.join(sorted(REGISTRY))})")
        if step.tool is None and not ROLES[step.agent].llm:
            raise fail("tool", f"agent '{step.agent}' has no LLM, so the step must name a tool")
        if step.tool is not None:
            params = REGISTRY[step.tool].parameters
            for arg in step.args:
                if arg not in params:
                    raise fail(f"args.{arg}", f"tool '{step.tool}' has no parameter '{arg}' (it has: {', '.join(params)})")
            if step.edit is not None and step.edit not in params:
                raise fail("edit", f"tool '{step.tool}' has no parameter '{step.edit}' (it has: {', '.join(params)})")
            if step.repeat and step.repeat.chain and step.repeat.chain.into not in params:
                raise fail("repeat.chain.into", f"tool '{step.tool}' has no parameter '{step.repeat.chain.into}'")
        fields = {f"args.{k}": v for k, v in step.args.items()}
        fields.update({"when": step.when, "repeat.until_seconds": step.repeat.until_seconds if step.repeat else None})
        for field, value in fields.items():
            _check_template(value, sop, seen, lambda msg, field=field: fail(field, msg))
        seen.append(step.id)
    for name, value in sop.outputs.items():
        _check_template(value, sop, seen, lambda msg, name=name: SOPError(f"{path}: field 'outputs.{name}': {msg}"))


def _check_template(value, sop: SOP, earlier: list[str], fail) -> None:
    try:
        refs = references(value)
    except ValueError as e:
        raise fail(str(e)) from None
    for root, name in refs:
        if root == "inputs" and name not in sop.inputs:
            raise fail(f"unknown input '{name}' (inputs: {', '.join(sop.inputs)})")
        if root == "steps" and name not in earlier:
            raise fail(f"'steps.{name}' is not an earlier step")


def find_sops(extra: Path | None = None) -> dict[str, tuple[SOP, Path]]:
    """All SOPs by name; a user's file replaces a shipped one of the same name."""
    found: dict[str, tuple[SOP, Path]] = {}
    for folder in sop_dirs(extra):
        for path in sorted(folder.glob("*.y*ml")):
            sop = load_sop(path)
            found[sop.name] = (sop, path)
    return found


def get_sop(name: str, extra: Path | None = None) -> SOP:
    sops = find_sops(extra)
    if name not in sops:
        raise InputError(f"task '{name}': unknown (tasks: {', '.join(sorted(sops))})")
    return sops[name][0]
