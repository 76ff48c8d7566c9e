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
from conftest import signal_when_asked
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.media import read_video
from mora_agents.runs.catalog import read_info, run_status
from mora_agents.runs.runner import RunOptions, resume_run, run_request
from mora_agents.runs.transcript import read_transcript
from mora_agents.sop.loader import BUILTIN_DIR

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
    command = [sys.executable, "-m", "mora_agents", "run", FOX, "--preset", "tiny", "--device", "cpu",
               "--seed", str(SEED), "--duration", "11", "--out", str(out)]
    return signal_when_asked(command, out, signum, "segments", 1)


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
    assert killed_frames.shape == whole_frames.shape == (19, 64, 64, 3)
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


SWEEP = Path(__file__).parents[1] / "benchmarks" / "resume_sweep.py"


def test_killed_at_a_moment_of_every_kind_resumes_without_doing_anything_twice(tmp_path: Path) -> None:
    """A sample of the kill sweep (the whole sweep: `python benchmarks/resume_sweep.py`)."""
    report = tmp_path / "sweep.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SWEEP), "--sample", "--json", str(report)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert report.is_file(), done.stdout + done.stderr
    sweep = json.loads(report.read_text())
    rows = sweep["rows"]
    kinds = {(row["kind"], row["what"].partition(":")[0]) for row in rows}
    assert {("record", t) for t in ("UserRequest", "Plan", "StepRequest", "ToolCallRequestEvent", "ToolCallExecutionEvent",
                                    "StepResult", "ReviewRequest", "ReviewDecision", "RunFinished")} <= kinds
    assert {("tool", t) for t in ("text_to_image", "image_to_video", "last_frame", "concat_videos")} <= kinds
    assert {("denoise", "text_to_image"), ("denoise", "image_to_video"), ("state", "state.json")} <= kinds
    reference = sweep["reference"]
    assert reference["tool_runs"] == {"text_to_image": 1, "image_to_video": 3, "last_frame": 2, "concat_videos": 1}
    for row in rows:
        failure = f"{row['moment']} ({row['what']}): {row.get('log_tail', '')}"
        assert row["killed"] == -signal.SIGKILL and row["resume_exit"] == 0, failure
        assert row["status"] == "finished" and row["seqs_ok"], failure
        assert row["results"] == reference["results"] and set(row["results"].values()) == {1}, failure
        assert row["tool_runs"] == reference["tool_runs"] and row["frames_equal"], failure
    assert sweep["passed"] == len(rows) and done.returncode == 0


def test_a_resumed_run_of_every_shipped_sop_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    """Each SOP killed right after the first iteration of its repeated step (else its first tool step) and resumed in
    a new process, which runs the rest with nothing run before it: the result is byte for byte the uninterrupted
    one's (`python benchmarks/resume_sweep.py --sops`)."""
    report = tmp_path / "sops.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SWEEP), "--sops", "--json", str(report)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert report.is_file(), done.stdout + done.stderr
    rows = json.loads(report.read_text())["rows"]
    assert {row["sop"] for row in rows} == {path.stem for path in BUILTIN_DIR.glob("*.yaml")}
    for row in rows:
        assert row["passed"], f"{row['sop']}: {row.get('log_tail', '')}"
        assert row["killed"] == -signal.SIGKILL and row["resume_exit"] == 0 and row["whole"] == row["resumed"]
    assert {row["sop"]: row["kill_after"][0] for row in rows if row["kill_after"][0] != "segments"} == {
        "connect_videos": "connect", "connect_videos_flf2v": "connect", "text_to_video_keyframes": "segments.keyframe",
        "story": "sheets", "long_video": "image"}
    assert done.returncode == 0


KILL_AT = """
import asyncio, os, signal, sys
from pathlib import Path
from mora_agents.runs.runner import RunOptions, run_request

def on_record(record, run_dir):
    if record.type == sys.argv[2] and record.message["content"].get("step") == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

options = RunOptions(preset="tiny", device="cpu", out=Path(sys.argv[1]), seed=11,
                     overrides={"image_to_video": {"frames": 4, "fps": 1}})
asyncio.run(run_request("a red fox running through snow", duration=3, options=options, on_record=on_record))
"""


def killed_after(out: Path, record_type: str, step: str) -> Path:
    """A 3 s tiny run SIGKILLed right after the record of `record_type` for `step`: its run directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = subprocess.run([sys.executable, "-c", KILL_AT, str(out), record_type, step], env=env, timeout=300).returncode
    assert code == -signal.SIGKILL
    (run_dir,) = out.iterdir()
    return run_dir


def test_resume_checks_the_most_recent_steps_file_too(tmp_path: Path) -> None:
    run_dir = killed_after(tmp_path / "runs", "StructuredMessage[StepResult]", "segments")
    clip = run_dir / "artifacts" / "segments.mp4"
    clip.write_bytes(clip.read_bytes()[:-10])  # the last step's clip, replaced before the run could use it
    before = (run_dir / "transcript.jsonl").read_bytes()
    result = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert result.exit_code == 1 and "segments.mp4: changed since the run made it" in result.output
    assert (run_dir / "transcript.jsonl").read_bytes() == before  # refused before anything was written


def test_a_second_resume_of_a_running_run_is_refused_naming_the_first_ones_pid(tmp_path: Path) -> None:
    from mora_agents.runs.review import scripted

    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=SEED,
                         overrides={"image_to_video": {"frames": 4, "fps": 1}})
    with pytest.raises(Exception, match="the run waits for review"):
        asyncio.run(run_request(FOX, duration=3, options=options, reviewer=scripted([])))
    (run_dir,) = (tmp_path / "runs").iterdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    mora = [sys.executable, "-m", "mora_agents", "resume", str(run_dir)]
    first = subprocess.Popen([*mora, "--review"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120  # the first one holds the lock while it waits for the review answer
        while (info := read_info(run_dir))["pid"] != first.pid or info["status"] != "waiting for review":
            assert time.monotonic() < deadline and first.poll() is None, "the first resume never asked for the review"
            time.sleep(0.05)
        assert f"process {first.pid} " in (run_dir / "run.lock").read_text()
        before = (run_dir / "transcript.jsonl").read_bytes()
        second = subprocess.run(mora, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"already being run by process {first.pid} on" in " ".join(second.stderr.split())
        assert (run_dir / "transcript.jsonl").read_bytes() == before
        output, _ = first.communicate("next\nnext\n", timeout=300)
        assert first.returncode == 0, output
    finally:
        if first.poll() is None:
            first.kill()
    seqs = [r.seq for r in read_transcript(run_dir / "transcript.jsonl")]
    assert seqs == list(range(len(seqs)))
    assert tool_runs(run_dir, "text_to_image") == 1 and run_status(read_info(run_dir)) == "finished"
