"""Motion smoothness.

Reference (VBench): AMT-S interpolates frame 2k + 1 from frames 2k and 2k + 2 (inputs in
[0, 1], replicate-padded to a multiple of 16, t = 0.5); the prediction is unpadded and
truncated to uint8 as ``(x * 255).clip(0, 255).astype(uint8)``, and the score is
(255 - mean |odd - predicted|) / 255, the mean over pixels, channels and interpolated frames.
Only odd frames between two even frames count: with an even frame count the last frame is
unused. VBench's memory-based downscaling never applies in its official run (it compares a
``torch.device`` with the string ``"cuda"``, which is false, and takes its CPU branch, scale 1
below 8192 x 8192 pixels), so frames go in at full size. Frames padded to under 128 px per side,
where AMT-S's coarsest correlation level degenerates (NaN output), use the fallback.

Fallback: the mean optical-flow acceleration (DIS flow of consecutive frames), mapped to (0, 1]
by 1 / (1 + mean |a| / s) with s = 6.0 * min(H, W) / 256 (the dynamic-degree motion scale).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.backends import ReferenceUnavailableError
from mora_agents.eval.features import dis_flow
from mora_agents.eval.formulas import motion_threshold
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label

NAME = "motion_smoothness"


def interpolated_frames(num_frames: int) -> list[int]:
    """The odd frames VBench compares: those with an even frame on both sides."""
    return list(range(1, num_frames - 1, 2))


def reference(ctx: EvalContext) -> MetricResult:
    from mora_agents.eval.nets.amt import MIN_SIDE, InputPadder
    from mora_agents.eval.nets.preprocess import to_tensor

    torch = require("torch")
    video = ctx.video
    odd = interpolated_frames(video.num_frames)
    if not odd:
        raise ValueError("motion smoothness needs at least three frames")
    padder = InputPadder.for_size(video.height, video.width)
    if min(video.height + padder.top + padder.bottom, video.width + padder.left + padder.right) < MIN_SIDE:
        raise ReferenceUnavailableError(f"AMT-S needs frames of at least {MIN_SIDE} px per side (padded to 16)")
    loaded = ctx.backends.amt()
    device = ctx.backends.torch_device
    diffs = []
    for i in odd:
        pair = padder.pad(to_tensor(video.frames[[i - 1, i + 1]]) / 255.0).to(device)
        with torch.no_grad():
            predicted = loaded.model(pair[:1], pair[1:], 0.5)
        image = (padder.unpad(predicted.cpu())[0] * 255.0).permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)
        diffs.append(float(np.abs(video.frames[i].astype(np.int16) - image).mean()))
    value = (255.0 - np.mean(diffs)) / 255.0
    return loaded.result(
        NAME, value, list(range(odd[-1] + 2)), video.fps, interpolated_frames=odd, mean_abs_diffs=diffs
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
