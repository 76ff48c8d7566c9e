"""Progress reports name the working step and, for a repeated step, which run of it (segment k of K)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from mora_agents.runs.progress import StepProgress
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.settings import use_settings
from mora_agents.ui.terminal import RichProgress

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_progress_names_the_step_and_segment_in_the_terminal_bar(tmp_path: Path) -> None:
    bar = Progress(console=Console(file=io.StringIO()))
    draw, reports, bars = RichProgress(bar), [], []

    def report(progress) -> None:
        reports.append(progress)
        draw(progress)
        bars.append([(t.description, t.completed, t.total) for t in bar.tasks])

    tracker = StepProgress(report)
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path, seed=3, overrides={"image_to_video": {"frames": 8, "fps": 7, "steps": 2}})
    with use_settings(progress=tracker):  # clips of 8 frames at 7 fps: 2.3 seconds take two segments
        asyncio.run(run_request("a red fox", duration=2.3, options=options, on_record=lambda r, _: tracker.follow(r)))

    loops = list(dict.fromkeys((r.step, r.part, r.parts, r.label, r.total) for r in reports if r is not None))
    assert loops == [("image", None, None, "text_to_image: base", 2), ("image", None, None, "text_to_image: refiner", 2),
                     ("segments", None, None, "image_to_video", 2), ("segments#1", 2, 2, "image_to_video", 2)]
    assert [("image_to_video (segments 2 of 2)", 2, 2)] in bars and [("text_to_image: base (image)", 1, 2)] in bars
    assert reports[-1] is None and bars[-1] == []  # the bar goes once the loop ends
