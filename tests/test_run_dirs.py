"""Run directories from the outside: damaged files, listings for scripts, and failures reported in one line."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.runs.catalog import read_info
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = {"image_to_video": {"frames": 4, "fps": 1}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3 s tiny run (copy it before changing it)."""
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path_factory.mktemp("runs"), seed=7, overrides=FAST)
    return asyncio.run(run_request("a red fox running through snow", duration=3, options=options)).run_dir


def copy(run_dir: Path, base: Path, name: str | None = None) -> Path:
    return Path(shutil.copytree(run_dir, base / (name or run_dir.name)))


def mora(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})


def one_error_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("mora: error:")]
    assert "Traceback" not in output
    return line


@pytest.mark.parametrize("content", [b"{}", b"[]", b"\xff\xfe not even text", b'{"request": 5}', b'{"seq": '])
def test_a_damaged_run_json_is_one_line_everywhere_and_the_other_runs_still_list(
        finished: Path, tmp_path: Path, content: bytes) -> None:
    good = copy(finished, tmp_path)
    bad = copy(finished, tmp_path, "damaged-run")
    (bad / "run.json").write_bytes(content)

    listing = mora("runs", "--out", str(tmp_path), "--json")
    assert listing.exit_code == 0, listing.output
    rows = {row["run"]: row for row in json.loads(listing.stdout)}
    assert rows[good.name]["status"] == "finished" and rows[good.name]["problem"] is None
    assert rows["damaged-run"]["status"] == "damaged"
    assert rows["damaged-run"]["problem"].startswith(f"{bad / 'run.json'}: damaged (")
    table = mora("runs", "--out", str(tmp_path))
    assert table.exit_code == 0 and "damaged" in table.output and good.name in table.output

    resumed = mora("resume", str(bad))
    assert resumed.exit_code == 2 and f"{bad / 'run.json'}: damaged" in one_error_line(resumed.output)
    page = mora("transcript", str(bad), "--html")
    assert page.exit_code == 0 and "Traceback" not in page.output
    assert f"{bad / 'run.json'}: damaged" in page.output and (bad / "transcript.html").is_file()


@pytest.mark.parametrize("content", [b"", b"[]", b"{not json", b'{"seq": 3}', b"\xff",
                                     b'{"seq": 3, "records": [{"seq": 3}], "team": {}}'])
def test_a_damaged_state_json_stops_resume_with_one_line(finished: Path, tmp_path: Path, content: bytes) -> None:
    run_dir = copy(finished, tmp_path)
    info = read_info(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    (run_dir / "state.json").write_bytes(content)
    before = (run_dir / "transcript.jsonl").read_bytes()
    resumed = mora("resume", str(run_dir))
    assert resumed.exit_code == 2
    line = one_error_line(resumed.output)
    assert f"{run_dir / 'state.json'}: damaged (" in line and "delete it to run the request again" in line
    assert (run_dir / "transcript.jsonl").read_bytes() == before


def test_a_damaged_transcript_is_read_around_its_bad_lines_and_says_so(finished: Path, tmp_path: Path) -> None:
    run_dir = copy(finished, tmp_path)
    path = run_dir / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3][:30] + b"\xff\xfe" + lines[3][32:]  # invalid UTF-8 in the middle
    path.write_bytes(b"".join(lines) + b'{"seq": 99, "time": "2026')  # and a last line cut short
    good = len(lines) - 1

    text = mora("transcript", str(run_dir))
    assert text.exit_code == 0 and "Traceback" not in text.output
    (warning,) = [line for line in text.output.splitlines() if line.startswith("mora: warning:")]
    assert str(path) in warning and "line 4: not valid UTF-8" in warning and f"line {len(lines) + 1}: half-written" in warning
    records = mora("transcript", str(run_dir), "--json")
    parsed = [json.loads(line) for line in records.stdout.splitlines()]  # JSON lines: one record a line
    assert len(parsed) == good and 3 not in [r["seq"] for r in parsed]
    page = mora("transcript", str(run_dir), "--html")
    assert page.exit_code == 0 and "not valid UTF-8" in (run_dir / "transcript.html").read_text()

    # resuming drops the half-written line (a crash's), says so, and leaves a well-formed transcript
    info = read_info(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    resumed = mora("resume", str(run_dir))
    assert resumed.exit_code == 0, resumed.output
    assert path.read_bytes().endswith(b"\n")
    notes = [r for r in read_transcript(path) if r.kind == "note"]
    assert [n.type for n in notes] == ["Recovered", "Resumed"]
    assert "dropped a half-written last line" in notes[0].message["text"] and "line 4: not valid UTF-8" in notes[0].message["text"]
    assert read_info(run_dir)["status"] == "finished"
    assert [r.type for r in read_transcript(path)].count("StructuredMessage[RunFinished]") == 1  # it had finished


def test_listings_for_scripts_and_run_names_never_cut(finished: Path, tmp_path: Path) -> None:
    long_name = "20261121-101500-a-very-long-request-about-a-red-fox-running-through-snow-at-dawn"
    run_dir = copy(finished, tmp_path, long_name)
    table = mora("runs", "--out", str(tmp_path))  # into a pipe, 80 columns
    assert table.exit_code == 0 and long_name in table.output
    (row,) = json.loads(mora("runs", "--out", str(tmp_path), "--json").stdout)
    assert row["run"] == long_name and row["path"] == str(run_dir) and row["task"] == "text_to_video"
    assert row["result"] == str(run_dir / "result.mp4") and row["request"] == "a red fox running through snow"

    sops = json.loads(mora("sops", "list", "--json").stdout)
    by_task = {s["task"]: s for s in sops}
    assert by_task["text_to_video"]["steps"] == ["enhance", "image", "segments", "join"]
    assert by_task["text_to_video"]["inputs"]["duration"]["type"] == "number"
    assert "text_to_video" in mora("sops", "list").output


def test_a_tool_that_raises_is_one_line_with_the_traceback_kept(tmp_path: Path, monkeypatch) -> None:
    def broken(key: str):
        raise RuntimeError("the weights are corrupt\nsecond line of detail")

    monkeypatch.setattr("mora_agents.tools.image.load_pipeline", broken)
    result = mora("run", "a red fox", "--preset", "tiny", "--device", "cpu", "--duration", "3",
                  "--out", str(tmp_path / "runs"), "--set", "image_to_video.frames=4", "--set", "image_to_video.fps=1")
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "step 'image' (text_to_image_agent): text_to_image failed: RuntimeError: the weights are corrupt" in line
    assert "second line" not in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = read_info(run_dir)
    assert "\n" not in info["error"] and "the weights are corrupt" in info["error"]
    assert "Traceback" in info["error_details"] and "in broken" in info["error_details"]
    (failed,) = [r for r in read_transcript(run_dir / "transcript.jsonl") if r.type.endswith("[StepFailed]")]
    assert "in broken" in failed.message["content"]["details"]

    monkeypatch.undo()  # the weights are fine again: the failed run continues from its last checkpoint
    resumed = mora("resume", str(run_dir))
    assert resumed.exit_code == 0, resumed.output
    records = read_transcript(run_dir / "transcript.jsonl")
    executions = [c for r in records if r.type == "ToolCallExecutionEvent" for c in r.message["content"]]
    assert [c["is_error"] for c in executions if c["name"] == "text_to_image"] == [True, False]
    results = [r.message["content"]["step"] for r in records if r.type.endswith("[StepResult]")]
    assert results == ["enhance", "image", "segments", "join"]
    assert read_info(run_dir)["status"] == "finished" and read_info(run_dir)["error"] is None


def test_a_failure_inside_the_team_is_one_line_with_the_traceback_kept(tmp_path: Path) -> None:
    env = {"MORA_LLM_BASE_URL": "http://127.0.0.1:9/v1", "MORA_LLM_MODEL": "nobody-serves-this"}  # a closed port
    result = CliRunner().invoke(app, ["run", "a red fox", "--preset", "tiny", "--device", "cpu",
                                      "--out", str(tmp_path / "runs")], env=env)
    assert result.exit_code == 1
    assert "run failed: planner: APIConnectionError: Connection error." in one_error_line(result.output)
    assert len(result.output.splitlines()) < 10
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = read_info(run_dir)
    assert info["status"] == "failed" and info["error"] == "planner: APIConnectionError: Connection error."
    assert "Traceback" in info["error_details"]
    (error,) = [r for r in read_transcript(run_dir / "transcript.jsonl") if r.kind == "error"]
    assert error.message["error"] == info["error"] and "Traceback" in error.message["details"]
