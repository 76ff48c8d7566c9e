"""Weight-free per-frame measurements used by the fallback backends."""

from __future__ import annotations

import numpy as np

from mora_agents.eval._deps import require

HIST_BINS = 8


def color_histograms(frames: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Joint RGB histograms (T, bins**3), L2-normalised."""
    quantised = (frames.astype(np.int64) * bins) // 256
    codes = (quantised[..., 0] * bins + quantised[..., 1]) * bins + quantised[..., 2]
    hists = np.stack([np.bincount(c.ravel(), minlength=bins**3) for c in codes]).astype(np.float64)
    return hists / np.linalg.norm(hists, axis=1, keepdims=True)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two uint8 RGB frames (scikit-image, 7x7 window)."""
    metrics = require("skimage.metrics", "scikit-image")
    return float(metrics.structural_similarity(a, b, channel_axis=2, data_range=255))


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense optical flow (H, W, 2) from RGB frame ``a`` to ``b`` with OpenCV DIS (medium preset)."""
    cv2 = require("cv2", "opencv-python-headless")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (a, b)]
    return dis.calc(gray[0], gray[1], None)
