"""The video-connection agent: the connect_videos SOP end to end on the tiny preset."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from conftest import make_video

from mora_agents.media import probe, read_video
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript


def test_connect_videos_sop_end_to_end(tmp_path: Path) -> None:
    a = make_video(tmp_path / "a.mp4", frames=10, size=(64, 48), fps=7, seed=1)
    b = make_video(tmp_path / "b.mp4", frames=28, size=(32, 32), fps=14, seed=2)  # other size and frame rate
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=3)
    outcome = asyncio.run(run_request("connect these two clips", videos=[a, b], options=options))
    result = probe(outcome.result)
    b_frames = 14  # 28 frames at 14 fps resampled to A's 7 fps
    assert (result.width, result.height, result.fps) == (64, 48, 7)
    assert result.frames == 10 + 16 + b_frames
    frames, _ = read_video(outcome.result)
    original_a, _ = read_video(a)
    assert np.abs(frames[:10].astype(int) - original_a.astype(int)).mean() < 6  # lossy codec
    records = read_transcript(outcome.run_dir / "transcript.jsonl")
    calls = [r for r in records if r.type == "ToolCallRequestEvent"]
    assert [(r.source, r.message["content"][0]["name"]) for r in calls] == [("video_connection_agent", "connect_videos")]
    plan = next(r for r in records if r.type.endswith("[Plan]")).message["content"]
    assert plan["task"] == "connect_videos" and plan["inputs"]["video_a"] == "inputs/1-a.mp4"
