"""Image-to-video: a backend (SVD-XT by default, Wan 2.2 TI2V-5B, LTX-Video, Open-Sora-Plan, or for long clips
SkyReels-V2 DF and FramePack, see `mora_agents.tools.long_video`) animates one image into a clip."""

from __future__ import annotations

from typing import Annotated

import numpy as np

from mora_agents.media import Artifact, fit_image, load_image, write_video
from mora_agents.settings import denoise_callback, output_path, settings, steps_callback
from mora_agents.tools.backends import BACKENDS, backend_named
from mora_agents.tools.defaults import fill_defaults, seeded
from mora_agents.tools.long_video import LONG_BACKENDS, image_clip
from mora_agents.tools.params import (
    AddNoise,
    ArStep,
    Chunk,
    ClipSeconds,
    Fps,
    Frames,
    Guidance,
    ImageToVideoBackend,
    MotionBucket,
    OptionalText,
    Seed,
    Side,
    Steps,
    Strength,
)
from mora_agents.tools.registry import register
from mora_agents.tools.text_budget import note_cut_prompts


@register(produces="video", media={"image": "image"}, backends=BACKENDS["image_to_video"])
def image_to_video(
    image: Annotated[str, "path of the first frame"],
    prompt: Annotated[OptionalText, "what the clip shows (read by all backends but svd-xt)"] = "",
    negative_prompt: Annotated[OptionalText | None, "what the clip should not show (all backends but svd-xt)"] = None,
    width: Annotated[Side | None, "width in pixels (svd-xt: a multiple of 8; open-sora-plan: of 16; the others: of "
                     "32)"] = None,
    height: Annotated[Side | None, "height in pixels (svd-xt: a multiple of 8; open-sora-plan: of 16; the others: of "
                      "32)"] = None,
    frames: Annotated[Frames | None, "frames of the clip (wan2.2-ti2v-5b, open-sora-plan: 4k+1; ltx-video: "
                      "8k+1)"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    fps: Annotated[Fps | None, "frame rate the clip is written at (svd-xt and ltx-video are conditioned on it)"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale (all backends but svd-xt)"] = None,
    motion_bucket_id: Annotated[MotionBucket | None, "amount of motion, 0-255 (svd-xt)"] = None,
    noise_aug_strength: Annotated[Strength | None, "noise added to the first frame, 0-1 (svd-xt)"] = None,
    decode_chunk_size: Annotated[Chunk | None, "frames the VAE decodes at once (svd-xt)"] = None,
    seconds: Annotated[ClipSeconds | None, "length of the clip, made in one call (skyreels-v2-df: in windows; "
                       "framepack: in sections of 36 frames); up to 120"] = None,
    base_frames: Annotated[Frames | None, "frames of one window (skyreels-v2-df: 4k+1; 97 at 540P)"] = None,
    overlap_history: Annotated[Frames | None, "frames each window continues from (skyreels-v2-df: 4k+1; 17 or "
                               "37)"] = None,
    addnoise_condition: Annotated[AddNoise | None, "noise on the frames a window continues from (skyreels-v2-df: "
                                  "20)"] = None,
    ar_step: Annotated[ArStep | None, "steps each block lags the one before (skyreels-v2-df: 0 synchronous, 5 "
                       "asynchronous)"] = None,
    causal_block_size: Annotated[Frames | None, "latent frames per block with ar_step > 0 (skyreels-v2-df: "
                                 "5)"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[ImageToVideoBackend | None, "the model: svd-xt (default), wan2.2-ti2v-5b, ltx-video, "
                       "open-sora-plan, skyreels-v2-df or framepack"] = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's; svd-xt, open-sora-plan)"
                        ] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Animate an image into a video clip (svd-xt: Stable Video Diffusion XT; wan2.2-ti2v-5b; ltx-video;
    open-sora-plan: Open-Sora-Plan v1.2's image-to-video; for long clips in one call skyreels-v2-df and framepack,
    which take `seconds` instead of `frames`).

    The image is fitted (cover + centre crop) and is the clip's first frame. Unset parameters take the backend's
    defaults (`mora_agents.tools.defaults`; svd-xt: 25 frames, 1024x576, 25 steps, fps 7, motion_bucket_id 180,
    noise_aug_strength 0.1, decode_chunk_size 12). The clip is written at `fps`. `adapters`: with the image-to-video
    agent's fine-tuned weights and modulation token from that folder.
    """
    from mora_agents.pipelines.adapters import adapters_scope
    from mora_agents.pipelines.loading import load_pipeline

    spec = backend_named(BACKENDS["image_to_video"], backend)
    if spec.name in LONG_BACKENDS:
        return image_clip(spec, image, prompt, seed, output, seconds=seconds, width=width, height=height, steps=steps,
                          fps=fps, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                          base_frames=base_frames, overlap_history=overlap_history,
                          addnoise_condition=addnoise_condition, ar_step=ar_step, causal_block_size=causal_block_size)
    p = fill_defaults("image_to_video", spec.name, width=width, height=height, frames=frames, steps=steps, fps=fps,
                      negative_prompt=negative_prompt, guidance_scale=guidance_scale, motion_bucket_id=motion_bucket_id,
                      noise_aug_strength=noise_aug_strength, decode_chunk_size=decode_chunk_size)
    start = fit_image(load_image(image), p["width"], p["height"])
    with adapters_scope(adapters):
        pipe = load_pipeline(spec.models[0])
    if spec.name == "svd-xt":
        specific = dict(fps=p["fps"], motion_bucket_id=p["motion_bucket_id"], noise_aug_strength=p["noise_aug_strength"],
                        decode_chunk_size=p["decode_chunk_size"])
    else:
        note_cut_prompts(pipe, spec, {"prompt": prompt, "negative_prompt": p["negative_prompt"]})
        specific = dict(prompt=prompt, negative_prompt=p["negative_prompt"], guidance_scale=p["guidance_scale"],
                        max_sequence_length=spec.text.tokens)
        if spec.name == "ltx-video":
            specific["frame_rate"] = p["fps"]
    with seeded(seed) as gen:
        if spec.name == "open-sora-plan":  # this project's pipeline: uint8 frames
            video = pipe([start], width=p["width"], height=p["height"], num_frames=p["frames"],
                         num_inference_steps=p["steps"], generator=gen, output_type="np",
                         callback=steps_callback("image_to_video"), **specific).frames
        else:
            frames = pipe(start, width=p["width"], height=p["height"], num_frames=p["frames"],
                          num_inference_steps=p["steps"], generator=gen, output_type="np",
                          callback_on_step_end=denoise_callback("image_to_video", p["steps"]), **specific).frames[0]
            video = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    settings().progress.stop()
    path = output_path(output, "image_to_video", ".mp4")
    return write_video(video, p["fps"], path, noise=settings().preset == "tiny")
