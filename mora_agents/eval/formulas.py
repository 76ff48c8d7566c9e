"""The scoring rules shared by reference and fallback backends (pure numpy)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

TOP_FRACTION = 0.05
BASE_THRESHOLD = 6.0
BASE_SIZE = 256.0


def consistency(items: Sequence[T], similarity: Callable[[T, T], float]) -> float:
    """VBench temporal consistency.

    For every frame i >= 1: (max(0, sim(i-1, i)) + max(0, sim(0, i))) / 2, averaged over frames.
    """
    if len(items) < 2:
        raise ValueError("consistency needs at least two frames")
    scores = [
        (max(0.0, similarity(items[i - 1], items[i])) + max(0.0, similarity(items[0], items[i]))) / 2
        for i in range(1, len(items))
    ]
    return float(np.mean(scores))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0


def feature_consistency(features: np.ndarray) -> float:
    """:func:`consistency` with cosine similarity of per-frame feature vectors (T, D)."""
    return consistency(list(np.asarray(features, dtype=np.float64)), cosine)


def top_flow_magnitude(flow: np.ndarray) -> float:
    """Mean of the largest 5% flow magnitudes of a (H, W, 2) flow field."""
    magnitude = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])).ravel()
    cut = int(magnitude.size * TOP_FRACTION)
    if cut < 1:
        raise ValueError("flow field too small: 5% of its pixels is less than one pixel")
    return float(np.mean(-np.sort(-magnitude)[:cut]))


def motion_threshold(height: int, width: int) -> float:
    """Flow magnitude above which a frame pair counts as moving: 6.0 * min(H, W) / 256."""
    return BASE_THRESHOLD * min(height, width) / BASE_SIZE


def required_moving_pairs(num_sampled_frames: int) -> int:
    """How many moving pairs make a video dynamic: round(4 * n / 16), Python rounding.

    As in VBench's ``DynamicDegree.set_params``, ``n`` is the number of sampled frames.
    """
    return round(4 * num_sampled_frames / 16)


def is_dynamic(pair_scores: Sequence[float], threshold: float, required: int) -> bool:
    """VBench's ``check_move``: dynamic once ``required`` pairs exceed ``threshold``.

    With ``required == 0`` any video with at least one pair is dynamic, as in VBench.
    """
    moving = sum(score > threshold for score in pair_scores)
    return len(pair_scores) > 0 and moving >= required
