"""Metric judges (`metric:NAME`, the offline default): they rank by one `mora eval` metric of the whole video
(weight-free fallbacks where reference weights are missing) and ignore the criterion; their votes say so.
`metric:reference_similarity` ranks by how much the candidates look like the reference pictures they are shown
with (a story's sheets)."""

from __future__ import annotations

import numpy as np

from mora_agents.eval import Evaluator, Target
from mora_agents.eval.story import Similarity, reference_similarity
from mora_agents.judges.specs import JudgeSpec
from mora_agents.judges.votes import Showing, Vote


class MetricJudge:
    """Ranks the candidates by one `mora eval` metric of their videos (higher is better), ignoring the criterion."""

    def __init__(self, spec: JudgeSpec) -> None:
        assert spec.metric is not None
        self.spec, self.metric, self.evaluator = spec, spec.metric, Evaluator([spec.metric])

    def rank(self, showing: Showing, criterion: int) -> Vote:
        vote = Vote(judge=self.spec.label, kind="metric", criterion=criterion, tries=1)
        results = {n: self.evaluator.evaluate(Target(str(path), path, showing.own_prompts.get(n, showing.prompt)))
                   .results[self.metric] for n, path in showing.videos.items()}
        missing = next((r for r in results.values() if r.value is None), None)
        if missing is not None:
            return vote.model_copy(update={"error": f"metric {self.metric} unavailable: {missing.reason}"})
        scores = {n: float(r.value) for n, r in results.items() if r.value is not None}
        return vote.model_copy(update={
            "ranking": sorted(scores, key=lambda n: (-scores[n], n)), "scores": {str(n): v for n, v in scores.items()},
            "backend": next(iter(results.values())).backend,
            "reason": f"by {self.metric}, higher is better (a metric judge: the criterion is not used)"})


class ReferenceJudge:
    """Ranks the candidates by their similarity to the reference pictures (`eval.story.reference_similarity`: DINO
    features, or colour histograms without its weights), ignoring the criterion; abstains without references."""

    def __init__(self, spec: JudgeSpec) -> None:
        self.spec, self.similarity = spec, Similarity()

    def rank(self, showing: Showing, criterion: int) -> Vote:
        vote = Vote(judge=self.spec.label, kind="metric", criterion=criterion, tries=1)
        if not showing.references:
            return vote.model_copy(update={"error": "no reference pictures to compare with"})
        references = [picture for _, picture in showing.references]
        found = {n: reference_similarity(np.stack(frames), references, self.similarity)
                 for n, (frames, _) in showing.frames.items()}
        scores = {n: value for n, (value, _) in found.items()}
        return vote.model_copy(update={
            "ranking": sorted(scores, key=lambda n: (-scores[n], n)), "scores": {str(n): v for n, v in scores.items()},
            "backend": next(iter(found.values()))[1],
            "reason": "by the similarity to the reference pictures, higher is better (a metric judge: the criterion "
                      "is not used)"})
