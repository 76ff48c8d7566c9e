"""Imaging quality.

Reference (VBench): MUSIQ trained on SPAQ, frames with long side > 512 resized to 512, mean / 100.
MUSIQ is not implemented here; the fallback is BRISQUE (its SVM ships in the ``brisque`` wheel) on the
same resized frames, mapped to [0, 1] as (100 - BRISQUE) / 100 (BRISQUE: lower is better).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.backends import ReferenceUnavailableError
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult
from mora_agents.eval.result import fallback as fallback_label

NAME = "imaging_quality"
LONG_SIDE = 512


def reference(ctx: EvalContext) -> MetricResult:
    raise ReferenceUnavailableError(
        "MUSIQ (SPAQ) is not implemented in mora-agents; pyiqa, which provides it, needs torchvision"
    )


def limit_long_side(frame: np.ndarray, limit: int = LONG_SIDE) -> np.ndarray:
    """Resize so the long side is at most ``limit`` (VBench's 'longer' mode, int-truncated sizes)."""
    height, width = frame.shape[:2]
    if max(height, width) <= limit:
        return frame
    cv2 = require("cv2", "opencv-python-headless")
    scale = limit / max(height, width)
    return cv2.resize(frame, (int(scale * width), int(scale * height)), interpolation=cv2.INTER_LINEAR)


@cache
def _brisque_model() -> Any:
    return require("brisque", "brisque").BRISQUE(url=False)


def brisque_score(frame: np.ndarray) -> float:
    """BRISQUE of an RGB frame (0 best, ~100 worst) with the model shipped in ``brisque``."""
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
