"""Video connection: a SEINE transition between two videos, A + transition + B."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from PIL import Image

from mora_agents.media import (
    Artifact,
    probe,
    read_video,
    resample_fps,
    resize_frames,
    write_video,
)
from mora_agents.pipelines.loading import load_pipeline
from mora_agents.settings import output_path, settings
from mora_agents.tools.defaults import fill_defaults, generator
from mora_agents.tools.params import Frames, Guidance, Sampler, Seed, Side, Steps, Text
from mora_agents.tools.registry import register


@register(produces="video", media={"video_a": "video", "video_b": "video"}, models=("seine", "sd_v1_4"))
def connect_videos(
    video_a: Annotated[str, "path of the first video"],
    video_b: Annotated[str, "path of the second video"],
    prompt: Annotated[Text, "what the transition shows"] = "smooth transition",
    frames: Annotated[Frames | None, "frames of the transition"] = None,
    width: Annotated[Side | None, "width the model works at, a multiple of 8"] = None,
    height: Annotated[Side | None, "height the model works at, a multiple of 8"] = None,
    sampler: Annotated[Sampler | None, "ddpm (the reference) or ddim (fewer steps)"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Connect two videos with a generated transition (SEINE): the result is A, the transition, then B.

    The transition is generated from A's last and B's first frame at the model size, then fitted to A's
    size. B is fitted to A's size and resampled to A's frame rate; the result has A's size and frame rate.
    Unset parameters take the preset's defaults (full: 16 frames, 512x512, DDPM with 250 steps, guidance 8).
    """
    p = fill_defaults("connect_videos", frames=frames, width=width, height=height, sampler=sampler, steps=steps,
                      guidance_scale=guidance_scale)
    a, fps = read_video(video_a)
    b, fps_b = read_video(video_b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{video_a if len(a) < 2 else video_b}: a video needs at least 2 frames")
    size = (a.shape[2], a.shape[1])
    b = resample_fps(resize_frames(b, *size), fps_b, fps)
    pipe = load_pipeline("seine")
    hook = settings().progress
    hook.start("connect_videos", p["steps"])
    with torch.inference_mode():
        transition = pipe([Image.fromarray(a[-1]), Image.fromarray(b[0])], prompt=prompt, mask_type="onelast1",
                          num_frames=p["frames"], height=p["height"], width=p["width"], sampler=p["sampler"],
                          num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                          generator=generator(seed), output_type="np",
                          callback=lambda step, total: hook.advance()).frames
    hook.stop()
    path = output_path(output, "connect_videos", ".mp4")
    write_video(np.concatenate([a, resize_frames(np.asarray(transition), *size), b]), fps, path)
    return probe(path, noise=settings().preset == "tiny")
