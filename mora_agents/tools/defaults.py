"""Per-preset parameter defaults of the model tools (the paper's settings under `full`)."""

from __future__ import annotations

from typing import Any

import torch

from mora_agents.settings import settings

DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "text_to_image": {"width": 1024, "height": 576, "steps": 40, "high_noise_frac": 0.8, "guidance_scale": 5.0},
        "edit_image": {"steps": 100, "guidance_scale": 7.5, "image_guidance_scale": 1.5, "max_side": 1024},
        "image_to_video": {"width": 1024, "height": 576, "frames": 25, "steps": 25, "fps": 7,
                           "motion_bucket_id": 180, "noise_aug_strength": 0.1, "decode_chunk_size": 12},
        "connect_videos": {"frames": 16, "width": 512, "height": 512, "sampler": "ddpm", "steps": 250,
                           "guidance_scale": 8.0},
    },
    "tiny": {
        "text_to_image": {"width": 64, "height": 64, "steps": 4, "high_noise_frac": 0.5, "guidance_scale": 5.0},
        "edit_image": {"steps": 3, "guidance_scale": 7.5, "image_guidance_scale": 1.5, "max_side": 128},
        "image_to_video": {"width": 64, "height": 64, "frames": 25, "steps": 2, "fps": 7,
                           "motion_bucket_id": 180, "noise_aug_strength": 0.1, "decode_chunk_size": 12},
        "connect_videos": {"frames": 16, "width": 64, "height": 64, "sampler": "ddim", "steps": 3,
                           "guidance_scale": 8.0},
    },
}


def fill_defaults(tool: str, **given: Any) -> dict[str, Any]:
    """The given parameters, with each one left as None replaced by the current preset's default."""
    defaults = DEFAULTS[settings().preset][tool]
    return {name: defaults[name] if value is None else value for name, value in given.items()}


def generator(seed: int | None) -> torch.Generator:
    """A seeded generator (a random seed when None). CPU generators keep results equal across devices."""
    gen = torch.Generator("cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen
