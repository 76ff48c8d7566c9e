"""Drift of a chained long video: how far each segment's first frame has moved from the first keyframe, and from the
frame before it, in colour and in sharpness; and the corrections a chain applies against it.

Colours are compared in CIELAB (perceptual): the colour shift is the CIE76 distance (delta E) between the mean
colours of two frames (about 2.3 is a just-noticeable difference; a darkening by a tenth is about 5). Sharpness
is the variance of the Laplacian of the lightness, given as a ratio to the reference frame's (1: as sharp; a
blur lowers it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from skimage.color import lab2rgb, rgb2lab
from scipy.ndimage import gaussian_filter
from skimage.filters import laplace

from mora_agents.media import fit_image, load_image, read_video

DRIFT_WINDOW = 4.0
"""Seconds between the frames measured in a clip made in one call (`clip_drift`)."""
MAX_SHARPEN = 3.0
"""The strongest unsharp mask a sharpness match applies (amount), so that noise is never blown up."""


def to_lab(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] to CIELAB float (L in 0-100)."""
    return rgb2lab(frame.astype(np.float64) / 255)


def to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB float to RGB float in 0-255 (not rounded), out-of-gamut colours clipped into sRGB. (a, b) are first
    kept where X and Z stay non-negative (a >= -500 L / 116, b <= 200 L / 116), which corrections can overshoot."""
    lab = lab.copy()
    lightness = np.clip(lab[..., 0], 0, 100)
    lab[..., 0] = lightness
    lab[..., 1] = np.maximum(lab[..., 1], -500 * lightness / 116)
    lab[..., 2] = np.minimum(lab[..., 2], 200 * lightness / 116)
    return np.clip(lab2rgb(lab), 0, 1) * 255


def color_shift(frame: np.ndarray, reference: np.ndarray) -> float:
    """Delta E (CIE76) between the mean colours of two RGB frames."""
    return float(np.linalg.norm(to_lab(frame).reshape(-1, 3).mean(0) - to_lab(reference).reshape(-1, 3).mean(0)))


def lab_sharpness(lab: np.ndarray) -> float:
    """The variance of the Laplacian of a CIELAB frame's lightness (0-1 scale)."""
    lightness = lab[..., 0]
    return float(laplace(lightness / 100).var())


def sharpness(frame: np.ndarray) -> float:
    """The variance of the Laplacian of an RGB frame's lightness (0-1 scale)."""
    return lab_sharpness(to_lab(frame))


def frame_drift(frame: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """`color`: delta E of the mean colours; `sharpness`: the frame's sharpness over the reference's."""
    return {"color": round(color_shift(frame, reference), 3),
            "sharpness": round(sharpness(frame) / max(sharpness(reference), 1e-12), 3)}


def match_stats(lab: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`lab` with the per-channel affine map that takes `source`'s mean and spread (Lab) to `target`'s."""
    src, tgt = source.reshape(-1, 3), target.reshape(-1, 3)
    scale = tgt.std(0) / np.maximum(src.std(0), 1e-6)
    return (lab - src.mean(0)) * scale + tgt.mean(0)


def sharpen_to(lab: np.ndarray, target: float) -> np.ndarray:
    """`lab` with its lightness unsharp-masked (L + a (L - blur(L))) so that its sharpness rises to `target` (never
    lowered). The Laplacian is linear, so the variance of the result's is a quadratic in `a`, solved exactly."""
    lightness = lab[..., 0] / 100
    detail = lightness - gaussian_filter(lightness, sigma=1.0)
    u, v = laplace(lightness), laplace(detail)
    base, cross, gain = u.var(), np.mean((u - u.mean()) * (v - v.mean())), v.var()
    if base >= target or gain <= 0:
        return lab
    amount = min(MAX_SHARPEN, (-cross + np.sqrt(max(cross**2 - gain * (base - target), 0.0))) / gain)
    out = lab.copy()
    out[..., 0] = np.clip((lightness + amount * detail) * 100, 0, 100)
    return out


def chain_drift(first_keyframe: Path, segments: Sequence[Path]) -> list[dict[str, Any]]:
    """Per segment of a chain: its start time in the joined video (chained segments share a frame), and its first
    frame's drift against the first keyframe and against the previous segment's last frame."""
    keyframe = load_image(first_keyframe)
    rows: list[dict[str, Any]] = []
    start, previous = 0.0, None
    for index, path in enumerate(segments):
        frames, fps = read_video(path)
        first = frames[0]
        reference = np.asarray(fit_image(keyframe, first.shape[1], first.shape[0]))
        rows.append({"segment": index + 1, "start": round(start, 3), "to_first": frame_drift(first, reference),
                     "to_previous": frame_drift(first, previous) if previous is not None else None})
        start += (len(frames) - 1) / fps
        previous = frames[-1]
    return rows


def clip_drift(video: Path, window: float = DRIFT_WINDOW) -> list[dict[str, Any]]:
    """Per `window` seconds of a clip made in one call (a long-video model's): the start time and the drift of the
    frame there against the clip's first frame and against the frame before it, in the rows of `chain_drift`."""
    frames, fps = read_video(video)
    step = max(1, round(window * fps))
    return [{"segment": index + 1, "start": round(start / fps, 3), "to_first": frame_drift(frames[start], frames[0]),
             "to_previous": frame_drift(frames[start], frames[start - 1]) if start else None}
            for index, start in enumerate(range(0, len(frames), step))]

