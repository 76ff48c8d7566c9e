"""Tiny random-weight versions of the real pipelines, for tests and offline demos.

The pipeline classes are exactly those of the `full` preset; only the configs are small, the weights random
(seeded) and the tokenizer in memory. Their pixels are noise: what they prove is that every code path runs.
Each builder draws its weights from its own seed (`random_weights`), so they are the same whenever and in
whichever order pipelines are built, and building one leaves the process's random state as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    StableVideoDiffusionPipeline,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from mora_agents.models.tokenizer import tiny_clip_tokenizer

TEXT_DIM = 32
TIME_DIM = 8


@contextmanager
def random_weights(seed: int) -> Iterator[None]:
    """Models built inside draw their random weights from `seed`; the global random state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _text_config() -> CLIPTextConfig:
    tokenizer = tiny_clip_tokenizer()
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=TEXT_DIM, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=64,
    )


def _unet(in_channels: int, cross_attention_dim: int, **sdxl) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=cross_attention_dim, norm_num_groups=8, **sdxl,
    )


def _sdxl_unet(cross_attention_dim: int, time_ids: int) -> UNet2DConditionModel:
    return _unet(
        4, cross_attention_dim, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM, projection_class_embeddings_input_dim=time_ids * TIME_DIM + TEXT_DIM,
    )


def _sdxl_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  timestep_spacing="leading", steps_offset=1)


def sdxl_base(seed: int = 0) -> StableDiffusionXLPipeline:
    with random_weights(seed):
        return StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config()),
            text_encoder_2=CLIPTextModelWithProjection(_text_config()),
            tokenizer=tiny_clip_tokenizer(), tokenizer_2=tiny_clip_tokenizer(),
            unet=_sdxl_unet(2 * TEXT_DIM, time_ids=6), scheduler=_sdxl_scheduler(),
        )


def sdxl_refiner(base: StableDiffusionXLPipeline, seed: int = 1) -> StableDiffusionXLImg2ImgPipeline:
    """The refiner shares the base's second text encoder and VAE, as the real pair does."""
    with random_weights(seed):
        return StableDiffusionXLImg2ImgPipeline(
            vae=base.vae, text_encoder=None, text_encoder_2=base.text_encoder_2, tokenizer=None,
            tokenizer_2=base.tokenizer_2, unet=_sdxl_unet(TEXT_DIM, time_ids=5), scheduler=_sdxl_scheduler(),
            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        )


def instruct_pix2pix(seed: int = 2) -> StableDiffusionInstructPix2PixPipeline:
    with random_weights(seed):
        return StableDiffusionInstructPix2PixPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config()), tokenizer=tiny_clip_tokenizer(),
            unet=_unet(8, TEXT_DIM), scheduler=EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )


def stable_video_diffusion(seed: int = 3) -> StableVideoDiffusionPipeline:
    with random_weights(seed):
        unet = UNetSpatioTemporalConditionModel(  # its blocks use 32 norm groups: 32 channels at least
            block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=8, out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=TEXT_DIM, num_attention_heads=(2, 4), addition_time_embed_dim=TIME_DIM,
            projection_class_embeddings_input_dim=3 * TIME_DIM,
        )
        vae = AutoencoderKLTemporalDecoder(  # 8x smaller latents, as the real one's: the UNet works on 8x8 for 64x64
            block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4, latent_channels=4,
        )
        vision = CLIPVisionConfig(hidden_size=TEXT_DIM, projection_dim=TEXT_DIM, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=224, intermediate_size=37, patch_size=32)
        scheduler = EulerDiscreteScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
            sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
            use_karras_sigmas=True, interpolation_type="linear",
        )
        return StableVideoDiffusionPipeline(
            vae=vae, image_encoder=CLIPVisionModelWithProjection(vision), unet=unet, scheduler=scheduler,
            feature_extractor=CLIPImageProcessorPil(crop_size=224, size=224),
        )
