"""A run's transcript as one self-contained HTML page (`mora transcript RUN --html`).

Every record becomes a row: time, speaker, what it is, and its content. Tool calls and results fold into
`<details>`; images show as thumbnails and videos as inline players, linked relative to the run directory
(the page is written into it), so the page and its media move together. Only files inside the run
directory are linked, whatever a (hand-edited) transcript says: absolute paths, `..` and symlinks that
lead out of it are shown as text.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mora_agents.errors import InputError
from mora_agents.runs.catalog import read_info
from mora_agents.runs.render import describe
from mora_agents.runs.transcript import Record, scan_transcript

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.3em; } table.meta td { padding: 0 1em 0 0; }
.record { border-left: 4px solid #ccc; margin: .6em 0; padding: .3em .8em; }
.record.message { border-color: #4a7; } .record.event { border-color: #79c; }
.record.error { border-color: #c33; background: #fee; } .record.note { border-color: #c93; background: #fff8e8; }
.head { color: #666; font-size: .9em; } .source { font-weight: bold; color: #135; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: .5em; margin: .3em 0; }
img.thumb { max-height: 160px; border: 1px solid #ccc; } video { max-height: 240px; }
"""


def _media(artifact: dict[str, Any], run_dir: Path) -> str:
    """A thumbnail or a video player for an artifact of the run (links relative to the run directory)."""
    path, root = str(artifact["path"]), run_dir.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        return f"<div class='missing'>not linked (outside the run directory): {escape(path)}</div>"
    if not target.is_file():
        return f"<div class='missing'>missing file: {escape(path)}</div>"
    src = escape(quote(target.relative_to(root).as_posix()), quote=True)
    if artifact["kind"] == "video":
        return f"<video controls muted preload='metadata' src='{src}'></video>"
    return f"<a href='{src}'><img class='thumb' src='{src}' alt='{src}'></a>"


def _artifacts(value: Any) -> list[dict[str, Any]]:
    """The artifact dicts inside a record's content (step results, review requests, the final result)."""
    if isinstance(value, dict):
        if {"path", "kind", "sha256"} <= value.keys():
            return [value]
        return [a for v in value.values() for a in _artifacts(v)]
    if isinstance(value, list):
        return [a for v in value for a in _artifacts(v)]
    return []


def _record(record: Record, run_dir: Path) -> str:
    content = record.message.get("content", record.message)
    details = escape(json.dumps(content, indent=1, ensure_ascii=False))
    folded = record.type.startswith("ToolCall") or record.type.endswith(("[StepRequest]", "[ReviewRequest]"))
    body = f"<details{'' if folded else ' open'}><summary>{escape(describe(record))}</summary><pre>{details}</pre></details>"
    media = "".join(_media(a, run_dir) for a in _artifacts(content if record.kind != "note" else {}))
    head = (f"<span class='head'>#{record.seq} {escape(record.time)} +{record.elapsed:.2f}s "
            f"(took {record.duration:.2f}s) {escape(record.type)}</span> <span class='source'>{escape(record.source)}</span>")
    return f"<div class='record {record.kind}' id='r{record.seq}'>{head}{body}{media}</div>"


def transcript_html(run_dir: Path) -> str:
    """The page of a run's transcript; what could not be read (damaged lines, a damaged run.json) shows on top."""
    records, problems = scan_transcript(run_dir / "transcript.jsonl")
    try:
        info = read_info(run_dir)
    except InputError as e:
        info, problems = {}, [*problems, str(e)]
    meta = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(info.get(k)))}</td></tr>"
                   for k in ("task", "status", "preset", "seed", "seconds", "started", "finished") if k in info)
    title = escape(info["request"]["text"] if info else run_dir.name)
    warning = "".join(f"<div class='record error'>{escape(p)}</div>" for p in problems)
    rows = "\n".join(_record(r, run_dir) for r in records)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body><h1>{title}</h1><table class='meta'>{meta}</table>\n{warning}{rows}\n"
            "</body></html>\n")
