"""SOP files for the editor: list the shipped and the user's, validate text, save into the user's folder only."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from pydantic import BaseModel

from mora_agents.errors import InputError
from mora_agents.media import atomic_path
from mora_agents.sop.loader import BUILTIN_DIR, SOPError, find_sops, load_sop, read_sop_text, sop_dirs
from mora_agents.sop.schema import SOP


class SopEntry(BaseModel):
    name: str
    """The SOP's `name` (the file's stem when it does not load)."""
    origin: str
    """`shipped` (read-only) or `user`."""
    file: str
    description: str = ""
    steps: list[str] = []
    active: bool
    """Whether runs use this file (a user file replaces a shipped one of the same name)."""
    best_of: bool = False
    """Whether it has `best_of` steps: a run's `candidates` makes each of their outputs the best of N."""
    error: str | None = None
    """Why the file does not load, if it does not."""


def list_sops(user_dir: Path) -> list[SopEntry]:
    """Every SOP file in the folders runs look in, shipped ones first; a file that does not load is listed with its
    error."""
    entries = []
    active = {path for _, path in _found(user_dir).values()}
    for folder in sop_dirs(user_dir):
        for path in sorted(folder.glob("*.y*ml")):
            origin = "shipped" if folder == BUILTIN_DIR else "user"
            try:
                sop = load_sop(path)
            except SOPError as e:
                entries.append(SopEntry(name=path.stem, origin=origin, file=str(path), active=False, error=str(e)))
                continue
            entries.append(SopEntry(name=sop.name, origin=origin, file=str(path), description=sop.description,
                                    steps=[s.id for s in sop.steps], active=path in active,
                                    best_of=any(s.best_of is not None for s in sop.steps)))
    return entries


def _found(user_dir: Path) -> dict[str, tuple[SOP, Path]]:
    try:
        return find_sops(user_dir)
    except SOPError:  # a broken user file: runs fail until it is fixed; the list shows it
        return {}


def read_sop(name: str, user_dir: Path, origin: str | None = None) -> tuple[SopEntry, str]:
    """The entry and the text of the SOP `name` runs use (or the one of `origin`)."""
    for entry in list_sops(user_dir):
        if entry.name == name and (entry.active if origin is None else entry.origin == origin):
            return entry, read_sop_text(Path(entry.file))  # bounded: a pipe or a huge file never blocks the server
    raise KeyError(name)


def validate_text(text: str) -> SOP:
    """Validate SOP text with the loader; InputError names the step and the field (`<name>.yaml: step ...`)."""
    with tempfile.TemporaryDirectory(prefix="mora-sop-") as folder:
        path = Path(folder) / "sop.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_sop(path)
        except SOPError as e:
            raise SOPError(str(e).removeprefix(f"{path}: ")) from None


class StepNode(BaseModel):
    """A step as the editor's diagram draws it."""

    id: str
    agent: str
    tool: str | None
    review: bool
    repeat: bool
    """Repeated (segments until a length)."""
    when: str | None
    uses: list[str]
    """The earlier steps whose outputs its arguments (or its repeat) name."""


def step_nodes(sop: SOP) -> list[StepNode]:
    """The SOP's steps in order, each with the steps it takes its inputs from."""
    ids = [step.id for step in sop.steps]
    nodes = []
    for step in sop.steps:
        named = json.dumps([step.args, step.repeat.model_dump() if step.repeat else None, step.when])
        uses = [i for i in dict.fromkeys(re.findall(r"steps\.(\w+)", named)) if i in ids and i != step.id]
        nodes.append(StepNode(id=step.id, agent=step.agent, tool=step.tool, review=step.review,
                              repeat=step.repeat is not None, when=step.when, uses=uses))
    return nodes


def save_sop(name: str, text: str, user_dir: Path) -> Path:
    """Validate and write `<user_dir>/<name>.yaml` atomically; `name` must be the SOP's own (an identifier)."""
    sop = validate_text(text)
    if sop.name != name:
        raise InputError(f"SOP name '{name}': the file's `name` field says '{sop.name}'")
    path = user_dir / f"{name}.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
