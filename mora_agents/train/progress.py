"""A terminal progress bar for training: steps, time left and each agent's loss."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """The `on_step` callback of `train`/`resume` as a rich progress bar (use it as a context manager)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console)
        self.task = None

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, step: int, total: int, losses: dict[str, float]) -> None:
        text = " ".join(f"{name} {value:.4f}" for name, value in losses.items() if name != "step")
        if self.task is None:
            self.task = self.progress.add_task("train", total=total, completed=step, losses=text)
        self.progress.update(self.task, completed=step, losses=text)
