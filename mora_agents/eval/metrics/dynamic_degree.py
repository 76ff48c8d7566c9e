"""Dynamic degree: RAFT flow on frames sampled to about 8 fps (reference) or OpenCV DIS (fallback).

A pair's score is the mean of its top-5% flow magnitudes; the video is dynamic (1.0) when
``round(4 * n / 16)`` pairs exceed ``6.0 * min(H, W) / 256``, n being the number of sampled frames.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.backends import ReferenceUnavailableError
from mora_agents.eval.features import dis_flow
from mora_agents.eval.formulas import (
    is_dynamic,
    motion_threshold,
    required_moving_pairs,
    top_flow_magnitude,
)
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label
from mora_agents.eval.video import stride_indices

NAME = "dynamic_degree"
RAFT_ITERS = 20


def decide(ctx: EvalContext, pair_score: Callable[[np.ndarray, np.ndarray], float]) -> tuple[float, list[int], dict]:
    """Score the sampled pairs with ``pair_score`` and apply VBench's rule."""
    video = ctx.video
    indices = stride_indices(video.num_frames, video.fps)
    scores = [pair_score(video.frames[i], video.frames[j]) for i, j in pairwise(indices)]
    threshold = motion_threshold(video.height, video.width)
    required = required_moving_pairs(len(indices))
    dynamic = is_dynamic(scores, threshold, required)
    details = {"pair_scores": scores, "threshold": threshold, "required_pairs": required, "dynamic": dynamic}
    return float(dynamic), indices, details


def reference(ctx: EvalContext) -> MetricResult:
    from mora_agents.eval.nets.preprocess import to_tensor
    from mora_agents.eval.nets.raft import MIN_SIDE, pad_to_multiple_of_8

    torch = require("torch")
    padded = [-(-side // 8) * 8 for side in (ctx.video.height, ctx.video.width)]
    if min(padded) < MIN_SIDE:
        raise ReferenceUnavailableError(f"RAFT needs frames of at least {MIN_SIDE} px per side (padded to 8)")
    loaded = ctx.backends.raft()
    device = ctx.backends.torch_device

    def pair_score(a: np.ndarray, b: np.ndarray) -> float:
        image1, image2 = pad_to_multiple_of_8(to_tensor(np.stack([a, b])).to(device))[0].split(1)
        with torch.no_grad():
            flow = loaded.model(image1, image2, iters=RAFT_ITERS)
        # VBench scores the flow of the padded frames.
        return top_flow_magnitude(flow[0].permute(1, 2, 0).cpu().numpy())

    value, indices, details = decide(ctx, pair_score)
    return loaded.result(NAME, value, indices, ctx.video.fps, **details)


def fallback(ctx: EvalContext) -> MetricResult:
    value, indices, details = decide(ctx, lambda a, b: top_flow_magnitude(dis_flow(a, b)))
    return MetricResult(NAME, value, fallback_label("opencv-dis"), indices, ctx.video.fps, details=details)


def compute(ctx: EvalContext) -> MetricResult:
    return reference_or_fallback(NAME, ctx, reference, fallback)
