"""Imaging quality.

Reference (VBench): MUSIQ trained on SPAQ (pyiqa's ``musiq_spaq`` checkpoint, our reimplementation in
:mod:`mora_agents.eval.nets.musiq`) on every frame after VBench's 'longer' transform: frames whose long
side exceeds 512 are resized (bilinear on float pixels, no antialiasing, sides truncated to int) so it
is 512, then divided by 255; the value is the mean MUSIQ score (0-100) over the frames / 100.
Fallback: BRISQUE (its SVM ships in the ``brisque`` wheel) on the same resized frames, mapped to [0, 1]
as (100 - BRISQUE) / 100 (BRISQUE: lower is better).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label

if TYPE_CHECKING:
    import torch

NAME = "imaging_quality"
LONG_SIDE = 512


def long_side_size(height: int, width: int, limit: int = LONG_SIDE) -> tuple[int, int]:
    """VBench's 'longer' output size: unchanged up to ``limit``, else ``int(limit / long side * side)``."""
    if max(height, width) <= limit:
        return height, width
    scale = limit / max(height, width)
    return int(scale * height), int(scale * width)


def vbench_input(frame: np.ndarray) -> torch.Tensor:
    """VBench's 'longer' transform of an RGB uint8 frame: (1, 3, h, w) float32 in [0, 1].

    VBench resizes the float 0..255 frame (torchvision ``Resize``, bilinear, ``antialias=False``; no
    rounding back to uint8) and then divides by 255.
    """
    import torch.nn.functional as F

    from mora_agents.eval.nets.preprocess import to_tensor

    x = to_tensor(frame[None])
    size = long_side_size(*x.shape[-2:])
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return x / 255.0


def limit_long_side(frame: np.ndarray) -> np.ndarray:
    """The frame after VBench's 'longer' transform as (h, w, 3) float32 in [0, 1]."""
    return vbench_input(frame)[0].permute(1, 2, 0).numpy()


def reference(ctx: EvalContext) -> MetricResult:
    import torch

    loaded = ctx.backends.musiq()
    with torch.no_grad():
        scores = [float(loaded.model(vbench_input(f).to(ctx.backends.torch_device))) for f in ctx.video.frames]
    mean = sum(scores) / len(scores)
    return loaded.result(
        NAME,
        mean / 100.0,
        list(range(ctx.video.num_frames)),
        ctx.video.fps,
        input_size=list(long_side_size(ctx.video.height, ctx.video.width)),
        mean_musiq=mean,
    )


@cache
def _brisque_model() -> Any:
    return require("brisque", "brisque").BRISQUE(url=False)


def brisque_score(frame: np.ndarray) -> float:
    """BRISQUE of an RGB frame (uint8, or float in [0, 1]; 0 best, ~100 worst) with the model in ``brisque``."""
    cv2 = require("cv2", "opencv-python-headless")
    color = require("skimage.color", "scikit-image")
    model = _brisque_model()
    gray = color.rgb2gray(frame)
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    raw = np.concatenate([model.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (gray, half)])
    # brisque 0.2 leaves some features as 1-element arrays, which its own score() rejects on numpy 2.
    features = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in raw])
    return float(model.calculate_image_quality_score(features))


def fallback(ctx: EvalContext) -> MetricResult:
    scores = [brisque_score(limit_long_side(f)) for f in ctx.video.frames]
    value = float(np.mean([np.clip((100.0 - s) / 100.0, 0.0, 1.0) for s in scores]))
    return MetricResult(
        NAME,
        value,
        fallback_label("brisque"),
        list(range(ctx.video.num_frames)),
        ctx.video.fps,
        details={"mean_brisque": float(np.mean(scores))},
    )


def compute(ctx: EvalContext) -> MetricResult:
    return reference_or_fallback(NAME, ctx, reference, fallback)
