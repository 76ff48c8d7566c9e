"""What a judge is shown and what it answers: the ten criteria, a candidate set as shown, a vote, and the shuffle.

A judge ranks candidates by one of the ten criteria (`CRITERIA`, the paper's Table 3 aspects in our words). It is
shown the candidates under the labels 1..C; `rank_shown` shows them in a given order (candidate `order[k - 1]` as
label k, so that no two judges need share an order, and a bias for a position or a label is spread at random over
the candidates), maps the answer back to the candidates' own numbers and records the order (`Vote.shown`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from mora_agents.judges.specs import JudgeSpec

CRITERIA = {
    1: "Sharpness and clarity: rank the videos by how crisp and detailed their frames are, with clean edges, smooth "
       "transitions and little blur, flicker or noise.",
    2: "Object consistency and scene stability: rank the videos by how well objects keep their shape, identity and "
       "interactions from frame to frame, and how believably they move.",
    3: "Temporal coherence: rank the videos by how continuously each frame follows from the one before, without "
       "jumps or sudden changes.",
    4: "Narrative coherence: rank the videos by how much sense their sequence of events makes as a small story or "
       "logical progression.",
    5: "Colour and lighting: rank the videos by how consistent their colour grading and lighting are, with smooth "
       "changes of light and even colour.",
    6: "Realism: rank the videos from the most to the least lifelike objects, textures, backgrounds and scene "
       "detail.",
    7: "Relevance: rank the videos by how well they show what the prompt asks for, in theme and content.",
    8: "Aesthetics: rank the videos by how pleasing they are to look at: composition, balance and overall visual "
       "appeal.",
    9: "Cleanliness: rank the videos by how free they are of artifacts, distortions and noise.",
    10: "Motion: rank the videos by how natural and smooth their motion is, without stutter, lag or frozen frames.",
}
CONSISTENCY = 11
"""The criterion of a pick against reference pictures (a story's character and setting sheets); not among the ten
the data stage draws from."""
CRITERION_TEXTS = {**CRITERIA, CONSISTENCY: (
    "Consistency with the references: rank the candidates by how closely the characters and places they show look "
    "like those of the reference pictures (faces, fur or clothes, colours, shapes, the look of the place), and by how "
    "well they show what the prompt asks for.")}


@dataclass
class Showing:
    """One candidate set as a judge sees it: the prompt(s) and each candidate's video and sampled frames."""

    prompt: str
    """The prompt the candidates were drawn from (the enhanced one when they share it)."""
    videos: dict[int, Path]
    frames: dict[int, tuple[list[np.ndarray], list[float]]]
    """Candidate -> (K frames, their times in seconds)."""
    own_prompts: dict[int, str] = field(default_factory=dict)
    """Candidate -> its own enhanced prompt, when the candidates' prompt agent enhanced them differently."""
    references: list[tuple[str, np.ndarray]] = field(default_factory=list)
    """Pictures the candidates must stay consistent with, each with its label (a story's reference sheets)."""


class Vote(BaseModel):
    """One judge's answer on one set (or its abstention, with the reason)."""

    judge: str
    kind: Literal["mllm", "metric"]
    criterion: int
    """The criterion drawn for this judge (metric judges rank by their metric instead)."""
    ranking: list[int] | None = None
    """Candidate numbers, best first; None: abstained."""
    reason: str = ""
    """The judge's own words; candidate numbers in it are the labels it was shown (see `shown`)."""
    error: str | None = None
    """Why it abstained."""
    tries: int = 0
    model: str | None = None
    scores: dict[str, float] | None = None
    """A metric judge's value per candidate."""
    backend: str | None = None
    """A metric judge's backend (`reference` or `fallback:...`)."""
    shown: list[int] | None = None
    """The candidates in the order shown: label k was candidate shown[k - 1] (None: in their own order, as
    selections made before the shuffle)."""
    time: str = Field(default_factory=lambda: datetime.now().isoformat())

    @property
    def top(self) -> int | None:
        return self.ranking[0] if self.ranking else None


class Judge(Protocol):
    spec: JudgeSpec

    def rank(self, showing: Showing, criterion: int) -> Vote: ...


class Ranking(BaseModel):
    """A judge's answer: the candidates best first, and why."""

    ranking: list[int]
    reason: str = ""


def check_ranking(ranking: Ranking, candidates: Sequence[int]) -> list[int]:
    """A ranking that names every candidate exactly once; ValueError (meant for the model) otherwise."""
    if sorted(ranking.ranking) != sorted(candidates):
        raise ValueError(f"'ranking' must list each of the candidates {list(candidates)} exactly once, best first; "
                         f"got {ranking.ranking}")
    return ranking.ranking


def shown(showing: Showing, order: Sequence[int]) -> Showing:
    """The set shown in `order`: candidate order[k - 1] under the label k."""
    labels = dict(enumerate(order, 1))
    return Showing(showing.prompt, {k: showing.videos[n] for k, n in labels.items()},
                   {k: showing.frames[n] for k, n in labels.items()},
                   {k: showing.own_prompts[n] for k, n in labels.items() if n in showing.own_prompts},
                   showing.references)


def rank_shown(judge: Judge, showing: Showing, criterion: int, order: Sequence[int]) -> Vote:
    """`judge`'s vote on the set shown in `order` (see `shown`): its ranking and scores mapped back to the
    candidates' own numbers, the order recorded in `shown`."""
    if sorted(order) != sorted(showing.videos):
        raise ValueError(f"order {list(order)} is not an order of the candidates {sorted(showing.videos)}")
    vote = judge.rank(shown(showing, order), criterion)
    back = dict(enumerate(order, 1))
    return vote.model_copy(update={
        "shown": list(order), "ranking": None if vote.ranking is None else [back[k] for k in vote.ranking],
        "scores": None if vote.scores is None else {str(back[int(k)]): v for k, v in vote.scores.items()}})


def rank_all(judges: Sequence[Judge], showing: Showing, criteria: Mapping[str, int],
             orders: Mapping[str, Sequence[int]]) -> list[Vote]:
    """Every judge's vote on one set, at once (a thread each: they are usually separate servers): each by its
    criterion, shown the candidates in its order (`criteria` and `orders` by judge label; see `rank_shown`)."""
    def vote(judge: Judge) -> Vote:
        label = judge.spec.label
        return rank_shown(judge, showing, criteria[label], orders[label])

    with ThreadPoolExecutor(len(judges)) as pool:
        return list(pool.map(vote, judges))
