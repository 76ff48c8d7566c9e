"""The paper's workloads, each a function of (pipelines, settings, recorder, seed) returning its decoded frames.

They call the pipelines as the tools in `mora_agents.tools` do, at the `full` preset's settings
(`tools.defaults.DEFAULTS["full"]`: the paper's), minus the file I/O, and time each stage with its
denoiser. `--preset tiny` uses the tiny preset's settings, shrunk further so that the CPU smoke test is quick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mora_agents.bench.configurations import Pipelines, Settings, merge
from mora_agents.bench.measure import Recorder
from mora_agents.tools.backends import BACKENDS
from mora_agents.tools.defaults import BACKEND_DEFAULTS, DEFAULTS, generator

PROMPT = "a red fox running through snow"
INSTRUCTION = "make it look like winter"
TRANSITION_PROMPT = "smooth transition"
SEGMENTS_12S = 3
"""Segments of a 12 s video: max(1, round(12 / (25 frames / 7 fps))), chained from each last frame."""
SMOKE: Settings = {
    "text_to_image": {"width": 32, "height": 32, "steps": 2},
    "edit_image": {"steps": 2},
    "image_to_video": {
        "width": 32,
        "height": 32,
        "frames": 6,
        "steps": 2,
        "decode_chunk_size": 4,
    },
    "connect_videos": {"frames": 4, "width": 32, "height": 32, "steps": 2},
}
"""`--preset tiny`: changes to the tiny preset's settings (1-2 steps, few frames) for a fast CPU smoke test."""


def settings_for(size: str) -> dict[str, dict[str, Any]]:
    """The tool settings of a size, by tool (the paper's models) and by backend name (the others): their defaults for
    `full`, the shrunk tiny preset's for `tiny`."""
    return merge({**DEFAULTS[size], **BACKEND_DEFAULTS[size]}, SMOKE if size == "tiny" else {})


def gradient_image(width: int, height: int, shift: int = 0) -> Image.Image:
    """A smooth colour gradient: a deterministic input image."""
    x = np.broadcast_to(np.linspace(0, 255, width), (height, width))
    y = np.broadcast_to(np.linspace(0, 255, height)[:, None], (height, width))
    blue = np.full((height, width), (128 + 64 * shift) % 256)
    return Image.fromarray(np.stack([x, y, blue], axis=-1).astype(np.uint8))


def _to_image(frame: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))


def text_to_image(
    pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int
) -> np.ndarray:
    """SDXL base for the first `high_noise_frac` of the steps, the refiner for the rest; [1, H, W, 3]."""
    p = settings["text_to_image"]
    base, refiner = pipes["sdxl_base"], pipes["sdxl_refiner"]
    common = {
        "prompt": PROMPT,
        "num_inference_steps": p["steps"],
        "guidance_scale": p["guidance_scale"],
    }
    gen = generator(seed)
    with recorder.stage("base", base.unet):
        latents = base(
            **common,
            width=p["width"],
            height=p["height"],
            denoising_end=p["high_noise_frac"],
            output_type="latent",
            generator=gen,
        ).images
    with recorder.stage("refiner", refiner.unet):
        return refiner(
            **common,
            image=latents,
            denoising_start=p["high_noise_frac"],
            generator=gen,
            output_type="np",
        ).images


def image_edit(
    pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int
) -> np.ndarray:
    """InstructPix2Pix on an image of the text-to-image size; [1, H, W, 3]."""
    p, size = settings["edit_image"], settings["text_to_image"]
    pipe = pipes["instruct_pix2pix"]
    with recorder.stage("edit", pipe.unet):
        return pipe(
            INSTRUCTION,
            image=gradient_image(size["width"], size["height"]),
            num_inference_steps=p["steps"],
            guidance_scale=p["guidance_scale"],
            image_guidance_scale=p["image_guidance_scale"],
            generator=generator(seed),
            output_type="np",
        ).images


def _segment(
    pipes: Pipelines,
    settings: Settings,
    recorder: Recorder,
    seed: int,
    image: Image.Image,
    stage: str,
) -> np.ndarray:
    p = settings["image_to_video"]
    pipe = pipes["svd"]
    with recorder.stage(stage, pipe.unet):
        return pipe(
            image,
            width=p["width"],
            height=p["height"],
            num_frames=p["frames"],
            num_inference_steps=p["steps"],
            fps=p["fps"],
            motion_bucket_id=p["motion_bucket_id"],
            noise_aug_strength=p["noise_aug_strength"],
            decode_chunk_size=p["decode_chunk_size"],
            generator=generator(seed),
            output_type="np",
        ).frames[0]


def svd_segment(
    pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int
) -> np.ndarray:
    """One SVD-XT segment from an image; [frames, H, W, 3]."""
    p = settings["image_to_video"]
    return _segment(
        pipes,
        settings,
        recorder,
        seed,
        gradient_image(p["width"], p["height"]),
        "segment",
    )


def text_to_video_12s(
    pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int
) -> np.ndarray:
    """An SDXL image, then SEGMENTS_12S SVD segments each started from the last frame of the one before."""
    image = text_to_image(pipes, settings, recorder, seed)[0]
    clips = []
    for i in range(1, SEGMENTS_12S + 1):
        clip = _segment(
            pipes, settings, recorder, seed, _to_image(image), f"segment {i}"
        )
        # A chained segment starts with the frame it was made from: keep it once.
        clips.append(clip if i == 1 else clip[1:])
        image = clip[-1]
    return np.concatenate(clips)


def seine_transition(
    pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int
) -> np.ndarray:
    """A SEINE transition between two frames; [frames, H, W, 3]."""
    p = settings["connect_videos"]
    pipe = pipes["seine"]
    ends = [gradient_image(p["width"], p["height"], shift) for shift in (0, 1)]
    with recorder.stage("transition", pipe.unet):
        frames = pipe(
            ends,
            prompt=TRANSITION_PROMPT,
            mask_type="onelast1",
            num_frames=p["frames"],
            height=p["height"],
            width=p["width"],
            sampler=p["sampler"],
            num_inference_steps=p["steps"],
            guidance_scale=p["guidance_scale"],
            generator=generator(seed),
            output_type="np",
        ).frames
    return np.asarray(frames, dtype=np.float32) / 255


def flux_schnell_image(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """FLUX.1 [schnell], as `text_to_image` runs it; [1, H, W, 3]."""
    p = settings["flux-schnell"]
    pipe = pipes["flux_schnell"]
    with recorder.stage("image", pipe.transformer):
        return pipe(PROMPT, width=p["width"], height=p["height"], num_inference_steps=p["steps"], guidance_scale=0.0,
                    max_sequence_length=BACKENDS["text_to_image"]["flux-schnell"].text.tokens, generator=generator(seed),
                    output_type="np").images


def flux_kontext_edit(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """FLUX.1 Kontext on an image of FLUX.1 [schnell]'s size, at that size, as `edit_image` runs it; [1, H, W, 3]."""
    p, size = settings["flux-kontext"], settings["flux-schnell"]
    pipe = pipes["flux_kontext"]
    with recorder.stage("edit", pipe.transformer):
        return pipe(image=gradient_image(size["width"], size["height"]), prompt=INSTRUCTION, width=size["width"],
                    height=size["height"], max_area=size["width"] * size["height"], _auto_resize=False,
                    num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                    max_sequence_length=BACKENDS["edit_image"]["flux-kontext"].text.tokens, generator=generator(seed),
                    output_type="np").images


def _video_segment(key: str, backend: str, tool: str, pipes: Pipelines, settings: Settings, recorder: Recorder,
                   seed: int, stage: str, **call: Any) -> np.ndarray:
    """One clip of a text-conditioned video backend, as `image_to_video` (or `connect_images`) runs it."""
    p = settings[backend]
    pipe = pipes[key]
    with recorder.stage(stage, pipe.transformer):
        return pipe(gradient_image(p["width"], p["height"]), prompt=PROMPT, negative_prompt=p["negative_prompt"],
                    width=p["width"], height=p["height"], num_frames=p["frames"], num_inference_steps=p["steps"],
                    guidance_scale=p["guidance_scale"], max_sequence_length=BACKENDS[tool][backend].text.tokens,
                    generator=generator(seed), output_type="np", **call).frames[0]


def wan_ti2v_segment(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """One Wan 2.2 TI2V-5B segment from an image; [frames, H, W, 3]."""
    return _video_segment("wan_ti2v", "wan2.2-ti2v-5b", "image_to_video", pipes, settings, recorder, seed, "segment")


def ltx_segment(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """One LTX-Video segment from an image; [frames, H, W, 3]."""
    return _video_segment("ltx_video", "ltx-video", "image_to_video", pipes, settings, recorder, seed, "segment",
                          frame_rate=settings["ltx-video"]["fps"])


def wan_flf2v_transition(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """A Wan 2.1 FLF2V clip between two frames; [frames, H, W, 3]."""
    p = settings["wan2.1-flf2v"]
    return _video_segment("wan_flf2v", "wan2.1-flf2v", "connect_videos", pipes, settings, recorder, seed, "transition",
                          last_image=gradient_image(p["width"], p["height"], 1))


def sd3_image(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """Stable Diffusion 3 Medium, as `text_to_image` runs it (the OSP system's first frame); [1, H, W, 3]."""
    p = settings["sd3"]
    pipe = pipes["sd3"]
    with recorder.stage("image", pipe.transformer):
        return pipe(PROMPT, width=p["width"], height=p["height"], num_inference_steps=p["steps"],
                    guidance_scale=p["guidance_scale"], max_sequence_length=BACKENDS["text_to_image"]["sd3"].text.tokens,
                    generator=generator(seed), output_type="np").images


def _open_sora_plan(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int, tool: str, stage: str,
                    images: int) -> np.ndarray:
    """Open-Sora-Plan from the first (and last) of `images` frames, as `image_to_video` (`connect_images`) runs it;
    [frames, H, W, 3]."""
    p = settings["open-sora-plan"]
    pipe = pipes["open_sora_plan"]
    with recorder.stage(stage, pipe.transformer):
        frames = pipe([gradient_image(p["width"], p["height"], shift) for shift in range(images)], prompt=PROMPT,
                      negative_prompt=p["negative_prompt"], num_frames=p["frames"], height=p["height"],
                      width=p["width"], num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                      max_sequence_length=BACKENDS[tool]["open-sora-plan"].text.tokens, generator=generator(seed),
                      output_type="np").frames
    return np.asarray(frames, dtype=np.float32) / 255


def osp_segment(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """One Open-Sora-Plan v1.2 segment from an image (the OSP system's image-to-video); [frames, H, W, 3]."""
    return _open_sora_plan(pipes, settings, recorder, seed, "image_to_video", "segment", 1)


def osp_transition(pipes: Pipelines, settings: Settings, recorder: Recorder, seed: int) -> np.ndarray:
    """An Open-Sora-Plan v1.2 clip between two frames (the OSP system's connection agent); [frames, H, W, 3]."""
    return _open_sora_plan(pipes, settings, recorder, seed, "connect_videos", "transition", 2)


def _fewer_svd_steps(settings: Settings) -> tuple[str, Settings]:
    steps = max(1, settings["image_to_video"]["steps"] // 2)
    return f"steps{steps}", {"image_to_video": {"steps": steps}}


def _seine_ddim(settings: Settings) -> tuple[str, Settings]:
    steps = max(1, settings["connect_videos"]["steps"] // 5)
    return f"ddim{steps}", {"connect_videos": {"sampler": "ddim", "steps": steps}}


@dataclass(frozen=True)
class Workload:
    name: str
    models: tuple[str, ...]
    run: Callable[[Pipelines, Settings, Recorder, int], np.ndarray]
    approximation: Callable[[Settings], tuple[str, Settings]] | None = None
    """An approximate speed-up of the workload: its name and the settings it changes."""
    paper: bool = True
    """One of the paper's SVD-system workloads; the others (newer backends, the OSP system's models) have no
    `reference` (the paper's code)."""


WORKLOADS = {
    workload.name: workload
    for workload in (
        Workload("text_to_image", ("sdxl_base", "sdxl_refiner"), text_to_image),
        Workload("image_edit", ("instruct_pix2pix",), image_edit),
        Workload("svd_segment", ("svd",), svd_segment, _fewer_svd_steps),
        Workload(
            "text_to_video_12s", ("sdxl_base", "sdxl_refiner", "svd"), text_to_video_12s
        ),
        Workload("seine_transition", ("seine",), seine_transition, _seine_ddim),
        Workload("flux_schnell_image", ("flux_schnell",), flux_schnell_image, paper=False),
        Workload("flux_kontext_edit", ("flux_kontext",), flux_kontext_edit, paper=False),
        Workload("wan_ti2v_segment", ("wan_ti2v",), wan_ti2v_segment, paper=False),
        Workload("ltx_segment", ("ltx_video",), ltx_segment, paper=False),
        Workload("wan_flf2v_transition", ("wan_flf2v",), wan_flf2v_transition, paper=False),
        Workload("sd3_image", ("sd3",), sd3_image, paper=False),
        Workload("osp_segment", ("open_sora_plan",), osp_segment, paper=False),
        Workload("osp_transition", ("open_sora_plan",), osp_transition, paper=False),
    )
}
