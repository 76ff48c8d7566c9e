"""One-line, human-readable descriptions of transcript records (used by `mora run` and `mora transcript`)."""

from __future__ import annotations

import json
from typing import Any

from mora_agents.llm.storyboard import Storyboard
from mora_agents.runs.transcript import Record


def describe_artifact(a: dict[str, Any]) -> str:
    size = f"{a['width']}x{a['height']}"
    if a["kind"] == "video":
        return f"{a['path']} ({size}, {a['frames']} frames @ {a['fps']:g} fps)"
    return f"{a['path']} ({size})"


def describe_output(output: dict[str, Any] | str) -> str:
    """A step's output: an artifact (a dict), a storyboard (its shots, characters and settings) or text."""
    if isinstance(output, dict):
        return describe_artifact(output)
    if output.startswith('{"title"'):
        try:
            board = Storyboard.model_validate_json(output)
        except ValueError:
            return repr(output)
        return (f"storyboard {board.title!r}: {len(board.shots)} shot(s); characters "
                f"{', '.join(c.name for c in board.characters) or 'none'}; settings "
                f"{', '.join(s.name for s in board.settings)}")
    return repr(output)


def record_media(record: Record) -> list[dict[str, Any]]:
    """The media a record shows: a step's output, a review's output, the run's result (artifact dicts)."""
    content = record.message.get("content")
    if not isinstance(content, dict):
        return []
    found = [content.get(k) for k in ("output", "result")]
    return [a for a in found if isinstance(a, dict) and "kind" in a]


def describe(record: Record) -> str:
    """One line for a record; a record whose content is not what its type promises (hand-edited) says so."""
    try:
        return _describe(record)
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{record.type}: (content not as expected for this type)"


def _describe(record: Record) -> str:
    m, t = record.message, record.type
    content = m.get("content")
    if record.kind == "error":
        return f"error: {m['error']}"
    if t.endswith("[UserRequest]"):
        files = content["images"] + content["videos"]
        return f"request: {content['text']!r}" + (f" with {', '.join(files)}" if files else "")
    if t.endswith("[Plan]"):
        return f"plan: task {content['task']} with {json.dumps(content['inputs'])} ({content['reason']})"
    if t.endswith("[StepRequest]"):
        step = content["step"] + (f" #{content['iteration']}" if content["iteration"] else "")
        what = f"call {content['tool']}" if content["tool"] else "answer"
        return f"step {step} -> {content['agent']}: {what}"
    if t.endswith("[StepResult]"):
        notes = "".join(f"; note: {text}" for text in content.get("notes") or [])
        details = content.get("details") or {}
        picked = f"; kept candidate {details['chosen']} (by {details['by']})" if "chosen" in details else ""
        return (f"result of {content['step']}: {describe_output(content['output'])} in {content['seconds']:.1f}s"
                f"{picked}{notes}")
    if t.endswith("[StepFailed]"):
        return f"step {content['step']} failed: {content['error']}"
    if t.endswith("[ReviewRequest]"):
        return f"review {content['step']}: {describe_output(content['output'])}; options {'/'.join(content['options'])}"
    if t.endswith("[ReviewDecision]"):
        text = f" {content['text']!r}" if content.get("text") else ""
        return f"decision on {content['step']}: {content['decision']}{text} (by {content['by']})"
    if record.kind == "note":
        return f"{t.lower()}: {m['text']}"
    if t.endswith("[RunFinished]"):
        detail = describe_artifact(content["result"]) if content.get("result") else content.get("error")
        return f"run {content['status']}: {detail}"
    if t == "ToolCallRequestEvent":
        return "; ".join(f"tool call {c['name']}({c['arguments']})" for c in content)
    if t == "ToolCallExecutionEvent":
        return "; ".join(f"tool {'error' if c['is_error'] else 'result'}: {c['content']}" for c in content)
    return f"{t}: {content if isinstance(content, str) else json.dumps(content)}"
