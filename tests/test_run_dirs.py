"""Run directories from the outside: damaged files, listings for scripts, and failures reported in one line."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.media import sha256_file
from mora_agents.runs import runner
from mora_agents.runs.catalog import read_info
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import TranscriptWriter, read_transcript

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
    from mora_agents.pipelines import loading

    load_pipeline = loading.load_pipeline

    def broken(key: str):
        if key == "sdxl_refiner":  # text_to_image's second model (its first gives the prompt budget's tokenizer)
            raise RuntimeError("the weights are corrupt\nsecond line of detail")
        return load_pipeline(key)

    monkeypatch.setattr(loading, "load_pipeline", broken)
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


@pytest.mark.parametrize("field, value, problem", [
    ("preset", "huge", "preset: Input should be 'full' or 'tiny'"),
    ("memory_profile", "8gb", "memory_profile: Input should be 'resident' or '24gb'"),
    ("seed", "7", "seed: Input should be a valid integer"),
    ("seed", 2**40, "seed: Input should be less than or equal to 4294967295"),
    ("status", "done", "status: Input should be 'queued'"),
    ("seconds", -1, "seconds: Input should be greater than or equal to 0"),
    ("device", "", "device: String should have at least 1 character"),
    ("max_repeats", -1, "max_repeats: Input should be greater than or equal to 0"),
    ("overrides", {"text_to_image": 5}, "overrides.text_to_image: Input should be an object"),
    ("review", "yes", "review: Input should be a valid boolean"),
    ("pending_review", {"step": "image"}, "pending_review.agent: Field required"),
])
def test_every_field_of_run_json_is_checked_when_it_is_read(finished: Path, tmp_path: Path, field: str, value,
                                                             problem: str) -> None:
    run_dir = copy(finished, tmp_path)
    info = read_info(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted", field: value}))
    damaged = f"{run_dir / 'run.json'}: damaged ({problem}"
    resumed = mora("resume", str(run_dir))
    assert resumed.exit_code == 2 and damaged in one_error_line(resumed.output), resumed.output
    (row,) = json.loads(mora("runs", "--out", str(tmp_path), "--json").stdout)
    assert row["status"] == "damaged" and row["problem"].startswith(damaged)


def fill_disk(monkeypatch: pytest.MonkeyPatch, name: str, nth: int) -> None:
    """From the `nth` write of the run directory's file `name` on, every write of the run's records fails as on a
    full disk (ENOSPC): transcript lines, run.json, plan.json and state.json."""
    counts: Counter[str] = Counter()
    full = []

    def failing(write: Callable, file_of: Callable[..., str]) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            file = file_of(*args)
            counts[file] += 1
            if full or (file == name and counts[file] >= nth):
                full.append(file)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(TranscriptWriter, "append", failing(TranscriptWriter.append, lambda writer, _: writer.path.name))
    monkeypatch.setattr(runner, "_write_json", failing(runner._write_json, lambda path, _: path.name))
    monkeypatch.setattr(runner, "write_state", failing(runner.write_state, lambda *_: "state.json"))


@pytest.mark.parametrize("name, nth", [("run.json", 2), ("transcript.jsonl", 9), ("plan.json", 1), ("state.json", 2)])
def test_a_full_disk_is_one_line_and_the_run_resumes_to_the_same_result(
        finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, nth: int) -> None:
    fill_disk(monkeypatch, name, nth)
    out = tmp_path / "runs"
    result = mora("run", "a red fox running through snow", "--preset", "tiny", "--device", "cpu", "--seed", "7",
                  "--duration", "3", "--out", str(out), "--set", "image_to_video.frames=4",
                  "--set", "image_to_video.fps=1")
    assert result.exit_code == 1, result.output
    (run_dir,) = out.iterdir()
    line = one_error_line(result.output)
    assert line == (f"mora: error: run {run_dir}: cannot write {name} (No space left on device); the run stopped and "
                    f"nothing it recorded is lost: make room, then `mora resume {run_dir}`")
    assert "Traceback" not in result.output and "During handling" not in result.output

    monkeypatch.undo()  # room again
    resumed = mora("resume", str(run_dir))
    assert resumed.exit_code == 0, resumed.output
    assert sha256_file(run_dir / "result.mp4") == sha256_file(finished / "result.mp4")
    steps = [r.message["content"]["step"] for r in read_transcript(run_dir / "transcript.jsonl")
             if r.type.endswith("[StepResult]")]
    assert steps == ["enhance", "image", "segments", "join"]  # each once: nothing finished ran twice


def test_a_full_disk_in_a_batch_names_each_run_and_the_same_command_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"text": f"a fox number {n}", "seed": n, "duration": 3,
                                            "set": {"image_to_video.frames": 4, "image_to_video.fps": 1}}) + "\n"
                                for n in range(2)))
    out = tmp_path / "batch"
    fill_disk(monkeypatch, "transcript.jsonl", 9)
    result = mora("batch", str(requests), "--preset", "tiny", "--device", "cpu", "--out", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    summary = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    for row in summary:
        run_dir = Path(row["run_dir"])
        assert row["error"].startswith(f"run {run_dir}: cannot write ") and "(No space left on device)" in row["error"]
        assert f"`mora resume {run_dir}`" in row["error"]

    monkeypatch.undo()
    again = mora("batch", str(requests), "--preset", "tiny", "--device", "cpu", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert [json.loads(line)["status"] for line in (out / "summary.jsonl").read_text().splitlines()] == [
        "finished", "finished"]


def test_the_transcript_viewer_prints_a_models_text_as_written(finished: Path, tmp_path: Path) -> None:
    """Escape sequences in what a model wrote (a title change, a screen clear, colours) are dropped; markup and
    emoji codes are printed as they are."""
    run_dir = copy(finished, tmp_path, "a [bold]run[/bold] :100:")
    writer = TranscriptWriter(run_dir / "transcript.jsonl")
    text = "\x1b]0;pwned\x07\x1b[2J\x1b[H\x1b[31mred\x1b[0m, \x9b31mC1, [bold]markup[/bold] and :100: stay\r\x00\x7f."
    writer.append(writer.make("note", "prompt_agent", "Note", {"text": text}))
    shown = mora("transcript", str(run_dir))
    assert shown.exit_code == 0, shown.output
    assert "red, C1, [bold]markup[/bold] and :100: stay." in shown.stdout
    assert not any(c in shown.stdout for c in "\x1b\x07\x9b\r\x00\x7f💯")
    page = mora("transcript", str(run_dir), "--html")
    assert page.stdout == f"{run_dir / 'transcript.html'}\n"  # the path as it is: no markup, no emoji
