"""The transcript: one JSON object per line for every agent message, tool call and tool result.

    {"seq": 3, "time": "...Z", "elapsed": 1.52, "duration": 0.48, "kind": "message",
     "source": "planner", "type": "StructuredMessage[Plan]", "message": {...autogen dump...}}

`message` is the autogen message's own `dump()`, so `Record.to_message()` rebuilds the message object.
`duration` is the time since the previous record (for a tool result: how long the tool ran).
Each record is appended with one write and fsynced; lines end at `\n` only (`mora_agents.jsonl`). Reading skips
damaged lines (invalid UTF-8 or JSON, a last line cut short by a crash) and says which; a writer that opens the file
drops such a half-written last line.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from pydantic import BaseModel, ValidationError

from mora_agents.agents.messages import load_message
from mora_agents.errors import read_problem
from mora_agents.jsonl import escape_separators


class Record(BaseModel):
    seq: int
    time: str
    elapsed: float
    duration: float
    kind: Literal["message", "event", "error", "note"]
    """message/event: an autogen message; error: a failure; note: the runner's (e.g. Interrupted, Resumed)."""
    source: str
    type: str
    message: dict[str, Any]

    def to_message(self) -> BaseAgentEvent | BaseChatMessage:
        if self.kind in ("error", "note"):
            raise ValueError(f"record {self.seq} is an {self.kind} record, not an autogen message")
        return load_message(self.message)


def parse_line(line: bytes) -> Record:
    """One transcript line as a Record; ValueError says what is wrong with it."""
    try:
        return Record.model_validate(json.loads(line))
    except ValueError as e:
        raise ValueError(("not a transcript record: " if isinstance(e, ValidationError) else "") + read_problem(e)) from None


def scan_transcript(path: Path) -> tuple[list[Record], list[str]]:
    """The records of a transcript file, and a description of each line that had to be skipped."""
    lines = path.read_bytes().split(b"\n")
    records, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line))
        except ValueError as e:
            last = number == len(lines)  # no newline after it: its write was cut short
            problems.append(f"line {number}: {'half-written (cut short by a crash)' if last else e}")
    return records, problems


def read_transcript(path: Path) -> list[Record]:
    return scan_transcript(path)[0]


class TranscriptWriter:
    """Appends records; `records` and `problems` are what the file held when it was opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[Record] = []
        self.problems: list[str] = []
        if path.exists():
            self._end_last_line()
            records, problems = scan_transcript(path)
            self.records, self.problems = records, [*self.problems, *problems]
        self.seq = max((r.seq for r in self.records), default=-1) + 1
        self.start = self.last = time.monotonic()

    def _end_last_line(self) -> None:
        """A last line without its newline was being written when the process died: complete it if it is a
        whole record, else drop it (nothing recorded is lost: a record counts once its line is written)."""
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            parse_line(data[cut:])
        except ValueError:
            os.truncate(self.path, cut)
            self.problems.append(f"dropped a half-written last line ({len(data) - cut} bytes) left by a crash")
            return
        with open(self.path, "ab") as f:
            f.write(b"\n")

    def make(self, kind: str, source: str, type_: str, message: dict[str, Any]) -> Record:
        """The next record (its seq taken), not yet written."""
        now = time.monotonic()
        record = Record(seq=self.seq, time=datetime.now(timezone.utc).isoformat(), elapsed=round(now - self.start, 4),
                        duration=round(now - self.last, 4), kind=kind, source=source, type=type_, message=message)
        self.seq, self.last = self.seq + 1, now
        return record

    def make_message(self, message: BaseAgentEvent | BaseChatMessage) -> Record:
        kind = "message" if isinstance(message, BaseChatMessage) else "event"
        return self.make(kind, message.source, message.type, dict(message.dump()))

    def append(self, record: Record) -> Record:
        """Write one record as one line (a single write, fsynced)."""
        with open(self.path, "ab") as f:
            f.write(escape_separators(record.model_dump_json()).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.seq = max(self.seq, record.seq + 1)
        return record
