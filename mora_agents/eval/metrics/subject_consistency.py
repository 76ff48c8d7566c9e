"""Subject consistency: DINO ViT-B/16 frame features (reference) or SSIM (fallback)."""

from __future__ import annotations

from mora_agents.eval.features import ssim
from mora_agents.eval.formulas import consistency, feature_consistency
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label

NAME = "subject_consistency"


def reference(ctx: EvalContext) -> MetricResult:
    from mora_agents.eval.nets.preprocess import dino_input

    loaded = ctx.backends.dino()
    features = ctx.backends.encode_frames(ctx.video.frames, dino_input, loaded.model)
    return loaded.result(
        NAME,
        feature_consistency(features),
        list(range(ctx.video.num_frames)),
        ctx.video.fps,
        input_size=list(dino_input(ctx.video.frames[:1]).shape[-2:]),
    )


def fallback(ctx: EvalContext) -> MetricResult:
    value = consistency(list(ctx.video.frames), ssim)
    return MetricResult(NAME, value, fallback_label("ssim"), list(range(ctx.video.num_frames)), ctx.video.fps)


def compute(ctx: EvalContext) -> MetricResult:
    return reference_or_fallback(NAME, ctx, reference, fallback)
