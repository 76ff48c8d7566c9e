"""The runs of one server as programs see them: create, look up, follow, cancel and delete; the OpenAI Videos API
(`openai_videos`) and the MCP server (`mora_agents.mcp_server`) share it, and with it the page's worker and queue.

A run is a video: its id is the run id. Beyond what the worker knows, the hub keeps each run's progress as one
number (0-100, never going back) and tells its listeners when a run leaves the worker (finished, failed, stopped).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from mora_agents.errors import InputError, validation_summary
from mora_agents.runs.catalog import list_runs, read_info, run_status
from mora_agents.runs.lock import run_lock
from mora_agents.runs.progress import ProgressReport
from mora_agents.runs.runner import RunOptions, prepare_run
from mora_agents.runs.transcript import read_transcript
from mora_agents.serve.worker import Conflict, Worker
from mora_agents.sop.calls import check_calls, sop_calls
from mora_agents.sop.loader import SOPError, find_sops
from mora_agents.sop.schema import SOP
from mora_agents.tools.defaults import backend_defaults
from mora_agents.tools.registry import get_tool

RUN_ID = re.compile(r"\w[\w.-]*")
SIZE = re.compile(r"([1-9]\d{0,4})x([1-9]\d{0,4})")
Phase = Literal["queued", "in_progress", "completed", "failed"]


class BadRequest(InputError):
    """Bad input that names the request field at fault (`param`)."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.code = param, code


class NotFound(LookupError):
    """No such run (or character)."""


@dataclass
class Snapshot:
    """A run as the protocols report it."""

    id: str
    run_dir: Path
    info: dict[str, Any]
    status: str
    """mora's status: queued, running, waiting for review, finished, failed, rejected, stopped, interrupted."""
    phase: Phase
    """The OpenAI status: queued, in_progress, completed or failed."""
    progress: int
    """0-100; 100 once completed."""
    position: int | None
    report: ProgressReport | None
    """The working model loop, while one runs."""

    @property
    def result(self) -> Path | None:
        path = self.run_dir / "result.mp4"
        return path if self.phase == "completed" and path.is_file() else None

    @property
    def error(self) -> str | None:
        """Why a run did not complete, in one line (None unless failed)."""
        if self.phase != "failed":
            return None
        return self.info.get("error") or FAILURES.get(self.status, f"the run is {self.status}")


FAILURES = {
    "stopped": "stopped on request; resume it on the page (or POST /api/runs/{id}/resume)",
    "interrupted": "interrupted (its server or process stopped); `mora resume` or a server restart continues it",
    "waiting for review": "waits for a review decision; resume it on the page to answer",
}


def timestamp(iso: str | None) -> int | None:
    """Unix seconds of a run.json time (local ISO format)."""
    return int(datetime.fromisoformat(iso).timestamp()) if iso else None


class Hub:
    """The server's runs over its worker; `options.out` must be absolute (the server resolves it)."""

    def __init__(self, options: RunOptions, worker: Worker) -> None:
        self.options, self.worker, self.out = options, worker, options.out
        self.on_end: list[Callable[[Snapshot], None]] = []
        """Called when a run leaves the worker completed or failed (not when the server's stop interrupts it, as it
        continues at the next start); maybe from another thread than the event loop's."""
        self._progress: dict[str, int] = {}
        self._steps: dict[str, list[str]] = {}
        self._seen: set[str] = set()
        self._results: dict[str, dict[str, Any]] = {}
        self._sizes: dict[str | None, str | None] = {}
        worker.listeners.append(self._changed)

    # -- looking up ------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        if not RUN_ID.fullmatch(run_id) or not (self.out / run_id / "run.json").is_file():
            raise NotFound(f"no video with id '{run_id}'")
        return self.out / run_id

    def snapshot(self, run_id: str) -> Snapshot:
        """The run's state now; NotFound if there is no such run, InputError if its run.json is damaged."""
        run_dir = self.run_dir(run_id)
        info = read_info(run_dir)
        live, position = self.worker.live.get(run_id), self.worker.position(run_id)
        status = "queued" if position else run_status(info)
        if status == "queued":
            phase: Phase = "queued"
        elif live is not None or status == "running":  # running here, or in another process that is alive
            phase = "in_progress"
        else:
            phase = "completed" if status == "finished" else "failed"
        progress = 100 if phase == "completed" else 0 if phase == "queued" else min(99, self._progress.get(run_id, 0))
        return Snapshot(run_id, run_dir, info, status, phase, progress, position,
                        live.progress if live is not None else None)

    def snapshots(self) -> list[Snapshot]:
        """Every readable run under `out`, oldest first (damaged ones are left out)."""
        found = []
        for summary in list_runs(self.out):
            if summary.problem is None:
                try:
                    found.append(self.snapshot(summary.path.name))
                except (NotFound, InputError):  # deleted or damaged meanwhile
                    continue
        return found

    def result_artifact(self, run_id: str) -> dict[str, Any] | None:
        """The result of a finished run as its RunFinished record gives it (size, frames, fps); read once."""
        if run_id not in self._results:
            for record in reversed(read_transcript(self.run_dir(run_id) / "transcript.jsonl")):
                if record.type.endswith("[RunFinished]"):
                    if result := record.message["content"].get("result"):
                        self._results[run_id] = result
                    break
        return self._results.get(run_id)

    def sops(self) -> dict[str, SOP]:
        try:
            return {name: sop for name, (sop, _) in find_sops(self.options.sops_dir).items()}
        except SOPError as e:
            raise InputError(f"the SOP folder: {e}") from None

    # -- making runs -----------------------------------------------------------------------------

    @contextmanager
    def uploads(self) -> Iterator[Path]:
        """A temporary folder for a request's files under `out` (so that copying them into a run is a rename
        away), removed afterwards."""
        self.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".upload-", dir=self.out) as folder:
            yield Path(folder)

    async def create(self, text: str, *, images: Sequence[Path] = (), videos: Sequence[Path] = (),
                     task: str | None = None, duration: float | None = None, seed: int | None = None,
                     overrides: Mapping[str, Mapping[str, Any]] | None = None, previous: Path | None = None,
                     extra: Mapping[str, Any] | None = None, system: str | None = None) -> Snapshot:
        """Check a request as `mora run` does (InputError) and queue it; its run directory exists on return.
        `system`: the paper's system of this run (`--system`); None: the server's."""
        options = replace(self.options, seed=seed, overrides={k: dict(v) for k, v in (overrides or {}).items()},
                          system=system or self.options.system)
        # decoding and copying inputs takes a while for a long video: off the event loop, which serves the others
        run_dir = await asyncio.to_thread(prepare_run, text, images=images, videos=videos, task=task,
                                          duration=duration, previous=previous, options=options, extra=extra)
        self.worker.submit(run_dir)
        return self.snapshot(run_dir.name)

    def size_overrides(self, size: str, task: str) -> dict[str, dict[str, int]]:
        """`WIDTHxHEIGHT` as the width and height of every call of the task that has them (the first frame's and
        the clips'), checked against their bounds and backends' rules; BadRequest (param `size`) if not."""
        match = SIZE.fullmatch(size.strip())
        if match is None:
            raise BadRequest(f"size '{size}': not WIDTHxHEIGHT (e.g. 1024x576)", "size")
        width, height = int(match[1]), int(match[2])
        sop = self.sops()[task]
        tools = [c.tool for c in sop_calls(sop) if {"width", "height"} <= set(get_tool(c.tool).parameters)]
        if not tools:
            raise BadRequest(f"size '{size}': task '{task}' keeps the size of its input", "size")
        overrides = {tool: {"width": width, "height": height} for tool in tools}
        for tool in dict.fromkeys(tools):
            spec = get_tool(tool)
            for name, value in overrides[tool].items():
                try:
                    spec.validate_param(name, value)
                except ValidationError as e:
                    raise BadRequest(f"size '{size}': {tool} {name}: {validation_summary(e, locations=False)}",
                                     "size") from None
        try:
            check_calls(sop, overrides)
        except InputError as e:
            raise BadRequest(f"size '{size}': {e}", "size") from None
        return overrides

    def default_size(self, task: str | None) -> str | None:
        """The size the task's last sized call makes under this preset (its backend's default), if it has one."""
        if task not in self._sizes:
            self._sizes[task] = self._default_size(task)
        return self._sizes[task]

    def _default_size(self, task: str | None) -> str | None:
        sop = self.sops().get(task or "")
        calls = [c for c in sop_calls(sop) if {"width", "height"} <= set(get_tool(c.tool).parameters)] if sop else []
        if not calls:
            return None
        backend = calls[-1].backend({})
        defaults = backend_defaults(self.options.preset, calls[-1].tool, backend.name if backend else "")
        return f"{defaults['width']}x{defaults['height']}" if "width" in defaults else None

    def duration(self, seconds: str | float | None, task: str) -> float | None:
        """A requested length in seconds, within the task's `duration` input; BadRequest (param `seconds`)."""
        if seconds is None or seconds == "":
            return None
        spec = self.sops()[task].inputs.get("duration")
        if spec is None:
            raise BadRequest(f"seconds: task '{task}' takes its length from its input video", "seconds")
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            raise BadRequest(f"seconds '{seconds}': not a number", "seconds") from None
        low, high = spec.min if spec.min is not None else 0, spec.max
        if not (value > 0 and value >= low and (high is None or value <= high)):
            bounds = f"{low:g} to {high:g}" if high is not None else f"at least {low:g}"
            raise BadRequest(f"seconds '{seconds}': task '{task}' makes {bounds} seconds", "seconds")
        return value

    # -- following, cancelling, deleting ---------------------------------------------------------

    async def follow(self, run_id: str, update: Callable[[Snapshot], Awaitable[None]]) -> Snapshot:
        """Call `update` with the run's state at each change until it is neither queued nor running; the last one."""
        while True:
            changed = self.worker.signal(run_id)
            state = self.snapshot(run_id)
            await update(state)
            if state.phase in ("completed", "failed") and run_id not in self.worker.live:
                return state
            try:  # a run driven by another process changes only on disk
                await asyncio.wait_for(changed.wait(), timeout=1.0)
            except TimeoutError:
                pass

    def cancel(self, run_id: str) -> str:
        """Take a queued run off the queue or stop a running one at its next checkpoint (Conflict otherwise)."""
        self.run_dir(run_id)
        return self.worker.cancel(run_id)

    def delete(self, run_id: str) -> None:
        """Remove a run directory that no one runs (Conflict while it is queued or running, here or elsewhere).

        It is first moved out of its name, in one step: a late writer (a webhook delivery's record, say) then finds
        no run rather than adding a file while the folder is being emptied."""
        run_dir = self.run_dir(run_id)
        if run_id in self.worker.live:
            raise Conflict(f"video {run_id} is {self.snapshot(run_id).phase}; cancel it first")
        with run_lock(run_dir):  # RunLocked (a Conflict for clients) while another process runs it
            trash = Path(tempfile.mkdtemp(prefix=".deleting-", dir=self.out))
            run_dir.rename(trash / run_id)
        shutil.rmtree(trash)
        self._progress.pop(run_id, None)
        self._results.pop(run_id, None)

    # -- the worker's changes --------------------------------------------------------------------

    def _changed(self, run_id: str) -> None:
        live = self.worker.live.get(run_id)
        if live is not None:
            self._seen.add(run_id)
            if live.progress is not None and (percent := self._percent(live.run_dir, live.progress)) is not None:
                self._progress[run_id] = max(self._progress.get(run_id, 0), percent)
            return
        if run_id in self._seen:
            self._seen.discard(run_id)
            try:
                state = self.snapshot(run_id)
            except (NotFound, InputError):
                return
            if state.phase in ("completed", "failed"):
                for listener in self.on_end:
                    listener(state)

    def _percent(self, run_dir: Path, report: ProgressReport) -> int | None:
        """How far the run is: its finished steps and the working one's part (segment k of K, loop step i of N)."""
        steps = self._steps.get(run_dir.name)
        if steps is None:
            try:
                task = read_info(run_dir).get("task")
                steps = [s.id for s in self.sops()[task].steps] if task else None
            except (InputError, KeyError):
                steps = None
            if not steps:
                return None
            self._steps[run_dir.name] = steps
        step = report.step.partition("#")[0].partition(".")[0]
        if step not in steps:
            return None
        within = report.done / report.total if report.total else 0.0
        if report.part and report.parts:
            within = (report.part - 1 + within) / report.parts
        return int(100 * (steps.index(step) + within) / len(steps))
