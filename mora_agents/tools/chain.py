"""Frame tools of long-video chains against drift: match a chain frame to the first keyframe, and let a segment end
exactly on its corrected last frame (so the seams stay continuous). See `mora_agents.eval.drift`."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from PIL import Image

from mora_agents.media import Artifact, fit_image, load_image, probe, read_video, save_image, write_video
from mora_agents.settings import output_path
from mora_agents.tools.registry import register


@register(produces="image", media={"image": "image", "reference": "image"})
def match_frame(
    image: Annotated[str, "path of the frame to correct"],
    reference: Annotated[str, "path of the frame to match (the first keyframe)"],
    color: Annotated[bool, "match the colours: mean and spread of each CIELAB channel"] = True,
    sharpen: Annotated[bool, "bring a blurrier frame's sharpness up to the reference's (unsharp mask)"] = False,
    output: Annotated[str | None, "path of the PNG to write"] = None,
) -> Artifact:
    """Match a frame to a reference: its colours (per-channel mean and spread in CIELAB, so a colour cast or a
    darkening is undone) and, with `sharpen`, its sharpness (variance of the Laplacian of lightness). The reference
    is fitted to the frame's size (cover + centre crop)."""
    from mora_agents.eval.drift import lab_sharpness, match_stats, sharpen_to, to_lab, to_rgb  # scikit-image: slow to import

    frame = load_image(image)
    target = to_lab(np.asarray(fit_image(load_image(reference), frame.width, frame.height)))
    lab = to_lab(np.asarray(frame))
    if color:
        lab = match_stats(lab, lab, target)
    if sharpen:  # after the colours: their spread would scale the detail back down
        lab = sharpen_to(lab, lab_sharpness(target))
    path = output_path(output, "match_frame", ".png")
    save_image(Image.fromarray(to_rgb(lab).round().astype(np.uint8)), path)
    return probe(path)


@register(produces="video", media={"video": "video", "image": "image"})
def ease_into(
    video: Annotated[str, "path of the segment"],
    image: Annotated[str, "path of the corrected version of its last frame"],
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """The segment, corrected bit by bit so that it ends exactly on `image` (its last frame after a chain's
    corrections) and starts as it did: the colour change (the CIELAB mean-and-spread map from its last frame to
    `image`) grows over the whole segment, what is left (the refined detail) over its last quarter."""
    from mora_agents.eval.drift import match_stats, to_lab, to_rgb

    frames, fps = read_video(video)
    height, width = frames.shape[1:3]
    target = np.asarray(fit_image(load_image(image), width, height)).astype(np.float64)
    last_lab = to_lab(frames[-1])
    target_lab = to_lab(target.astype(np.uint8))
    rest = target - to_rgb(match_stats(last_lab, last_lab, target_lab))
    n = len(frames)
    tail = max(1, n // 4)
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        colour_weight = t / max(1, n - 1)
        rest_weight = min(1.0, max(0.0, (t - (n - 1 - tail)) / tail))
        mapped = to_rgb(match_stats(to_lab(frame), last_lab, target_lab))
        value = (1 - colour_weight) * frame + colour_weight * mapped + rest_weight * rest
        out[t] = np.clip(value, 0, 255).round().astype(np.uint8)
    out[-1] = target.astype(np.uint8)
    path = output_path(output, "ease_into", ".mp4")
    return write_video(out, fps, path)
