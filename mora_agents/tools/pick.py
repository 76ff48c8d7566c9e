"""Best of N: the judges rank candidate images or clips and the best is kept (a `best_of` step's critic).

The judges are those of `mora data select` (MLLMs from `MORA_JUDGES`, or the `judges` argument), with one more
criterion: consistency with reference pictures (a story's sheets), which every judge ranks by when references are
given (otherwise each draws one of the ten). Offline, metric judges serve: `metric:imaging_quality` and, with
references, `metric:reference_similarity`; without, `metric:subject_consistency` for clips, `metric:aesthetic_quality`
for pictures (it abstains without its weights). Every vote says what judged it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from mora_agents.judges import (
    CONSISTENCY,
    CRITERIA,
    Showing,
    Vote,
    build_judges,
    describe_judges,
    judge_specs,
    rank_all,
)
from mora_agents.media import Artifact, load_image, media_kind, probe, read_video
from mora_agents.settings import report
from mora_agents.tools.params import Seed, Text
from mora_agents.tools.registry import register

MAX_CANDIDATES = 8
IMAGE_JUDGES = ("metric:imaging_quality", "metric:aesthetic_quality")
CLIP_JUDGES = ("metric:imaging_quality", "metric:subject_consistency")
REFERENCE_JUDGES = ("metric:imaging_quality", "metric:reference_similarity")


def frames_of(path: str | Path, count: int) -> tuple[list[np.ndarray], list[float]]:
    """A picture as one frame, or `count` frames spread over a clip, with their times in seconds."""
    if media_kind(Path(path)) == "image":
        return [np.asarray(load_image(path))], [0.0]
    frames, fps = read_video(path)
    picked = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return [frames[i] for i in picked], [i / fps for i in picked]


def borda(votes: list[Vote], candidates: int) -> dict[int, int]:
    """Each voting judge gives a candidate as many points as candidates it ranked below it."""
    points = dict.fromkeys(range(1, candidates + 1), 0)
    for vote in votes:
        for place, number in enumerate(vote.ranking or []):
            points[number] += candidates - 1 - place
    return points


@register(produces="candidate", media={"candidates": "image or video", "references": "image"})
def pick_best(
    candidates: Annotated[list[str], Field(min_length=2, max_length=MAX_CANDIDATES), "paths of the candidate images "
                          "or clips (all of one kind), made from the same request"],
    prompt: Annotated[Text, "what the candidates should show"],
    references: Annotated[list[str], Field(max_length=16), "reference pictures the candidates must stay consistent "
                          "with (e.g. the sheets of a shot's characters and setting)"] = [],
    choice: Annotated[int | None, Field(ge=1, le=MAX_CANDIDATES), "a person's pick: this candidate is kept and no "
                      "judge is asked"] = None,
    judges: Annotated[list[str] | None, "judges as `mora data select --judge` specs (default: MORA_JUDGES, else "
                      "metric judges)"] = None,
    frames: Annotated[int, Field(ge=1, le=16), "frames of each clip shown to the judges"] = 4,
    seed: Annotated[Seed | None, "seed of each judge's criterion and order of the candidates"] = None,
) -> Artifact:
    """Rank candidate images or clips with the judges and return the best one (the candidate's own file).

    Each judge sees the candidates in its own order (drawn from `seed`, so a bias for a position is spread), and
    ranks by consistency with the references when given, else by a drawn criterion; the rankings of the judges that
    voted are added up (Borda: each candidate gets as many points as candidates ranked below it; a tie goes to the
    lower number). With no vote at all, candidate 1 is kept. The judges, their votes and reasons, the points and the
    choice are reported (`settings.report`; a run's transcript keeps them in the step's result)."""
    if choice is not None and choice > len(candidates):
        raise ValueError(f"choice {choice}: there are {len(candidates)} candidates")
    kinds = {media_kind(Path(c)) for c in candidates}
    if len(kinds) > 1:
        raise ValueError(f"candidates: all images or all clips, not {' and '.join(sorted(kinds))}")
    numbers = list(range(1, len(candidates) + 1))
    if choice is not None:
        report(chosen=choice, by="person", why=f"candidate {choice} picked by a person")
        return probe(candidates[choice - 1])
    defaults = REFERENCE_JUDGES if references else IMAGE_JUDGES if kinds == {"image"} else CLIP_JUDGES
    specs = judge_specs(judges or (), defaults=defaults)
    rng = random.Random(seed)
    criteria = {spec.label: CONSISTENCY if references else rng.randint(1, len(CRITERIA)) for spec in specs}
    orders = {spec.label: rng.sample(numbers, len(numbers)) for spec in specs}
    showing = Showing(prompt, {n: Path(c) for n, c in zip(numbers, candidates)},
                      {n: frames_of(c, frames) for n, c in zip(numbers, candidates)},
                      references=[(Path(r).stem, np.asarray(load_image(r))) for r in references])

    votes = rank_all(build_judges(specs), showing, criteria, orders)
    voting = [v for v in votes if v.ranking is not None]
    points = borda(voting, len(candidates))
    chosen = min(numbers, key=lambda n: (-points[n], n)) if voting else 1
    tied = [n for n in numbers if points[n] == points[chosen]]
    why = ("no judge voted; candidate 1 is kept" if not voting else
           f"{len(voting)} of {len(votes)} judges voted; candidate {chosen} has the most points ({points[chosen]})"
           + (f", tied with {', '.join(map(str, tied[1:]))}: the lower number is kept" if len(tied) > 1 else ""))
    report(judges=describe_judges(specs), criteria=criteria, orders=orders,
           votes=[v.model_dump(mode="json") for v in votes], points={str(n): p for n, p in points.items()},
           chosen=chosen, by="judges" if voting else "rule", why=why)
    return probe(candidates[chosen - 1])
