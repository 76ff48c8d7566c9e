from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_image, make_video
from fake_openai import FakeOpenAI, follow_step, text_reply, tool_call_reply
from typer.testing import CliRunner

from mora_agents.cli import app

runner = CliRunner()


def mora(*args: str):
    return runner.invoke(app, list(args))


def test_done_when_command_writes_result_and_transcript(tmp_path: Path) -> None:
    result = mora("run", "--preset", "tiny", "a red fox running through snow", "--out", str(tmp_path), "--seed", "1")
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "result.mp4").is_file() and "noise" in result.output
    shown = mora("transcript", str(run_dir))
    assert shown.exit_code == 0
    for expected in ("planner", "plan: task text_to_video", "prompt_agent", "result of enhance",
                     "text_to_image_agent", "tool call text_to_image", "image_to_video_agent", "tool call image_to_video"):
        assert expected in shown.output
    raw = mora("transcript", str(run_dir), "--json")
    assert [json.loads(line)["seq"] for line in raw.output.splitlines()][:3] == [0, 1, 2]


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--image", str(d / "missing.png")], "no such image file"),
    (lambda d: ["--image", str((d / "broken.png").write_bytes(b"\x89PNG....") and d / "broken.png")], "not a readable image"),
    (lambda d: ["--video", str((d / "notes.mp4").write_text("just text") and d / "notes.mp4")], "not a readable video"),
    (lambda d: ["--video", str((d / "empty.mp4").touch() or d / "empty.mp4")], "empty file"),
    (lambda d: ["--video", str(make_image(d / "a.png"))], "is an image, not a video"),
    (lambda d: ["--video", str(make_video(d / "one.mp4", frames=1))], "has 1 frame"),
    (lambda d: ["--task", "paint"], "--task paint: unknown task"),
    (lambda d: ["--task", "text_to_video", "--duration", "500"], "out of range"),
    (lambda d: ["--duration", "500"], "--duration (any task): 500 is out of range"),
    (lambda d: ["--set", "image_to_video.motion=3"], "no such parameter"),
    (lambda d: ["--set", "image_to_video.frames=many"], "frames=many"),
    (lambda d: ["--set", "nothing"], "expected TOOL.PARAM=VALUE"),
    (lambda d: ["--preset", "huge"], "--preset huge: unknown"),
    (lambda d: ["--image", str(make_image(d / "a.png")), "--task", "extend_video"], "attached but task 'extend_video'"),
])
def test_bad_input_exits_2_with_one_line_and_no_run_directory(tmp_path: Path, make_args, message: str) -> None:
    files = tmp_path / "files"
    files.mkdir()
    out = tmp_path / "runs"
    result = mora("run", "--preset", "tiny", "a fox", "--out", str(out), *make_args(files))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_full_preset_without_weights_fails_fast_naming_the_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = mora("run", "a fox", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "stabilityai/stable-diffusion-xl-base-1.0" in result.output and "hf download" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_malformed_tool_calls_go_back_to_the_model_then_the_run_fails_cleanly(tmp_path: Path, monkeypatch) -> None:
    plan = {"task": "text_to_video", "prompt": "a fox", "duration": 3, "reason": "scripted"}
    replies = [text_reply(json.dumps(plan)), text_reply("A fox in the snow, golden light.")]
    replies += [tool_call_reply("text_to_image", "{not json"),
                tool_call_reply("paint_picture", '{"prompt": "x"}'),
                tool_call_reply("text_to_image", '{"prompt": "x", "steps": "many"}')]
    with FakeOpenAI(replies) as server:
        monkeypatch.setenv("MORA_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("MORA_LLM_MODEL", "fake-model")
        result = mora("run", "--preset", "tiny", "a fox", "--out", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "no valid answer in 3 tries" in result.output and "Traceback" not in result.output
    feedback = [m["content"] for m in server.requests[-1]["body"]["messages"] if m["role"] == "tool"]
    assert "not valid JSON" in feedback[0] and "unknown tool 'paint_picture'" in feedback[1]
    (run_dir,) = tmp_path.iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "step 'image'" in info["error"]
    assert "no valid answer" in (run_dir / "transcript.jsonl").read_text()


def test_a_rejected_tool_call_is_retried_and_the_run_finishes(tmp_path: Path, monkeypatch) -> None:
    plan = {"task": "text_to_video", "prompt": "a fox", "duration": 3, "reason": "scripted"}
    outside = tool_call_reply("text_to_image", json.dumps({"prompt": "x", "output": "/tmp/elsewhere.png"}))
    replies = [text_reply(json.dumps(plan)), text_reply("A fox in the snow."), outside, follow_step, follow_step]
    with FakeOpenAI(replies) as server:
        monkeypatch.setenv("MORA_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("MORA_LLM_MODEL", "fake-model")
        result = mora("run", "--preset", "tiny", "a fox", "--out", str(tmp_path), "--seed", "2")
    assert result.exit_code == 0, result.output
    assert "outside the run directory" in server.requests[3]["body"]["messages"][-1]["content"]
    assert not Path("/tmp/elsewhere.png").exists()
    assert [r["body"]["tools"][0]["function"]["name"] for r in server.requests[2:]] == ["text_to_image"] * 2 + ["image_to_video"]


def test_connect_command_and_its_missing_weights_message(tmp_path: Path, monkeypatch) -> None:
    a, b = make_video(tmp_path / "a.mp4", seed=1), make_video(tmp_path / "b.mp4", seed=2)
    result = mora("run", "--task", "connect_videos", "--video", str(a), "--video", str(b), "--preset", "tiny",
                  "a smooth transition", "--out", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "video_connection_agent ToolCallRequestEvent tool call connect_videos" in result.output
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = mora("run", "--task", "connect_videos", "--video", str(a), "--video", str(b), "join",
                  "--out", str(tmp_path / "full"))
    assert result.exit_code == 2
    assert "Vchitect/SEINE" in result.output and "hf download Vchitect/SEINE seine.pt" in result.output
