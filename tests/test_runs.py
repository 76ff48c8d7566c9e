"""End-to-end runs of every SOP on the tiny preset, through the real group chat."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, make_video
from PIL import Image

from mora_agents.media import probe, read_video, sha256_file
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript
from mora_agents.sop.messages import StepRequest, StepResult


def run(tmp_path: Path, text: str, **kwargs):
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=kwargs.pop("seed", 7),
                         overrides=kwargs.pop("overrides", {}))
    return asyncio.run(run_request(text, options=options, **kwargs))


def contents(run_dir: Path, suffix: str) -> list:
    records = read_transcript(run_dir / "transcript.jsonl")
    return [r.to_message().content for r in records if r.type.endswith(suffix)]


def test_text_to_video_12s_chains_three_segments_from_last_frames(tmp_path: Path) -> None:
    outcome = run(tmp_path, "a red fox running through snow")
    run_dir = outcome.run_dir
    assert probe(outcome.result).frames == 7 + 6 + 6  # chained segments share their first frame
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["task"] == "text_to_video" and plan["inputs"]["prompt"] == "a red fox running through snow"
    results = {r.key: r for r in contents(run_dir, "[StepResult]")}
    requests = {r.key: r for r in contents(run_dir, "[StepRequest]")}
    assert results["enhance"].agent == "prompt_agent" and "photorealistic" in results["enhance"].output
    assert requests["enhance"].budget.model_dump() == {"tool": "text_to_image", "backend": "sdxl", "encoder": "CLIP",
                                                       "tokens": 77, "step": "image"}
    assert results["image"].arguments["prompt"] == results["enhance"].output
    assert {r.agent for r in results.values()} >= {"text_to_image_agent", "image_to_video_agent"}
    assert [k for k in results if k.startswith("segments#") or k == "segments"] == ["segments", "segments#1", "segments#2"]
    for i in (1, 2):
        previous = results["segments" if i == 1 else f"segments#{i - 1}"].output
        chain = results[f"segments.chain#{i}"]
        assert chain.tool == "last_frame" and chain.arguments["video"] == str(run_dir / previous.path)
        started_from = requests[f"segments#{i}"].media["image"][0]
        assert started_from.sha256 == chain.output.sha256 == sha256_file(run_dir / chain.output.path)
        frames, _ = read_video(run_dir / previous.path)
        assert np.array_equal(np.asarray(Image.open(run_dir / started_from.path)), frames[-1])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["noise"] is True and info["seed"] == 7
    assert info["backends"] == {"text_to_image": ["sdxl"], "image_to_video": ["svd-xt"]}
    assert requests["segments"].arguments["backend"] == "svd-xt"  # the default, named in the transcript
    tool_calls = [r for r in read_transcript(run_dir / "transcript.jsonl") if r.type == "ToolCallRequestEvent"]
    assert {r.source for r in tool_calls} >= {"text_to_image_agent", "image_to_video_agent", "media_agent"}


def test_image_to_video_edits_then_animates(tmp_path: Path) -> None:
    image = make_image(tmp_path / "cat.png")
    before = sha256_file(image)
    outcome = run(tmp_path, "the cat turns blue", images=[image], duration=4)
    results = {r.key: r for r in contents(outcome.run_dir, "[StepResult]")}
    assert results["edit"].agent == "image_to_image_agent" and results["edit"].arguments["instruction"] == "the cat turns blue"
    assert results["edit"].arguments["image"] == str(outcome.run_dir / "inputs" / "1-cat.png")
    assert probe(outcome.result).frames == 7  # one tiny segment: 7 frames at 2 fps, 3.5 s
    assert sha256_file(image) == before  # the person's file is never touched


def test_extend_video_appends_to_the_input(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", frames=14, size=(64, 48), fps=7)
    outcome = run(tmp_path, "extend it by 4 seconds", videos=[video])
    result = probe(outcome.result)
    assert (result.width, result.height, result.fps) == (64, 48, 7)
    assert result.frames == 14 + 24 - 1  # a tiny segment's 7 frames at 2 fps, resampled to 7 fps: 24
    original, _ = read_video(video)
    extended, _ = read_video(outcome.result)
    assert np.abs(extended[:14].astype(int) - original.astype(int)).mean() < 6  # lossy codec


def test_edit_video_matches_input_duration(tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4", frames=50, fps=7)  # 7.1 s: two segments
    outcome = run(tmp_path, "make it look like winter", videos=[video], overrides={"edit_image": {"steps": 2}})
    results = {r.key: r for r in contents(outcome.run_dir, "[StepResult]")}
    assert results["first"].tool == "first_frame" and results["edit"].arguments["steps"] == 2
    assert probe(outcome.result).frames == 7 + 6


@pytest.mark.parametrize("with_image", [False, True])
def test_digital_world(tmp_path: Path, with_image: bool) -> None:
    images = [make_image(tmp_path / "house.png")] if with_image else []
    outcome = run(tmp_path, "a village in minecraft", images=images)
    results = {r.key: r for r in contents(outcome.run_dir, "[StepResult]")}
    made = results["transfer" if with_image else "image"]
    assert set(results) & {"transfer", "image"} == {made.step}
    text = made.arguments["instruction" if with_image else "prompt"]
    assert text == "a village in minecraft In digital world style"
    assert probe(outcome.result).frames == 7


def test_transcript_round_trips_to_autogen_messages(tmp_path: Path) -> None:
    outcome = run(tmp_path, "a fox", duration=3)
    records = read_transcript(outcome.run_dir / "transcript.jsonl")
    assert records[0].type == "StructuredMessage[UserRequest]" and records[-1].type == "StructuredMessage[RunFinished]"
    assert [r.seq for r in records] == list(range(len(records)))
    for record in records:
        message = record.to_message()
        assert message.type == record.type and dict(message.dump()) == record.message
        assert record.duration >= 0 and record.elapsed >= 0
    assert isinstance(records[3].to_message().content, (StepRequest, StepResult))


def test_a_relative_out_folder_works_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = RunOptions(preset="tiny", device="cpu", out=Path("runs"), seed=7)
    outcome = asyncio.run(run_request("a red fox running through snow", duration=3, options=options))
    assert outcome.result.is_absolute() and outcome.result.is_relative_to(tmp_path / "runs")
    assert probe(outcome.result).frames == 7


def test_memory_profile_24gb_gives_the_same_video(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    resident = run(tmp_path / "a", "a red fox running through snow", duration=3)
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "b", seed=7, memory_profile="24gb")
    offloaded = asyncio.run(run_request("a red fox running through snow", duration=3, options=options))
    assert json.loads((offloaded.run_dir / "run.json").read_text())["memory_profile"] == "24gb"
    # the same computation up to floating-point rounding (chunked feed-forwards), then H.264 encoding
    a, b = (read_video(outcome.result)[0].astype(float) for outcome in (resident, offloaded))
    assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 40


def test_out_of_gpu_memory_names_the_step_the_need_and_the_profile(tmp_path: Path, monkeypatch) -> None:
    import torch
    from typer.testing import CliRunner

    from mora_agents.cli import app

    from mora_agents.pipelines import loading

    load_pipeline = loading.load_pipeline

    def out_of_memory(key: str):
        if key == "svd":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity")
        return load_pipeline(key)

    monkeypatch.setattr(loading, "load_pipeline", out_of_memory)
    result = CliRunner().invoke(app, ["run", "a red fox", "--preset", "tiny", "--device", "cpu", "--duration", "3",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("out of GPU memory in step 'segments' (it needed 20.00 GiB more) under memory profile 'resident': "
            "`mora resume RUN --memory-profile 24gb`") in " ".join(result.output.split())
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "artifacts" / "image.png").is_file()  # the finished steps are kept
