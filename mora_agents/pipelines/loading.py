"""Load the pipelines the tools run: real weights (`full`) or tiny random ones (`tiny`), once per process.

`full` reads Hugging Face ids from the local cache or local directories, never the network, and fails
fast, before any work, naming the model that is missing and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from mora_agents.errors import InputError, ModelNotAvailable
from mora_agents.pipelines.adapters import apply_adapters, trained_models
from mora_agents.settings import settings

MODEL_IDS: dict[str, str] = {
    "sdxl_base": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl_refiner": "stabilityai/stable-diffusion-xl-refiner-1.0",
    "instruct_pix2pix": "timbrooks/instruct-pix2pix",
    "svd": "stabilityai/stable-video-diffusion-img2vid-xt",
    "seine": "Vchitect/SEINE",
    "sd_v1_4": "CompVis/stable-diffusion-v1-4",
}
KEY_FILES = {"seine": "seine.pt"}
"""The file that shows a model is present (default: a diffusers pipeline's model_index.json)."""
PRESETS = ("full", "tiny")
MEMORY_PROFILES = ("resident", "24gb")
REFINER_SHARES = ("text_encoder_2", "vae")
"""The SDXL refiner's components taken from the base: one copy in memory, as in the paper's code."""


def model_source(key: str) -> str:
    """The id or directory for a model key: tool settings, then MORA_MODEL_<KEY>, then the default id."""
    return settings().models.get(key) or os.environ.get(f"MORA_MODEL_{key.upper()}") or MODEL_IDS[key]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_available(keys: Iterable[str]) -> None:
    """Raise ModelNotAvailable for the first model whose weights are not on this machine (no download)."""
    from huggingface_hub import try_to_load_from_cache

    for key in keys:
        source, key_file = model_source(key), KEY_FILES.get(key, "model_index.json")
        if Path(source).is_file() and Path(source).name == key_file:
            continue
        if Path(source).is_dir():
            if not (Path(source) / key_file).is_file():
                raise ModelNotAvailable(f"model '{key}': {source} has no {key_file}")
            continue
        if not isinstance(try_to_load_from_cache(source, key_file), str):
            raise ModelNotAvailable(
                f"model '{key}' ({source}) is not on this machine: download it with "
                f"`huggingface-cli download {source}{' ' + key_file if key in KEY_FILES else ''}` or set MORA_MODEL_{key.upper()} to a local folder "
                f"(or use --preset tiny for a random-weight demo)"
            )


def full_dtype(device: torch.device) -> torch.dtype:
    """The `full` preset's weight dtype: fp16 on CUDA, fp32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def finish_pipeline(key: str, pipe: DiffusionPipeline, device: str | torch.device,
                    memory_profile: str = "resident") -> DiffusionPipeline:
    """How the presets run a freshly built pipeline: placed on `device` as the memory profile says (see
    `ToolSettings.memory_profile`; the same computation up to float rounding), default attention, no progress bars.

    `mora bench` applies it to its random-weight pipelines, so its `ours` rows are what `load_pipeline` returns.
    """
    pipe.set_progress_bar_config(disable=True)
    if memory_profile == "resident":
        return pipe.to(device)
    pipe.enable_model_cpu_offload(device=device)
    if key == "seine":
        pipe.vae.enable_slicing()
    if key == "svd":  # its temporal decoder can be neither sliced nor tiled; a smaller decode chunk changes the output
        pipe.unet.enable_forward_chunking()
    return pipe


def _full(key: str, device: torch.device, dtype: torch.dtype | None = None) -> DiffusionPipeline:
    from diffusers import (
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        StableVideoDiffusionPipeline,
    )

    check_available([key])
    if key == "seine":
        from mora_agents.pipelines.seine import load_seine_pipeline

        check_available(["sd_v1_4"])
        return load_seine_pipeline(model_source("seine"), model_source("sd_v1_4"), device, dtype or full_dtype(device))
    common = {"torch_dtype": dtype or full_dtype(device), "local_files_only": True}
    if key == "sdxl_base":
        return StableDiffusionXLPipeline.from_pretrained(model_source(key), **common)
    if key == "sdxl_refiner":
        base = load_pipeline("sdxl_base")
        shared = {name: getattr(base, name) for name in REFINER_SHARES}
        return StableDiffusionXLImg2ImgPipeline.from_pretrained(model_source(key), **shared, **common)
    if key == "instruct_pix2pix":
        return StableDiffusionInstructPix2PixPipeline.from_pretrained(model_source(key), safety_checker=None, **common)
    return StableVideoDiffusionPipeline.from_pretrained(model_source(key), **common)


def _tiny(key: str, device: torch.device) -> DiffusionPipeline:
    from mora_agents.models import tiny
    from mora_agents.pipelines.seine import tiny_seine_pipeline

    builders: dict[str, Callable[[], DiffusionPipeline]] = {
        "sdxl_base": tiny.sdxl_base,
        "sdxl_refiner": lambda: tiny.sdxl_refiner(load_pipeline("sdxl_base")),
        "instruct_pix2pix": tiny.instruct_pix2pix,
        "svd": tiny.stable_video_diffusion,
        "seine": tiny_seine_pipeline,
    }
    return builders[key]()


def load_pipeline(key: str) -> DiffusionPipeline:
    """The pipeline for a model key under the current preset and device, built on first use and then reused."""
    s = settings()
    if s.preset not in PRESETS:
        raise InputError(f"preset '{s.preset}': unknown (choose from {', '.join(PRESETS)})")
    if s.memory_profile not in MEMORY_PROFILES:
        raise InputError(f"memory profile '{s.memory_profile}': unknown (choose from {', '.join(MEMORY_PROFILES)})")
    adapters = s.adapters.resolve() if s.adapters else None
    sha = trained_models(adapters).get(key)  # in the cache key: retrained adapters in the same folder reload
    return _load(key, s.preset, str(resolve_device(s.device)), model_source(key), s.memory_profile,
                 adapters if sha else None, sha)


@cache
def _load(key: str, preset: str, device: str, source: str, memory_profile: str, adapters: Path | None,
          adapters_sha256: str | None) -> DiffusionPipeline:
    pipe = (_tiny if preset == "tiny" else _full)(key, torch.device(device))
    if adapters is not None:
        apply_adapters(pipe, key, adapters)
    return finish_pipeline(key, pipe, device, memory_profile)


def build_pipeline(key: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """A new pipeline of the current preset (not cached, no adapters) with its weights in `dtype`: for training."""
    if settings().preset == "tiny":  # built in float32 on the CPU
        pipe = _tiny(key, device).to(device)
        return pipe.to(dtype=dtype) if dtype != torch.float32 else pipe
    return _full(key, device, dtype).to(device)
