"""The benchmark's pipelines: real-size ones from the shipped configs, or the tiny ones, with random weights.

`configs/` holds the published Hugging Face configs, each naming its source; SEINE's UNet config is the one
`mora_agents.models` ships. A pipeline is constructed under `torch.device(device)` in its run dtype, so no
weight tensor is materialised on the CPU first (only SVD's 52 one-number time-mixing factors, which diffusers
creates with a legacy constructor; moving the pipeline to the device takes them along). Then each of its own
modules is refilled from generators seeded by the model key and component name, so every configuration gets
the same weights. Tokenisation uses the in-memory CLIP tokenizer (its ids are within the real vocabulary).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLLTXVideo,
    AutoencoderKLTemporalDecoder,
    AutoencoderKLWan,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    LTXImageToVideoPipeline,
    LTXVideoTransformer3DModel,
    PNDMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    StableVideoDiffusionPipeline,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
    MT5Config,
    MT5EncoderModel,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from mora_agents.models import tiny, tiny_backends
from mora_agents.models.open_sora_plan import OpenSoraInpaintTransformer3D
from mora_agents.models.open_sora_vae import OpenSoraCausalVAE
from mora_agents.models.seine_unet import SEINE_CONFIG_PATH, SEINEUNet3D
from mora_agents.models.tokenizer import tiny_clip_tokenizer, tiny_t5_tokenizer
from mora_agents.pipelines.loading import FP32_VAE, REFINER_SHARES, eval_mode, full_dtype
from mora_agents.pipelines.open_sora_plan import OpenSoraPlanPipeline, tiny_open_sora_plan_pipeline
from mora_agents.pipelines.seine import (
    SEINEPipeline,
    seine_scheduler,
    tiny_seine_pipeline,
)

CONFIG_DIR = Path(__file__).with_name("configs")
INIT_STD = 0.02
SIZES = ("full", "tiny")
META = torch.device("meta")
DEPENDS: dict[str, tuple[str, ...]] = {"sdxl_refiner": ("sdxl_base",)}
"""Pipelines built from another one's components (the refiner shares the base's text encoder 2 and VAE)."""


def config(name: str) -> dict[str, Any]:
    """The shipped config `configs/<name>.json`, without its `_`-prefixed bookkeeping keys."""
    data = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    return {key: value for key, value in data.items() if not key.startswith("_")}


def _clip_l() -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**config("clip_l_text")))


def _sdxl_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler.from_config(config("sdxl_scheduler"))


def full_sdxl_base() -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_config(config("sdxl_vae")),
        text_encoder=_clip_l(),
        text_encoder_2=CLIPTextModelWithProjection(
            CLIPTextConfig(**config("clip_bigg_text"))
        ),
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=UNet2DConditionModel.from_config(config("sdxl_base_unet")),
        scheduler=_sdxl_scheduler(),
    )


def full_sdxl_refiner(
    base: StableDiffusionXLPipeline,
) -> StableDiffusionXLImg2ImgPipeline:
    return StableDiffusionXLImg2ImgPipeline(
        text_encoder=None,
        tokenizer=None,
        tokenizer_2=base.tokenizer_2,
        unet=UNet2DConditionModel.from_config(config("sdxl_refiner_unet")),
        scheduler=_sdxl_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        **{name: getattr(base, name) for name in REFINER_SHARES},
    )


def full_instruct_pix2pix() -> StableDiffusionInstructPix2PixPipeline:
    return StableDiffusionInstructPix2PixPipeline(
        vae=AutoencoderKL.from_config(config("sd_vae")),
        text_encoder=_clip_l(),
        tokenizer=tiny_clip_tokenizer(),
        unet=UNet2DConditionModel.from_config(config("ip2p_unet")),
        scheduler=EulerAncestralDiscreteScheduler.from_config(config("ip2p_scheduler")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def full_stable_video_diffusion() -> StableVideoDiffusionPipeline:
    return StableVideoDiffusionPipeline(
        vae=AutoencoderKLTemporalDecoder.from_config(config("svd_xt_vae")),
        image_encoder=CLIPVisionModelWithProjection(
            CLIPVisionConfig(**config("svd_xt_image_encoder"))
        ),
        unet=UNetSpatioTemporalConditionModel.from_config(config("svd_xt_unet")),
        scheduler=EulerDiscreteScheduler.from_config(config("svd_xt_scheduler")),
        feature_extractor=CLIPImageProcessorPil(**config("svd_xt_feature_extractor")),
    )


def full_seine() -> SEINEPipeline:
    return SEINEPipeline(
        vae=AutoencoderKL.from_config(config("sd_vae")),
        text_encoder=_clip_l(),
        tokenizer=tiny_clip_tokenizer(),
        unet=SEINEUNet3D.from_config(json.loads(SEINE_CONFIG_PATH.read_text())),
        scheduler=seine_scheduler(),
    )


def _flux(cls: type[DiffusionPipeline], transformer: str, scheduler: str) -> DiffusionPipeline:
    return cls(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(config(scheduler)),
        vae=AutoencoderKL.from_config(config("flux_vae")),
        text_encoder=_clip_l(),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=T5EncoderModel(T5Config(**config("t5_xxl_encoder"))),
        tokenizer_2=tiny_t5_tokenizer(),
        transformer=FluxTransformer2DModel.from_config(config(transformer)),
    )


def full_flux_schnell() -> FluxPipeline:
    return _flux(FluxPipeline, "flux_schnell_transformer", "flux_schnell_scheduler")


def full_flux_kontext() -> FluxKontextPipeline:
    return _flux(FluxKontextPipeline, "flux_kontext_transformer", "flux_kontext_scheduler")


def _wan(name: str, vae: str, **image) -> WanImageToVideoPipeline:
    return WanImageToVideoPipeline(
        tokenizer=tiny_t5_tokenizer(),
        text_encoder=UMT5EncoderModel(UMT5Config(**config("umt5_xxl_encoder"))),
        vae=AutoencoderKLWan.from_config(config(vae)),
        scheduler=UniPCMultistepScheduler.from_config(config(f"{name}_scheduler")),
        transformer=WanTransformer3DModel.from_config(config(f"{name}_transformer")),
        **image,
    )


def full_wan_ti2v() -> WanImageToVideoPipeline:
    return _wan("wan22_ti2v", "wan22_vae", expand_timesteps=True)


def full_wan_flf2v() -> WanImageToVideoPipeline:
    return _wan(
        "wan21_flf2v", "wan21_vae",
        image_encoder=CLIPVisionModel(CLIPVisionConfig(**config("wan21_flf2v_image_encoder"))),
        image_processor=CLIPImageProcessorPil(**config("wan21_flf2v_image_processor")),
    )


def full_ltx_video() -> LTXImageToVideoPipeline:
    return LTXImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(config("ltx_video_scheduler")),
        vae=AutoencoderKLLTXVideo.from_config(config("ltx_video_vae")),
        text_encoder=T5EncoderModel(T5Config(**config("t5_xxl_encoder"))),
        tokenizer=tiny_t5_tokenizer(),
        transformer=LTXVideoTransformer3DModel.from_config(config("ltx_video_transformer")),
    )


def full_sd3() -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel.from_config(config("sd3_medium_transformer")),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(config("sd3_scheduler")),
        vae=AutoencoderKL.from_config(config("sd3_vae")),
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**config("clip_l_text"))),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config("clip_bigg_text"))),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=T5EncoderModel(T5Config(**config("t5_xxl_encoder"))),
        tokenizer_3=tiny_t5_tokenizer(),
    )


def full_open_sora_plan() -> OpenSoraPlanPipeline:
    vae = OpenSoraCausalVAE.from_config(config("open_sora_plan_vae"))
    vae.enable_tiling()  # as the preset loads it: the reference sampler's tiles
    return OpenSoraPlanPipeline(
        tokenizer=tiny_t5_tokenizer(),
        text_encoder=MT5EncoderModel(MT5Config(**config("mt5_xxl_encoder"))),
        vae=vae,
        transformer=OpenSoraInpaintTransformer3D.from_config(config("open_sora_plan_transformer")),
        scheduler=PNDMScheduler(),
    )


BUILDERS: dict[str, dict[str, Callable[..., DiffusionPipeline]]] = {
    "full": {
        "sdxl_base": full_sdxl_base,
        "sdxl_refiner": full_sdxl_refiner,
        "instruct_pix2pix": full_instruct_pix2pix,
        "svd": full_stable_video_diffusion,
        "seine": full_seine,
        "flux_schnell": full_flux_schnell,
        "flux_kontext": full_flux_kontext,
        "wan_ti2v": full_wan_ti2v,
        "ltx_video": full_ltx_video,
        "wan_flf2v": full_wan_flf2v,
        "sd3": full_sd3,
        "open_sora_plan": full_open_sora_plan,
    },
    "tiny": {
        "sdxl_base": tiny.sdxl_base,
        "sdxl_refiner": tiny.sdxl_refiner,
        "instruct_pix2pix": tiny.instruct_pix2pix,
        "svd": tiny.stable_video_diffusion,
        "seine": tiny_seine_pipeline,
        "flux_schnell": tiny_backends.flux_schnell,
        "flux_kontext": tiny_backends.flux_kontext,
        "wan_ti2v": tiny_backends.wan_ti2v,
        "ltx_video": tiny_backends.ltx_video,
        "wan_flf2v": tiny_backends.wan_flf2v,
        "sd3": tiny_backends.sd3,
        "open_sora_plan": tiny_open_sora_plan_pipeline,
    },
}
"""Per size, per model key: a builder taking the pipelines named in DEPENDS."""


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Refill the parameters in place, on their device: N(0, std) for matrices, kernels and embeddings, ones
    for the other weights (norm scales), zeros for biases. Small weights keep fp16 activations finite."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in module.named_parameters():
        if param.ndim > 1:
            if param.device not in generators:
                generators[param.device] = torch.Generator(param.device).manual_seed(
                    seed
                )
            param.normal_(0.0, std, generator=generators[param.device])
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def _fresh_scheduler(pipe: DiffusionPipeline) -> None:
    """A scheduler's state tensors belong on the CPU in fp32, where `from_pretrained` makes them."""
    pipe.register_modules(scheduler=pipe.scheduler.from_config(pipe.scheduler.config))


def _vae_dtype(key: str, pipe: DiffusionPipeline) -> None:
    """The VAEs the preset runs in float32 (`loading.FP32_VAE`), as it loads them."""
    if key in FP32_VAE:
        nn.Module.to(pipe.vae, dtype=torch.float32)


class _EmptyOnMeta(TorchFunctionMode):
    """`torch.empty` without a device (how torch's layers allocate their weights) makes meta tensors; every other
    tensor, such as a scheduler's tables (which it copies to the CPU), is made on the CPU as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 (torch's signature)
        kwargs = dict(kwargs or {})
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = META
        return func(*args, **kwargs)


def _build_on_meta(key: str, size: str, depends: tuple[DiffusionPipeline, ...]) -> DiffusionPipeline:
    """Full size: weights allocated on meta in the preset's CUDA dtype. Tiny: built on the CPU, then moved."""
    if size == "tiny":
        pipe = build_pipeline(key, size, torch.device("cpu"), *depends)
    else:
        with _EmptyOnMeta(), _default_dtype(full_dtype(torch.device("cuda"), key)):
            pipe = BUILDERS[size][key](*depends)
        _fresh_scheduler(pipe)
        _vae_dtype(key, pipe)
    for component in pipe.components.values():
        if isinstance(component, nn.Module):
            nn.Module.to(component, META)  # also the few small tensors made otherwise (position ids, norm scales)
    return pipe


def build_pipeline(
    key: str, size: str, device: torch.device, *depends: DiffusionPipeline
) -> DiffusionPipeline:
    """The `size` pipeline for a model key, built on `device` in the `full` preset's dtype, seeded random weights,
    in eval mode (as `from_pretrained` leaves a pipeline, for `reference` and `ours` alike).

    `depends` are the pipelines DEPENDS names for `key`; their shared components are left as they are. On the
    meta device (for counting FLOPs) the modules have shapes and no data; at full size, the dtype the preset has
    on CUDA.
    """
    if device.type == "meta":
        return _build_on_meta(key, size, depends)
    with torch.device(device), _default_dtype(full_dtype(device, key)):
        pipe = BUILDERS[size][key](*depends)
    _fresh_scheduler(pipe)
    _vae_dtype(key, pipe)
    shared = {id(module) for other in depends for module in other.components.values()}
    for name, component in pipe.components.items():
        if isinstance(component, nn.Module) and id(component) not in shared:
            randomize_(component, seed=zlib.crc32(f"{key}.{name}".encode()))
    return eval_mode(pipe)
