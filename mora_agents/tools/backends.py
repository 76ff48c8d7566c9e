"""Backends as data: the models each model tool can run, the parameters each reads, its rules and its text budget.

A model tool's `backend` parameter picks one; the first of a tool's backends is its default, the paper's model.
Parameters that a backend does not read are errors when set, and its rules (frame counts, size multiples) are
checked with the other arguments (`check_backend_args`, part of each tool's argument model), so `--set`,
`mora sops validate` and the agents' tool calls refuse a bad combination before anything runs. The parameter
defaults of each backend are in `mora_agents.tools.defaults`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TextBudget:
    """The text encoder that reads a backend's prompts, and how many tokens of a prompt it reads."""

    encoder: str
    """Its name, for messages: CLIP, T5, UMT5."""
    tokenizer: str
    """The pipeline's attribute holding its tokenizer; also the tokenizer's subfolder in the model folder."""
    tokens: int
    """The tokens it reads (special tokens included); the pipeline cuts a longer prompt there."""
    model: str
    """The model key whose folder holds that tokenizer."""
    subfolder: str | None = None
    """The tokenizer's subfolder in that folder when it is not `tokenizer` ("": the folder itself)."""


@dataclass(frozen=True)
class Backend:
    name: str
    label: str
    """The model, in words (role descriptions, messages)."""
    models: tuple[str, ...]
    """The model keys it loads (`mora_agents.pipelines.sources.MODEL_IDS`)."""
    params: frozenset[str]
    """The tool parameters it reads, of those that not every backend of the tool reads."""
    side: int = 8
    """Widths and heights are multiples of this (the VAE's factor times the denoiser's patch)."""
    frames_step: int = 1
    """Frame counts are `frames_step * k + 1` (the VAE's temporal factor); 1: any count."""
    frame_params: frozenset[str] = frozenset({"frames"})
    """The parameters that count frames, and so follow `frames_step`."""
    below: tuple[tuple[str, str], ...] = ()
    """Pairs of parameters (a, b) where a, when both are given, must be below b."""
    text: TextBudget | None = None
    """None: it reads no text."""
    adapters: bool = False
    """Whether `mora train` adapters apply to it: it runs a model one of the paper's systems trains (SDXL base,
    InstructPix2Pix, SVD-XT; SD3 Medium, Open-Sora-Plan)."""
    min_steps: int = 1
    """The fewest denoising steps its sampler takes (PNDM's warm-up needs 4)."""


CLIP_77 = 77
"""CLIP's context: 75 tokens of text between its start and end tokens."""
_VIDEO = {"width", "height", "frames", "steps", "fps"}
_OSP_TEXT = TextBudget("mT5", "tokenizer", 512, "mt5_xxl", subfolder="")
"""Open-Sora-Plan v1.2's sampler reads 512 mT5-XXL tokens; the tokenizer is at the top of google/mt5-xxl."""


def _params(*names: str, more: set[str] | frozenset[str] = frozenset()) -> frozenset[str]:
    return frozenset(names) | frozenset(more)


BACKENDS: dict[str, dict[str, Backend]] = {
    "text_to_image": {
        "sdxl": Backend(
            "sdxl", "SDXL base + refiner", ("sdxl_base", "sdxl_refiner"),
            _params("negative_prompt", "width", "height", "steps", "high_noise_frac", "guidance_scale", "adapters"),
            text=TextBudget("CLIP", "tokenizer", CLIP_77, "sdxl_base"), adapters=True),
        "flux-schnell": Backend(
            "flux-schnell", "FLUX.1 [schnell]", ("flux_schnell",), _params("width", "height", "steps"), side=16,
            text=TextBudget("T5", "tokenizer_2", 256, "flux_schnell")),
        **{name: Backend(name, label, (key,), _params("negative_prompt", "width", "height", "steps", "guidance_scale",
                                                      more={"adapters"} if key == "sd3" else frozenset()),
                         side=16, text=TextBudget("T5", "tokenizer_3", 256, key), adapters=key == "sd3")
           for name, label, key in (("sd3", "Stable Diffusion 3 Medium", "sd3"),
                                    ("sd3.5-large", "Stable Diffusion 3.5 Large", "sd35_large"),
                                    ("sd3.5-medium", "Stable Diffusion 3.5 Medium", "sd35_medium"))},
    },
    "edit_image": {
        "instruct-pix2pix": Backend(
            "instruct-pix2pix", "InstructPix2Pix", ("instruct_pix2pix",),
            _params("steps", "guidance_scale", "image_guidance_scale", "max_side", "adapters"),
            text=TextBudget("CLIP", "tokenizer", CLIP_77, "instruct_pix2pix"), adapters=True),
        "flux-kontext": Backend(
            "flux-kontext", "FLUX.1 Kontext [dev]", ("flux_kontext",), _params("steps", "guidance_scale", "max_side"),
            side=16, text=TextBudget("T5", "tokenizer_2", 512, "flux_kontext")),
        "sd3": Backend(
            "sd3", "Stable Diffusion 3 Medium (image-to-image)", ("sd3",),
            _params("steps", "guidance_scale", "max_side", "strength", "adapters"), side=16,
            text=TextBudget("T5", "tokenizer_3", 256, "sd3"), adapters=True),
    },
    "image_to_video": {
        "svd-xt": Backend(
            "svd-xt", "Stable Video Diffusion XT", ("svd",),
            _params("motion_bucket_id", "noise_aug_strength", "decode_chunk_size", "adapters", more=_VIDEO),
            adapters=True),
        "wan2.2-ti2v-5b": Backend(
            "wan2.2-ti2v-5b", "Wan 2.2 TI2V-5B", ("wan_ti2v",),
            _params("negative_prompt", "guidance_scale", more=_VIDEO), side=32, frames_step=4,
            text=TextBudget("UMT5", "tokenizer", 512, "wan_ti2v")),
        "ltx-video": Backend(
            "ltx-video", "LTX-Video", ("ltx_video",), _params("negative_prompt", "guidance_scale", more=_VIDEO),
            side=32, frames_step=8, text=TextBudget("T5", "tokenizer", 128, "ltx_video")),
        "open-sora-plan": Backend(
            "open-sora-plan", "Open-Sora-Plan v1.2", ("open_sora_plan", "mt5_xxl"),
            _params("negative_prompt", "guidance_scale", "adapters", more=_VIDEO), side=16, frames_step=4,
            text=_OSP_TEXT, min_steps=4, adapters=True),
    },
    "connect_videos": {
        "seine": Backend(
            "seine", "SEINE", ("seine", "sd_v1_4"),
            _params("frames", "width", "height", "sampler", "steps", "guidance_scale"),
            text=TextBudget("CLIP", "tokenizer", CLIP_77, "sd_v1_4")),
        "wan2.1-flf2v": Backend(
            "wan2.1-flf2v", "Wan 2.1 FLF2V-14B", ("wan_flf2v",),
            _params("negative_prompt", "frames", "width", "height", "steps", "guidance_scale"), side=16,
            frames_step=4, text=TextBudget("UMT5", "tokenizer", 512, "wan_flf2v")),
        "open-sora-plan": Backend(
            "open-sora-plan", "Open-Sora-Plan v1.2 (first and last frame)", ("open_sora_plan", "mt5_xxl"),
            _params("negative_prompt", "frames", "width", "height", "steps", "guidance_scale"), side=16,
            frames_step=4, text=_OSP_TEXT, min_steps=4, adapters=True),
    },
}
"""Per model tool, its backends by name; the first is the default."""
_WINDOWS = frozenset({"seconds", "width", "height", "steps", "fps", "negative_prompt", "guidance_scale", "base_frames",
                      "overlap_history", "addnoise_condition", "ar_step", "causal_block_size"})
"""What SkyReels-V2 diffusion forcing reads: a length in seconds, made in windows of `base_frames` that each continue
the last `overlap_history` frames of the one before."""
SKYREELS_DF = Backend(
    "skyreels-v2-df", "SkyReels-V2 DF 1.3B (diffusion forcing)", ("skyreels_df",), _WINDOWS, side=16, frames_step=4,
    frame_params=frozenset({"base_frames", "overlap_history"}), below=(("overlap_history", "base_frames"),),
    text=TextBudget("UMT5", "tokenizer", 512, "skyreels_df"))
BACKENDS["image_to_video"] |= {
    "skyreels-v2-df": SKYREELS_DF,
    "framepack": Backend(
        "framepack", "FramePack (HunyuanVideo)", ("framepack", "hunyuan_video", "flux_redux"),
        frozenset({"seconds", "width", "height", "steps", "fps", "guidance_scale"}), side=16,
        text=TextBudget("Llama", "tokenizer", 256, "hunyuan_video")),
}
BACKENDS["extend_video"] = {"skyreels-v2-df": SKYREELS_DF}
BACKENDS["connect_images"] = BACKENDS["connect_videos"]
BACKENDS["keyframe"] = {
    "flux-kontext": Backend(
        "flux-kontext", "FLUX.1 Kontext [dev], the references laid out on its input canvas", ("flux_kontext",),
        _params("steps", "guidance_scale"), side=16, text=TextBudget("T5", "tokenizer_2", 512, "flux_kontext")),
    "sdxl-ip-adapter": Backend(
        "sdxl-ip-adapter", "SDXL base with IP-Adapter (the references' image features)",
        ("sdxl_base", "sdxl_ip_adapter"), _params("steps", "guidance_scale", "negative_prompt", "reference_scale"),
        text=TextBudget("CLIP", "tokenizer", CLIP_77, "sdxl_base")),
}
PROMPTS = {"text_to_image": "prompt", "edit_image": "instruction", "image_to_video": "prompt",
           "connect_videos": "prompt", "connect_images": "prompt", "extend_video": "prompt", "keyframe": "prompt"}
"""The parameter of each model tool that its backend's text encoder reads (with `negative_prompt`)."""
SYSTEMS: dict[str, dict[str, str]] = {
    "svd": {"text_to_image": "sdxl", "edit_image": "instruct-pix2pix", "image_to_video": "svd-xt",
            "connect_videos": "seine", "connect_images": "seine"},
    "osp": {"text_to_image": "sd3", "edit_image": "sd3", "image_to_video": "open-sora-plan",
            "connect_videos": "open-sora-plan", "connect_images": "open-sora-plan"},
}
"""The paper's two systems, as the backend each model tool runs: Mora (SVD), its defaults, and Mora (Open-Sora-Plan)
(SD3 and an SD3-based editor, Open-Sora-Plan for image-to-video and the connection agent)."""


def system_overrides(system: str | None, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`overrides` (`--set` values by tool) with each model tool's backend set to the system's, unless they name one
    themselves; None: unchanged. Raises ValueError for an unknown system."""
    merged = {tool: dict(params) for tool, params in overrides.items()}
    if system is None:
        return merged
    if system not in SYSTEMS:
        raise ValueError(f"system {system}: unknown (choose from {', '.join(SYSTEMS)})")
    for tool, backend in SYSTEMS[system].items():
        merged.setdefault(tool, {}).setdefault("backend", backend)
    return merged


def default_backend(backends: Mapping[str, Backend]) -> str:
    return next(iter(backends))


def backend_named(backends: Mapping[str, Backend], name: str | None) -> Backend:
    """The backend called `name` (None: the default); raises ValueError for an unknown name."""
    if name is not None and name not in backends:
        raise ValueError(f"backend {name}: unknown (choose from {', '.join(backends)})")
    return backends[name or default_backend(backends)]


def check_backend_args(backends: Mapping[str, Backend], values: Mapping[str, Any]) -> None:
    """Check the given arguments of a tool against its backend (`values["backend"]`, else the default): every
    parameter set is one the backend reads, and frame counts and sizes follow its rules. Raises ValueError."""
    backend = backend_named(backends, values.get("backend"))
    specific = frozenset().union(*(b.params for b in backends.values()))
    for param, value in values.items():
        if value is not None and param in specific and param not in backend.params:
            readers = [b.name for b in backends.values() if param in b.params]
            raise ValueError(f"{param}: backend {backend.name} does not take it (only {', '.join(readers)})")
    steps = values.get("steps")
    if isinstance(steps, int) and steps < backend.min_steps:
        raise ValueError(f"steps {steps}: backend {backend.name} takes at least {backend.min_steps}")
    for param in sorted(backend.frame_params):
        frames = values.get(param)
        if isinstance(frames, int) and (frames - 1) % backend.frames_step:
            step = backend.frames_step
            below = (frames - 1) // step * step + 1
            raise ValueError(f"{param} {frames}: backend {backend.name} makes {step}k+1 frames "
                             f"(e.g. {below} or {below + step})")
    for low, high in backend.below:
        if isinstance(values.get(low), int | float) and isinstance(values.get(high), int | float) \
                and values[low] >= values[high]:
            raise ValueError(f"{low} {values[low]}: backend {backend.name} needs it below {high} ({values[high]})")
    for side in ("width", "height"):
        value = values.get(side)
        if isinstance(value, int) and value % backend.side:
            raise ValueError(f"{side} {value}: backend {backend.name} needs a multiple of {backend.side}")
