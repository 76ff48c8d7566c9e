"""Per-preset parameter defaults of the model tools and their backends (the paper's settings under `full` for the
default backends; each other backend's own recommended ones)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mora_agents.settings import settings
from mora_agents.tools.registry import get_tool

if TYPE_CHECKING:
    import torch

DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "text_to_image": {"width": 1024, "height": 576, "steps": 40, "high_noise_frac": 0.8, "guidance_scale": 5.0,
                          "strength": 0.3},
        "edit_image": {"steps": 100, "guidance_scale": 7.5, "image_guidance_scale": 1.5, "max_side": 1024},
        "image_to_video": {"width": 1024, "height": 576, "frames": 25, "steps": 25, "fps": 7,
                           "motion_bucket_id": 180, "noise_aug_strength": 0.1, "decode_chunk_size": 12},
        "connect_videos": {"frames": 16, "width": 512, "height": 512, "sampler": "ddpm", "steps": 250,
                           "guidance_scale": 8.0, "fps": 8},
    },
    "tiny": {  # the fewest steps and frames that run every code path, at a frame or two a second (SVD's 3.5 s clips
        # are as long as the full model's): a run at an SOP's default length chains a few clips, two or more
        "text_to_image": {"width": 64, "height": 64, "steps": 2, "high_noise_frac": 0.5, "guidance_scale": 5.0,
                          "strength": 0.3},
        "edit_image": {"steps": 1, "guidance_scale": 7.5, "image_guidance_scale": 1.5, "max_side": 128},
        "image_to_video": {"width": 64, "height": 64, "frames": 7, "steps": 1, "fps": 2,
                           "motion_bucket_id": 180, "noise_aug_strength": 0.1, "decode_chunk_size": 12},
        "connect_videos": {"frames": 16, "width": 64, "height": 64, "sampler": "ddim", "steps": 1,
                           "guidance_scale": 8.0, "fps": 8},
    },
}
"""Per preset, per model tool: the parameters of its default backend (the paper's model)."""
_NEGATIVE_VIDEO = "static frame, blurry, overexposed, low quality, distorted, jittery motion, captions"
"""Written for these backends from the artefacts their authors list in their own negative prompts (short enough for
every budget, the tiny preset's character-level tokenizers included)."""
_NEGATIVE_IMAGE = "low resolution, blurry, bad anatomy, malformed hands, text, watermark, signature, jpeg artefacts"
"""Open-Sora-Plan's sampler's negative prompt (an image-quality list), in our words."""
BACKEND_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "flux-schnell": {"width": 1024, "height": 576, "steps": 4, "strength": 0.3},
        "flux-kontext": {"steps": 28, "guidance_scale": 2.5, "max_side": 1024, "width": 1024, "height": 576},
        "sdxl-ip-adapter": {"width": 1024, "height": 576, "steps": 40, "guidance_scale": 5.0, "reference_scale": 0.6},
        "wan2.2-ti2v-5b": {"width": 1280, "height": 704, "frames": 121, "steps": 50, "fps": 24, "guidance_scale": 5.0,
                           "negative_prompt": _NEGATIVE_VIDEO},
        "ltx-video": {"width": 704, "height": 480, "frames": 161, "steps": 50, "fps": 25, "guidance_scale": 3.0,
                      "negative_prompt": _NEGATIVE_VIDEO},
        "wan2.1-flf2v": {"frames": 81, "width": 1280, "height": 720, "steps": 50, "guidance_scale": 5.5, "fps": 16,
                         "negative_prompt": _NEGATIVE_VIDEO},
        "sd3": {"width": 1024, "height": 768, "steps": 28, "guidance_scale": 7.0, "strength": 0.6, "max_side": 1024},
        "sd3.5-large": {"width": 1024, "height": 768, "steps": 28, "guidance_scale": 3.5, "strength": 0.6},
        "sd3.5-medium": {"width": 1024, "height": 768, "steps": 40, "guidance_scale": 4.5, "strength": 0.6},
        "open-sora-plan": {"frames": 93, "width": 640, "height": 480, "steps": 100, "guidance_scale": 7.5, "fps": 24,
                           "negative_prompt": _NEGATIVE_IMAGE},
        "skyreels-v2-df": {"seconds": 4.0, "width": 960, "height": 544, "steps": 30, "fps": 24, "guidance_scale": 5.0,
                           "negative_prompt": _NEGATIVE_VIDEO, "base_frames": 97, "overlap_history": 17,
                           "addnoise_condition": 20.0, "ar_step": 0, "causal_block_size": None},
        "framepack": {"seconds": 5.0, "width": 832, "height": 480, "steps": 25, "fps": 30, "guidance_scale": 10.0},
    },
    "tiny": {  # as DEFAULTS["tiny"]; Wan's and LTX's clips are 9 frames at 1 fps, 9 s (a 30 s run chains 3);
               # SkyReels-V2 DF's windows are 17 frames at 2 fps (60 s: 10 windows, 125 frames)
        "flux-schnell": {"width": 64, "height": 64, "steps": 1, "strength": 0.3},
        "flux-kontext": {"steps": 1, "guidance_scale": 2.5, "max_side": 128, "width": 64, "height": 64},
        "sdxl-ip-adapter": {"width": 64, "height": 64, "steps": 2, "guidance_scale": 5.0, "reference_scale": 0.6},
        "wan2.2-ti2v-5b": {"width": 64, "height": 64, "frames": 9, "steps": 1, "fps": 1, "guidance_scale": 5.0,
                           "negative_prompt": _NEGATIVE_VIDEO},
        "ltx-video": {"width": 64, "height": 64, "frames": 9, "steps": 1, "fps": 1, "guidance_scale": 3.0,
                      "negative_prompt": _NEGATIVE_VIDEO},
        "wan2.1-flf2v": {"frames": 9, "width": 64, "height": 64, "steps": 1, "guidance_scale": 5.5, "fps": 1,
                         "negative_prompt": _NEGATIVE_VIDEO},
        "sd3": {"width": 64, "height": 64, "steps": 1, "guidance_scale": 7.0, "strength": 0.6, "max_side": 128},
        "sd3.5-large": {"width": 64, "height": 64, "steps": 1, "guidance_scale": 3.5, "strength": 0.6},
        "sd3.5-medium": {"width": 64, "height": 64, "steps": 1, "guidance_scale": 4.5, "strength": 0.6},
        "open-sora-plan": {"frames": 9, "width": 64, "height": 64, "steps": 4, "guidance_scale": 7.5, "fps": 2,
                           "negative_prompt": _NEGATIVE_IMAGE},
        "skyreels-v2-df": {"seconds": 2.0, "width": 64, "height": 64, "steps": 2, "fps": 2, "guidance_scale": 5.0,
                           "negative_prompt": _NEGATIVE_VIDEO, "base_frames": 17, "overlap_history": 5,
                           "addnoise_condition": 20.0, "ar_step": 0, "causal_block_size": None},
        "framepack": {"seconds": 2.0, "width": 64, "height": 64, "steps": 2, "fps": 8, "guidance_scale": 10.0},
    },
}
"""Per preset, per backend other than the defaults: its recommended parameters (`full`: its authors')."""


def backend_defaults(preset: str, tool: str, backend: str) -> dict[str, Any]:
    """The parameter defaults of a tool's backend under a preset (`connect_images` runs `connect_videos`' models), with
    those of a distilled LoRA over them when the speed settings load one (`--speed-option distill=...`)."""
    from mora_agents.pipelines.speed import distilled_defaults

    defaults = BACKEND_DEFAULTS[preset].get(backend) or DEFAULTS[preset]["connect_videos" if tool == "connect_images"
                                                                          else tool]
    return defaults | distilled_defaults(backend, settings().speed)


def fill_defaults(tool: str, backend: str, **given: Any) -> dict[str, Any]:
    """The given parameters, typed, with each one left as None replaced by the current preset's default for the
    backend.

    The given ones are first typed and checked against the backend's rules (`ToolSpec.check_combination`, as
    `--set` and SOP arguments are), so that a library call with, say, 24 frames for a 4k+1-frame backend raises
    ValueError instead of being rounded, and 25.0 frames reach the model as 25."""
    typed = get_tool(tool).check_combination({"backend": backend, **given})
    defaults = backend_defaults(settings().preset, tool, backend)
    return {name: defaults.get(name) if typed[name] is None else typed[name] for name in given}


def generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on `device` seeded by `seed` (a random seed when None)."""
    import torch

    gen = torch.Generator(device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


@contextmanager
def seeded(seed: int | None) -> Iterator[torch.Generator]:
    """One model call, in inference mode, with all its randomness drawn from `seed` (a random one when None): the generator it passes to
    the pipeline, on the device the models run on (where the pipelines draw their noise with it), and, for the
    call, the global random state, forked and seeded from the same seed, for library code that draws without a
    generator (LTX-Video 0.9.1's decoder noise). So a call gives the same frames whatever ran before it in the
    process, and changes nothing for the calls after it (tool calls run one at a time).

    Under the tiny preset the call runs on one CPU thread: its operations are too small to gain from more, and
    the idle threads would only spin (on a busy machine, several times slower)."""
    import torch

    from mora_agents.pipelines.loading import resolve_device

    device = resolve_device(settings().device)
    gen = generator(seed, device)
    threads = torch.get_num_threads()
    if settings().preset == "tiny":
        torch.set_num_threads(1)
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(gen.initial_seed())
            yield gen
    finally:
        torch.set_num_threads(threads)
