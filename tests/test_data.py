"""The data-free loop (tiny preset, CPU): seed prompts, the prompt writer, candidate runs (a stopped make resumes),
MLLM judges on fake OpenAI-compatible servers (images, structured output, garbage, HTTP 500, timeouts), people
(scripted and in the terminal), the dataset, one training on it, and the N-iteration loop with its held-out plot."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_video
from fake_openai import FakeOpenAI, http_error, image_urls, text_reply, texts
from PIL import Image
from test_train import check_adapters_change_a_run
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.data import (
    CRITERIA,
    MakeConfig,
    make_data,
    read_judges_file,
    read_seeds,
    read_sets,
    scripted_choices,
    select,
)
from mora_agents.data.loop import LoopConfig, LoopUI, run_loop, split_seeds
from mora_agents.data.sets import sample_frames
from mora_agents.data.writer import normal, write_prompts
from mora_agents.errors import InputError, MoraError
from mora_agents.judges.mllm import data_url
from mora_agents.llm import client_from_env
from mora_agents.llm.offline import CHANGES, OfflineChatCompletionClient
from mora_agents.media import read_video
from mora_agents.runs.runner import RunOptions
from mora_agents.train import TrainConfig, load_hf_dataset, read_dataset
from mora_agents.train.agents import ImageToImageAgent

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEEDS = "a red fox running through snow\n# a comment\n\na lighthouse in a storm\na paper boat on a pond\n"
OVERRIDES = {"image_to_video": {"frames": 4, "fps": 7, "steps": 1}, "text_to_image": {"steps": 1}}
FAST_RUNS = ["--preset", "tiny", "--device", "cpu", "--set", "image_to_video.frames=4", "--set", "image_to_video.fps=7",
             "--set", "image_to_video.steps=1", "--set", "text_to_image.steps=1"]
FAST_TRAINING = ["--batch-size", "2", "--frames", "4", "--resolution", "32x32"]


def ranking(*order: int):
    return text_reply(json.dumps({"ranking": list(order), "reason": "the steadiest frames"}))


def prefer(data: Path, *order: int):
    """A judge that ranks the candidates `order` (their own numbers) however they are shown: it knows each by its
    first frame, as it sees it (the shown labels are mapped back by the selection)."""
    firsts = {data_url(sample_frames(data / str(c.video), 4)[0][0], 512): c.number
              for cset in read_sets(data) for c in cset.finished()}

    def reply(body: dict) -> dict:
        labels = [firsts[url] for url in image_urls(body) if url in firsts]  # the candidate shown as label k
        return ranking(*(labels.index(number) + 1 for number in order))

    return reply


def judges_file(path: Path, *entries: str) -> Path:
    path.write_text("judges:\n" + "".join(f"  - {{{entry}}}\n" for entry in entries))
    return path


def copy(data: Path, to: Path) -> Path:
    shutil.copytree(data, to)
    return to


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    """`mora data make` of 2 prompts x 2 candidates: stopped (Ctrl-C) after two runs, then finished by the CLI."""
    root = tmp_path_factory.mktemp("made")
    seeds, data = root / "seeds.txt", root / "data"
    seeds.write_text(SEEDS)
    finished = []

    def stop_after_two(result) -> None:
        finished.extend([result] if result.status == "finished" else [])
        if len(finished) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_data(read_seeds(seeds), data, MakeConfig(count=2, candidates=2, overrides=OVERRIDES),
                  RunOptions(preset="tiny", device="cpu"), on_update=stop_after_two)
    written = (data / "prompts.json").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["data", "make", "--prompts", str(seeds), "--out", str(data), "--count", "2",
                                      "--candidates", "2", *FAST_RUNS])
    return SimpleNamespace(data=data, seeds=seeds, prompts_written=written, result=result)


# -- seeds and the prompt writer ------------------------------------------------------------------------------


def test_seed_files_in_text_jsonl_json_and_csv(tmp_path: Path):
    (tmp_path / "cat.png").write_bytes(b"")
    files = {"seeds.txt": SEEDS,
             "seeds.jsonl": '{"prompt": "a red fox"}\n\n{"text": "the cat dances", "images": "cat.png"}\n',
             "seeds.json": '["a red fox", {"prompt": "the cat dances", "images": ["cat.png"]}]',
             "seeds.csv": 'id,Prompt,notes\n1,a red fox,x\n2,"the cat dances, slowly",\n'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert [s.text for s in read_seeds(tmp_path / "seeds.txt")] == [
        "a red fox running through snow", "a lighthouse in a storm", "a paper boat on a pond"]
    assert read_seeds(tmp_path / "seeds.txt")[1].label == f"{tmp_path / 'seeds.txt'}:4"
    jsonl = read_seeds(tmp_path / "seeds.jsonl")
    assert [s.text for s in jsonl] == ["a red fox", "the cat dances"] and jsonl[1].images == [tmp_path / "cat.png"]
    assert read_seeds(tmp_path / "seeds.json")[1].images == [tmp_path / "cat.png"]
    assert [s.text for s in read_seeds(tmp_path / "seeds.csv")] == ["a red fox", "the cat dances, slowly"]


def test_the_offline_writer_is_varied_seeded_and_copies_no_seed():
    seeds = ["a red fox running through snow", "A golden retriever walks slowly in a snowy pine forest at dawn."]
    prompts = asyncio.run(write_prompts(seeds, 12, 7, OfflineChatCompletionClient()))
    assert len(prompts) == 12 and len({normal(p) for p in prompts}) == 12
    assert not {normal(p) for p in prompts} & {normal(s) for s in seeds}
    assert len({p.split(" ")[1] for p in prompts}) > 3  # several subjects, not one template
    assert prompts == asyncio.run(write_prompts(seeds, 12, 7, OfflineChatCompletionClient()))
    assert prompts != asyncio.run(write_prompts(seeds, 12, 8, OfflineChatCompletionClient()))


def test_a_model_writer_gets_its_errors_back(monkeypatch):
    good = {"prompts": ["a kite over a stormy sea", "a tram climbing a hill at night"]}
    replies = [text_reply("Here are some prompts!"), text_reply(json.dumps({"prompts": ["A red fox, running through snow."]})),
               text_reply(json.dumps(good))]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")  # for OpenAI's API only, never for this server
    with FakeOpenAI(replies) as server:
        monkeypatch.setenv("MORA_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("MORA_LLM_MODEL", "writer")
        prompts = asyncio.run(write_prompts(["a red fox running through snow"], 2, 0, client_from_env()))
        assert prompts == good["prompts"]
        assert all("sk-openai-secret" not in str(r["headers"]) for r in server.requests)
        errors = [texts(r["body"]) for r in server.requests[1:]]
        assert "does not match the schema" in errors[0] and "copies an example" in errors[1]
    with FakeOpenAI([text_reply("no")] * 3) as server:
        monkeypatch.setenv("MORA_LLM_BASE_URL", server.base_url)
        with pytest.raises(MoraError, match="no usable prompts in 3 tries"):
            asyncio.run(write_prompts(["a fox"], 2, 0, client_from_env()))


# -- making candidates ----------------------------------------------------------------------------------------


def test_make_writes_candidates_and_a_stopped_make_resumes(made: SimpleNamespace):
    assert made.result.exit_code == 0, made.result.output
    data = made.data
    summary = [json.loads(line) for line in (data / "runs" / "summary.jsonl").read_text().splitlines()]
    assert [r["status"] for r in summary] == ["finished"] * 4
    assert sorted(r["skipped"] for r in summary) == [False, False, True, True]  # the two runs before Ctrl-C
    assert (data / "prompts.json").stat().st_mtime_ns == made.prompts_written  # the writer was not asked again
    prompts = json.loads((data / "prompts.json").read_text())["prompts"]
    assert len(prompts) == 2 and not {normal(p) for p in prompts} & {normal(s.text) for s in read_seeds(made.seeds)}
    sets = read_sets(data)
    assert [(s.id, s.prompt) for s in sets] == [("p001", prompts[0]), ("p002", prompts[1])]
    assert len({c.seed for s in sets for c in s.candidates}) == 4
    for cset in sets:
        for candidate in cset.candidates:
            run = data / candidate.run_dir
            assert json.loads((run / "run.json").read_text())["seed"] == candidate.seed
            assert (run / "transcript.jsonl").is_file() and (data / str(candidate.video)).is_file()
            made_ = candidate.intermediates
            assert made_.enhanced_prompt.startswith(cset.prompt.rstrip(".")) and made_.source_frame is None
            assert (data / made_.first_frame).is_file() and len(read_video(data / made_.clip)[0]) == 4
            assert made_.fps == 7 and made_.motion_bucket_id == 180


def test_a_task_mix_makes_edit_samples_for_instructpix2pix(tmp_path: Path):
    """`--task text_to_video,edit_video`: prompt 1 a scene from the text seed, prompt 2 an edit instruction from the
    seed with a video; the edit run's sample carries the image-to-image agent's step (source, edited frame and
    instruction, and what made them), so that InstructPix2Pix trains on it."""
    make_video(tmp_path / "clip.mp4", frames=4)
    (tmp_path / "seeds.jsonl").write_text('{"prompt": "a red fox running through snow"}\n'
                                          '{"prompt": "make it look like winter", "videos": ["clip.mp4"]}\n')
    made = make_data(read_seeds(tmp_path / "seeds.jsonl"), tmp_path / "data",
                     MakeConfig(task="text_to_video, edit_video", count=2, candidates=2,
                                overrides={**OVERRIDES, "edit_image": {"steps": 1}}),
                     RunOptions(preset="tiny", device="cpu"))
    assert not made.failed and [s.task for s in made.sets] == ["text_to_video", "edit_video"]
    written = json.loads((tmp_path / "data" / "prompts.json").read_text())
    assert written["tasks"] == ["text_to_video", "edit_video"]
    assert written["prompts"][1].lower().startswith(tuple(CHANGES))  # an edit instruction, not a scene
    edit = made.sets[1].candidates[0].intermediates
    assert edit.first_frame is None and edit.instruction == made.sets[1].prompt
    assert edit.source_frame.endswith(".png") and (tmp_path / "data" / edit.edited_frame).is_file()
    select(tmp_path / "data", reviewer=scripted_choices([1, 1]))
    scene, edited = read_dataset(tmp_path / "data" / "dataset")
    assert edited.clip_start == edited.edited_frame and edited.instruction == made.sets[1].prompt
    assert [(m["field"], m["agent"], m["tool"]) for m in edited.made_by] == [
        ("edited_frame", "image_to_image_agent", "edit_image"), ("clip", "image_to_video_agent", "image_to_video")]
    assert scene.made_by[0] == {"field": "first_frame", "step": "image", "agent": "text_to_image_agent",
                                "tool": "text_to_image"}
    assert [ImageToImageAgent.uses(sample) for sample in (scene, edited)] == [False, True]


# -- selection ------------------------------------------------------------------------------------------------


def test_one_full_iteration_with_two_judges_a_person_and_training(made: SimpleNamespace, tmp_path: Path):
    """Two MLLM judges (one with structured output) agree on one set, not on the other; a person stops, then
    decides; the two accepted samples train 4 steps; a run with the adapters differs from one without."""
    data = copy(made.data, tmp_path / "data")
    with FakeOpenAI([prefer(data, 1, 2), prefer(data, 1, 2)]) as qwen, \
            FakeOpenAI([prefer(data, 1, 2), prefer(data, 2, 1)]) as llava:
        specs = read_judges_file(judges_file(
            tmp_path / "judges.yaml", f"name: qwen, model: Qwen/Qwen2-VL-7B-Instruct, base_url: '{qwen.base_url}'",
            f"name: llava, model: llava-onevision, base_url: '{llava.base_url}', structured_output: false"))
        first = select(data, specs, reviewer=scripted_choices([]))  # the person stops at the first question
        assert first.count() == {"accepted": 1, "undecided": 1}
        second = select(data, specs, reviewer=scripted_choices([2], name="alice"))
        assert len(qwen.requests) == len(llava.requests) == 2  # judged sets are not judged again
    sets, log = read_sets(data), second.log.sets
    assert [(log[s].status, log[s].decision.by, log[s].decision.candidate) for s in ("p001", "p002")] == [
        ("accepted", "judges", 1), ("accepted", "person:alice", 2)]
    for server, label, structured in ((qwen, "qwen", True), (llava, "llava", False)):
        for request, cset in zip(server.requests, sets):
            body, text = request["body"], texts(request["body"])
            urls = image_urls(body)
            assert len(urls) == 2 * 4 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
            assert Image.open(io.BytesIO(base64.b64decode(urls[0].partition(",")[2]))).size == (64, 64)
            assert CRITERIA[log[cset.id].draw.criteria[label]] in text
            assert cset.candidates[0].intermediates.enhanced_prompt in text and "Candidate 2, frame 4 of 4" in text
            assert ("response_format" in body) == structured
    draw = log["p002"].draw
    assert isinstance(draw.seed, int) and set(draw.criteria) == set(draw.orders) == {"qwen", "llava"}
    assert [vote.shown for vote in log["p002"].votes] == [draw.orders["qwen"], draw.orders["llava"]]
    samples = read_dataset(data / "dataset")
    assert [(s.set, s.candidate, s.decision["by"], s.iteration) for s in samples] == [
        ("p001", 1, "judges", 0), ("p002", 2, "person:alice", 0)]
    chosen = sets[1].candidates[1]
    assert samples[1].seed == chosen.seed and samples[1].prompt == sets[1].prompt
    assert (data / "dataset" / samples[1].run_dir).resolve() == (data / chosen.run_dir).resolve()
    assert [v["judge"] for v in samples[1].votes] == ["qwen", "llava"] and samples[1].votes[1]["ranking"] == [2, 1]
    assert load_hf_dataset(data / "dataset", cache_dir=tmp_path / "hf").num_rows == 2

    adapters = tmp_path / "adapters"
    result = CliRunner().invoke(app, ["train", str(data / "dataset"), "--out", str(adapters), "--preset", "tiny",
                                      "--device", "cpu", "--steps", "4", *FAST_TRAINING])
    assert result.exit_code == 0, result.output
    card = json.loads((adapters / "card.json").read_text())
    assert card["steps"] == 4 and card["dataset"]["per_agent"] == {"text_to_image": 2, "image_to_video": 2}
    check_adapters_change_a_run(adapters, tmp_path)


def test_judges_that_fail_abstain_and_people_decide_in_the_terminal(made: SimpleNamespace, tmp_path: Path):
    """Garbage (3 tries, each error sent back), HTTP 500 and a timeout abstain; the two judges left agree on one
    set and not on the other, which `mora data review` then decides without asking any judge again."""
    data = copy(made.data, tmp_path / "data")
    garbage = [text_reply("I like the second one best."), text_reply('{"ranking": [1, 1], "reason": "x"}'),
               text_reply('```json\n{"rank": 2}\n```')]

    def late(body):
        time.sleep(1.0)
        return ranking(1, 2)

    servers = [FakeOpenAI([prefer(data, 2, 1), prefer(data, 1, 2)]),
               FakeOpenAI([prefer(data, 2, 1), prefer(data, 2, 1)]),
               FakeOpenAI(garbage * 2), FakeOpenAI([http_error(500)] * 2), FakeOpenAI([late, late])]
    names = ["a", "b", "garbage", "broken", "slow"]
    with servers[0], servers[1], servers[2], servers[3], servers[4]:
        specs = read_judges_file(judges_file(tmp_path / "judges.json", *(
            f"name: {n}, model: m, base_url: '{s.base_url}', retries: 0, timeout: 0.3" for n, s in zip(names, servers))))
        result = select(data, specs)
        assert result.count() == {"accepted": 1, "undecided": 1}
        votes = {v.judge: v for v in result.log.sets["p001"].votes}
        assert votes["a"].ranking == votes["b"].ranking == [2, 1] and result.log.sets["p001"].decision.candidate == 2
        assert votes["garbage"].ranking is None and votes["garbage"].tries == 3
        assert votes["garbage"].error.startswith("no valid answer in 3 tries (last: the JSON does not match")
        sent_back = [texts(r["body"]) for r in servers[2].requests[1:3]]
        assert "not valid: no JSON object in the answer" in sent_back[0] and "exactly once" in sent_back[1]
        assert votes["broken"].error.startswith("HTTP 500") and votes["slow"].error == "timed out after 0.3 s"
        asked = [len(s.requests) for s in servers]
        review = CliRunner().invoke(app, ["data", "review", str(data), "--name", "tester"], input="7\n2\n")
        assert [len(s.requests) for s in servers] == asked
    assert review.exit_code == 0, review.output
    assert "set p002" in review.output and "abstained (HTTP 500" in review.output and "'7' is not an answer" in review.output
    decision = json.loads((data / "selection.json").read_text())["sets"]["p002"]["decision"]
    assert (decision["by"], decision["candidate"]) == ("person:tester", 2)
    assert [s.set for s in read_dataset(data / "dataset")] == ["p001", "p002"]


def test_a_judge_refused_midway_stops_with_one_line_and_keeps_what_was_accepted(made: SimpleNamespace, tmp_path: Path):
    data = copy(made.data, tmp_path / "data")
    with FakeOpenAI([prefer(data, 1, 2), http_error(401, "key revoked")]) as a, \
            FakeOpenAI([prefer(data, 1, 2)] * 3) as b:
        judges = ["--judge", f"a=vlm@{a.base_url}", "--judge", f"b=vlm@{b.base_url}"]
        _error(["data", "select", str(data), *judges], 1, "judge a: the endpoint refused the request (HTTP 401: key revoked)")
        assert [s.set for s in read_dataset(data / "dataset")] == ["p001"]
        assert json.loads((data / "selection.json").read_text())["sets"]["p001"]["status"] == "accepted"
        a.replies.append(prefer(data, 2, 1))  # the key works again: the same command goes on with the set left
        result = CliRunner().invoke(app, ["data", "select", str(data), *judges, "--no-human"])
    assert result.exit_code == 0, result.output
    assert len(a.requests) == len(b.requests) == 3  # p001 was not judged again; p002 from the start
    assert json.loads((data / "selection.json").read_text())["sets"]["p002"]["status"] == "discarded"  # 2 vs 1
    assert [s.set for s in read_dataset(data / "dataset")] == ["p001"]


def test_no_human_discards_the_set_the_judges_disagree_on(made: SimpleNamespace, tmp_path: Path):
    data = copy(made.data, tmp_path / "data")
    with FakeOpenAI([prefer(data, 1, 2), prefer(data, 1, 2)]) as a, \
            FakeOpenAI([prefer(data, 1, 2), prefer(data, 2, 1)]) as b:
        result = CliRunner().invoke(app, ["data", "select", str(data), "--judge", f"a=vlm@{a.base_url}",
                                          "--judge", f"b=vlm@{b.base_url}", "--no-human"])
    assert result.exit_code == 0, result.output
    log = json.loads((data / "selection.json").read_text())["sets"]
    assert log["p001"]["status"] == "accepted" and log["p002"]["decision"]["by"] == "rule"
    assert log["p002"]["status"] == "discarded" and "--no-human" in log["p002"]["decision"]["why"]
    assert len(read_dataset(data / "dataset")) == 1


# -- bad input ------------------------------------------------------------------------------------------------


def _error(args: list[str], code: int, expected: str, input: str | None = None) -> None:
    result = CliRunner().invoke(app, args, input=input)
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert result.exit_code == code and len(errors) == 1 and expected in errors[0], result.output
    assert "Traceback" not in result.output


def test_bad_input_is_one_line_and_writes_nothing(made: SimpleNamespace, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "out"
    make = ["data", "make", "--out", str(out), "--preset", "tiny", "--device", "cpu", "--prompts"]
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a fox"}\n{"prompt": "a cat"\n')
    (tmp_path / "bad.csv").write_text("name,seconds\nfox,3\n")
    _error([*make, str(tmp_path / "empty.txt")], 2, "empty.txt: no prompts")
    _error([*make, str(tmp_path / "bad.jsonl")], 2, "bad.jsonl:2: not valid JSON")
    _error([*make, str(tmp_path / "bad.csv")], 2, "no 'prompt' (or 'text') column")
    _error([*make, str(tmp_path / "missing.txt")], 2, "missing.txt: no such file")
    _error([*make, str(made.seeds), "--task", "connect_videos"], 2, "has no image_to_video step")
    _error([*make, str(made.seeds), "--candidates", "1"], 2, "--candidates 1: from 2 to 16")
    _error([*make, str(made.seeds), "--task", "text_to_video,text_to_video"], 2, "several different ones")
    _error([*make, str(made.seeds), "--task", "text_to_video,edit_video"], 2,
           "--task edit_video: no seed fits it (task 'edit_video' takes 1 to 1 video(s) (JSONL field 'videos')")
    _error([*make, str(made.seeds), "--task", "text_to_video,image_to_video", "--count", "1"], 2,
           "--count 1: a mix of 2 tasks needs a prompt for each")
    assert not out.exists()
    _error(["data", "make", "--prompts", str(made.seeds), "--out", str(made.data), "--count", "3", *FAST_RUNS], 2,
           "was started with other settings (count: 2, now 3)")

    _error(["data", "select", str(made.data), "--judge", "metric:beauty"], 2, "unknown metric 'beauty'")
    _error(["data", "select", str(made.data), "--judge-frames", "20"], 2, "--judge-frames 20: from 1 to 16")
    _error(["data", "select", str(made.data), "--judge", "gpt-4o", "--judge", "metric:imaging_quality"], 2,
           "judge gpt-4o: no base URL, and no key for OpenAI's API")
    _error(["data", "select", str(made.data), "--judges", str(judges_file(tmp_path / "j.yaml", "metric: dynamic_degree",
                                                                          "model: m, temperature: hot"))], 2,
           "j.yaml entry 2: temperature")
    broken = copy(made.data, tmp_path / "broken")
    clip = read_sets(broken)[1].candidates[0].intermediates.clip
    (broken / clip).unlink()
    _error(["data", "select", str(broken)], 2, f"set p002 candidate 1: clip {clip}: no such file")
    assert not (broken / "selection.json").exists()
    with FakeOpenAI([http_error(401, "bad key")]) as denied:
        _error(["data", "select", str(broken.parent / "none")], 2, "no sets.json")
        (broken / clip).write_bytes((made.data / clip).read_bytes())
        _error(["data", "select", str(broken), "--judge", f"x=m@{denied.base_url}", "--judge", "metric:imaging_quality"],
               1, "judge x: the endpoint refused the request (HTTP 401: bad key)")
    _error(["data", "review", str(made.data)], 2, "no selection.json")
    _error(["train", "--iterations", "1", "--out", str(out)], 2, "--iterations needs --prompts SEEDS and --out DIR")
    _error(["train", "--iterations", "2", "--prompts", str(made.seeds), "--out", str(out), "--eval-metrics", "nope",
            "--preset", "tiny"], 2, "--eval-metrics: unknown metric(s) nope")
    # a device the runs take but training does not: refused before the first stage, not after it
    _error(["train", "--iterations", "1", "--prompts", str(made.seeds), "--out", str(out), "--preset", "tiny",
            "--device", "cpu:0"], 2, "--device cpu:0: training takes auto, cpu or cuda")
    assert not out.exists()
    with pytest.raises(InputError, match="cannot both feed the writer"):
        split_seeds(read_seeds(made.seeds)[:1], 0.25, 0)


def test_damaged_records_pipes_and_refused_settings_are_one_line_and_write_nothing(made: SimpleNamespace,
                                                                                    tmp_path: Path):
    data = copy(made.data, tmp_path / "data")
    sets = (data / "sets.json").read_bytes()
    (data / "sets.json").write_bytes(sets[:len(sets) // 2])
    _error(["data", "select", str(data)], 2, f"{data / 'sets.json'}: damaged (not valid JSON")
    (data / "sets.json").write_text('[{"id": "p001"}]')
    _error(["data", "select", str(data)], 2, "sets.json: damaged (0.prompt: Field required")
    (data / "sets.json").write_bytes(sets)
    (data / "selection.json").write_text('{"judges": [], "sets": {"p001": {"id": "p0')
    _error(["data", "select", str(data)], 2, "selection.json: damaged (not valid JSON")
    _error(["data", "review", str(data)], 2, "selection.json: damaged (not valid JSON")
    (data / "selection.json").unlink()
    make = (data / "make.json").read_bytes()
    (data / "make.json").write_text("[1, 2]")
    _error(["data", "select", str(data)], 2, "make.json: damaged (not a JSON object)")
    again = ["data", "make", "--prompts", str(made.seeds), "--out", str(data), "--count", "2", "--candidates", "2",
             *FAST_RUNS]
    _error(again, 2, "make.json: damaged (not a JSON object)")
    (data / "make.json").write_bytes(make)
    (data / "prompts.json").write_text('{"prompts": ["a kite"')
    _error(again, 2, "prompts.json: damaged (not valid JSON")
    (data / "prompts.json").write_text('{"prompts": ["a kite"]}')
    _error(again, 2, "prompts.json: damaged (not a list of 2 prompts)")

    os.mkfifo(tmp_path / "pipe.txt")  # would block a reader for ever
    out = tmp_path / "out"
    _error(["data", "make", "--prompts", str(tmp_path / "pipe.txt"), "--out", str(out)], 2, "not a regular file")
    _error(["train", "--iterations", "1", "--prompts", str(tmp_path / "pipe.txt"), "--out", str(out)], 2,
           "not a regular file")
    # refused by the backend's rules for its calls, as the batch would refuse each run: nothing is written, so
    # the same command with a good value later is a new make, not "other settings"
    bad_set = ["--set", "image_to_video.backend=wan2.2-ti2v-5b", "--set", "image_to_video.frames=7"]
    _error(["data", "make", "--prompts", str(made.seeds), "--out", str(out), *FAST_RUNS[:4], *bad_set], 2,
           "frames 7: backend wan2.2-ti2v-5b makes 4k+1 frames")
    _error(["data", "make", "--prompts", str(made.seeds), "--out", str(out), *FAST_RUNS[:4], "--set",
            "image_to_video.frames=0"], 2, "--set image_to_video.frames=0")
    assert not out.exists()


# -- the loop -------------------------------------------------------------------------------------------------


class StopInTraining(LoopUI):
    """Ctrl-C after the first training step of the loop (its checkpoint saved)."""

    @contextmanager
    def training(self):
        def on_step(step: int, total: int, losses: dict) -> None:
            if step == 1:
                raise KeyboardInterrupt

        yield on_step


def test_two_iterations_of_the_loop_resume_and_plot_the_held_out_metrics(tmp_path: Path):
    """`mora train --iterations 2`: 1 prompt x 2 candidates per iteration, the offline metric judges, a person who
    picks candidate 1 where they disagree, 2 training steps each; one seed held out and scored after each iteration.
    Started from Python and stopped in the first training, the command line continues it (the training resumes);
    the same command again does nothing more."""
    (tmp_path / "seeds.txt").write_text(SEEDS)
    out = tmp_path / "loop"
    config = LoopConfig(iterations=2, eval_metrics=["subject_consistency", "imaging_quality"],
                        make=MakeConfig(count=1, candidates=2, overrides=OVERRIDES),
                        train=TrainConfig(preset="tiny", steps=2, batch_size=2, frames=4, resolution=(32, 32),
                                          checkpoint_every=1))
    with pytest.raises(KeyboardInterrupt):
        run_loop(read_seeds(tmp_path / "seeds.txt"), out, config, RunOptions(preset="tiny", device="cpu"),
                 reviewer=scripted_choices([1, 1]), ui=StopInTraining())
    adapters = out / "iter-1" / "adapters"
    assert (adapters / "checkpoints" / "step-000001").is_dir() and not (adapters / "card.json").exists()
    command = ["train", "--iterations", "2", "--prompts", str(tmp_path / "seeds.txt"), "--out", str(out), "--count",
               "1", "--candidates", "2", "--steps", "2", "--checkpoint-every", "1", *FAST_TRAINING, *FAST_RUNS,
               "--eval-metrics", "subject_consistency,imaging_quality"]
    result = CliRunner().invoke(app, command, input="1\n1\n")
    assert result.exit_code == 0, result.output
    loop = json.loads((out / "loop.json").read_text())
    assert len(loop["heldout"]) == 1 and loop["heldout"][0]["text"] not in [s["text"] for s in loop["seeds"]]
    first, second = (json.loads((out / f"iter-{n}" / "adapters" / "card.json").read_text()) for n in (1, 2))
    assert (first["iteration"], first["parent"], first["steps"], second["iteration"]) == (1, None, 2, 2)
    assert second["parent"]["path"] == str(adapters)
    assert json.loads(next((out / "iter-2" / "runs").glob("*/run.json")).read_text())["adapters"] == str(
        adapters)  # iteration 2 generates with iteration 1's weights
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["iteration"] for row in metrics["iterations"]] == [0, 1, 2]
    assert metrics["metrics"] == ["imaging_quality", "subject_consistency"]
    assert all(row["metrics"]["subject_consistency"]["backend"] == "fallback:ssim" for row in metrics["iterations"])
    assert [row["accepted"] for row in metrics["iterations"]] == [None, 1, 1]
    assert "| 2 | 1 |" in (out / "metrics.md").read_text()
    assert Image.open(out / "metrics.png").format == "PNG"

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in ("run.json", "card.json", "scores.json",
                                                                             "selection.json")}
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    changed = CliRunner().invoke(app, [*command, "--count", "2"])
    assert changed.exit_code == 2 and "was started with other settings (make: differs)" in changed.output
