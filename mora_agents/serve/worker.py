"""The server's one GPU worker: a FIFO queue of run directories, run one at a time in the server's process.

Runs are the CLI's: `prepare_run` made the directory, `resume_run` runs it (a queued one from the start, an
interrupted one from its last checkpoint). The pipelines are cached per process, so models stay loaded between
runs. Beyond the run directory the worker keeps only live state: queue positions, the review a run waits for,
the working step's progress, and a signal per run that event streams wait on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from mora_agents.errors import MoraError
from mora_agents.runs.catalog import list_runs, read_info
from mora_agents.runs.progress import ProgressReport, StepProgress
from mora_agents.runs.review import Reviewer, auto_accept, parse_decision
from mora_agents.runs.runner import mark_stopped, resume_run
from mora_agents.runs.transcript import Record, read_transcript
from mora_agents.settings import use_settings
from mora_agents.sop.messages import ReviewDecision, ReviewRequest

log = logging.getLogger("mora.serve")


class Conflict(Exception):
    """A request that the run's current state rules out (HTTP 409)."""


@dataclass
class PendingReview:
    seq: int
    """The transcript record of the review request: what a decision names to answer it."""
    request: ReviewRequest
    decision: asyncio.Future[ReviewDecision]


@dataclass
class LiveRun:
    """A queued or running run: what the server knows of it beyond its directory."""

    run_dir: Path
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    review: PendingReview | None = None
    progress: ProgressReport | None = None
    revise: str | None = None
    """A text step (`storyboard`) whose output the run's first review revises (`resume_run`'s `revise`)."""


class Worker:
    """The queue and the one worker that drives its runs; `run_forever` is the worker's task."""

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.current: str | None = None
        self.live: dict[str, LiveRun] = {}
        self._signals: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self.listeners: list[Callable[[str], None]] = []
        """Called with the run id at each change of a run (as `signal`'s events are set), in the event loop."""

    def signal(self, run_id: str) -> asyncio.Event:
        """An event set at the run's next change (a record, progress, status); take it before reading the state."""
        return self._signals.setdefault(run_id, asyncio.Event())

    def notify(self, run_id: str) -> None:
        if (event := self._signals.pop(run_id, None)) is not None:
            event.set()
        for listener in self.listeners:
            listener(run_id)

    def position(self, run_id: str) -> int | None:
        """1 for the next run to start, 2 after it, ...; None when the run is not queued."""
        return self.queue.index(run_id) + 1 if run_id in self.queue else None

    def submit(self, run_dir: Path, revise: str | None = None) -> None:
        """Queue a run directory (queued, or resumable) at the end; `revise`: a text step whose output is reviewed
        first (see `resume_run`)."""
        run_id = run_dir.name
        if run_id in self.live:
            raise Conflict(f"run {run_id} is already {'running' if run_id == self.current else 'queued'}")
        self.live[run_id] = LiveRun(run_dir, revise=revise)
        self.queue.append(run_id)
        self._wake.set()
        self.notify(run_id)

    def recover(self, out: Path) -> list[str]:
        """Queue again the runs under `out` that a stopped server left queued or interrupted, oldest first."""
        found = [s.path for s in list_runs(out, links=False) if s.status in ("queued", "interrupted")]
        for run_dir in found:
            self.submit(run_dir)
        return [p.name for p in found]

    def cancel(self, run_id: str) -> str:
        """Take a queued run off the queue (it becomes stopped, resumable) or ask a running one to stop at its next
        checkpoint; a run waiting for review stops waiting (and stays waiting for review, resumable)."""
        if run_id in self.queue:
            self.queue.remove(run_id)
            mark_stopped(self.live.pop(run_id).run_dir)
            for other in [run_id, *self.queue]:
                self.notify(other)
            return "dequeued"
        if run_id != self.current:
            raise Conflict(f"run {run_id} is neither queued nor running")
        live = self.live[run_id]
        live.stop.set()
        if live.review is not None and not live.review.decision.done():
            live.review.decision.set_exception(MoraError("stopped on request"))
        return "stopping"

    def decide(self, run_id: str, review: int, answer: str) -> ReviewDecision:
        """Answer the review a running run waits for; the first decision wins. Raises Conflict when that review is
        not waiting (decided already, or the run moved on), ValueError when the answer is not one of its options."""
        live = self.live.get(run_id)
        pending = live.review if live is not None else None
        if pending is None or pending.seq != review or pending.decision.done():
            raise Conflict(f"review #{review} of run {run_id} is not waiting for a decision (decided already, or the "
                           "run is not running: resume it first)")
        decision = parse_decision(answer, pending.request, "web")
        pending.decision.set_result(decision)
        return decision

    @asynccontextmanager
    async def running(self, out: Path) -> AsyncIterator[None]:
        """Queue again what a stopped server left under `out`, and drive the queue while the block runs."""
        self.recover(out)
        task = asyncio.create_task(self.run_forever())
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def run_forever(self) -> None:
        while True:
            while not self.queue:
                self._wake.clear()
                await self._wake.wait()
            self.current = run_id = self.queue.pop(0)
            for other in self.queue:
                self.notify(other)
            try:
                await self._drive(run_id, self.live[run_id])
            finally:
                self.current = None
                del self.live[run_id]
                self.notify(run_id)

    async def _drive(self, run_id: str, live: LiveRun) -> None:
        loop = asyncio.get_running_loop()

        def progress(report: ProgressReport | None) -> None:  # in the tool's thread
            loop.call_soon_threadsafe(self._progress, run_id, report)

        tracker = StepProgress(progress)

        def on_record(record: Record, run_dir: Path) -> None:
            tracker.follow(record)
            self.notify(run_id)

        log.info("run %s: started", run_id)
        with use_settings(progress=tracker):
            try:
                reviewer = self._reviewer(run_id, live, every=bool(read_info(live.run_dir).get("review")))
                outcome = await resume_run(live.run_dir, on_record=on_record, reviewer=reviewer, stop=live.stop,
                                           revise=live.revise)
                log.info("run %s: %s, %s", run_id, outcome.status, outcome.result)
            except MoraError as e:  # recorded in the run directory; the worker goes on
                log.info("run %s: %s", run_id, e)
            except Exception:
                log.exception("run %s: unexpected error", run_id)

    def _progress(self, run_id: str, report: ProgressReport | None) -> None:
        if (live := self.live.get(run_id)) is not None:
            live.progress = report
            self.notify(run_id)

    def _reviewer(self, run_id: str, live: LiveRun, every: bool) -> Reviewer:
        """Waits for the first decision posted for the review (`decide`): at `every` review point, or only at the
        revision a resume asks for first (`live.revise`); the others are accepted."""
        asked = live.revise is None

        async def review(request: ReviewRequest) -> ReviewDecision:
            nonlocal asked
            if asked and not every:
                return auto_accept(request)
            asked = True
            records = read_transcript(live.run_dir / "transcript.jsonl")
            seq = next((r.seq for r in reversed(records) if r.type.endswith("[ReviewRequest]")),
                       records[-1].seq if records else 0)  # a revision's request is not a record of its own
            live.review = PendingReview(seq, request, asyncio.get_running_loop().create_future())
            self.notify(run_id)
            try:
                return await live.review.decision
            finally:
                live.review = None
                self.notify(run_id)

        return review
