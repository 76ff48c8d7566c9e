"""Motion smoothness.

Reference (VBench): AMT-S interpolates the odd frames from the even ones; score =
(255 - mean |odd - predicted|) / 255. AMT-S is not implemented here, so the fallback runs:
the mean optical-flow acceleration (DIS flow of consecutive frames), mapped to (0, 1] by
1 / (1 + mean |a| / s) with s = 6.0 * min(H, W) / 256 (the dynamic-degree motion scale).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from mora_agents.eval.backends import ReferenceUnavailableError
from mora_agents.eval.features import dis_flow
from mora_agents.eval.formulas import motion_threshold
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label

NAME = "motion_smoothness"


def reference(ctx: EvalContext) -> MetricResult:
    raise ReferenceUnavailableError(
        "AMT-S frame interpolation is not implemented in mora-agents and no CPU-installable package provides it"
    )


def flow_acceleration(frames: np.ndarray) -> float:
    """Mean per-pixel magnitude of the change of flow between consecutive frame pairs."""
    if len(frames) < 3:
        raise ValueError("motion smoothness needs at least three frames")
    flows = [dis_flow(a, b) for a, b in pairwise(frames)]
    return float(np.mean([np.linalg.norm(f2 - f1, axis=-1).mean() for f1, f2 in pairwise(flows)]))


def fallback(ctx: EvalContext) -> MetricResult:
    video = ctx.video
    acceleration = flow_acceleration(video.frames)
    scale = motion_threshold(video.height, video.width)
    return MetricResult(
        NAME,
        1.0 / (1.0 + acceleration / scale),
        fallback_label("flow-jerk"),
        list(range(video.num_frames)),
        video.fps,
        details={"mean_flow_acceleration": acceleration, "scale": scale},
    )


def compute(ctx: EvalContext) -> MetricResult:
    return reference_or_fallback(NAME, ctx, reference, fallback)
