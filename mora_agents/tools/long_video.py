"""Long clips in one call, window by window, by models built for length: SkyReels-V2 diffusion forcing (an image
animated, or a video continued from its last frames) and FramePack (an image animated, in constant memory).

SkyReels-V2 DF makes a long clip in windows of `base_frames`; each window continues the last `overlap_history` frames
of the one before, which get `addnoise_condition` of noise so that small errors are not copied on (its authors: 97
frames at 540P, 17, 20). `ar_step` > 0 denoises the frames of a window in blocks that lag each other (asynchronous
diffusion forcing; 5, with blocks of `causal_block_size` 5 latent frames). FramePack packs the frames it has made into
a context of fixed length and generates sections of 36 frames from the end backwards (anti-drifting sampling), so
its memory does not grow with the length. `image_to_video` runs these backends through `image_clip`; `extend_video`
continues a video with SkyReels-V2's video-to-video pipeline.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from PIL import Image

from mora_agents.media import Artifact, fit_image, load_image, read_video, resample_fps, resize_frames, write_video
from mora_agents.settings import denoise_callback, output_path, settings
from mora_agents.tools.backends import BACKENDS, Backend, backend_named, check_backend_args
from mora_agents.tools.defaults import fill_defaults, seeded
from mora_agents.tools.params import (
    AddNoise,
    ArStep,
    ClipSeconds,
    ExtendVideoBackend,
    Fps,
    Frames,
    Guidance,
    OptionalText,
    Seed,
    Side,
    Steps,
)
from mora_agents.tools.registry import register
from mora_agents.tools.text_budget import note_cut_prompts

LONG_BACKENDS = frozenset({"skyreels-v2-df", "framepack"})
"""The `image_to_video` backends that take a length in seconds and make it in one call (`image_clip`)."""
FRAMEPACK_WINDOW = 9
"""FramePack's latent frames per section (its authors' `latent_window_size`): 36 frames a section."""
ASYNC_BLOCK = 5
"""Latent frames per block when SkyReels-V2 runs asynchronously (`ar_step` > 0), as its authors recommend."""


def skyreels_frames(seconds: float, fps: int, base: int, overlap: int, given: int) -> int:
    """The frame count to ask SkyReels-V2 DF for when `given` frames are given (1: the image; `overlap`: a video's
    end) and `seconds` are to be added: whole windows, the first of `base` frames and each later one `base - overlap`
    more (its pipeline continues only whole windows), or within one window the nearest 4k+1 count."""
    wanted = round(seconds * fps) + given
    if wanted <= base:
        return max(given + 4, 4 * round((wanted - 1) / 4) + 1)
    return base + max(1, round((wanted - base) / (base - overlap))) * (base - overlap)


def framepack_sections(seconds: float, fps: int) -> int:
    """FramePack's sections (36 frames each) for `seconds`: at least one."""
    return max(1, round(seconds * fps / (4 * FRAMEPACK_WINDOW)))


def _skyreels_args(p: dict[str, Any], prompt: str, spec: Backend, frames: int, windows: int) -> dict[str, Any]:
    """The SkyReels-V2 DF pipeline's arguments shared by image-to-video and extension."""
    block = p["causal_block_size"] or (ASYNC_BLOCK if p["ar_step"] else 1)  # always given: the pipeline keeps it
    blocks = ((p["base_frames"] - 1) // 4 + 1) // block
    steps = windows * (p["steps"] + (blocks - 1) * p["ar_step"])
    return dict(prompt=prompt, negative_prompt=p["negative_prompt"], width=p["width"], height=p["height"],
                num_frames=frames, num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                base_num_frames=p["base_frames"], overlap_history=p["overlap_history"],
                addnoise_condition=p["addnoise_condition"], ar_step=p["ar_step"], causal_block_size=block, fps=p["fps"],
                max_sequence_length=spec.text.tokens, output_type="np",
                callback_on_step_end=denoise_callback("image_to_video", steps))


def _windows(frames: int, base: int, overlap: int) -> int:
    return 1 if frames <= base else 1 + (frames - base) // (base - overlap)


def image_clip(spec: Backend, image: str, prompt: str, seed: int | None, output: str | None,
               **given: Any) -> Artifact:
    """`image_to_video` with a long-video backend: a clip of `seconds` from the image (its first frame), in one call.
    `given`: the backend's parameters (None: its default)."""
    p = fill_defaults("image_to_video", spec.name, **given)
    check_backend_args(BACKENDS["image_to_video"], {"backend": spec.name, **p})  # defaults included: overlap < base
    from mora_agents.pipelines.loading import load_pipeline

    start = fit_image(load_image(image), p["width"], p["height"])
    pipe = load_pipeline(spec.models[0])
    note_cut_prompts(pipe, spec, {"prompt": prompt, "negative_prompt": p.get("negative_prompt")})
    with seeded(seed) as gen:
        if spec.name == "framepack":
            sections = framepack_sections(p["seconds"], p["fps"])
            video = pipe(start, prompt=prompt, width=p["width"], height=p["height"],
                         num_frames=sections * (4 * (FRAMEPACK_WINDOW - 1) + 1), latent_window_size=FRAMEPACK_WINDOW,
                         num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                         max_sequence_length=spec.text.tokens, generator=gen, output_type="np",
                         callback_on_step_end=denoise_callback("image_to_video", sections * p["steps"])).frames[0]
        else:
            frames = skyreels_frames(p["seconds"], p["fps"], p["base_frames"], p["overlap_history"], 1)
            windows = _windows(frames, p["base_frames"], p["overlap_history"])
            video = pipe(start, generator=gen, **_skyreels_args(p, prompt, spec, frames, windows)).frames[0]
    settings().progress.stop()
    path = output_path(output, "image_to_video", ".mp4")
    return write_video((np.clip(video, 0, 1) * 255).round().astype(np.uint8), p["fps"], path,
                       noise=settings().preset == "tiny")


@register(produces="video", media={"video": "video"}, backends=BACKENDS["extend_video"])
def extend_video(
    video: Annotated[str, "path of the video to continue"],
    prompt: Annotated[OptionalText, "what happens next"] = "",
    negative_prompt: Annotated[OptionalText | None, "what the continuation should not show"] = None,
    seconds: Annotated[ClipSeconds | None, "seconds to add (made in whole windows)"] = None,
    width: Annotated[Side | None, "width the model works at (a multiple of 16)"] = None,
    height: Annotated[Side | None, "height the model works at (a multiple of 16)"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    fps: Annotated[Fps | None, "frame rate the model works and writes at (the video is resampled to it)"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale"] = None,
    base_frames: Annotated[Frames | None, "frames of one window (4k+1; 97 at 540P, 121 at 720P)"] = None,
    overlap_history: Annotated[Frames | None, "frames each window continues from (4k+1; 17 or 37)"] = None,
    addnoise_condition: Annotated[AddNoise | None, "noise on the frames continued from (20; at most 50)"] = None,
    ar_step: Annotated[ArStep | None, "steps each block lags the one before (0: synchronous; 5: asynchronous)"] = None,
    causal_block_size: Annotated[Frames | None, "latent frames per block (with ar_step > 0; default 5)"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[ExtendVideoBackend | None, "the model: skyreels-v2-df"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Continue a video from its last frames, not only its last one (skyreels-v2-df: SkyReels-V2 diffusion forcing,
    video to video): the model reads the last `overlap_history` frames (resampled to `fps`, fitted to its size) and
    adds `seconds`, window by window.

    The result is the continuation alone, at the model's size and frame rate, starting on the model's rendering of
    the video's last frame, so `concat_videos(overlap=1)` appends it as it appends chained segments. A video shorter
    than `overlap_history` frames is padded with its first frame. Unset parameters take the backend's defaults
    (skyreels-v2-df: 4 s at 24 fps, 960x544, 30 steps, guidance 5, windows of 97 frames overlapping by 17, noise 20).
    """
    spec = backend_named(BACKENDS["extend_video"], backend)
    p = fill_defaults("extend_video", spec.name, negative_prompt=negative_prompt, seconds=seconds, width=width,
                      height=height, steps=steps, fps=fps, guidance_scale=guidance_scale, base_frames=base_frames,
                      overlap_history=overlap_history, addnoise_condition=addnoise_condition, ar_step=ar_step,
                      causal_block_size=causal_block_size)
    check_backend_args(BACKENDS["extend_video"], {"backend": spec.name, **p})
    clip, clip_fps = read_video(video)
    overlap = p["overlap_history"]
    history = resize_frames(resample_fps(clip, clip_fps, p["fps"]), p["width"], p["height"])[-overlap:]
    history = np.concatenate([np.repeat(history[:1], overlap - len(history), axis=0), history])
    frames = skyreels_frames(p["seconds"], p["fps"], p["base_frames"], overlap, overlap)
    from mora_agents.pipelines.loading import load_pipeline

    pipe = load_pipeline("skyreels_df_extend")
    note_cut_prompts(pipe, spec, {"prompt": prompt, "negative_prompt": p["negative_prompt"]})
    with seeded(seed) as gen:
        out = pipe([Image.fromarray(f) for f in history], generator=gen,
                   **_skyreels_args(p, prompt, spec, frames, _windows(frames, p["base_frames"], overlap))).frames[0]
    settings().progress.stop()
    continuation = out[overlap + overlap - 1:]  # the history as given, then as the model renders it, then what is new
    path = output_path(output, "extend_video", ".mp4")
    return write_video((np.clip(continuation, 0, 1) * 255).round().astype(np.uint8), p["fps"], path,
                       noise=settings().preset == "tiny")
