"""Tiny random-weight versions of the long-video backends' pipelines: SkyReels-V2 diffusion forcing (image-to-video
and video-to-video, one set of components) and FramePack (on HunyuanVideo).

As in `tiny.py`: the pipeline classes are exactly those of the `full` preset, only the configs are small, the weights
random (seeded) and the tokenizers in memory. The VAEs compress time by 4 as the real ones do, so the frame rules
(4k+1) are the real models'.
"""

from __future__ import annotations

from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoFramepackPipeline,
    HunyuanVideoFramepackTransformer3DModel,
    SkyReelsV2DiffusionForcingImageToVideoPipeline,
    SkyReelsV2DiffusionForcingVideoToVideoPipeline,
    SkyReelsV2Transformer3DModel,
    UniPCMultistepScheduler,
)
from transformers import (
    CLIPTextModel,
    LlamaConfig,
    LlamaModel,
    LlamaTokenizer,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from mora_agents.models.tiny import TEXT_DIM, _text_config, random_weights
from mora_agents.models.tiny_backends import LATENTS, _umt5, _wan_vae
from mora_agents.models.tokenizer import tiny_clip_tokenizer, tiny_t5_tokenizer


def _skyreels_components() -> dict:
    """SkyReels-V2 DF's structure: the Wan 2.1 VAE (8x spatial, 4x temporal), UMT5, a transformer that takes one
    timestep per latent frame (diffusion forcing), UniPC with the image-to-video shift (5)."""
    transformer = SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=LATENTS, out_channels=LATENTS,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return dict(tokenizer=tiny_t5_tokenizer(), text_encoder=_umt5(), vae=_wan_vae(), scheduler=scheduler,
                transformer=transformer)


def skyreels_df(seed: int = 15) -> SkyReelsV2DiffusionForcingImageToVideoPipeline:
    with random_weights(seed):
        return SkyReelsV2DiffusionForcingImageToVideoPipeline(**_skyreels_components())


def skyreels_df_extend(image_pipe: SkyReelsV2DiffusionForcingImageToVideoPipeline
                       ) -> SkyReelsV2DiffusionForcingVideoToVideoPipeline:
    """The video-to-video (extension) pipeline over the image-to-video one's components (no second copy)."""
    return SkyReelsV2DiffusionForcingVideoToVideoPipeline(**image_pipe.components)


def _tiny_llama_tokenizer() -> LlamaTokenizer:
    """A character-level Llama tokenizer (every printable character a token, no merges), with the special tokens of
    HunyuanVideo's prompt template."""
    specials = ["<unk>", "<s>", "</s>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n", "\u2581"]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[], unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"pad_token": "<unk>", "additional_special_tokens": specials[3:]})
    return tokenizer


def framepack(seed: int = 16) -> HunyuanVideoFramepackPipeline:
    """FramePack's structure: HunyuanVideo's VAE (8x spatial, 4x temporal) and its two text encoders (Llama, CLIP), a
    SigLIP image encoder, and the FramePack transformer with its clean-latent and 2x/4x history embedders."""
    with random_weights(seed):
        return _framepack()


def _framepack() -> HunyuanVideoFramepackPipeline:
    transformer = HunyuanVideoFramepackTransformer3DModel(
        in_channels=LATENTS, out_channels=LATENTS, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=TEXT_DIM, rope_axes_dim=(2, 4, 4), has_image_proj=True,
        image_proj_dim=16, has_clean_x_embedder=True)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=LATENTS, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8,) * 4, layers_per_block=1,
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4)
    tokenizer = _tiny_llama_tokenizer()
    llama = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37,
                                   num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=3,
                                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id))
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8)
    return HunyuanVideoFramepackPipeline(
        text_encoder=llama, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=CLIPTextModel(_text_config()),
        tokenizer_2=tiny_clip_tokenizer(), image_encoder=SiglipVisionModel(vision),
        feature_extractor=SiglipImageProcessorPil(size={"height": 32, "width": 32}))
