"""The first minutes with `mora`: quick commands that load no model, a quiet terminal, consistent flags, one SOP folder.

Speed itself is measured by benchmarks (benchmarks/startup.py, benchmarks/tiny_sops.py), not here: these tests check
what makes it, the modules a command imports and the lines a run writes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from conftest import make_video
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.eval.chart import chart_series
from mora_agents.eval.result import MetricResult, VideoEvaluation
from mora_agents.eval.targets import load_target
from mora_agents.runs.log import run_log
from mora_agents.runs.transcript import read_transcript
from mora_agents.sop.loader import BUILTIN_DIR, find_sops

MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate", "skimage", "autogen_core",
                   "autogen_agentchat")
IMPORTED = """
import atexit, json, os, sys
atexit.register(lambda: os.write(2, ("IMPORTED " + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                                     {libraries!r}))).encode()))
sys.argv = ["mora", *sys.argv[1:]]
from mora_agents.cli import main
main()
"""


def mora(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mora_agents", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=cwd, timeout=600)


def imported(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `mora ARGS` in a fresh process; also the model libraries' modules it imported."""
    done = subprocess.run([sys.executable, "-c", IMPORTED.format(libraries=set(MODEL_LIBRARIES)), *args],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200", **(env or {})},
                          timeout=120)
    head, _, modules = done.stderr.rpartition("IMPORTED ")
    done.stderr = head
    return done, set(json.loads(modules))


@pytest.fixture(scope="module")
def keyframes_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """`mora run --preset tiny --task text_to_video_keyframes` at its default 30 s: 3 tiny segments, each with a
    keyframe, a chain frame, a colour match and an ease (the SOP with the most steps)."""
    out = tmp_path_factory.mktemp("keyframes") / "runs"
    done = mora("run", "a red fox running through snow", "--task", "text_to_video_keyframes", "--preset", "tiny",
                "--device", "cpu", "--seed", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return done, Path(done.stdout.strip()).parent


@pytest.mark.parametrize("args", [["--help"], ["sops", "list"], ["sops", "show", "text_to_video"],
                                  ["sops", "validate"], ["runs"], ["eval", "--help"], ["bench", "--help"]])
def test_commands_that_load_no_model_import_no_model_library(args: list[str], tmp_path: Path) -> None:
    done, modules = imported(*args, *(["--out", str(tmp_path)] if args == ["runs"] else []))
    assert done.returncode == 0, done.stderr
    assert not modules, f"`mora {' '.join(args)}` imported {sorted(modules)[:10]}"


def test_resume_refuses_a_finished_run_before_loading_a_model_library(keyframes_run) -> None:
    _, run_dir = keyframes_run
    done, modules = imported("resume", str(run_dir))
    assert done.returncode == 2 and "the run is finished" in done.stderr and not modules


def test_a_tiny_keyframes_run_writes_a_line_per_step_and_logs_the_libraries_warnings(keyframes_run) -> None:
    done, run_dir = keyframes_run
    lines = done.stderr.splitlines()
    results = [r for r in read_transcript(run_dir / "transcript.jsonl") if r.type.endswith("[StepResult]")]
    main_steps = [r for r in results if "." not in r.message["content"]["step"]]
    assert len(main_steps) == 6  # enhance, image, 3 segments, join (each segment's 4 chain steps are part of it)
    assert len(results) > 2 * len(main_steps)
    # a line per main step, and the preset's warning, the plan, the result and where the library messages are
    assert sum(line.startswith("✓ ") for line in lines) == len(main_steps) and len(lines) <= len(main_steps) + 4, lines
    assert not any("sha256" in line or "/artifacts/" in line for line in lines)  # no JSON, no absolute paths
    assert done.stdout.strip() == str(run_dir / "result.mp4")
    log = (run_dir / "log.txt").read_text() if (run_dir / "log.txt").exists() else ""
    if log:  # this environment's libraries warn (diffusers' dtype casts, transformers without torchvision)
        assert f"library messages: {len(log.splitlines())} line(s) in {run_dir / 'log.txt'}" in lines[-1]
        assert all(line.split(" ")[2] in ("WARNING", "INFO", "ERROR", "DEBUG", "CRITICAL") for line in
                   log.splitlines() if line[:4].isdigit())


def test_a_run_log_takes_the_libraries_records_and_warnings(tmp_path: Path, capfd) -> None:
    diffusers = logging.getLogger("diffusers")
    before = (list(diffusers.handlers), diffusers.propagate, logging.getLogger("py.warnings").handlers)
    with run_log(tmp_path):
        logging.getLogger("diffusers.models.modeling_utils").warning("cast to float32")
        logging.getLogger("transformers").warning("no torchvision")
        warnings.warn("a torch warning", UserWarning, stacklevel=1)
    logging.getLogger("mora_agents.test").warning("after the run")
    log = (tmp_path / "log.txt").read_text()
    assert "WARNING diffusers.models.modeling_utils: cast to float32" in log and "no torchvision" in log
    assert "a torch warning" in log and "after the run" not in log
    assert "cast to float32" not in capfd.readouterr().err
    assert (diffusers.handlers, diffusers.propagate, logging.getLogger("py.warnings").handlers) == before  # as they were


def test_outputs_made_of_noise_are_noise_in_the_transcript(keyframes_run) -> None:
    _, run_dir = keyframes_run
    records = read_transcript(run_dir / "transcript.jsonl")
    finished = records[-1].message["content"]
    assert records[-1].type.endswith("[RunFinished]") and finished["result"]["path"] == "result.mp4"
    assert finished["result"]["noise"] is True == json.loads((run_dir / "run.json").read_text())["noise"]
    outputs = [r.message["content"]["output"] for r in records if r.type.endswith("[StepResult]")]
    assert all(o["noise"] for o in outputs if isinstance(o, dict))  # the chain frames and the joined video too


def test_the_eval_chart_labels_a_tiny_runs_scores_noise(keyframes_run) -> None:
    _, run_dir = keyframes_run
    target = load_target(run_dir)
    assert target.noise and target.task == "text_to_video_keyframes"
    score = MetricResult("subject_consistency", 0.9, "reference")
    evaluation = VideoEvaluation(str(run_dir), str(target.video), "a fox", "text_to_video", {score.name: score},
                                 noise=target.noise)
    series, shown = chart_series([evaluation])
    assert f"{run_dir.name} (noise: tiny preset)" in series and shown  # beside the paper's rows, labelled
    assert evaluation.to_dict()["noise"] is True


def test_json_goes_to_stdout_and_json_out_to_a_file(tmp_path: Path) -> None:
    for flag in ("--preset", "--size"):  # --size: the old name
        done = mora("bench", "--count-flops", flag, "tiny", "--workloads", "image_edit", "--json",
                    "--json-out", str(tmp_path / "flops.json"))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == json.loads((tmp_path / "flops.json").read_text())
    assert json.loads(mora("sops", "list", "--json").stdout)
    assert json.loads(mora("runs", "--out", str(tmp_path), "--json").stdout) == []


def test_eval_json_goes_to_stdout(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4")
    result = CliRunner().invoke(app, ["eval", str(video), "--metrics", "video_length", "--json", "--json-out",
                                      str(tmp_path / "out.json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((tmp_path / "out.json").read_text())
    assert "JSON written to" in result.stderr


@pytest.mark.parametrize("command", ["run", "chat", "batch", "runs", "serve", "mcp"])
def test_every_command_puts_runs_in_the_same_folder_and_reads_your_sop_folder(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=300)
    assert "--out" in result.output and "[default: runs]" in result.output, result.output
    if command != "runs":
        assert "--sops" in result.output and "~/.mora/sops" in result.output


def test_your_sop_folder_is_read_by_every_command(tmp_path: Path) -> None:
    data = yaml.safe_load((BUILTIN_DIR / "image_to_video.yaml").read_text())
    data["name"] = "my_zoom"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_zoom.yaml").write_text(yaml.safe_dump(data))
    env = {"MORA_SOPS": str(folder)}
    assert "my_zoom" in mora("sops", "list", env=env).stdout
    assert "my_zoom" in mora("sops", "show", "my_zoom", env=env).stdout
    assert f"ok {folder / 'my_zoom.yaml'}" in mora("sops", "validate", env=env).stdout
    old = mora("sops", "list", env={"MORA_SOPS": str(tmp_path / "none"), "MORA_SOPS_PATH": str(folder)})
    assert "my_zoom" in old.stdout and "MORA_SOPS_PATH is read for now" in old.stderr  # the old variable, noted
    os.environ["MORA_SOPS"] = str(folder)
    try:
        assert "my_zoom" in find_sops()
    finally:
        del os.environ["MORA_SOPS"]


def test_sops_validate_names_every_problem_of_a_file(tmp_path: Path) -> None:
    data = yaml.safe_load((BUILTIN_DIR / "text_to_video.yaml").read_text())
    data["steps"][1]["agent"] = "nobody"
    data["steps"][2]["args"].update(steps=0, colour="red")
    data["steps"][3]["args"]["videos"] = "{{ steps.later.outputs }}"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({**data, "name": "one", "steps": [
        {"id": "clip", "agent": "media_agent", "tool": "first_frame", "args": {"video": "{{ inputs.video }}"}}],
        "inputs": {"video": {"type": "video", "required": True}}, "outputs": {"result": "{{ inputs.video }}"}}))
    done = mora("sops", "validate", str(bad), str(one))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"invalid {bad}: {problem}" for problem in (
        "step 'image', field 'agent': unknown agent 'nobody' (agents: prompt_agent, story_agent, text_to_image_agent, "
        "image_to_image_agent, image_to_video_agent, video_connection_agent, media_agent, critic_agent)",
        "step 'segments', field 'args.steps': Input should be greater than or equal to 1",
        "step 'segments', field 'args.colour': tool 'image_to_video' has no parameter 'colour' (it has: image, "
        "prompt, negative_prompt, width, height, frames, steps, fps, guidance_scale, motion_bucket_id, "
        "noise_aug_strength, decode_chunk_size, seconds, base_frames, overlap_history, addnoise_condition, ar_step, "
        "causal_block_size, seed, backend, adapters, output)",
        "step 'join', field 'args.videos': 'steps.later' is not an earlier step")]
    assert done.stdout.strip() == f"ok {one} (one, 1 step)"
    run = mora("run", "a fox", "--task", "text_to_video", "--sops", str(tmp_path), "--preset", "tiny")
    assert run.returncode == 2 and f"(and 3 more: `mora sops validate {bad}` lists them)" in run.stderr
