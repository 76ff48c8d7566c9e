"""What a metric receives, and the reference-then-fallback policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mora_agents.eval._deps import MissingDependencyError
from mora_agents.eval.backends import Backends, ReferenceUnavailableError
from mora_agents.eval.result import MetricResult, unavailable
from mora_agents.eval.video import Video
from mora_agents.eval.weights import MissingWeightsError


@dataclass
class EvalContext:
    """One video to score, with its prompt, conditioning inputs and the shared networks."""

    video: Video
    backends: Backends
    prompt: str | None = None
    input_videos: list[Video] = field(default_factory=list)
    input_caption: str | None = None
    output_caption: str | None = None
    results: dict[str, MetricResult] = field(default_factory=dict)


Backend = Callable[[EvalContext], MetricResult]
NOT_REFERENCE = (MissingWeightsError, MissingDependencyError, ReferenceUnavailableError)


def reference_or_fallback(name: str, ctx: EvalContext, reference: Backend, fallback: Backend | None) -> MetricResult:
    """Run the reference backend; if its weights, packages or network are missing, the fallback.

    The fallback result records why the reference did not run; without a fallback the metric is
    reported unavailable with that reason.
    """
    try:
        return reference(ctx)
    except NOT_REFERENCE as exc:
        if fallback is None:
            return unavailable(name, f"reference: {exc}", ctx.video.fps)
        result = fallback(ctx)
        result.details["reference_unavailable"] = str(exc)
        return result
