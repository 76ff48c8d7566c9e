"""Aesthetic quality: LAION linear head on L2-normalised CLIP ViT-L/14 features, / 10, frame mean."""

from __future__ import annotations

from mora_agents.eval._deps import require
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult

NAME = "aesthetic_quality"


def reference(ctx: EvalContext) -> MetricResult:
    from mora_agents.eval.nets.preprocess import clip_input

    torch = require("torch")
    clip = ctx.backends.clip("clip_vit_l14")
    head = ctx.backends.laion_head()
    size = clip.model.visual.input_resolution
    features = ctx.backends.encode_frames(ctx.video.frames, lambda f: clip_input(f, size), clip.model.encode_image)
    with torch.no_grad():
        scores = head.model(torch.from_numpy(features).to(ctx.backends.torch_device)).squeeze(-1).cpu().numpy()
    result = head.result(NAME, float((scores / 10).mean()), list(range(ctx.video.num_frames)), ctx.video.fps)
    result.details.update(clip_checkpoint=str(clip.path), clip_sha256=clip.sha256, input_size=[size, size])
    return result


def compute(ctx: EvalContext) -> MetricResult:
    return reference_or_fallback(NAME, ctx, reference, None)
