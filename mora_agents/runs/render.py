"""One-line, human-readable descriptions of transcript records (used by `mora run` and `mora transcript`)."""

from __future__ import annotations

import json
from pathlib import Path
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


def short(value: Any, root: Path | None = None, limit: int = 80) -> str:
    """A tool argument in a line: a path inside `root` relative to it, a long text cut at `limit` characters."""
    if isinstance(value, list):
        return "[" + ", ".join(short(v, root, limit) for v in value) + "]"
    if isinstance(value, str):
        if root is not None and Path(value).is_absolute() and Path(value).is_relative_to(root):
            value = str(Path(value).relative_to(root))
        return repr(value if len(value) <= limit else value[:limit - 1] + "…")
    return repr(value)


def describe_call(call: dict[str, Any], root: Path | None = None) -> str:
    """A tool call (autogen's FunctionCall as recorded): `name(arg=value, ...)`, paths relative to the run."""
    try:
        arguments = json.loads(call["arguments"])
    except json.JSONDecodeError:  # a model's malformed call: as it was sent
        return f"{call['name']}({call['arguments']})"
    if not isinstance(arguments, dict):
        return f"{call['name']}({call['arguments']})"
    return f"{call['name']}({', '.join(f'{k}={short(v, root)}' for k, v in arguments.items())})"


def describe_tool_result(result: dict[str, Any]) -> str:
    """A tool's result as recorded: the artifact it made (no sha256), or its text or error."""
    if result["is_error"]:
        return f"tool error: {result['content']}"
    try:
        output = json.loads(result["content"])
    except json.JSONDecodeError:
        output = result["content"]
    return f"tool result: {describe_artifact(output) if isinstance(output, dict) and 'kind' in output else repr(output)}"


def describe(record: Record, root: Path | None = None) -> str:
    """One line for a record (tool arguments inside `root`, the run directory, relative to it); a record whose
    content is not what its type promises (hand-edited) says so."""
    try:
        return _describe(record, root)
    except (KeyError, TypeError, ValueError, AttributeError):
        return f"{record.type}: (content not as expected for this type)"


def _describe(record: Record, root: Path | None) -> str:
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
        return "; ".join(f"tool call {describe_call(c, root)}" for c in content)
    if t == "ToolCallExecutionEvent":
        return "; ".join(describe_tool_result(c) for c in content)
    return f"{t}: {content if isinstance(content, str) else json.dumps(content)}"
