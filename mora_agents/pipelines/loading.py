"""Load the pipelines the tools run: real weights (`full`) or tiny random ones (`tiny`), once per process.

`full` reads Hugging Face ids from the local cache or local directories, never the network, and fails
fast, before any work, naming the model that is missing and how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from transformers import PreTrainedTokenizerBase

from mora_agents.errors import InputError
from mora_agents.pipelines.adapters import apply_adapters, trained_models
from mora_agents.pipelines.sources import check_available, model_source
from mora_agents.pipelines.speed import SpedPipeline, apply_speed
from mora_agents.settings import MEMORY_PROFILES, PRESETS, Speed, note, settings

REFINER_SHARES = ("text_encoder_2", "vae")
"""The SDXL refiner's components taken from the base: one copy in memory, as in the paper's code."""
PIPELINES = {"flux_schnell": "FluxPipeline", "flux_kontext": "FluxKontextPipeline",
             "wan_ti2v": "WanImageToVideoPipeline", "ltx_video": "LTXImageToVideoPipeline",
             "wan_flf2v": "WanImageToVideoPipeline", "sd3": "StableDiffusion3Pipeline",
             "sd35_large": "StableDiffusion3Pipeline", "sd35_medium": "StableDiffusion3Pipeline",
             "skyreels_df": "SkyReelsV2DiffusionForcingImageToVideoPipeline",
             "framepack": "HunyuanVideoFramepackPipeline"}
"""The diffusers pipeline class of each newer backend's model (Wan 2.2 TI2V-5B takes its image as the first latent
frame: its folder's `expand_timesteps`; FLF2V takes a first and a last image)."""
DERIVED = {"sdxl_img2img": ("sdxl_base", "StableDiffusionXLImg2ImgPipeline"),
           "flux_schnell_img2img": ("flux_schnell", "FluxImg2ImgPipeline"),
           **{f"{key}_img2img": (key, "StableDiffusion3Img2ImgPipeline")
              for key in ("sd3", "sd35_large", "sd35_medium")},
           "skyreels_df_extend": ("skyreels_df", "SkyReelsV2DiffusionForcingVideoToVideoPipeline")}
"""Img2img pipelines made of another model's components, as they are (no second copy of any weight)."""
BF16_MODELS = frozenset(PIPELINES) | {"open_sora_plan"}
"""Models their authors run in bf16 (FLUX's activations overflow fp16; Open-Sora-Plan's sampler, the SD 3.x
examples); the paper's SVD system runs in fp16."""
FP32_VAE = frozenset({"wan_ti2v", "wan_flf2v", "skyreels_df"})
"""Models whose VAE runs in float32, as their authors run it."""
GROUP_OFFLOAD = frozenset({"flux_schnell", "flux_kontext", "wan_flf2v", "framepack"})
"""Under `24gb`: models whose denoiser alone exceeds 22 GiB in bf16 (FLUX: 11.9 B parameters, 23.8 GB; Wan 2.1
FLF2V-14B: 16.4 B, 32.8 GB; FramePack's HunyuanVideo transformer: 13 B, 26 GB), so they move to the GPU a block at a
time (group offloading) instead of a model at a time."""
VAE_TILING = frozenset({"wan_ti2v", "ltx_video", "wan_flf2v", "skyreels_df", "framepack"})
"""Under `24gb`: video VAEs decoded in overlapping tiles (their activations at 720p exceed the budget)."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def full_dtype(device: torch.device, key: str | None = None) -> torch.dtype:
    """The `full` preset's weight dtype for a model: fp16 on CUDA (bf16 for BF16_MODELS), fp32 elsewhere."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if key in BF16_MODELS else torch.float16


def finish_pipeline(key: str, pipe: DiffusionPipeline, device: str | torch.device, memory_profile: str = "resident",
                    speed: Speed = Speed(), gpus: int = 1) -> DiffusionPipeline:
    """How the presets run a freshly built pipeline: placed on `device` as the memory profile says (see
    `ToolSettings.memory_profile`; the same computation up to float rounding), no progress bars, and run as the
    speed settings say, across `gpus` GPUs where diffusers can split its denoiser (`mora_agents.pipelines.speed`;
    `exact` and one GPU: default attention, nothing changed). What the speed settings did is noted for the step.

    `mora bench` applies it to its random-weight pipelines, so its `ours` rows are what `load_pipeline` returns.
    """
    eval_mode(pipe)
    pipe = _place(key, pipe, device, memory_profile)
    pipe, done = apply_speed(key, pipe, speed, torch.device(device), gpus)
    for phrase in done:
        note(f"{key}: {phrase}")
    return pipe


def _place(key: str, pipe: DiffusionPipeline, device: str | torch.device, memory_profile: str) -> DiffusionPipeline:
    pipe.set_progress_bar_config(disable=True)
    if memory_profile == "resident":
        return pipe.to(device)
    if key in GROUP_OFFLOAD:
        pipe.enable_group_offload(onload_device=torch.device(device), offload_type="block_level",
                                  num_blocks_per_group=1, use_stream=torch.device(device).type == "cuda")
    else:
        pipe.enable_model_cpu_offload(device=device)
    if key in GROUP_OFFLOAD | VAE_TILING:
        pipe.vae.enable_tiling()
    if key == "seine":
        pipe.vae.enable_slicing()
    if key == "svd":  # its temporal decoder can be neither sliced nor tiled; a smaller decode chunk changes the output
        pipe.unet.enable_forward_chunking()
    return pipe


def eval_mode(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """Every model of the pipeline in inference mode (no dropout), as `from_pretrained` leaves them. Models built from
    a config (the tiny preset) and layers added later (adapters) start in training mode, where the T5 and UMT5
    encoders' dropout draws from the global random state: the same seed would give other frames on each call."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


def _full(key: str, device: torch.device, dtype: torch.dtype | None = None) -> DiffusionPipeline:
    from diffusers import (
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        StableVideoDiffusionPipeline,
    )

    check_available([key])
    if key == "open_sora_plan":
        from mora_agents.pipelines.open_sora_plan import load_open_sora_plan_pipeline

        check_available(["mt5_xxl"])
        return load_open_sora_plan_pipeline(model_source(key), model_source("mt5_xxl"), device,
                                            dtype or full_dtype(device, key))
    if key == "seine":
        from mora_agents.pipelines.seine import load_seine_pipeline

        check_available(["sd_v1_4"])
        return load_seine_pipeline(model_source("seine"), model_source("sd_v1_4"), device, dtype or full_dtype(device))
    common = {"torch_dtype": dtype or full_dtype(device, key), "local_files_only": True}
    if key == "framepack":
        return _framepack(common)
    if key in PIPELINES:
        import diffusers

        if key in FP32_VAE:
            common["vae"] = diffusers.AutoencoderKLWan.from_pretrained(
                model_source(key), subfolder="vae", torch_dtype=torch.float32, local_files_only=True)
        pipe = getattr(diffusers, PIPELINES[key]).from_pretrained(model_source(key), **common)
        if key == "skyreels_df":  # its authors' shift for image-to-video and extension (8 is for text-to-video)
            pipe.scheduler = diffusers.UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=5.0)
        return pipe
    if key == "sdxl_base":
        return StableDiffusionXLPipeline.from_pretrained(model_source(key), **common)
    if key == "sdxl_ip_adapter":  # a base of its own: the adapter changes its UNet's cross-attention
        check_available(["sdxl_base"])
        pipe = StableDiffusionXLPipeline.from_pretrained(model_source("sdxl_base"), **common)
        pipe.load_ip_adapter(model_source(key), subfolder="sdxl_models", weight_name="ip-adapter_sdxl.bin",
                             local_files_only=True)  # with its ViT-bigG image encoder, sdxl_models/image_encoder
        return pipe
    if key == "sdxl_refiner":
        base = load_pipeline("sdxl_base")
        shared = {name: getattr(base, name) for name in REFINER_SHARES}
        return StableDiffusionXLImg2ImgPipeline.from_pretrained(model_source(key), **shared, **common)
    if key == "instruct_pix2pix":
        return StableDiffusionInstructPix2PixPipeline.from_pretrained(model_source(key), safety_checker=None, **common)
    return StableVideoDiffusionPipeline.from_pretrained(model_source(key), **common)


def _framepack(common: dict) -> DiffusionPipeline:
    """FramePack as its authors assemble it: their transformer, HunyuanVideo's text encoders, VAE and scheduler, and
    the SigLIP image encoder of FLUX.1 Redux."""
    import diffusers
    from transformers import SiglipImageProcessor, SiglipVisionModel

    check_available(["hunyuan_video", "flux_redux"])
    redux = model_source("flux_redux")
    return diffusers.HunyuanVideoFramepackPipeline.from_pretrained(
        model_source("hunyuan_video"),
        transformer=diffusers.HunyuanVideoFramepackTransformer3DModel.from_pretrained(model_source("framepack"),
                                                                                     **common),
        feature_extractor=SiglipImageProcessor.from_pretrained(redux, subfolder="feature_extractor",
                                                               local_files_only=True),
        image_encoder=SiglipVisionModel.from_pretrained(redux, subfolder="image_encoder", **common), **common)


def _tiny(key: str, device: torch.device) -> DiffusionPipeline:
    from mora_agents import pipelines  # its own pipelines (SEINE, Open-Sora-Plan) import when named
    from mora_agents.models import tiny, tiny_backends, tiny_long

    builders: dict[str, Callable[[], DiffusionPipeline]] = {
        "sdxl_base": tiny.sdxl_base,
        "sdxl_refiner": lambda: tiny.sdxl_refiner(load_pipeline("sdxl_base")),
        "instruct_pix2pix": tiny.instruct_pix2pix,
        "svd": tiny.stable_video_diffusion,
        "seine": lambda: pipelines.tiny_seine_pipeline(),
        "flux_schnell": tiny_backends.flux_schnell,
        "flux_kontext": tiny_backends.flux_kontext,
        "wan_ti2v": tiny_backends.wan_ti2v,
        "ltx_video": tiny_backends.ltx_video,
        "wan_flf2v": tiny_backends.wan_flf2v,
        "sd3": tiny_backends.sd3,
        "sd35_large": tiny_backends.sd35_large,
        "sd35_medium": tiny_backends.sd35_medium,
        "open_sora_plan": lambda: pipelines.tiny_open_sora_plan_pipeline(),
        "skyreels_df": tiny_long.skyreels_df,
        "framepack": tiny_long.framepack,
        "sdxl_ip_adapter": tiny_backends.sdxl_ip_adapter,
    }
    return eval_mode(builders[key]())


def load_pipeline(key: str) -> DiffusionPipeline:
    """The pipeline for a model key under the current preset and device, built on first use and then reused."""
    s = settings()
    if s.preset not in PRESETS:
        raise InputError(f"preset '{s.preset}': unknown (choose from {', '.join(PRESETS)})")
    if s.memory_profile not in MEMORY_PROFILES:
        raise InputError(f"memory profile '{s.memory_profile}': unknown (choose from {', '.join(MEMORY_PROFILES)})")
    if key in DERIVED:
        base, cls = DERIVED[key]
        return _derived(key, cls, load_pipeline(base))
    adapters = s.adapters.resolve() if s.adapters else None
    sha = trained_models(adapters).get(key)  # in the cache key: retrained adapters in the same folder reload
    return _load(key, s.preset, str(resolve_device(s.device)), model_source(key), s.memory_profile,
                 adapters if sha else None, sha, s.speed, s.gpus)


@cache
def _load(key: str, preset: str, device: str, source: str, memory_profile: str, adapters: Path | None,
          adapters_sha256: str | None, speed: Speed = Speed(), gpus: int = 1) -> DiffusionPipeline:
    pipe = (_tiny if preset == "tiny" else _full)(key, torch.device(device))
    if adapters is not None:
        apply_adapters(pipe, key, adapters)
    return finish_pipeline(key, pipe, device, memory_profile, speed, gpus)


@cache
def _derived(key: str, cls: str, base: DiffusionPipeline) -> DiffusionPipeline:
    import diffusers

    pipe = getattr(diffusers, cls)(**base.components)
    pipe.set_progress_bar_config(disable=True)
    return base.derived(key, pipe) if isinstance(base, SpedPipeline) else pipe


def load_tokenizer(key: str, subfolder: str, pipeline_key: str, folder: str | None = None) -> PreTrainedTokenizerBase:
    """A text encoder's tokenizer without its model: `subfolder` of model `key`'s folder under `full` (`folder`
    instead, when given: "" for the model folder itself); under `tiny`, the attribute `subfolder` of the (tiny)
    pipeline `pipeline_key`."""
    if settings().preset == "tiny":
        return getattr(load_pipeline(pipeline_key), subfolder)
    check_available([key])
    return _full_tokenizer(model_source(key), subfolder if folder is None else folder)


@cache
def _full_tokenizer(source: str, subfolder: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, subfolder=subfolder, local_files_only=True)


def build_pipeline(key: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """A new pipeline of the current preset (not cached, no adapters) with its weights in `dtype`: for training."""
    if settings().preset == "tiny":  # built in float32 on the CPU
        pipe = _tiny(key, device).to(device)
        return pipe.to(dtype=dtype) if dtype != torch.float32 else pipe
    return _full(key, device, dtype).to(device)
