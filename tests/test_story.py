"""Stories: the storyboard (checked, edited by a person), reference sheets reaching every keyframe, best of N with
judges (fake MLLM servers that agree, disagree or fail; a person overruling them), the joins, the consistency
measures on constructed clips, and a story killed between shots, resumed, and revised after a resume."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import signal_when_asked
from fake_openai import FakeOpenAI, http_error, text_reply
from PIL import Image
from typer.testing import CliRunner

from autogen_core import CancellationToken
from autogen_core.models import ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient

from mora_agents.agents.messages import RequestMessage, StepRequestMessage
from mora_agents.agents.planner import PlannerAgent
from mora_agents.agents.step_agent import ModelAgent
from mora_agents.cli import app
from mora_agents.eval import Evaluator, load_target
from mora_agents.eval.backends import Backends
from mora_agents.eval.story import Similarity, story_measures
from mora_agents.eval.weights import ENV_VAR, WeightStore
from mora_agents.llm.offline import OfflineChatCompletionClient
from mora_agents.llm.prompts import STORY_AGENT_SYSTEM
from mora_agents.llm.storyboard import Storyboard, edit_storyboard, write_storyboard
from mora_agents.media import read_video, write_video
from mora_agents.runs.catalog import read_info
from mora_agents.runs.review import parse_decision, scripted, storyboard_editor
from mora_agents.runs.runner import RunOptions, prepare_run, resume_run, run_request
from mora_agents.runs.transcript import read_transcript
from mora_agents.settings import collect_details
from mora_agents.sop.formats import display
from mora_agents.sop.loader import find_sops
from mora_agents.sop.messages import ReviewRequest, StepRequest, UserRequest
from mora_agents.tools import keyframe, pick_best

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STORY = "a story: a fox and an owl meet in a snowy forest"
FAST = {"image_to_video": {"frames": 4}}
"""Four-frame clips: the story's shape, not its length, is under test."""


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch) -> None:
    """No weights (the labelled fallbacks measure) and no configured judges (the metric judges pick)."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "no-weights"))
    monkeypatch.delenv("MORA_JUDGES", raising=False)


def options(tmp_path: Path, seed: int = 5, candidates: int = 1) -> RunOptions:
    return RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=seed, overrides=FAST,
                      candidates=candidates)


def contents(run_dir: Path, suffix: str) -> list:
    return [r.to_message().content for r in read_transcript(run_dir / "transcript.jsonl") if r.type.endswith(suffix)]


def tool_runs(run_dir: Path, tool: str) -> list[dict]:
    return [r.arguments for r in contents(run_dir, "[StepResult]") if r.tool == tool]


# -- the storyboard --------------------------------------------------------------------------------------------


def test_the_storyboard_is_checked_viewed_and_edited() -> None:
    board = write_storyboard("a story in four shots about a robot and a cat in the city", shots=3, duration=8)
    assert [c.name for c in board.characters] == ["Robot", "Cat"] and len(board.shots) == 4  # the request's count
    assert [s.name for s in board.settings] == ["Street"] and board.shots[0].duration == 2.0
    view = board.view()
    assert [entry["name"] for entry in view["cast"]] == ["Robot", "Cat", "Street"]
    shot = view["shots"][1]  # one character: its sheet and the setting's
    assert shot["cast"] == ["Robot", "Street"] and "Robot: a robot" in shot["prompt"]
    assert "Street: a narrow old-town street" in shot["prompt"] and len(view["transitions"]) == 3

    edited = edit_storyboard(board, "shot 2 camera: close-up; shot 3 transition: seine; remove 4; "
                                    "add after 1: the cat waves; character Cat: a black cat with a red collar")
    assert [s.description for s in edited.shots][:2] == [board.shots[0].description, "the cat waves"]
    assert edited.shots[2].camera == "close-up" and edited.shots[3].transition == "seine" and len(edited.shots) == 4
    assert edited.characters[1].description == "a black cat with a red collar"
    assert edit_storyboard(board, edited.to_yaml()) == edited  # a whole storyboard, as a person edits it
    for edit, problem in [("shot 9: x", "there is no shot 9"),
                          ("shot 1 characters: Robot, Dog", "names the character 'Dog', who is not among"),
                          ("setting Robot: a lab", "the name 'robot' is used twice"),
                          ("shot 1 transition: wipe", "transition"),
                          ("paint it blue", "is not an edit of the storyboard")]:
        with pytest.raises(ValueError, match=problem):
            edit_storyboard(board, edit)


def test_a_person_s_storyboard_edit_is_checked_before_it_is_taken() -> None:
    board = write_storyboard(STORY)
    request = ReviewRequest(step="storyboard", agent="story_agent", output=board.model_dump_json(),
                            options=["next", "repeat", "edit", "stop"], repeats_left=3, edit="output",
                            text=display("storyboard", board.model_dump_json()), format="storyboard")
    assert parse_decision("edit shot 1 camera: close-up", request, "me").text == "shot 1 camera: close-up"
    with pytest.raises(ValueError, match=r"no shot 7[\s\S]*an edit of the storyboard"):
        parse_decision("edit shot 7: gone", request, "me")


def _openai_client(base_url: str) -> OpenAIChatCompletionClient:
    info = ModelInfo(vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True)
    return OpenAIChatCompletionClient(model="fake-model", base_url=base_url, api_key="test", model_info=info)


def test_a_malformed_storyboard_is_refused_and_asked_again(tmp_path: Path) -> None:
    """Through an OpenAI-compatible server: the schema goes as structured output; an answer that names an undefined
    character goes back with the error; three bad answers fail the step in one line."""
    board = write_storyboard(STORY)
    bad = board.model_dump()
    bad["shots"][1]["characters"] = ["Bear"]
    request = StepRequest(step="storyboard", agent="story_agent", tool=None, format="storyboard",
                          arguments={"request": STORY, "shots": 3, "duration": 12})

    def answer(replies: list[dict]):
        with FakeOpenAI(replies) as server:
            agent = ModelAgent("story_agent", "writes storyboards", tmp_path, _openai_client(server.base_url),
                               STORY_AGENT_SYSTEM)
            message = StepRequestMessage(content=request, source="conductor")
            return asyncio.run(agent.on_messages([message], CancellationToken())).chat_message.content, server

    result, server = answer([text_reply(json.dumps(bad)), text_reply(board.model_dump_json())])
    assert Storyboard.model_validate_json(result.output) == board
    first, retry = (r["body"] for r in server.requests)
    assert first["response_format"]["type"] == "json_schema" and '"storyboard"' in first["messages"][-1]["content"]
    assert "shot 2 names the character 'Bear', who is not among the characters (Fox, Owl)" in \
        retry["messages"][-1]["content"]
    failed, _ = answer([text_reply("a fox meets an owl")] * 3)
    assert failed.error.startswith("the model gave no valid answer in 3 tries; last error:")


def test_a_story_request_is_planned_as_a_story() -> None:
    sops = {name: sop for name, (sop, _) in find_sops().items()}
    request = RequestMessage(content=UserRequest(text="a short film in three scenes: a knight meets a dragon"),
                             source="user")
    agent = PlannerAgent(OfflineChatCompletionClient(), sops)
    plan = asyncio.run(agent.on_messages([request], CancellationToken())).chat_message.content
    assert plan.task == "story" and plan.inputs == {"prompt": "a short film in three scenes: a knight meets a dragon"}


@pytest.mark.parametrize("backend", ["flux-kontext", "sdxl-ip-adapter"])
def test_the_reference_pictures_steer_the_keyframe(tiny, colours, backend: str) -> None:
    """Both backends read the references (Kontext on its canvas, IP-Adapter through the image features): other
    references, another picture; the same, the same picture."""
    (red, green, blue), _ = colours

    def draw(*references: str) -> np.ndarray:
        return np.asarray(Image.open(keyframe("the fox in the wood", list(references), backend=backend, seed=4).path))

    assert np.array_equal(draw(red, green), draw(red, green))
    assert not np.array_equal(draw(red, green), draw(blue, green))


def test_candidates_out_of_range_are_refused_before_any_run(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["run", STORY, "--preset", "tiny", "--device", "cpu", "--candidates", "0",
                                   "--out", str(tmp_path / "runs")])
    assert run.exit_code == 2 and "--candidates 0: a whole number from 1 to 8" in run.output
    assert not list((tmp_path / "runs").glob("*"))
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"text": STORY, "candidates": 9}) + "\n")
    batch = CliRunner().invoke(app, ["batch", str(requests), "--out", str(tmp_path / "batch"), "--preset", "tiny"])
    assert batch.exit_code == 2 and f"{requests}:1: --candidates 9: a whole number from 1 to 8" in batch.output


# -- a whole story ---------------------------------------------------------------------------------------------


def test_a_three_shot_story_with_its_storyboard_reviewed(tmp_path: Path) -> None:
    """The person edits the storyboard's transitions and a camera; every keyframe is drawn from the sheets of its
    shot's cast; the shots are joined by a SEINE transition and a first-last-frame clip; run.json and `mora eval`
    measure it."""
    reviewer = scripted(["edit shot 2 transition: seine; shot 3 transition: flf2v; shot 3 camera: close-up",
                         *["next"] * 6])
    outcome = asyncio.run(run_request(STORY, options=options(tmp_path), reviewer=reviewer))
    run_dir = outcome.run_dir
    assert read_info(run_dir)["task"] == "story"
    review = contents(run_dir, "[ReviewRequest]")[0]
    assert review.format == "storyboard" and review.text.startswith("title:") and "characters:" in review.text
    decisions = contents(run_dir, "[ReviewDecision]")
    assert [(d.step, d.decision) for d in decisions] == [("storyboard", "edit"), *[("sheets", "next")] * 3,
                                                         *[("keyframes", "next")] * 3]
    sheets = {r.arguments["prompt"].split(":")[0].removeprefix("Character reference sheet of ")
              .removeprefix("Reference picture of "): r.output.path for r in contents(run_dir, "[StepResult]")
              if r.step == "sheets"}
    assert sheets == {"Fox": "artifacts/sheets.png", "Owl": "artifacts/sheets-1.png",
                      "Snowfield": "artifacts/sheets-2.png"}
    calls = tool_runs(run_dir, "keyframe")
    assert [[Path(p).name for p in call["references"]] for call in calls] == [
        ["sheets.png", "sheets-1.png", "sheets-2.png"], ["sheets.png", "sheets-2.png"],
        ["sheets.png", "sheets-1.png", "sheets-2.png"]]  # shot 2 has the fox alone
    assert all(call["backend"] == "flux-kontext" and "Fox: a fox" in call["prompt"] for call in calls)
    (join,) = tool_runs(run_dir, "join_clips")
    assert join["transitions"] == ["seine", "flf2v"]
    frames, _ = read_video(outcome.result)
    assert len(frames) == 3 * 4 + 16 + 9  # three 4-frame shots, a SEINE transition, a Wan 2.1 FLF2V clip
    story = read_info(run_dir)["story"]
    assert story["storyboard"]["shots"][2]["camera"] == "close-up" and story["clips"][0] == "artifacts/clips.mp4"
    assert [(j["after_shot"], j["via"]) for j in story["joins"]] == [(1, "seine"), (2, "flf2v")]
    assert story["across_shots"]["Owl"]["shots"] == [1, 3] and len(story["within_shot"]) == 3
    assert story["within_shot"][0]["subject_consistency"]["backend"] == "fallback:ssim"
    assert story["adherence"][0]["value"] is None and "ViCLIP" in story["adherence"][0]["reason"]
    again = Evaluator(["subject_consistency"]).evaluate(load_target(run_dir)).story  # `mora eval RUN`
    assert again["across_shots"] == story["across_shots"] and again["joins"] == story["joins"]


# -- best of N -------------------------------------------------------------------------------------------------


def shown_colours(body: dict) -> dict[int, np.ndarray]:
    """The mean colour of each candidate a judge was shown, by the label it was shown under."""
    parts = next(m["content"] for m in body["messages"] if m["role"] == "user")
    label, colours = None, {}
    for part in parts:
        if part["type"] == "text":
            match = re.match(r"Candidate (\d+), frame", part["text"])
            label = int(match[1]) if match else None
        elif label is not None:
            picture = Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].partition(",")[2])))
            colours[label] = np.asarray(picture.convert("RGB")).reshape(-1, 3).mean(axis=0)
    return colours


def judge_by(channel: int):
    """A multimodal judge that ranks the candidates it is shown by one colour channel (0: red, 2: blue)."""
    def answer(body: dict) -> dict:
        colours = shown_colours(body)
        ranking = sorted(colours, key=lambda n: (-colours[n][channel], n))
        return text_reply(json.dumps({"ranking": ranking, "reason": f"the most {'RGB'[channel]}"}))
    return answer


@pytest.fixture
def colours(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Three candidates (red, green, blue: each channel ranks them differently) and a blue reference picture."""
    paths = []
    for name, colour in (("red", (220, 30, 30)), ("green", (120, 200, 40)), ("blue", (30, 40, 220)),
                         ("ref", (30, 40, 220))):
        Image.new("RGB", (48, 48), colour).save(path := tmp_path / f"{name}.png")
        paths.append(str(path))
    return paths[:3], paths[3:]


def pick(candidates: list[str], references: list[str], judges: list[str] | None = None) -> tuple[str, dict]:
    with collect_details() as details:
        chosen = pick_best(candidates, "a red fox", references, judges=judges, seed=3)
    return Path(chosen.path).stem, details


def test_best_of_n_with_judges_that_agree_disagree_or_fail(colours) -> None:
    candidates, references = colours
    with FakeOpenAI([judge_by(0)] * 2) as a, FakeOpenAI([judge_by(0), judge_by(2)]) as b:
        judges = [f"a=m@{a.base_url}", f"b=m@{b.base_url}"]
        chosen, agreed = pick(candidates, references, judges)  # both rank by red, each in its own order
        assert chosen == "red" and agreed["by"] == "judges" and agreed["points"] == {"1": 4, "2": 2, "3": 0}
        assert [(v["kind"], v["ranking"][0], v["reason"], v["criterion"]) for v in agreed["votes"]] == [
            ("mllm", 1, "the most R", 11)] * 2  # the consistency criterion: references were given
        body = a.requests[0]["body"]
        assert len([p for p in body["messages"][1]["content"] if p["type"] == "image_url"]) == 4  # reference first
        assert "Consistency with the references" in body["messages"][1]["content"][0]["text"]
        chosen, split = pick(candidates, references, judges)  # red against blue: every candidate ties
        assert chosen == "red" and split["points"] == {"1": 2, "2": 2, "3": 2}
        assert "tied with 2, 3: the lower number is kept" in split["why"]
    with FakeOpenAI([text_reply("I like them all")] * 3) as a, FakeOpenAI([judge_by(2)]) as b:
        chosen, failed = pick(candidates, references, [f"a=m@{a.base_url}", f"b=m@{b.base_url}"])
        assert chosen == "blue" and failed["why"].startswith("1 of 2 judges voted")
        assert "no valid answer in 3 tries" in failed["votes"][0]["error"]
    with FakeOpenAI([http_error(503)] * 3) as a, FakeOpenAI([text_reply("{}")] * 3) as b:
        chosen, none = pick(candidates, references, [f"a=m@{a.base_url}", f"b=m@{b.base_url}"])
        assert chosen == "red" and none["by"] == "rule" and none["why"] == "no judge voted; candidate 1 is kept"
        assert "HTTP 503" in none["votes"][0]["error"]
    chosen, offline = pick(candidates, references)  # no judges configured: metric judges, labelled
    assert [(v["judge"], v["kind"]) for v in offline["votes"]] == [
        ("metric:imaging_quality", "metric"), ("metric:reference_similarity", "metric")]
    assert offline["votes"][1]["ranking"][0] == 3 and offline["votes"][1]["backend"] == "fallback:color-histogram"


def test_a_story_with_two_candidates_judged_by_mllms_and_a_person_overruling_them(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    with FakeOpenAI([judge_by(0)] * 12) as a, FakeOpenAI([judge_by(0)] * 12) as b:
        monkeypatch.setenv("MORA_JUDGES", f"a=m@{a.base_url} b=m@{b.base_url}")
        reviewer = scripted(["next", *["next"] * 3, "pick 2", "next", "next", "next"])
        outcome = asyncio.run(run_request(STORY, options=options(tmp_path, candidates=2), reviewer=reviewer))
    run_dir = outcome.run_dir
    picks = [r for r in contents(run_dir, "[StepResult]") if r.tool == "pick_best"]
    assert [(p.step, p.details["by"]) for p in picks] == [
        ("keyframes", "judges"), ("keyframes", "person"), ("keyframes", "judges"), ("keyframes", "judges"),
        ("clips", "judges"), ("clips", "judges"), ("clips", "judges")]
    judged = picks[0]
    assert [(v["kind"], v["reason"]) for v in judged.details["votes"]] == [("mllm", "the most R")] * 2
    overruled = picks[1]
    assert overruled.output.path == "artifacts/keyframes-c2.png" and overruled.arguments["choice"] == 2
    review = next(r for r in contents(run_dir, "[ReviewRequest]") if r.step == "keyframes")
    assert [c.path for c in review.candidates] == ["artifacts/keyframes-c1.png", "artifacts/keyframes-c2.png"]
    first_clip = next(r for r in contents(run_dir, "[StepResult]") if r.step == "clips.candidate1")
    assert first_clip.arguments["image"].endswith("artifacts/keyframes-c2.png")  # the person's pick goes on
    seeds = [r.arguments["seed"] for r in contents(run_dir, "[StepResult]") if r.step.startswith("keyframes.")]
    assert len(set(seeds)) == len(seeds) == 6  # each candidate its own seed
    assert len(a.requests) == len(b.requests) == 6  # three keyframes and three clips judged; the overrule asks none


# -- the measures ----------------------------------------------------------------------------------------------


def pattern(seed: int, colour: tuple[int, int, int], frames: int = 6) -> np.ndarray:
    """A still clip: a blocky random texture tinted by `colour` (the same picture in every frame)."""
    blocks = np.random.default_rng(seed).integers(0, 2, (8, 8, 1))
    picture = np.kron(blocks, np.ones((8, 8, 1))) * np.array(colour) * 0.5 + np.array(colour) * 0.5
    return np.repeat(picture.astype(np.uint8)[None], frames, axis=0)


def test_the_consistency_measures_on_constructed_clips(tmp_path: Path) -> None:
    """Shots 1 and 3 are the same picture (the fox), shot 2 an unrelated one (the owl, other colours): identical
    frames measure 1.0, unrelated ones low; with reference networks (random weights) identical frames still give 1.0
    and say so."""
    fox, owl = pattern(1, (200, 90, 30)), pattern(2, (40, 80, 220))
    clips = []
    for number, frames in enumerate((fox, owl, fox), 1):
        write_video(frames, 8, path := tmp_path / f"shot{number}.mp4")
        clips.append(path)
    write_video(np.concatenate([fox, owl, fox]), 8, result := tmp_path / "story.mp4")
    parts = [{"kind": "shot", "shot": n, "start": 6 * (n - 1), "frames": 6} for n in (1, 2, 3)]
    board = Storyboard.model_validate({
        "title": "t", "characters": [{"name": "Fox", "description": "a fox"}, {"name": "Owl", "description": "an owl"}],
        "settings": [{"name": "Wood", "description": "a wood"}],
        "shots": [{"description": d, "characters": c, "setting": "Wood", "camera": "wide", "duration": 1,
                   "transition": "cut"} for d, c in (("fox", ["Fox"]), ("owl", ["Owl"]), ("fox", ["Fox"]))]})
    measures = story_measures(board.view(), clips, result, parts)  # H.264 keeps still frames nearly as they were
    within = measures["within_shot"][0]
    assert within["subject_consistency"]["value"] == pytest.approx(1.0, abs=0.01)
    assert within["background_consistency"]["value"] == pytest.approx(1.0, abs=0.01)
    assert (within["subject_consistency"]["backend"], within["background_consistency"]["backend"]) == (
        "fallback:ssim", "fallback:color-histogram")
    fox_across = measures["across_shots"]["Fox"]
    assert fox_across["shots"] == [1, 3] and fox_across["dino"] == pytest.approx(1.0, abs=0.01)
    assert fox_across["clip"] == pytest.approx(1.0, abs=0.01)
    assert fox_across["backends"] == {"dino": "fallback:ssim", "clip": "fallback:color-histogram"}
    unrelated = measures["adjacent_shots"][0]
    assert unrelated["dino"] < 0.2 and unrelated["clip"] < 0.2
    assert measures["across_shots"]["Wood"]["dino"] < 0.6  # the setting's shots: twice the fox, once the owl
    seams = [join["seam"]["value"] for join in measures["joins"]]
    assert all(value < 0.2 for value in seams) and measures["joins"][0]["via"] == "cut"

    from eval.tiny_weights import write_all

    write_all(weights := tmp_path / "weights")
    similarity = Similarity(Backends(WeightStore(weights), "cpu"))
    for kind in ("dino", "clip"):
        value, backend = similarity(kind, fox, fox)
        assert backend == "reference" and value == pytest.approx(1.0, abs=1e-5)  # identical frames, exactly
        assert similarity(kind, fox, fox[:1])[0] == pytest.approx(1.0, abs=1e-5)
    reference = story_measures(board.view(), clips, result, parts, Backends(WeightStore(weights), "cpu"))
    assert reference["across_shots"]["Fox"]["backends"] == {"dino": "reference", "clip": "reference"}
    assert reference["across_shots"]["Fox"]["dino"] == pytest.approx(1.0, abs=0.01)
    assert reference["adherence"][0]["backend"] == "reference"  # ViCLIP's text-video cosine, with its weights


# -- resume ----------------------------------------------------------------------------------------------------


def test_a_story_killed_between_shots_resumes_to_the_same_video(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mora_agents", "run", STORY, "--preset", "tiny", "--device", "cpu", "--seed", "5",
               "--set", "image_to_video.frames=4", "--out", str(tmp_path / "killed")]
    run_dir, _ = signal_when_asked(command, tmp_path / "killed", signal.SIGKILL, "clips", 1)
    assert [r.step for r in contents(run_dir, "[StepResult]")].count("clips") == 1
    resumed = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert [(r.step, r.iteration) for r in contents(run_dir, "[StepResult]") if r.step == "clips"] == [
        ("clips", 0), ("clips", 1), ("clips", 2)]  # the first shot's clip made once
    assert len(tool_runs(run_dir, "keyframe")) == 3 and len(tool_runs(run_dir, "text_to_image")) == 3
    whole = asyncio.run(run_request(STORY, options=RunOptions(preset="tiny", device="cpu", out=tmp_path / "whole",
                                                              seed=5, overrides=FAST)))
    assert np.array_equal(read_video(run_dir / "result.mp4")[0], read_video(whole.result)[0])


def test_a_storyboard_edit_after_a_resume_keeps_the_shots_already_done(tmp_path: Path) -> None:
    run_dir = prepare_run(STORY, options=options(tmp_path))
    stop = asyncio.Event()

    def stop_after_the_first_clip(record, _run_dir) -> None:
        if record.type.endswith("[StepResult]") and record.message["content"]["step"] == "clips":
            stop.set()

    with pytest.raises(Exception, match="stopped on request"):
        asyncio.run(resume_run(run_dir, on_record=stop_after_the_first_clip, stop=stop))

    def rewrite_the_last_shot(board: Storyboard) -> Storyboard:
        board.shots[2].description = "the owl flies off over the trees"
        board.shots.append(board.shots[1].model_copy(update={"description": "the fox watches the sky"}))
        return board

    outcome = asyncio.run(resume_run(run_dir, revise="storyboard", reviewer=storyboard_editor(rewrite_the_last_shot)))
    records = read_transcript(run_dir / "transcript.jsonl")
    revised = next(i for i, r in enumerate(records) if r.type.endswith("[ReviewDecision]") and r.source == "notebook")
    assert records[revised - 1].type == "Resumed" and records[revised].message["content"]["step"] == "storyboard"
    keyframes = [r for r in contents(run_dir, "[StepResult]") if r.step == "keyframes"]
    assert [r.output.path for r in keyframes] == ["artifacts/keyframes.png", "artifacts/keyframes-1.png",
                                                  "artifacts/keyframes-2.png", "artifacts/keyframes-3.png",
                                                  "artifacts/keyframes-4.png"]  # shots 1 and 2 kept, 3 and 4 new
    assert "the owl flies off" in keyframes[3].arguments["prompt"]
    clips = [r for r in contents(run_dir, "[StepResult]") if r.step == "clips"]
    assert [Path(r.arguments["image"]).name for r in clips] == [
        "keyframes.png", "keyframes-1.png", "keyframes-3.png", "keyframes-4.png"]  # the first clip made once
    assert len(tool_runs(run_dir, "text_to_image")) == 3  # the sheets did not change
    assert len(read_video(outcome.result)[0]) == 4 * 4 and len(read_info(run_dir)["story"]["storyboard"]["shots"]) == 4
