"""Metrics defined on ViCLIP video features: temporal style, TCON and Tmean.

ViCLIP (InternVid, ViT-L/14 over 8 frames) is not implemented here, so temporal style is always
unavailable; TCON and Tmean fall back to the cosine of the videos' mean colour histograms.
"""

from __future__ import annotations

from mora_agents.eval.backends import ReferenceUnavailableError
from mora_agents.eval.features import color_histograms
from mora_agents.eval.formulas import cosine
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult, unavailable
from mora_agents.eval.result import fallback as fallback_label
from mora_agents.eval.video import Video

TEMPORAL_STYLE, TCON, TMEAN = "temporal_style", "tcon", "tmean"
HISTOGRAM = fallback_label("color-histogram")


def reference(ctx: EvalContext) -> MetricResult:
    raise ReferenceUnavailableError("ViCLIP (InternVid-10M-FLT) is not implemented in mora-agents")


def histogram_similarity(a: Video, b: Video) -> float:
    return cosine(color_histograms(a.frames).mean(axis=0), color_histograms(b.frames).mean(axis=0))


def temporal_style(ctx: EvalContext) -> MetricResult:
    if not ctx.prompt:
        return unavailable(TEMPORAL_STYLE, "needs a prompt (--prompt, --prompts or a run directory)", ctx.video.fps)
    return reference_or_fallback(TEMPORAL_STYLE, ctx, reference, None)


def _tcon_fallback(ctx: EvalContext) -> MetricResult:
    value = histogram_similarity(ctx.input_videos[0], ctx.video)
    return MetricResult(TCON, value, HISTOGRAM, list(range(ctx.video.num_frames)), ctx.video.fps)


def tcon(ctx: EvalContext) -> MetricResult:
    """Similarity of the output to the (first) input video."""
    if not ctx.input_videos:
        return unavailable(TCON, "needs an input video (a run directory of a video-input task)", ctx.video.fps)
    return reference_or_fallback(TCON, ctx, reference, _tcon_fallback)


def _tmean_fallback(ctx: EvalContext) -> MetricResult:
    front, behind = (histogram_similarity(v, ctx.video) for v in ctx.input_videos[:2])
    return MetricResult(
        TMEAN,
        (front + behind) / 2,
        HISTOGRAM,
        list(range(ctx.video.num_frames)),
        ctx.video.fps,
        details={"tcon_front": front, "tcon_behind": behind},
    )


def tmean(ctx: EvalContext) -> MetricResult:
    """(TCON_front + TCON_behind) / 2 for a video connecting two inputs."""
    if len(ctx.input_videos) < 2:
        return unavailable(TMEAN, "needs two input videos (a run directory of a connect task)", ctx.video.fps)
    return reference_or_fallback(TMEAN, ctx, reference, _tmean_fallback)
