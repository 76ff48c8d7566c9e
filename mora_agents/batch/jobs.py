"""One request of a batch: what became of it (`BatchResult`), and its run driven to its end, in this process or in
a Ray worker (`mora_agents.batch.engine` runs a batch here, `mora_agents.batch.cluster` on Ray; both use these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mora_agents.batch.requests import BatchRequest
from mora_agents.runs.catalog import read_info, run_status
from mora_agents.runs.runner import resume_run


@dataclass
class BatchResult:
    """What became of one request of a batch."""

    request: BatchRequest
    label: str
    """The request's label, or `request N` (its place in the batch, from 1)."""
    status: str = "queued"
    """queued, running, finished, failed (rejected, stopped: as the runner says), interrupted, invalid, or damaged
    (a run directory without run.json whose transcript holds no request: left alone, see `error`)."""
    run_dir: Path | None = None
    result: Path | None = None
    """The run's result.mp4, once finished."""
    error: str | None = None
    seconds: float = 0.0
    """The run's working time (run.json), over all its attempts and resumes."""
    seed: int | None = None
    key: str | None = None
    skipped: bool = False
    """Finished by an earlier batch: not run again."""
    attempts: int = 0
    """How many workers took it in this batch (more than one: a worker died while running it)."""
    worker: str | None = None
    """The Ray actor that ran it last."""

    def record(self) -> dict[str, Any]:
        """The result as one line of summary.jsonl."""
        data = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()
                if key not in ("request", "label")}
        return {"request": self.label, "name": self.request.name, **data}


Notify = Callable[[BatchResult], None]


def refresh(result: BatchResult, error: str | None = None) -> None:
    """Read the result's status, error, time and video back from its run.json; `error`: the runner's message."""
    assert result.run_dir is not None
    info = read_info(result.run_dir)
    result.status = run_status(info)
    result.seconds = float(info.get("seconds") or 0.0)
    finished = result.status == "finished"
    result.result = result.run_dir / "result.mp4" if finished else None
    result.error = None if finished else info.get("error") or error


async def drive_run(run_dir: Path) -> str | None:
    """Run or continue one prepared run with the runner (as `mora resume` does); the error, if it did not finish.

    Used in this process and by the Ray workers. Every failure is recorded and returned, so the batch goes on.
    """
    try:
        await resume_run(run_dir)
    except Exception as e:  # the runner recorded the run's own failures in run.json and its transcript
        return str(e) or type(e).__name__
    return None
