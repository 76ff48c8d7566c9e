from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import make_image, make_video
from fake_openai import FakeOpenAI, follow_step, text_reply, tool_call_reply
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from typer.testing import CliRunner

import mora_agents
from mora_agents.batch import BatchRequest
from mora_agents.batch.display import results_table
from mora_agents.batch.jobs import BatchResult
from mora_agents.cli import app
from mora_agents.console import DescriptionColumn, make_console
from mora_agents.data import PendingSet, Vote
from mora_agents.data.sets import Candidate
from mora_agents.runs.transcript import Record
from mora_agents.ui.data import TerminalSetReview
from mora_agents.ui.terminal import TerminalUI

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
                  "a smooth transition", "--out", str(tmp_path / "runs"), "-v")
    assert result.exit_code == 0, result.output
    assert "video_connection_agent ToolCallRequestEvent tool call connect_videos(video_a='inputs/" in result.output
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = mora("run", "--task", "connect_videos", "--video", str(a), "--video", str(b), "join",
                  "--out", str(tmp_path / "full"))
    assert result.exit_code == 2
    # both models SEINE needs, each with its command
    assert "2 models not on this machine" in result.output and "hf download Vchitect/SEINE seine.pt" in result.output
    assert "hf download CompVis/stable-diffusion-v1-4   # model 'sd_v1_4'" in result.output


HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[H\x1b[31mred\x1b[0m \x9b2J[bold]markup[/bold] :100:\r\x00."
"""What a model may write: a title change, a screen clear, colours (7-bit and C1), markup, an emoji code."""
AS_WRITTEN = "red [bold]markup[/bold] :100:."


def printed(show: Callable[[Console], object]) -> str:
    """What `show` prints on one of the package's consoles (into a file: no styles of its own)."""
    buffer = io.StringIO()
    show(make_console(file=buffer, width=200))
    return buffer.getvalue()


def test_text_from_models_reaches_the_terminal_without_control_sequences_markup_or_emoji(tmp_path: Path) -> None:
    record = Record(seq=3, time="", elapsed=0.0, duration=0.0, kind="note", source="prompt_agent", type="Note",
                    message={"text": HOSTILE})
    pending = PendingSet(id="p001", prompt=HOSTILE, enhanced_prompt=HOSTILE + " more",
                         candidates=[Candidate(number=1, seed=3, run_dir="r", status="finished")],
                         videos={1: tmp_path / "c [red]1[/red] :100:.mp4"}, frames=4,
                         votes=[Vote(judge="judge :100:", kind="mllm", criterion=1, ranking=[1], reason=HOSTILE)])
    result = BatchResult(BatchRequest("a fox", label="requests.jsonl:100"), "requests.jsonl:100", status="failed",
                         error=HOSTILE)
    outputs = {
        "mora run / chat": printed(lambda c: TerminalUI(c).show(record, tmp_path)),
        "mora data review": printed(lambda c: TerminalSetReview(c).show(pending)),
        "mora batch": printed(lambda c: c.print(results_table([result], tmp_path / "out [x] :100:"))),
    }
    for where, output in outputs.items():
        assert AS_WRITTEN in output, (where, output)
        assert not any(c in output for c in "\x1b\x07\x9b\r\x00💯"), (where, output)
    assert "c [red]1[/red] :100:.mp4" in outputs["mora data review"] and "requests.jsonl:100" in outputs["mora batch"]

    progress = Progress(DescriptionColumn())
    task = progress.add_task(f"[dim]now:[/] {escape(HOSTILE)}")
    assert DescriptionColumn().render(progress.tasks[task]).plain == f"now: {AS_WRITTEN}"


def _own_console(node: ast.AST) -> bool:
    """A call that makes a console or renders text past the factory's rules: `Console(...)`, a progress column of
    the description, `Text.from_markup` with its emoji codes."""
    if not isinstance(node, ast.Call):
        return False
    name = getattr(node.func, "id", getattr(node.func, "attr", None))
    first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
    emoji_off = any(k.arg == "emoji" and getattr(k.value, "value", True) is False for k in node.keywords)
    return (name == "Console" or name == "TextColumn" and "{task.description}" in str(first)
            or name == "from_markup" and not emoji_off)


def test_every_console_is_the_factorys() -> None:
    """Consoles made anywhere else would print emoji codes and control sequences again."""
    package = Path(mora_agents.__file__).parent
    made = [f"{path.relative_to(package)}:{node.lineno}" for path in package.rglob("*.py") if path.name != "console.py"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if _own_console(node)]
    assert made == [], f"use mora_agents.console (make_console, DescriptionColumn): {made}"


def test_file_names_in_errors_are_printed_as_written(tmp_path: Path) -> None:
    requests = tmp_path / "requests [bold] :100:.jsonl"
    requests.write_text("not json\n" * 100)
    result = mora("batch", str(requests), "--out", str(tmp_path / "out"), "--preset", "tiny")
    assert result.exit_code == 2
    assert f"mora: error: {requests}:100: not valid JSON" in result.output and "💯" not in result.output


FORKED_MAIN = """
import os, sys, tempfile
import torch  # the quick exit is on once torch is loaded
from mora_agents.cli import main
kept = tempfile.TemporaryDirectory()
pid = os.fork()
if pid == 0:
    sys.argv = ["mora", "sops", "list"]
    try:
        main()
    finally:
        os._exit(0)
os.waitpid(pid, 0)
print(os.path.isdir(kept.name))
"""


def test_main_in_a_forked_child_leaves_the_parents_exit_handlers_alone(tmp_path: Path) -> None:
    """`mora`'s quick exit runs the exit handlers itself; a child forked after the import inherited its parent's
    (here a temporary folder's clean-up), which are not its to run."""
    script = tmp_path / "fork.py"
    script.write_text(FORKED_MAIN)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "True", done.stdout
