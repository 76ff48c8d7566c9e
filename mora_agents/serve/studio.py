"""The training data stage on the page: data folders (the tie-break of `mora data review`, one set at a time) and
trainings (the data-free loop's iterations, losses, held-out metrics and adapters).

The server shows the folders given with `mora serve --data DIR` (repeatable) and those it finds directly under
`--out`. A folder is one of:

- a data folder (`mora data make`: `sets.json`): its candidate sets, the judges' votes and the decisions;
- a loop folder (`mora train --iterations`: `loop.json`): its iterations, each a data folder (`iter-N/`) with the
  adapters it trained (`iter-N/adapters/`), and `metrics.json` (held-out metrics and validation loss);
- a training output (`mora train`: `card.json`): adapters and their losses.

    GET  /api/data                        the data folders, with their sets' counts
    GET  /api/data/{id}                   one folder's sets: prompt, candidates (videos), votes, decision
    POST /api/data/{id}/sets/{set}        a person's decision on an undecided set (as `mora data review` records it)
    GET  /api/data/{id}/files/{path}      a file of the folder (the candidates' videos)
    GET  /api/training                    the loops and trainings: iterations, metrics, losses, adapters
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from mora_agents.data.select import SetRecord, decide, read_log
from mora_agents.data.sets import SETS, CandidateSet, read_sets
from mora_agents.errors import InputError
from mora_agents.jsonl import read_json_object
from mora_agents.judges import CRITERION_TEXTS
from mora_agents.serve.files import inside, shown

LOOP, CARD, METRICS = "loop.json", "card.json", "metrics.json"


@dataclass
class Folder:
    id: str
    path: Path
    kind: str
    """`data`, `loop` or `training`."""
    loop: str | None = None
    """For an iteration's data folder: its loop's id."""


def folder_kind(path: Path) -> str | None:
    """`loop`, `data` or `training` (see the module), or None for any other path."""
    for name, kind in ((LOOP, "loop"), (SETS, "data"), (CARD, "training")):
        if (path / name).is_file():
            return kind
    return None


def find_folders(given: list[Path], out: Path) -> list[Folder]:
    """The folders given, then those directly under `out`; a loop's iteration folders follow it as data folders.
    Ids are the folders' names (a loop's iterations: `LOOP-iter-N`), made unique with `-2`, `-3`, ..."""
    found: list[Folder] = []
    taken: Counter[str] = Counter()

    def add(path: Path, kind: str, name: str, loop: str | None = None) -> str:
        taken[name] += 1
        folder = Folder(name if taken[name] == 1 else f"{name}-{taken[name]}", path, kind, loop)
        found.append(folder)
        return folder.id

    seen: set[Path] = set()
    under = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) if out.is_dir() else []
    for path in [*given, *under]:
        path = path.resolve()
        if path in seen or (kind := folder_kind(path)) is None:
            continue
        seen.add(path)
        folder_id = add(path, kind, path.name)
        if kind == "loop":
            iterations = sorted((p for p in path.glob("iter-*") if (p / SETS).is_file()),
                                key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0)
            for data in iterations:
                add(data, "data", f"{path.name}-{data.name}", folder_id)
    return found


class Decision(BaseModel):
    choice: int | None = Field(description="The candidate accepted; null discards the set.")
    name: str = Field("web", min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$",
                      description="Who decides: the selection log records `person:NAME`.")


def shown_vote(vote: dict[str, Any]) -> dict[str, Any]:
    """A vote (a `Vote` as JSON) as the page shows it: the judge's labels mapped to candidates (`labels`: label ->
    candidate) and, for an MLLM judge, the criterion it ranked by (`aspect`)."""
    labels = {str(k): n for k, n in enumerate(vote["shown"], 1)} if vote.get("shown") else None
    aspect = CRITERION_TEXTS.get(vote.get("criterion"), "") if vote.get("kind") == "mllm" else ""
    return {**vote, "aspect": aspect, "labels": labels}


def _set(folder: Folder, cset: CandidateSet, record: SetRecord | None) -> dict[str, Any]:
    url = f"/api/data/{quote(folder.id)}/files/"
    shown_numbers = record.candidates if record else [c.number for c in cset.finished()]
    return {
        "id": cset.id, "prompt": cset.prompt, "task": cset.task,
        "enhanced_prompt": next(iter(set(cset.enhanced_prompts().values())), None)
        if len(set(cset.enhanced_prompts().values())) == 1 else None,
        "status": record.status if record else "unjudged",
        "decision": record.decision.model_dump(mode="json") if record and record.decision else None,
        "sample": record.sample if record else None,
        "candidates": [{"number": c.number, "seed": c.seed, "status": c.status, "error": c.error,
                        "video": url + quote(c.video) if c.video else None,
                        "enhanced_prompt": c.intermediates.enhanced_prompt if c.intermediates else None}
                       for c in cset.candidates if c.number in shown_numbers],
        "excluded": record.excluded if record else {},
        "votes": [shown_vote(v.model_dump(mode="json")) for v in record.votes] if record else [],
    }


def _counts(path: Path) -> dict[str, int]:
    sets, log = read_sets(path), read_log(path)
    counts = Counter(log.sets[s.id].status if s.id in log.sets else "unjudged" for s in sets)
    return {status: counts[status] for status in ("undecided", "accepted", "discarded", "unjudged")}


def _card(path: Path) -> dict[str, Any]:
    """The parts of an adapter card the page shows."""
    card = read_json_object(path / CARD, ("agents",))
    return {"path": str(path), "iteration": card.get("iteration"), "steps": card.get("steps"),
            "created": card.get("created"), "preset": card.get("preset"), "agents": sorted(card["agents"]),
            "losses": card.get("losses") or [], "dataset": (card.get("dataset") or {}).get("samples")}


def _training(folder: Folder) -> dict[str, Any]:
    if folder.kind == "training":
        return {"id": folder.id, "path": str(folder.path), "kind": "training", "iterations": [], "metrics": [],
                "validation": [], "adapters": [_card(folder.path)]}
    report = read_json_object(folder.path / METRICS, ("iterations",)) if (folder.path / METRICS).is_file() else {}
    cards = sorted((p.parent for p in folder.path.glob(f"iter-*/adapters/{CARD}") if p.parent.parent.name[5:].isdigit()),
                   key=lambda p: int(p.parent.name[5:]))
    return {"id": folder.id, "path": str(folder.path), "kind": "loop", "iterations": report.get("iterations", []),
            "metrics": report.get("metrics", []), "validation": report.get("validation", []),
            "adapters": [{**_card(p), "iteration": int(p.parent.name[5:])} for p in cards]}


def known_adapters(folders: list[Folder]) -> set[Path]:
    """Every adapter folder (with its card) of the trainings shown: those a request may name."""
    found = set()
    for folder in folders:
        if folder.kind == "training":
            found.add(folder.path)
        elif folder.kind == "loop":
            found.update(p.parent for p in folder.path.glob(f"iter-*/adapters/{CARD}"))
    return found


def studio_router(given: list[Path], out: Path) -> APIRouter:
    router = APIRouter()
    decisions = threading.Lock()  # one decision at a time writes selection.json

    def folder(folder_id: str, kind: str = "data") -> Folder:
        found = next((f for f in find_folders(given, out) if f.id == folder_id and f.kind == kind), None)
        if found is None:
            raise HTTPException(404, f"{kind} folder {shown(folder_id)}: not found")
        return found

    @router.get("/api/data", summary="The data folders shown (`--data`, or found under --out)")
    def data_folders() -> list[dict[str, Any]]:
        result = []
        for f in find_folders(given, out):
            if f.kind == "data":
                try:
                    result.append({"id": f.id, "path": str(f.path), "loop": f.loop, "sets": _counts(f.path),
                                   "error": None})
                except InputError as e:  # a damaged sets.json or selection.json: listed with the reason
                    result.append({"id": f.id, "path": str(f.path), "loop": f.loop, "sets": {}, "error": str(e)})
        return result

    @router.get("/api/data/{folder_id}", summary="One data folder's candidate sets")
    def data_folder(folder_id: str) -> dict[str, Any]:
        found = folder(folder_id)
        log = read_log(found.path)
        return {"id": found.id, "path": str(found.path), "judges": log.judges,
                "sets": [_set(found, s, log.sets.get(s.id)) for s in read_sets(found.path)]}

    @router.post("/api/data/{folder_id}/sets/{set_id}", summary="Decide an undecided set (as `mora data review`)")
    def decide_set(folder_id: str, set_id: str, answer: Decision) -> dict[str, Any]:
        """Accept a candidate (it is written into the folder's dataset) or discard the set; 409 when the set does
        not wait for a person (decided already: the first decision wins)."""
        found = folder(folder_id)
        sets = {s.id: s for s in read_sets(found.path)}
        if set_id not in sets:
            raise HTTPException(404, f"set {shown(set_id)}: not in {found.id}")
        with decisions:
            record = read_log(found.path).sets.get(set_id)
            if record is None or record.status != "undecided":
                raise HTTPException(409, f"set {set_id}: {record.status if record else 'not judged yet'}, "
                                         "not waiting for a person")
            record = decide(found.path, set_id, answer.choice, answer.name)
        return _set(found, sets[set_id], record)

    @router.get("/api/data/{folder_id}/files/{path:path}", summary="A file of a data folder")
    def data_file(folder_id: str, path: str) -> FileResponse:
        found = folder(folder_id)
        return FileResponse(inside(found.path, path, "the data folder"))

    @router.get("/api/training", summary="The loops' iterations and the trainings' adapters")
    def trainings() -> list[dict[str, Any]]:
        result = []
        for f in find_folders(given, out):
            if f.kind in ("loop", "training"):
                try:
                    result.append({**_training(f), "error": None})
                except InputError as e:
                    result.append({"id": f.id, "path": str(f.path), "kind": f.kind, "iterations": [],
                                   "metrics": [], "validation": [], "adapters": [], "error": str(e)})
        return result

    return router
