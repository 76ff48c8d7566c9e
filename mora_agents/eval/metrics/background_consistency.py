"""Background consistency: CLIP ViT-B/32 image features (reference) or colour histograms (fallback)."""

from __future__ import annotations

from mora_agents.eval.features import color_histograms
from mora_agents.eval.formulas import feature_consistency
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label

NAME = "background_consistency"


def reference(ctx: EvalContext) -> MetricResult:
    from mora_agents.eval.nets.preprocess import clip_input

    loaded = ctx.backends.clip("clip_vit_b32")
    size = loaded.model.visual.input_resolution
    features = ctx.backends.encode_frames(ctx.video.frames, lambda f: clip_input(f, size), loaded.model.encode_image)
    return loaded.result(
        NAME, feature_consistency(features), list(range(ctx.video.num_frames)), ctx.video.fps, input_size=[size, size]
    )


def fallback(ctx: EvalContext) -> MetricResult:
    value = feature_consistency(color_histograms(ctx.video.frames))
    return MetricResult(
        NAME, value, fallback_label("color-histogram"), list(range(ctx.video.num_frames)), ctx.video.fps
    )


def compute(ctx: EvalContext) -> MetricResult:
    return reference_or_fallback(NAME, ctx, reference, fallback)
