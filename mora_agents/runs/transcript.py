"""The transcript: one JSON object per line for every agent message, tool call and tool result.

    {"seq": 3, "time": "...Z", "elapsed": 1.52, "duration": 0.48, "kind": "message",
     "source": "planner", "type": "StructuredMessage[Plan]", "message": {...autogen dump...}}

`message` is the autogen message's own `dump()`, so `Record.to_message()` rebuilds the message object.
`duration` is the time since the previous record (for a tool result: how long the tool ran).
A line cut short by a crash is skipped when reading.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from pydantic import BaseModel

from mora_agents.agents.messages import load_message


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


class TranscriptWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        records = read_transcript(path) if path.exists() else []
        self.seq = records[-1].seq + 1 if records else 0
        if path.exists() and not path.read_bytes().endswith(b"\n") and path.stat().st_size:
            with open(path, "a", encoding="utf-8") as f:  # end a line cut short by a crash before appending
                f.write("\n")
        self.start = self.last = time.monotonic()

    def _write(self, kind: str, source: str, type_: str, message: dict[str, Any]) -> Record:
        now = time.monotonic()
        record = Record(seq=self.seq, time=datetime.now(timezone.utc).isoformat(), elapsed=round(now - self.start, 4),
                        duration=round(now - self.last, 4), kind=kind, source=source, type=type_, message=message)
        self.seq, self.last = self.seq + 1, now
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(record.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record

    def write(self, message: BaseAgentEvent | BaseChatMessage) -> Record:
        kind = "message" if isinstance(message, BaseChatMessage) else "event"
        return self._write(kind, message.source, message.type, dict(message.dump()))

    def error(self, source: str, error: str) -> Record:
        return self._write("error", source, "Error", {"error": error})

    def note(self, source: str, type_: str, text: str) -> Record:
        return self._write("note", source, type_, {"text": text})


def read_transcript(path: Path) -> list[Record]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(Record.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValueError):
            continue  # a line cut short by a crash
    return records
