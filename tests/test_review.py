"""Human review at the SOP's review points: next, repeat, edit, stop, the repeat cap, and waiting runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mora_agents.errors import MoraError
from mora_agents.media import sha256_file
from mora_agents.runs.catalog import read_info, run_status
from mora_agents.runs.review import TextReviewer, parse_decision, scripted
from mora_agents.runs.runner import RunOptions, resume_run, run_request
from mora_agents.runs.transcript import read_transcript
from mora_agents.sop.messages import ReviewRequest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FOX = "a red fox running through snow"


def run(tmp_path: Path, reviewer, max_repeats: int = 3):
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=7, max_repeats=max_repeats)
    return asyncio.run(run_request(FOX, duration=3, options=options, reviewer=reviewer))


def messages(run_dir: Path, suffix: str) -> list:
    return [r.to_message().content for r in read_transcript(run_dir / "transcript.jsonl") if r.type.endswith(suffix)]


def only_run(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_edit_repeat_edit_next_are_recorded_and_used_downstream(tmp_path: Path) -> None:
    outcome = run(tmp_path, scripted(["edit a blue fox on ice", "repeat", "edit a green fox", "next"]))
    decisions = messages(outcome.run_dir, "[ReviewDecision]")
    assert [(d.step, d.decision, d.text, d.by) for d in decisions] == [
        ("enhance", "edit", "a blue fox on ice", "script"), ("image", "repeat", None, "script"),
        ("image", "edit", "a green fox", "script"), ("image", "next", None, "script")]
    images = [r for r in messages(outcome.run_dir, "[StepResult]") if r.step == "image"]
    assert [r.output.path for r in images] == ["artifacts/image.png", "artifacts/image-r1.png", "artifacts/image-r2.png"]
    # every take is kept; the repeat has a new seed and a different image; the edit rewrote the prompt
    assert images[0].arguments["prompt"] == images[1].arguments["prompt"] == "a blue fox on ice"
    assert images[0].arguments["seed"] != images[1].arguments["seed"]
    assert images[0].output.sha256 != images[1].output.sha256
    assert images[2].arguments["prompt"] == "a green fox"
    assert all((outcome.run_dir / r.output.path).is_file() for r in images)
    segments = next(r for r in messages(outcome.run_dir, "[StepRequest]") if r.step == "segments")
    assert segments.arguments["image"].endswith("artifacts/image-r2.png")  # the accepted take goes on


def test_repeat_cap_leaves_only_next_or_stop(tmp_path: Path) -> None:
    outcome = run(tmp_path, scripted(["next", "repeat", "repeat", "repeat", "next"]), max_repeats=2)
    requests = [r for r in messages(outcome.run_dir, "[ReviewRequest]") if r.step == "image"]
    assert [r.repeats_left for r in requests] == [2, 1, 0]
    assert requests[-1].options == ["next", "stop"]
    assert len([r for r in messages(outcome.run_dir, "[StepResult]") if r.step == "image"]) == 3
    assert [d.decision for d in messages(outcome.run_dir, "[ReviewDecision]")][-1] == "next"


def test_stop_ends_the_run_without_a_result(tmp_path: Path) -> None:
    with pytest.raises(MoraError, match="stopped by script at the review of step 'enhance'"):
        run(tmp_path, scripted(["stop"]))
    run_dir = only_run(tmp_path)
    assert read_info(run_dir)["status"] == "stopped" and not (run_dir / "result.mp4").exists()


def test_without_review_every_decision_is_automatic_and_recorded(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=7)
    outcome = asyncio.run(run_request(FOX, duration=3, options=options))
    assert [(d.step, d.decision, d.by) for d in messages(outcome.run_dir, "[ReviewDecision]")] == [
        ("enhance", "next", "auto"), ("image", "next", "auto")]


def test_a_run_left_waiting_for_review_is_resumed_at_that_review(tmp_path: Path) -> None:
    with pytest.raises(MoraError, match="waits for review"):
        run(tmp_path, scripted(["next"]))  # the script runs out at the image's review
    run_dir = only_run(tmp_path)
    info = read_info(run_dir)
    assert run_status(info) == "waiting for review" and info["pending_review"]["step"] == "image"
    image = run_dir / "artifacts" / "image.png"
    made = sha256_file(image)
    outcome = asyncio.run(resume_run(run_dir, reviewer=scripted(["next"])))
    assert outcome.result.is_file() and sha256_file(image) == made
    assert len([r for r in messages(run_dir, "[StepResult]") if r.step == "image"]) == 1
    notes = [r.type for r in read_transcript(run_dir / "transcript.jsonl") if r.kind == "note"]
    assert notes == ["Interrupted", "Resumed"]


def request(options: list[str], repeats_left: int = 2) -> ReviewRequest:
    return ReviewRequest(step="image", agent="text_to_image_agent", output="x", options=options,
                         repeats_left=repeats_left, edit="prompt", text="a fox")


def test_parse_decision_accepts_words_letters_and_edits() -> None:
    options = ["next", "repeat", "edit", "stop"]
    assert parse_decision("", request(options), "me").decision == "next"
    assert parse_decision("r", request(options), "me").decision == "repeat"
    edit = parse_decision("edit: a blue fox", request(options), "me")
    assert (edit.decision, edit.text, edit.by) == ("edit", "a blue fox", "me")
    with pytest.raises(ValueError, match="edit needs the new prompt"):
        parse_decision("edit", request(options), "me")
    with pytest.raises(ValueError, match=r"not an option here: choose next, stop \(no repeats left\)"):
        parse_decision("repeat", request(["next", "stop"], repeats_left=0), "me")


def test_text_reviewer_asks_again_after_an_invalid_answer() -> None:
    prompts: list[str] = []
    answers = iter(["maybe", "stop"])

    def input_func(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    decision = asyncio.run(TextReviewer(input_func)(request(["next", "repeat", "edit", "stop"])))
    assert decision.decision == "stop" and decision.by == "human"
    assert prompts[1].startswith("'maybe' is not an option here")


def test_async_input_functions_work_like_autogens_user_proxy() -> None:
    async def input_func(prompt: str, cancellation_token) -> str:
        return "repeat"

    decision = asyncio.run(TextReviewer(input_func, "web")(request(["next", "repeat", "edit", "stop"])))
    assert (decision.decision, decision.by) == ("repeat", "web")


def test_saved_state_holds_the_execution_with_its_review_history(tmp_path: Path) -> None:
    outcome = run(tmp_path, scripted(["next", "edit a blue fox", "next"]))
    state = json.loads((outcome.run_dir / "state.json").read_text())
    execution = state["team"]["agent_states"]["conductor"]["agent_state"]["execution"]
    assert execution["repeats"] == {"image": 1} and execution["edits"] == {"image": "a blue fox"}
    assert execution["sop"]["name"] == "text_to_video" and execution["seed"] == 7
    # the last checkpoint is the last step result before the end (the join finishes the run)
    assert [r["step"] for r in execution["results"]] == ["enhance", "image", "segments"]
