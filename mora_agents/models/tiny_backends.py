"""Tiny random-weight versions of the other backends' pipelines (Wan, LTX-Video, FLUX, SD 3.x, SDXL with
IP-Adapter), for tests and demos.

As in `tiny.py`: the pipeline classes are exactly those of the `full` preset, only the configs are small, the
weights random (seeded) and the tokenizers in memory. The compression factors of the video VAEs are the real
ones in time (Wan: 4, LTX: 8), so the frame-count rules (4k+1, 8k+1) are those of the real models.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLLTXVideo,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
    LTXImageToVideoPipeline,
    LTXVideoTransformer3DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModel,
    MT5Config,
    MT5EncoderModel,
    CLIPVisionModelWithProjection,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from mora_agents.models import tiny
from mora_agents.models.tiny import TEXT_DIM, _text_config, random_weights
from mora_agents.models.tokenizer import tiny_clip_tokenizer, tiny_t5_tokenizer

LATENTS = 4
"""Latent channels of the tiny video VAEs."""


def _t5_config(**kwargs) -> dict:
    tokenizer = tiny_t5_tokenizer()
    return dict(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, **kwargs)


def _umt5() -> UMT5EncoderModel:
    return UMT5EncoderModel(UMT5Config(**_t5_config(feed_forward_proj="gated-gelu")))


def _t5() -> T5EncoderModel:
    return T5EncoderModel(T5Config(**_t5_config(feed_forward_proj="gated-gelu")))


def tiny_mt5_encoder() -> MT5EncoderModel:
    """mT5's encoder (Open-Sora-Plan's text encoder) at the tiny T5 size, over the in-memory tokenizer; eval mode."""
    return MT5EncoderModel(MT5Config(**_t5_config(feed_forward_proj="gated-gelu"))).eval()


def _wan_transformer(in_channels: int, image_dim: int | None = None, image_tokens: int | None = None
                     ) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=in_channels,
        out_channels=LATENTS, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
        image_dim=image_dim, added_kv_proj_dim=16 if image_dim else None, pos_embed_seq_len=image_tokens,
    )


def _wan_vae(**kwargs) -> AutoencoderKLWan:
    return AutoencoderKLWan(base_dim=8, z_dim=LATENTS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            latents_mean=[0.0] * LATENTS, latents_std=[1.0] * LATENTS, **kwargs)


def _flow_scheduler(**kwargs) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**kwargs)


def wan_ti2v(seed: int = 10) -> WanImageToVideoPipeline:
    """Wan 2.2 TI2V-5B's structure: a residual VAE with 2x2 patches (16x spatial, 4x temporal compression), the image
    as the first latent frame (`expand_timesteps`), no image encoder."""
    with random_weights(seed):
        vae = _wan_vae(is_residual=True, patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=16)
        return WanImageToVideoPipeline(
            tokenizer=tiny_t5_tokenizer(), text_encoder=_umt5(), vae=vae, scheduler=_flow_scheduler(shift=5.0),
            transformer=_wan_transformer(LATENTS), expand_timesteps=True,
        )


def wan_flf2v(seed: int = 11) -> WanImageToVideoPipeline:
    """Wan 2.1 FLF2V's structure: the Wan 2.1 VAE (8x spatial, 4x temporal), a CLIP image encoder reading the first
    and last frames, and a transformer taking noise, mask and condition latents."""
    with random_weights(seed):
        vision = CLIPVisionConfig(hidden_size=16, projection_dim=16, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, intermediate_size=16, patch_size=8)
        image_tokens = 2 * ((32 // 8) ** 2 + 1)  # two images of 16 patches and a class token
        return WanImageToVideoPipeline(
            tokenizer=tiny_t5_tokenizer(), text_encoder=_umt5(), vae=_wan_vae(), scheduler=_flow_scheduler(shift=5.0),
            image_processor=CLIPImageProcessorPil(crop_size=32, size=32), image_encoder=CLIPVisionModel(vision),
            transformer=_wan_transformer(2 * LATENTS + 4, image_dim=16, image_tokens=image_tokens),
        )


def ltx_video(seed: int = 12, decoder_noise: bool = False) -> LTXImageToVideoPipeline:
    """LTX-Video's structure: a VAE with 8x temporal compression (three spatio-temporal scalings) and a T5 encoder.

    `decoder_noise`: the decoder of LTX-Video 0.9.1 and later, conditioned on a timestep and injecting noise, which
    it draws from the global random state (the pipeline passes it no generator)."""
    with random_weights(seed):
        vae = AutoencoderKLLTXVideo(
            latent_channels=LATENTS, block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
            layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5,
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(decoder_noise,) * 5,
            timestep_conditioning=decoder_noise, patch_size=1, patch_size_t=1,
        )
        for name, param in vae.decoder.named_parameters():
            if "per_channel_scale" in name:  # the noise's scales: zeros when built, not when trained
                torch.nn.init.normal_(param, std=0.5)
        transformer = LTXVideoTransformer3DModel(
            in_channels=LATENTS, out_channels=LATENTS, num_attention_heads=2, attention_head_dim=8,
            cross_attention_dim=16, num_layers=1, caption_channels=TEXT_DIM,
        )
        return LTXImageToVideoPipeline(scheduler=_flow_scheduler(), vae=vae, text_encoder=_t5(),
                                       tokenizer=tiny_t5_tokenizer(), transformer=transformer)


def _flow_vae(shift_factor: float, scaling_factor: float) -> AutoencoderKL:
    """The FLUX and SD3 VAE's structure (no quantisation convolutions, a latent shift)."""
    return AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=LATENTS, norm_num_groups=8, sample_size=64,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=shift_factor, scaling_factor=scaling_factor,
    )


def _flux_components(guidance: bool) -> dict:
    vae = _flow_vae(shift_factor=0.1159, scaling_factor=0.3611)
    transformer = FluxTransformer2DModel(
        in_channels=4 * LATENTS, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM, guidance_embeds=guidance, axes_dims_rope=(4, 6, 6),
    )
    return dict(vae=vae, text_encoder=CLIPTextModel(_text_config()), tokenizer=tiny_clip_tokenizer(),
                text_encoder_2=_t5(), tokenizer_2=tiny_t5_tokenizer(), transformer=transformer)


def flux_schnell(seed: int = 13) -> FluxPipeline:
    """FLUX.1-schnell's structure: timestep-distilled (no guidance embedding), a fixed shift."""
    with random_weights(seed):
        return FluxPipeline(scheduler=_flow_scheduler(), **_flux_components(guidance=False))


def flux_kontext(seed: int = 14) -> FluxKontextPipeline:
    """FLUX.1 Kontext [dev]'s structure: a guidance-distilled transformer (guidance embedding), resolution-dependent
    shift."""
    with random_weights(seed):
        scheduler = _flow_scheduler(shift=3.0, use_dynamic_shifting=True)
        return FluxKontextPipeline(scheduler=scheduler, **_flux_components(guidance=True))


def _sd3(seed: int, **transformer) -> StableDiffusion3Pipeline:
    """SD 3.x's structure: an MMDiT on 2x2 latent patches reading CLIP-L and OpenCLIP-bigG (pooled, and their states
    cut to the T5's width, as the pipeline does when they are wider) and T5 states, flow matching with shift 3."""
    with random_weights(seed):
        return StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(
                sample_size=32, patch_size=2, in_channels=LATENTS, out_channels=LATENTS, num_layers=2,
                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM, caption_projection_dim=16,
                pooled_projection_dim=2 * TEXT_DIM, **transformer),
            scheduler=_flow_scheduler(shift=3.0), vae=_flow_vae(shift_factor=0.0609, scaling_factor=1.5305),
            text_encoder=CLIPTextModelWithProjection(_text_config()), tokenizer=tiny_clip_tokenizer(),
            text_encoder_2=CLIPTextModelWithProjection(_text_config()), tokenizer_2=tiny_clip_tokenizer(),
            text_encoder_3=_t5(), tokenizer_3=tiny_t5_tokenizer(),
        )


def sd3(seed: int = 16) -> StableDiffusion3Pipeline:
    """Stable Diffusion 3 Medium: plain joint attention."""
    return _sd3(seed)


def sd35_large(seed: int = 17) -> StableDiffusion3Pipeline:
    """Stable Diffusion 3.5 Large: RMS-normed queries and keys."""
    return _sd3(seed, qk_norm="rms_norm")


def sd35_medium(seed: int = 18) -> StableDiffusion3Pipeline:
    """Stable Diffusion 3.5 Medium (MMDiT-X): RMS-normed queries and keys, a second self-attention in its first
    block."""
    return _sd3(seed, qk_norm="rms_norm", dual_attention_layers=(0,))


IMAGE_EMBED_DIM = 16
"""Projection width of the tiny IP-Adapter's image encoder (ViT-bigG's is 1280)."""


def sdxl_ip_adapter(seed: int = 15) -> StableDiffusionXLPipeline:
    """SDXL base (tiny, its own weights) with an IP-Adapter of random weights in the layout of `ip-adapter_sdxl.bin`
    (an image projection to 4 tokens, and image keys and values for every cross-attention, numbered 1, 3, 5, ... as
    in the real file), loaded by diffusers' own `load_ip_adapter`, with a tiny CLIP vision encoder."""
    pipe = tiny.sdxl_base(seed)
    unet = pipe.unet
    cross, channels = unet.config.cross_attention_dim, unet.config.block_out_channels
    with random_weights(seed):
        vision = CLIPVisionConfig(hidden_size=16, intermediate_size=37, projection_dim=IMAGE_EMBED_DIM,
                                  num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
        encoder = CLIPVisionModelWithProjection(vision)
        projection = {"proj.weight": torch.randn(4 * cross, IMAGE_EMBED_DIM) * 0.02,
                      "proj.bias": torch.zeros(4 * cross), "norm.weight": torch.ones(cross),
                      "norm.bias": torch.zeros(cross)}
        layers, number = {}, 1
        for name in unet.attn_processors:
            if name.endswith("attn2.processor"):
                block = name.split(".")[0]
                width = channels[-1] if block == "mid_block" else (
                    list(reversed(channels)) if block == "up_blocks" else channels)[int(name.split(".")[1])]
                layers[f"{number}.to_k_ip.weight"] = torch.randn(width, cross) * 0.02
                layers[f"{number}.to_v_ip.weight"] = torch.randn(width, cross) * 0.02
                number += 2  # the original file numbers every attention layer: its cross-attentions are the odd ones
    pipe.register_modules(image_encoder=encoder, feature_extractor=CLIPImageProcessorPil(crop_size=32, size=32))
    pipe.load_ip_adapter({"image_proj": projection, "ip_adapter": layers}, subfolder="", weight_name="")
    return pipe
