"""A run's saved state (`state.json`) and how resume reconciles it with the transcript.

The team runs in turns that end at checkpoints. A turn's records are appended to the transcript as they
happen until its first tool execution or checkpoint message; from there on they are held back. When the
turn ends at a checkpoint the runner writes `state.json` in one atomic write, carrying the team's state and
the held records, and only then appends those records. So the state and the transcript agree by design:

- work done (a tool's result, a step's result, a plan, a review request) is in the transcript only once the
  state that covers it is on disk, and resuming from that state never does that work again;
- a crash between the two writes leaves records in `state.json` that the transcript lacks: resume appends them;
- the records after the state's `seq` are what the interrupted turn did before any tool finished: its task (the
  request or a review decision) and step requests. Resume gives the recorded task to the team again (without
  recording it twice); a review request that has no recorded decision is asked again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen_agentchat.messages import BaseChatMessage
from pydantic import BaseModel, Field

from mora_agents.agents.messages import (
    RequestMessage,
    ReviewDecisionMessage,
    ReviewRequestMessage,
    RunFinishedMessage,
)
from mora_agents.errors import InputError, read_problem
from mora_agents.media import atomic_path
from mora_agents.runs.transcript import Record
from mora_agents.sop.messages import ReviewRequest, RunFinished

STATE_FILE = "state.json"


class SavedState(BaseModel):
    seq: int
    """The last transcript record this state covers: its checkpoint."""
    records: list[Record] = Field(min_length=1)
    """The held records of the turn that reached the checkpoint (the checkpoint last)."""
    team: dict[str, Any]
    """autogen's `team.save_state()`."""

    @property
    def checkpoint(self) -> Record:
        return self.records[-1]


def read_state(run_dir: Path) -> SavedState | None:
    """The run's saved state; None before its first checkpoint. InputError (one line) if it is damaged."""
    path = run_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        state = SavedState.model_validate(json.loads(path.read_bytes()))
        state.checkpoint.to_message()
        return state
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: damaged ({read_problem(e)}); the run cannot continue from it "
                         "(delete it to run the request again from the start)") from None


def write_state(run_dir: Path, state: SavedState) -> None:
    with atomic_path(run_dir / STATE_FILE) as tmp:
        tmp.write_text(state.model_dump_json(), encoding="utf-8")


@dataclass
class Resumption:
    """Where an interrupted run continues, from its saved state and its transcript."""

    recovered: list[Record] = field(default_factory=list)
    """Records the state carries that the transcript lacks: appended before anything else."""
    task: BaseChatMessage | None = None
    """The recorded message that began the interrupted turn: given to the team again, not recorded again."""
    review: ReviewRequest | None = None
    """The checkpoint's review request, still unanswered: asked again."""
    finished: RunFinished | None = None
    """The run had ended (finished, or stopped by a person); only run.json missed it."""


def reconcile(state: SavedState | None, records: list[Record]) -> Resumption:
    """Read what the interrupted turn left in the transcript (`records`) after the state's checkpoint."""
    last = max((r.seq for r in records), default=-1)
    resumption = Resumption(recovered=[r for r in state.records if r.seq > last] if state else [])
    after = []
    for record in records:
        if record.kind == "message" and record.seq > (state.seq if state else -1):
            try:
                after.append(record.to_message())
            except ValueError:
                continue  # a hand-edited record that is no message: nothing to continue from
    for message in after:
        if isinstance(message, RunFinishedMessage) and message.content.status in ("finished", "stopped"):
            resumption.finished = message.content
    if state is None:
        resumption.task = next((m for m in after if isinstance(m, RequestMessage)), None)
    elif isinstance(checkpoint := state.checkpoint.to_message(), ReviewRequestMessage):
        resumption.task = next((m for m in after if isinstance(m, ReviewDecisionMessage)), None)
        if resumption.task is None:
            resumption.review = checkpoint.content
    return resumption
