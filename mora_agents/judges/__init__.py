"""Judges of candidate videos: multimodal LLMs behind OpenAI-compatible endpoints, or the project's own metrics.

Each judge ranks a set of candidates (`Showing`) by one of ten criteria (`CRITERIA`) and answers a `Vote`, or
abstains with the reason. The data stage (`mora data select`) draws their criteria and the order each is shown
the candidates in (`rank_shown`); anything else that must pick the best of N videos can use them alike.

    specs = judge_specs(["qwen=Qwen/Qwen2-VL-7B-Instruct@http://gpu1:8000/v1", "metric:imaging_quality"])
    votes = [rank_shown(judge, showing, criterion=7, order=[2, 1, 3]) for judge in build_judges(specs)]

This package sits on the floor of `tools/`: it imports `eval/`, `media.py`, `llm/`, `settings` and `errors` only.
"""

from __future__ import annotations

from collections.abc import Sequence

from mora_agents.judges.metric import MetricJudge, ReferenceJudge
from mora_agents.judges.mllm import OpenAIJudge
from mora_agents.judges.specs import (
    DEFAULT_JUDGES,
    JudgeSpec,
    describe_judges,
    judge_specs,
    parse_judge,
    read_judges_file,
)
from mora_agents.judges.votes import (
    CONSISTENCY,
    CRITERIA,
    CRITERION_TEXTS,
    Judge,
    Showing,
    Vote,
    rank_all,
    rank_shown,
    shown,
)


def build_judges(specs: Sequence[JudgeSpec]) -> list[Judge]:
    """A judge for each spec: a metric judge (`metric:reference_similarity` compares with the references shown) or an
    MLLM judge."""
    return [ReferenceJudge(spec) if spec.metric == "reference_similarity" else MetricJudge(spec) if spec.metric
            else OpenAIJudge(spec) for spec in specs]


__all__ = ["CONSISTENCY", "CRITERIA", "CRITERION_TEXTS", "DEFAULT_JUDGES", "Judge", "JudgeSpec", "MetricJudge",
           "OpenAIJudge", "ReferenceJudge", "Showing", "Vote", "build_judges", "describe_judges", "judge_specs",
           "parse_judge", "rank_all", "rank_shown", "read_judges_file", "shown"]
