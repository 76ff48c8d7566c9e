"""The terminal face of a batch: a live progress bar while it runs, a table of its results at the end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mora_agents.batch.engine import FAILED
from mora_agents.batch.jobs import BatchResult
from mora_agents.console import DescriptionColumn

COLORS = {"finished": "green", "running": "cyan", "interrupted": "yellow", "invalid": "red",
          **{status: "red" for status in FAILED}}


class BatchDisplay:
    """finished / failed / running / queued of this batch's runs, with elapsed time and ETA.

    Give `update` as `run_batch(on_update=...)`. Runs finished by an earlier batch count apart (`earlier`).
    """

    def __init__(self, console: Console) -> None:
        # the ETA is the mean pace over the whole batch (runs take minutes: a short window would often be empty)
        self.progress = Progress(DescriptionColumn(), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=console, speed_estimate_period=7 * 24 * 3600, transient=True)
        self.task = self.progress.add_task("checking requests", total=None)
        self.results: dict[int, BatchResult] = {}

    def __enter__(self) -> BatchDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, result: BatchResult) -> None:
        self.results[id(result)] = result
        todo = [r for r in self.results.values() if not r.skipped and r.status != "invalid"]
        count = {status: sum(r.status == status for r in todo) for status in ("finished", "running", "queued")}
        failed = sum(r.status in FAILED for r in todo)
        parts = [f"[green]{count['finished']} finished[/]", f"[red]{failed} failed[/]",
                 f"[cyan]{count['running']} running[/]", f"{count['queued']} queued"]
        earlier = sum(r.skipped for r in self.results.values())
        if earlier:
            parts.append(f"[dim]{earlier} finished earlier[/]")
        running = [r.request.name or r.label for r in todo if r.status == "running"]
        if 0 < len(running) <= 3:
            parts.append(f"[dim]now: {escape(', '.join(running))}[/]")
        self.progress.update(self.task, description=" · ".join(parts), total=len(todo),
                             completed=count["finished"] + failed)


def results_table(results: Sequence[BatchResult], out: Path) -> Table:
    """request, run directory (in `out`), status, seconds, result (the video, or the error)."""
    table = Table("request", "run directory", "status", "seconds", "result", caption=escape(f"in {out}/"))
    for r in results:
        status = "finished earlier" if r.skipped else r.status
        outcome = r.result.name if r.result else (r.error or "").strip().partition("\n")[0]  # all of it: summary
        table.add_row(escape(r.label + (f" ({r.request.name})" if r.request.name else "")),
                      escape(r.run_dir.name) if r.run_dir else "", f"[{COLORS.get(r.status, 'white')}]{status}[/]",
                      f"{r.seconds:.1f}", escape(outcome))
    return table
