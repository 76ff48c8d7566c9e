"""Prompts that fit their encoder: the prompt agent is given the token budget of the tool and backend that read its
answer, and its answer is checked against it; a prompt cut anyway is never silent (a note in the step's result)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, follow_step, text_reply

from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript
from mora_agents.settings import collect_notes, use_settings
from mora_agents.sop.calls import prompt_budget
from mora_agents.sop.loader import get_sop
from mora_agents.tools import text_to_image
from mora_agents.tools.text_budget import prompt_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LONG = ("A red fox running through deep fresh snow in a quiet birch forest, its breath steaming in the cold air, "
        "photorealistic, cinematic, highly detailed.")
"""147 characters: 126 tokens of the tiny preset's character-level CLIP tokenizer, whose budget is 77."""


def test_the_budget_is_the_smallest_encoder_that_reads_the_answer() -> None:
    assert prompt_budget(get_sop("text_to_video"), "enhance", {}).model_dump() == {
        "tool": "text_to_image", "backend": "sdxl", "encoder": "CLIP", "tokens": 77, "step": "image"}
    wan = get_sop("text_to_video_wan")  # FLUX.1 [schnell]'s T5 (256) reads it, and Wan's UMT5 (512)
    assert prompt_budget(wan, "enhance", {}).tokens == 256
    sdxl = prompt_budget(wan, "enhance", {"text_to_image": {"backend": "sdxl"}})
    assert (sdxl.backend, sdxl.tokens, sdxl.step) == ("sdxl", 77, "image")
    assert prompt_budget(get_sop("text_to_video"), "image", {}) is None  # no text step reads it


def _run(tmp_path: Path, replies: list, monkeypatch) -> tuple[Path, FakeOpenAI]:
    plan = {"task": "text_to_video", "prompt": "a red fox", "duration": 3, "reason": "scripted"}
    with FakeOpenAI([text_reply(json.dumps(plan)), *replies, follow_step, follow_step]) as server:
        monkeypatch.setenv("MORA_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("MORA_LLM_MODEL", "fake-model")
        options = RunOptions(preset="tiny", device="cpu", out=tmp_path, seed=4)
        outcome = asyncio.run(run_request("a red fox", options=options))
    return outcome.run_dir, server


def _results(run_dir: Path) -> dict:
    records = read_transcript(run_dir / "transcript.jsonl")
    return {r.to_message().content.key: r.to_message().content for r in records if r.type.endswith("[StepResult]")}


def test_an_answer_over_budget_goes_back_to_the_model(tmp_path: Path, monkeypatch) -> None:
    run_dir, server = _run(tmp_path, [text_reply(LONG), text_reply("A red fox in deep snow, cinematic.")], monkeypatch)
    asked = server.requests[1]["body"]["messages"][-1]["content"]
    assert "read by text_to_image (sdxl), whose CLIP text encoder reads at most 77 tokens" in asked
    feedback = server.requests[2]["body"]["messages"][-1]["content"]
    assert "the answer has 126 CLIP tokens, but text_to_image (sdxl) reads 77: shorten it" in feedback
    assert '{"tokens": 126, "budget": 77}' in feedback
    results = _results(run_dir)
    assert results["enhance"].output == "A red fox in deep snow, cinematic." and not results["enhance"].notes
    assert not results["image"].notes


def test_a_prompt_cut_anyway_is_recorded(tmp_path: Path, monkeypatch) -> None:
    run_dir, _ = _run(tmp_path, [text_reply(LONG)] * 3, monkeypatch)
    results = _results(run_dir)
    assert results["enhance"].output == LONG
    assert results["enhance"].notes == [
        "over its budget after 3 tries: the answer has 126 CLIP tokens, but text_to_image (sdxl) reads 77: shorten it"]
    [note] = results["image"].notes
    assert note.startswith("prompt: 126 CLIP tokens, but sdxl reads 77; the end is dropped: ")
    assert "c i n e m a t i c" in note or "cinematic" in note.replace(" ", "")  # the style words at the end
    shown = (run_dir / "transcript.jsonl").read_text()
    assert "the end is dropped" in shown


def test_the_offline_prompt_agent_writes_within_the_budget(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path, seed=5)
    run_dir = asyncio.run(run_request("a red fox running through snow at sunset", duration=3, options=options)).run_dir
    results = _results(run_dir)
    with use_settings(preset="tiny"):
        assert prompt_tokens("text_to_image", "sdxl", results["enhance"].output) <= 77
    assert "photorealistic" in results["enhance"].output  # the style kept; camera and lighting left out first
    assert not results["image"].notes and not results["enhance"].notes


def test_the_library_api_notes_a_cut_prompt(tiny, caplog) -> None:
    with collect_notes() as notes:
        text_to_image(LONG, seed=1)
    assert len(notes) == 1 and notes[0].startswith("prompt: 126 CLIP tokens, but sdxl reads 77")
    with caplog.at_level(logging.WARNING, logger="mora_agents"):
        text_to_image(LONG, seed=1)
    assert any("the end is dropped" in record.message for record in caplog.records)
    with collect_notes() as notes:
        text_to_image(LONG, seed=1, backend="flux-schnell")  # T5 reads 256 tokens
    assert notes == []
