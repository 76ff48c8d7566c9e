"""`mora batch` and `run_batch`: many requests as normal runs, here or on a local Ray cluster of 2 CPU workers."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_image
from test_resume import segment_results, tool_runs
from typer.testing import CliRunner

import mora_agents
from mora_agents.batch import BatchRequest, BatchResult, check_requests, read_requests, run_batch
from mora_agents.cli import app
from mora_agents.media import read_video
from mora_agents.runs.catalog import read_info
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# fast tiny runs: one denoising step, 8 frames at 7 fps a segment (one segment for 1 s, three for 3 s)
FAST = {"text_to_image.steps": 1, "edit_image.steps": 1, "image_to_video.steps": 1, "image_to_video.frames": 8,
        "image_to_video.fps": 7}
LINES = [
    {"text": "a red fox running through snow", "duration": 1, "seed": 5, "name": "fox"},
    {"text": "a red fox running through snow", "duration": 1},  # no seed: derived from the content...
    {"text": "a red fox running through snow", "duration": 1},  # ...and distinct for a second copy
    {"text": "a lighthouse in a storm", "duration": 3},  # three segments: the one a worker dies in
    {"text": "the cat starts to dance", "images": ["cat.png"], "duration": 1},
    {"text": "a paper boat on a river", "duration": 1, "seed": 9, "set": {**FAST, "image_to_video.motion_bucket_id": 60}},
]


def write_requests(folder: Path, lines: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    make_image(folder / "cat.png")
    path = folder / "requests.jsonl"
    path.write_text("".join(json.dumps({"set": FAST, **line}) + "\n" for line in lines))
    return path


def options(out: Path) -> RunOptions:
    return RunOptions(preset="tiny", device="cpu", out=out)


def frames_sha256(video: Path) -> str:
    return hashlib.sha256(read_video(video)[0].tobytes()).hexdigest()


@pytest.fixture(scope="module")
def requests(tmp_path_factory) -> list[BatchRequest]:
    found, errors = read_requests(write_requests(tmp_path_factory.mktemp("requests"), LINES))
    assert not errors
    return found


@pytest.fixture(scope="module")
def separate(requests, tmp_path_factory) -> dict[str, str]:
    """The frames' sha256 of each request run on its own by `run_request` with the batch's seed, by key."""
    out = tmp_path_factory.mktemp("separate")
    digests = {}
    for checked in check_requests(requests, options(out)):
        r = checked.request
        outcome = asyncio.run(run_request(r.text, images=r.images, task=r.task, duration=r.duration,
                                          options=RunOptions(preset="tiny", device="cpu", out=out, seed=checked.seed,
                                                             overrides=r.overrides)))
        digests[checked.key] = frames_sha256(outcome.result)
    return digests


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_batch_gives_the_videos_of_separate_runs_and_a_second_batch_skips_them(requests, separate, tmp_path) -> None:
    results = run_batch(requests, options(tmp_path / "out"), summary=tmp_path / "out" / "summary.jsonl")
    assert [r.status for r in results] == ["finished"] * 6 and [r.attempts for r in results] == [1] * 6
    assert {r.key: frames_sha256(r.result) for r in results} == separate
    seeds = [r.seed for r in results]
    assert seeds[0] == 5 and seeds[5] == 9 and len(set(seeds)) == 6  # two copies of one request: two seeds
    assert all(r.run_dir.parent == (tmp_path / "out").resolve() and r.run_dir.name.endswith(r.key[:12])
               for r in results)
    summary = [json.loads(line) for line in (tmp_path / "out" / "summary.jsonl").read_text().splitlines()]
    assert [s["request"] for s in summary] == [f"{requests[0].label[:-2]}:{n}" for n in range(1, 7)]
    assert summary[0]["name"] == "fox" and summary[0]["result"] == str(results[0].result)

    transcripts = {r.key: (r.run_dir / "transcript.jsonl").read_bytes() for r in results}
    again = run_batch(requests, options(tmp_path / "out"))  # the same requests: everything is finished
    assert [(r.status, r.skipped, r.attempts) for r in again] == [("finished", True, 0)] * 6
    assert [r.run_dir for r in again] == [r.run_dir for r in results]
    assert {r.key: (r.run_dir / "transcript.jsonl").read_bytes() for r in again} == transcripts


def test_ray_batch_gives_the_same_videos_and_retries_a_run_whose_worker_was_killed(
        ray_cluster, requests, separate, tmp_path) -> None:
    """2 CPU workers; the worker running the three-segment request is killed during its second segment."""
    victim = requests[3]
    names: dict[str, str] = {}
    killed = threading.Event()

    def on_update(result: BatchResult) -> None:
        if result.request is victim and result.status == "running" and not killed.is_set():
            names["worker"], names["run_dir"] = result.worker, str(result.run_dir)

    def kill_during_the_second_segment() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            transcript = Path(names.get("run_dir", "/nonexistent")) / "transcript.jsonl"
            if transcript.is_file() and any(r.type.endswith("[StepRequest]") and r.message["content"]["step"] == "segments"
                                            and r.message["content"]["iteration"] == 1
                                            for r in read_transcript(transcript)):
                names["killed"] = names["worker"]  # the retry may start (and set "worker" again) before set()
                ray_cluster.kill(ray_cluster.get_actor(names["killed"]))
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_during_the_second_segment, daemon=True)
    killer.start()
    results = run_batch(requests, options(tmp_path / "out"), ray="auto", retries=1, on_update=on_update)
    killer.join(timeout=5)
    assert killed.is_set()
    assert [r.status for r in results] == ["finished"] * 6
    assert {r.key: frames_sha256(r.result) for r in results} == separate
    retried = results[3]
    assert retried.attempts == 2 and retried.worker != names["killed"] and [r.attempts for i, r in enumerate(results) if i != 3] == [1] * 5
    assert segment_results(retried.run_dir) == ["segments#0", "segments#1", "segments#2"]
    assert tool_runs(retried.run_dir, "text_to_image") == 1 and tool_runs(retried.run_dir, "image_to_video") == 3
    notes = [r.message["text"] for r in read_transcript(retried.run_dir / "transcript.jsonl") if r.kind == "note"]
    assert notes == ["resumed a run that was interrupted from its last checkpoint"]


def test_ctrl_c_stops_a_batch_and_the_same_command_completes_it(tmp_path: Path) -> None:
    path = write_requests(tmp_path, [LINES[0], LINES[3]])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mora_agents", "batch", str(path), "--out", str(out), "--preset", "tiny",
               "--device", "cpu"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            transcripts = list(out.glob("a-lighthouse*/transcript.jsonl"))
            if transcripts and any(r.type.endswith("[StepRequest]") and r.message["content"]["step"] == "segments"
                                   and r.message["content"]["iteration"] == 1 for r in read_transcript(transcripts[0])):
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        assert process.wait(timeout=120) == 130
    finally:
        if process.poll() is None:
            process.kill()
    summary = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [s["status"] for s in summary] == ["finished", "interrupted"]
    stopped = Path(summary[1]["run_dir"])
    assert read_info(stopped)["status"] == "interrupted" and segment_results(stopped) == ["segments#0"]

    rerun = CliRunner().invoke(app, ["batch", str(path), "--out", str(out), "--preset", "tiny", "--device", "cpu"],
                               env={"COLUMNS": "200"})
    assert rerun.exit_code == 0, rerun.output
    summary = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [(s["status"], s["skipped"]) for s in summary] == [("finished", True), ("finished", False)]
    assert segment_results(stopped) == ["segments#0", "segments#1", "segments#2"]
    assert tool_runs(stopped, "image_to_video") == 3 and tool_runs(stopped, "text_to_image") == 1
    assert "finished earlier" in rerun.output and "result.mp4" in rerun.output


def test_bad_lines_are_named_one_each_and_nothing_runs(tmp_path: Path) -> None:
    path = write_requests(tmp_path, [
        {"text": "a red fox", "duration": 1},
        {"text": "the cat starts to dance", "images": ["missing.png"]},
        {"text": "a red fox", "task": "dance"},
        {"text": "a red fox", "duration": 0},
        {"text": "a red fox", "colour": "red"},
        {"text": "a red fox", "adapters": "no-adapters"},
    ])
    deep = "[" * 100_000 + "]" * 100_000
    with path.open("a") as f:
        f.write("not json\n")
        f.write('{"text": "a red fox", "set": {"image_to_video.frames": ' + deep + '}}\n')
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())  # saved by an editor that marks UTF-8: line 1 still reads
    args = ["batch", str(path), "--out", str(tmp_path / "out"), "--preset", "tiny", "--device", "cpu"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert [line.removeprefix(f"mora: error: {path}:").split(":")[0] for line in lines] == [
        "2", "3", "4", "5", "6", "7", "8"]
    assert "missing.png" in lines[0] and "--task dance" in lines[1] and "--duration 0" in lines[2]
    assert "unknown field 'colour'" in lines[3] and "no-adapters: no such folder" in lines[4]
    assert "not valid JSON" in lines[5] and lines[6].endswith(":8: nested deeper than 20 levels")
    assert not (tmp_path / "out").exists()

    skipping = CliRunner().invoke(app, [*args, "--skip-invalid"], env={"COLUMNS": "300"})
    assert skipping.exit_code == 0, skipping.output
    assert skipping.output.count("skipped:") == 3  # the lines that are no request; the others are in the table
    summary = [json.loads(line) for line in (tmp_path / "out" / "summary.jsonl").read_text().splitlines()]
    assert [(s["request"].rsplit(":", 1)[1], s["status"]) for s in summary] == [
        ("1", "finished"), ("2", "invalid"), ("3", "invalid"), ("4", "invalid"), ("6", "invalid")]


@pytest.mark.parametrize("make, expected", [
    (lambda d: d.joinpath("r.jsonl").write_bytes(b'{"text": "a red fox"}\n{"text": "caf\xe9"}\n') and d / "r.jsonl",
     "r.jsonl:2: not UTF-8 text (byte 0xe9 at column 14)"),
    (lambda d: os.mkfifo(d / "r.jsonl") or d / "r.jsonl", "r.jsonl: not a regular file (a folder, pipe or device)"),
    (lambda d: Path("/dev/zero"), "/dev/zero: not a regular file (a folder, pipe or device)"),
])
def test_a_requests_file_that_cannot_be_read_is_one_line_at_once(tmp_path: Path, make, expected) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(app, ["batch", str(path), "--out", str(tmp_path / "out")], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and result.output.count("\n") == 1 and expected in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_second_batch_on_the_same_out_is_refused_naming_the_first(tmp_path: Path) -> None:
    path = write_requests(tmp_path, [LINES[0]])
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from mora_agents.runs.lock import file_lock\n"
        f"with file_lock(Path({str(out / 'batch.lock')!r}), RuntimeError):\n"
        "    print('held', flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        result = CliRunner().invoke(app, ["batch", str(path), "--out", str(out), "--preset", "tiny", "--device",
                                          "cpu"], env={"COLUMNS": "300"})
    finally:
        holder.communicate("")
    [error] = [line for line in result.output.splitlines() if "error" in line]
    assert result.exit_code == 2 and f"another batch is running in this folder (process {holder.pid} on " in error
    assert sorted(p.name for p in out.iterdir()) == ["batch.lock"]  # no run made, no summary written


def test_a_finished_run_that_lost_its_run_json_is_recovered_not_made_again(tmp_path: Path) -> None:
    """run.json deleted: the run's record is rebuilt from its transcript and the batch's request, and the run ends
    as finished at once; a run directory with work but no request in its transcript is left alone, as damaged."""
    found, _ = read_requests(write_requests(tmp_path, [LINES[0], LINES[5]]))
    out = tmp_path / "out"
    [first] = run_batch(found[:1], options(out))
    assert first.status == "finished"
    video, info = first.result.read_bytes(), read_info(first.run_dir)
    (first.run_dir / "run.json").unlink()
    damaged = check_requests(found, options(out))[1].run_dir
    damaged.mkdir()
    (damaged / "transcript.jsonl").write_text('{"seq": 0}\n')

    again, left = run_batch(found, options(out))
    assert (again.status, again.run_dir, again.result.read_bytes()) == ("finished", first.run_dir, video)
    assert tool_runs(first.run_dir, "image_to_video") == 1 and tool_runs(first.run_dir, "text_to_image") == 1
    recovered = read_info(first.run_dir)
    assert recovered["recovered"].startswith("run.json was missing") and recovered["status"] == "finished"
    assert {k: recovered[k] for k in ("request", "seed", "task", "overrides")} == {
        k: info[k] for k in ("request", "seed", "task", "overrides")}
    assert left.status == "damaged" and "no request in its transcript" in left.error
    assert (damaged / "transcript.jsonl").read_text() == '{"seq": 0}\n' and not (damaged / "run.json").exists()


def test_ray_without_ray_installed_is_one_line(tmp_path: Path, monkeypatch) -> None:
    path = write_requests(tmp_path, [{"text": "a red fox"}])
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "mora_agents.batch.cluster", raising=False)
    result = CliRunner().invoke(app, ["batch", str(path), "--out", str(tmp_path / "out"), "--ray", "auto"])
    assert result.exit_code == 2
    assert result.output.strip() == "mora: error: --ray: Ray is not installed (pip install 'mora-agents[batch]')"


def test_eval_suite_makes_its_videos_as_a_batch(tmp_path: Path, monkeypatch) -> None:
    shipped = yaml.safe_load((Path(mora_agents.__file__).parent / "sops" / "text_to_video.yaml").read_text())
    shipped["inputs"]["duration"]["default"] = 1  # a short text_to_video replaces the shipped one (MORA_SOPS)
    shipped["steps"][1]["args"]["steps"] = shipped["steps"][2]["args"]["steps"] = 1
    shipped["steps"][2]["args"].update(frames=8, fps=7)
    (tmp_path / "sops").mkdir()
    (tmp_path / "sops" / "text_to_video.yaml").write_text(yaml.safe_dump(shipped))
    monkeypatch.setenv("MORA_SOPS", str(tmp_path / "sops"))
    prompts = tmp_path / "suite.jsonl"
    prompts.write_text('{"prompt": "one dog running", "type": "I"}\n{"prompt": "two cats playing", "type": "II"}\n')
    report = tmp_path / "report.md"
    result = CliRunner().invoke(app, ["eval", "--suite", "t2v", "--prompts", str(prompts), "--generate",
                                      str(tmp_path / "gen"), "--preset", "tiny", "--metrics", "video_length",
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    summary = [json.loads(line) for line in (tmp_path / "gen" / "summary.jsonl").read_text().splitlines()]
    assert [(s["request"], s["status"]) for s in summary] == [("prompt 1", "finished"), ("prompt 2", "finished")]
    assert [read_info(Path(s["run_dir"]))["task"] for s in summary] == ["text_to_video"] * 2
    text = report.read_text()
    assert "| Type I | 1.143 [reference] (1) |" in text and "| overall | 1.143 [reference] (2) |" in text
