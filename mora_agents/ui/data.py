"""The terminal faces of the training data stage: the review of undecided candidate sets (`mora data review`), the
selection's table, and the progress of the data-free loop (`mora train --iterations`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mora_agents.batch.display import BatchDisplay
from mora_agents.batch.jobs import Notify
from mora_agents.data import CRITERIA, CandidateSet, PendingSet, TextChooser, Vote
from mora_agents.data.loop import LoopUI
from mora_agents.data.select import Choice, SelectionLog
from mora_agents.data.sets import sample_frames
from mora_agents.train.progress import TrainProgress
from mora_agents.train.trainer import StepCallback
from mora_agents.ui.terminal import half_blocks

FRAME_CELLS = 16
"""Terminal cells per frame of a candidate's strip."""


def describe_vote(vote: Vote) -> str:
    if vote.ranking is None:
        return f"abstained ({vote.error})"
    return " > ".join(map(str, vote.ranking)) + (f": {vote.reason}" if vote.reason else "")


class TerminalSetReview:
    """A person deciding undecided sets in the terminal: the prompt, the judges' votes and each candidate's frames
    as a strip of thumbnails (on colour terminals), then a candidate number, d (discard), s (skip) or q (quit)."""

    def __init__(self, console: Console, name: str = "human", input_func: Callable[[], str] = input) -> None:
        self.console, self.name, self.input_func = console, name, input_func
        self.thumbnails = console.is_terminal and console.color_system in ("truecolor", "256")
        self.chooser = TextChooser(self._ask, name)

    def _ask(self, prompt: str) -> str:
        self.console.print(f"[bold magenta]{escape(prompt)}[/]", end="")
        try:
            return self.input_func()
        except EOFError:
            self.console.print()
            raise

    def show(self, pending: PendingSet) -> None:
        self.console.rule(f"set {escape(pending.id)}")
        self.console.print(f"[bold]prompt:[/] {escape(pending.prompt)}")
        if pending.enhanced_prompt != pending.prompt:
            self.console.print(f"[bold]enhanced:[/] {escape(pending.enhanced_prompt)}")
        for vote in pending.votes:
            aspect = f" [dim]({escape(CRITERIA[vote.criterion].partition(':')[0])})[/]" if vote.kind == "mllm" else ""
            self.console.print(f"  [cyan]{escape(vote.judge)}[/]{aspect} {escape(describe_vote(vote))}")
        for candidate in pending.candidates:
            video = pending.videos[candidate.number]
            self.console.print(f"[bold]candidate {candidate.number}[/] [dim]seed {candidate.seed}, {escape(str(video))}[/]")
            if self.thumbnails:
                frames, _ = sample_frames(video, pending.frames)
                self.console.print(half_blocks(np.concatenate(frames, axis=1), FRAME_CELLS * len(frames)), end="")

    def __call__(self, pending: PendingSet) -> Choice:
        self.show(pending)
        return self.chooser(pending)


def selection_table(log: SelectionLog, sets: list[CandidateSet]) -> Table:
    """A row per set: its prompt, each judge's top-1 (or abstention), the decision and who made it."""
    table = Table("set", "prompt", "votes (top-1)", "decision", "by", "sample")
    colors = {"accepted": "green", "discarded": "red", "undecided": "magenta"}
    for cset in sets:
        record = log.sets.get(cset.id)
        if record is None:
            table.add_row(escape(cset.id), escape(cset.prompt[:50]), "[dim]not judged yet[/]", "", "", "")
            continue
        votes = ", ".join(f"{v.judge}: {v.top if v.top is not None else 'abstained'}" for v in record.votes)
        decision = record.decision
        what = f"{record.status}" + (f" {decision.candidate}" if decision and decision.candidate else "")
        table.add_row(escape(cset.id), escape(cset.prompt[:50]), escape(votes), f"[{colors[record.status]}]{what}[/]",
                      escape(decision.by) if decision else "", escape(record.sample or ""))
    return table


class LoopDisplay(LoopUI):
    """The loop's stages as lines, its batches and trainings as progress bars."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def stage(self, text: str) -> None:
        self.console.print(f"[bold]{escape(text)}[/]")

    @contextmanager
    def batch(self) -> Iterator[Notify | None]:
        with BatchDisplay(self.console) as display:
            yield display.update

    @contextmanager
    def training(self) -> Iterator[StepCallback | None]:
        self.console.print("[dim]loading the models and encoding the dataset...[/]")
        with TrainProgress(self.console) as progress:
            yield progress
