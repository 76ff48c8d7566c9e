"""Video length and the paper's "Video Quality" aggregate."""

from __future__ import annotations

import numpy as np

from mora_agents.eval.metrics.base import EvalContext
from mora_agents.eval.result import REFERENCE, MetricResult, fallback, unavailable

VIDEO_LENGTH, VIDEO_QUALITY = "video_length", "video_quality"
QUALITY_DIMENSIONS = (
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
)


def video_length(ctx: EvalContext) -> MetricResult:
    """Duration in seconds: frame count / fps."""
    video = ctx.video
    return MetricResult(VIDEO_LENGTH, video.duration, REFERENCE, list(range(video.num_frames)), video.fps)


def video_quality(ctx: EvalContext) -> MetricResult:
    """Mean of the six quality dimensions; a labelled proxy unless all six are reference values.

    Uses the dimension results already in ``ctx.results``.
    """
    parts = {name: ctx.results[name] for name in QUALITY_DIMENSIONS if name in ctx.results}
    values = {name: r.value for name, r in parts.items() if r.value is not None}
    if not values:
        return unavailable(VIDEO_QUALITY, "none of the six quality dimensions is available", ctx.video.fps)
    exact = len(values) == len(QUALITY_DIMENSIONS) and all(r.is_reference for r in parts.values())
    return MetricResult(
        VIDEO_QUALITY,
        float(np.mean(list(values.values()))),
        REFERENCE if exact else fallback("proxy-mean"),
        fps=ctx.video.fps,
        details={
            "components": {name: {"value": r.value, "backend": r.backend} for name, r in parts.items()},
            "missing": [name for name in QUALITY_DIMENSIONS if name not in values],
        },
    )
