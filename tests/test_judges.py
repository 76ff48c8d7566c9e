"""The judges (`mora_agents.judges`), without candidate runs: the shuffled order each judge is shown, keys that go
only to their own endpoint, and endpoints whose replies are no chat completions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAI, image_urls, raw_reply, text_reply, texts

from mora_agents.data.select import draw_set, judge_set
from mora_agents.errors import InputError
from mora_agents.judges import JudgeSpec, OpenAIJudge, Showing, Vote, judge_specs, parse_judge, rank_shown
from mora_agents.judges.mllm import data_url
from mora_agents.judges.specs import OPENAI_API

CANDIDATES = [1, 2, 3, 4]


def showing(candidates=CANDIDATES) -> Showing:
    """A set of candidates, each one frame of its own colour (what a judge is shown; no video is read)."""
    frames = {n: ([np.full((8, 8, 3), 40 * n, np.uint8)], [0.0]) for n in candidates}
    return Showing("a red fox", {n: Path(f"c{n}.mp4") for n in candidates}, frames)


class FirstShown:
    """A judge with nothing but a position bias: whatever it is shown first, it ranks first."""

    def __init__(self, name: str) -> None:
        self.spec = JudgeSpec(name=name, metric="imaging_quality")

    def rank(self, shown: Showing, criterion: int) -> Vote:
        return Vote(judge=self.spec.label, kind="metric", criterion=criterion, ranking=sorted(shown.videos))


def first_shown_reply(body: dict) -> dict:
    """An MLLM endpoint with the same bias: it ranks the labels in the order they were shown."""
    count = int(texts(body).split("There are ")[1].split(" candidates")[0])
    return text_reply(json.dumps({"ranking": list(range(1, count + 1)), "reason": "the first one looks best"}))


def test_judges_with_a_shared_position_bias_agree_only_by_chance():
    """Shown in the same order 1..4, two such judges would agree on every set; shuffled per judge and per set,
    they agree as often as chance gives (1 in 4 for 4 candidates), and every vote names the candidate it was shown
    first."""
    judges = [FirstShown("a"), FirstShown("b")]
    specs = [judge.spec for judge in judges]
    sets = 400
    agreed = 0
    for n in range(sets):
        draw = draw_set(7, f"p{n:03d}", specs, CANDIDATES)
        assert draw == draw_set(7, f"p{n:03d}", specs, CANDIDATES)  # seeded: recorded, and drawn again alike
        votes = judge_set(showing(), judges, draw)
        assert all(vote.shown == draw.orders[vote.judge] and vote.top == vote.shown[0] for vote in votes)
        agreed += votes[0].top == votes[1].top
    # chance: 0.25, standard deviation 0.022 over 400 sets; unshuffled judges would agree on all of them
    assert 0.15 < agreed / sets < 0.35
    first = [draw_set(7, f"p{n:03d}", specs, CANDIDATES).orders["a"][0] for n in range(sets)]
    assert {c: first.count(c) for c in CANDIDATES} == pytest.approx({c: sets / 4 for c in CANDIDATES}, rel=0.35)


def test_an_mllm_judge_is_shown_the_drawn_order_and_its_answer_is_mapped_back():
    order = [3, 1, 4, 2]
    with FakeOpenAI([first_shown_reply]) as server:
        judge = OpenAIJudge(JudgeSpec(name="vlm", model="m", base_url=server.base_url))
        vote = rank_shown(judge, showing(), 5, order)
    assert vote.ranking == order and vote.shown == order and vote.tries == 1
    assert vote.reason == "the first one looks best"  # its own words: "the first one" is label 1, candidate 3
    sent = image_urls(server.requests[0]["body"])
    assert sent == [data_url(showing().frames[n][0][0], 512) for n in order]  # label k shows candidate order[k-1]
    with pytest.raises(ValueError, match="not an order of the candidates"):
        rank_shown(judge, showing(), 5, [1, 2, 3])


def test_metric_scores_are_mapped_back_too():
    class Scoring(FirstShown):
        def rank(self, shown: Showing, criterion: int) -> Vote:
            scores = {str(k): float(k) for k in shown.videos}  # the score of a label: its place in the order
            return super().rank(shown, criterion).model_copy(update={"scores": scores})

    vote = rank_shown(Scoring("m"), showing(), 1, [2, 4, 1, 3])
    assert vote.scores == {"2": 1.0, "4": 2.0, "1": 3.0, "3": 4.0} and vote.ranking == [2, 4, 1, 3]


# -- keys ----------------------------------------------------------------------------------------------------


def test_a_key_goes_only_to_the_endpoint_it_was_configured_for(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("MORA_JUDGE_API_KEY", "sk-judge-secret")
    monkeypatch.setenv("QWEN_KEY", "qwen-secret")
    with FakeOpenAI([first_shown_reply] * 2) as own, FakeOpenAI([first_shown_reply] * 2) as keyed:
        monkeypatch.setenv("OPENAI_BASE_URL", own.base_url)  # must not redirect OpenAI's key anywhere
        specs = judge_specs([f"own=m@{own.base_url}", f"qwen=m@{keyed.base_url}#QWEN_KEY"])
        for judge_, spec in zip(map(OpenAIJudge, specs), specs):
            rank_shown(judge_, showing(), 1, CANDIDATES)
        gpt = OpenAIJudge(parse_judge("gpt-4o"))
    assert "authorization" not in {k.lower() for k in own.requests[0]["headers"]}
    assert {k.lower(): v for k, v in keyed.requests[0]["headers"].items()}["authorization"] == "Bearer qwen-secret"
    assert str(gpt.client.base_url).rstrip("/") == OPENAI_API and gpt.client.api_key == "sk-judge-secret"
    monkeypatch.delenv("MORA_JUDGE_API_KEY")
    assert parse_judge("gpt-4o").api_key() == "sk-openai-secret" and parse_judge("m@http://h/v1").api_key() is None
    assert JudgeSpec(model="m", base_url="http://h/v1", api_key_env="QWEN_KEY").api_key() == "qwen-secret"


def test_key_variables_are_checked_and_never_echoed(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("MISSING_KEY", raising=False)
    with pytest.raises(InputError, match="judge q: its key's variable MISSING_KEY is not set"):
        judge_specs(["q=m@http://h/v1#MISSING_KEY", "metric:imaging_quality"])
    with pytest.raises(InputError, match="not the name of an environment variable") as error:
        parse_judge("q=m@http://h/v1#sk-live-1234")
    assert "sk-live-1234" not in str(error.value)
    (tmp_path / "judges.yaml").write_text("- {model: m, api_key_env: sk-live-1234}\n- metric: imaging_quality\n")
    with pytest.raises(InputError, match="entry 1: api_key_env is not the name of an environment variable") as error:
        judge_specs(file=tmp_path / "judges.yaml")
    assert "sk-live-1234" not in str(error.value)


# -- endpoints that answer no chat completion ------------------------------------------------------------------


@pytest.mark.parametrize("broken", [
    raw_reply("<html><body><h1>502 Bad Gateway</h1></body></html>"),
    raw_reply(json.dumps({"choices": [1]}), "application/json"),
    raw_reply(json.dumps({"choices": [{"message": {"content": 5}}]}), "application/json"),
    raw_reply("null", "application/json"),
])
def test_a_reply_that_is_no_chat_completion_is_asked_again_then_the_judge_abstains(broken):
    with FakeOpenAI([broken, first_shown_reply]) as recovers, FakeOpenAI([broken] * 3) as never:
        vote = OpenAIJudge(JudgeSpec(model="m", base_url=recovers.base_url)).rank(showing(), 1)
        assert vote.ranking == CANDIDATES and vote.tries == 2
        assert recovers.requests[0]["body"]["messages"] == recovers.requests[1]["body"]["messages"]  # asked again
        vote = OpenAIJudge(JudgeSpec(model="m", base_url=never.base_url)).rank(showing(), 1)
    assert vote.ranking is None and vote.tries == 3
    assert vote.error.startswith("no valid answer in 3 tries (last: the endpoint's reply is not a chat completion")


def test_the_shuffle_is_a_permutation_for_any_number_of_candidates():
    spec = [JudgeSpec(name="a", metric="imaging_quality")]
    for count in (2, 3, 7):
        orders = {tuple(draw_set(random.randrange(99), "p001", spec, range(1, count + 1)).orders["a"])
                  for _ in range(50)}
        assert all(sorted(order) == list(range(1, count + 1)) for order in orders) and len(orders) > 1
