"""The tools' parameter types with their bounds: defined once, checked on every path in.

A tool parameter is written `name: Annotated[Type | None, "description"] = None`, with `Type` one of these
(or any pydantic-constrained type). The registry builds each tool's argument model from them, so `--set`,
SOP `args` (when `mora sops validate` reads them and when they run) and the agents' tool calls (the JSON
schema the model sees, and the check of its answer) all apply the same bounds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from mora_agents.inputs import MAX_SEED, MAX_WORK_SIDE, text_problem
from mora_agents.media import MAX_FPS

MAX_PROMPT_CHARS = 10_000
"""A tool's text (an LLM's enhanced prompt may be longer than the request it came from)."""
MAX_STEPS = 1000
"""Denoising steps (the schedulers are trained on 1000 timesteps)."""
MAX_FRAMES = 257
"""Frames one model call generates (SVD-XT makes 25, SEINE 16, Wan 2.2 121, LTX-Video up to 257)."""


def _text(value: str) -> str:
    if (problem := text_problem(value, MAX_PROMPT_CHARS)) is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS), AfterValidator(_text)]
"""A prompt or instruction: not blank, at most MAX_PROMPT_CHARS characters."""
OptionalText = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # pydantic would read true as 1
        raise ValueError("a number is needed, not true or false")
    return value


def _whole(**bounds: int) -> object:
    return Annotated[int, Field(**bounds), BeforeValidator(_not_bool)]


def _real(**bounds: float) -> object:
    return Annotated[float, Field(allow_inf_nan=False, **bounds), BeforeValidator(_not_bool)]


Side = _whole(ge=64, le=MAX_WORK_SIDE, multiple_of=8)
"""A width or height in pixels: a multiple of 8 (the VAEs' factor) from 64 to MAX_WORK_SIDE."""
Steps = _whole(ge=1, le=MAX_STEPS)
Frames = _whole(ge=2, le=MAX_FRAMES)
Chunk = _whole(ge=1, le=MAX_FRAMES)
"""Frames a VAE decodes at once."""
Fps = _whole(ge=1, le=int(MAX_FPS))
MotionBucket = _whole(ge=0, le=255)
Seed = _whole(ge=0, le=MAX_SEED)
Guidance = _real(ge=0, le=50)
"""A classifier-free guidance scale (1 or less turns guidance off)."""
Fraction = _real(gt=0, lt=1)
Strength = _real(ge=0, le=1)
Redraw = _real(gt=0, le=1)
"""How much of a starting image img2img redraws (1: all of it)."""
Sampler = Literal["ddpm", "ddim"]

# The backends of each model tool (the first is the default; `mora_agents.tools.backends` has what each reads).
TextToImageBackend = Literal["sdxl", "flux-schnell", "sd3", "sd3.5-large", "sd3.5-medium"]
EditImageBackend = Literal["instruct-pix2pix", "flux-kontext", "sd3"]
ImageToVideoBackend = Literal["svd-xt", "wan2.2-ti2v-5b", "ltx-video", "open-sora-plan", "skyreels-v2-df", "framepack"]
ConnectBackend = Literal["seine", "wan2.1-flf2v", "open-sora-plan"]
ExtendVideoBackend = Literal["skyreels-v2-df"]
KeyframeBackend = Literal["flux-kontext", "sdxl-ip-adapter"]

# The long-video backends' parameters (skyreels-v2-df, framepack): a length made in one call, window by window.
MAX_CLIP_SECONDS = 120.0
"""The longest clip one call of a long-video backend makes (FramePack's own limit)."""
ClipSeconds = _real(gt=0, le=MAX_CLIP_SECONDS)
AddNoise = _real(ge=0, le=60)
"""Noise on the frames a window continues from (SkyReels-V2: 20; its authors warn above 50)."""
ArStep = _whole(ge=0, le=50)
"""Steps each block of frames lags the one before (0: all frames denoised together)."""

