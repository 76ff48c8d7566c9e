"""Image-to-video: Stable Video Diffusion (SVD-XT) animates one image into a short clip."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch

from mora_agents.media import Artifact, fit_image, load_image, probe, write_video
from mora_agents.pipelines.adapters import adapters_scope
from mora_agents.pipelines.loading import load_pipeline
from mora_agents.settings import denoise_callback, output_path, settings
from mora_agents.tools.defaults import fill_defaults, generator
from mora_agents.tools.params import (
    Chunk,
    Fps,
    Frames,
    MotionBucket,
    Seed,
    Side,
    Steps,
    Strength,
)
from mora_agents.tools.registry import register


@register(produces="video", media={"image": "image"}, models=("svd",))
def image_to_video(
    image: Annotated[str, "path of the first frame"],
    width: Annotated[Side | None, "width in pixels, a multiple of 8"] = None,
    height: Annotated[Side | None, "height in pixels, a multiple of 8"] = None,
    frames: Annotated[Frames | None, "frames of the clip"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    fps: Annotated[Fps | None, "frame rate the model is conditioned on and the clip is written at"] = None,
    motion_bucket_id: Annotated[MotionBucket | None, "amount of motion, 0-255"] = None,
    noise_aug_strength: Annotated[Strength | None, "noise added to the first frame, 0-1"] = None,
    decode_chunk_size: Annotated[Chunk | None, "frames the VAE decodes at once"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's)"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Animate an image into a video clip with Stable Video Diffusion; the image is fitted (cover + centre crop).

    Unset parameters take the preset's defaults (full: 25 frames, 1024x576, 25 steps, fps 7,
    motion_bucket_id 180, noise_aug_strength 0.1, decode_chunk_size 12). The clip is written at `fps`.
    `adapters`: with the image-to-video agent's fine-tuned weights and modulation token from that folder.
    """
    p = fill_defaults("image_to_video", width=width, height=height, frames=frames, steps=steps, fps=fps,
                      motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength,
                      decode_chunk_size=decode_chunk_size)
    start = fit_image(load_image(image), p["width"], p["height"])
    with adapters_scope(adapters):
        pipe = load_pipeline("svd")
    with torch.inference_mode():
        video = pipe(start, width=p["width"], height=p["height"], num_frames=p["frames"],
                     num_inference_steps=p["steps"], fps=p["fps"], motion_bucket_id=p["motion_bucket_id"],
                     noise_aug_strength=p["noise_aug_strength"], decode_chunk_size=p["decode_chunk_size"],
                     generator=generator(seed), output_type="np",
                     callback_on_step_end=denoise_callback("image_to_video", p["steps"])).frames[0]
    settings().progress.stop()
    path = output_path(output, "image_to_video", ".mp4")
    write_video((np.clip(video, 0, 1) * 255).round().astype(np.uint8), p["fps"], path)
    return probe(path, noise=settings().preset == "tiny")
