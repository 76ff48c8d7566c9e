"""Resumable runs: a run killed with SIGKILL during its second segment is resumed by `mora resume`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.media import read_video
from mora_agents.runs.catalog import read_info, run_status
from mora_agents.runs.runner import RunOptions, resume_run, run_request
from mora_agents.runs.transcript import read_transcript

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FOX = "a red fox running through snow"
SEED = 11


def segment_results(run_dir: Path) -> list[str]:
    """The step keys of every segment the image-to-video tool made, in transcript order."""
    records = read_transcript(run_dir / "transcript.jsonl")
    return [r.message["content"]["step"] + f"#{r.message['content']['iteration']}" for r in records
            if r.type.endswith("[StepResult]") and r.message["content"]["step"] == "segments"]


def tool_runs(run_dir: Path, tool: str) -> int:
    records = read_transcript(run_dir / "transcript.jsonl")
    return sum(c["name"] == tool for r in records if r.type == "ToolCallExecutionEvent" for c in r.message["content"])


def signal_during_second_segment(out: Path, signum: int) -> tuple[Path, int]:
    """Start `mora run` (3 segments), send `signum` once it asks for the second; the run dir and exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mora_agents", "run", FOX, "--preset", "tiny", "--device", "cpu",
               "--seed", str(SEED), "--duration", "11", "--out", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            transcripts = list(out.glob("*/transcript.jsonl"))
            if transcripts and any(r.type.endswith("[StepRequest]") and r.message["content"]["step"] == "segments"
                                   and r.message["content"]["iteration"] == 1 for r in read_transcript(transcripts[0])):
                process.send_signal(signum)
                return transcripts[0].parent, process.wait(timeout=120)
            if process.poll() is not None:
                raise AssertionError(f"the run ended (exit {process.returncode}) before its second segment")
            time.sleep(0.05)
        raise AssertionError("the run did not reach its second segment in time")
    finally:
        if process.poll() is None:
            process.kill()


def test_killed_run_resumes_without_redoing_finished_steps_and_gives_the_same_video(tmp_path: Path) -> None:
    run_dir, _ = signal_during_second_segment(tmp_path / "killed", signal.SIGKILL)
    assert run_status(read_info(run_dir)) == "interrupted"
    listing = CliRunner().invoke(app, ["runs", "--out", str(tmp_path / "killed")], env={"COLUMNS": "200"})
    assert "interrupted" in listing.output and "text_to_video" in listing.output
    assert segment_results(run_dir) == ["segments#0"]

    resumed = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert segment_results(run_dir) == ["segments#0", "segments#1", "segments#2"]  # segment 1 made once
    assert tool_runs(run_dir, "text_to_image") == 1 and tool_runs(run_dir, "image_to_video") == 3
    notes = [(r.type, r.message["text"]) for r in read_transcript(run_dir / "transcript.jsonl") if r.kind == "note"]
    assert notes == [("Resumed", "resumed a run that was interrupted from its last checkpoint")]
    assert run_status(read_info(run_dir)) == "finished"

    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "whole", seed=SEED)
    whole = asyncio.run(run_request(FOX, duration=11, options=options))
    killed_frames, _ = read_video(run_dir / "result.mp4")
    whole_frames, _ = read_video(whole.result)
    assert killed_frames.shape == whole_frames.shape == (73, 64, 64, 3)
    assert np.array_equal(killed_frames, whole_frames)


def test_resume_refuses_finished_runs_and_changed_artifacts(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=SEED)
    outcome = asyncio.run(run_request(FOX, duration=3, options=options))
    result = CliRunner().invoke(app, ["resume", str(outcome.run_dir)])
    assert result.exit_code == 2 and "the run is finished" in result.output

    info = read_info(outcome.run_dir)
    info["status"] = "failed"  # as if its last step had failed
    (outcome.run_dir / "run.json").write_text(json.dumps(info))
    (outcome.run_dir / "artifacts" / "image.png").write_bytes(b"changed")
    with pytest.raises(Exception, match=r"image\.png: changed since the run made it"):
        asyncio.run(resume_run(outcome.run_dir))


def test_resume_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory (no run.json)" in result.output


def test_ctrl_c_marks_the_run_interrupted(tmp_path: Path) -> None:
    run_dir, code = signal_during_second_segment(tmp_path / "runs", signal.SIGINT)
    assert code == 130
    info = read_info(run_dir)
    assert info["status"] == "interrupted" and run_status(info) == "interrupted"
    notes = [r.type for r in read_transcript(run_dir / "transcript.jsonl") if r.kind == "note"]
    assert notes == ["Interrupted"] and (run_dir / "state.json").is_file()
