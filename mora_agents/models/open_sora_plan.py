"""Open-Sora-Plan v1.2's image-to-video denoiser (the reference's `OpenSoraInpaint`), on current diffusers.

A DiT with 3D full attention: every latent frame is cut into patches and the self-attention of each block runs over
all the video's tokens at once (frames x rows x columns), with a 3D rotary position embedding. Image-to-video is
frame-level inpainting: the noisy latent, the latent of the masked video (known frames kept, the others grey) and the
mask each have a patch embedding (the last two followed by a linear layer that the reference initialises to zero)
and their sum enters the blocks. Each block: AdaLN-single modulated self-attention, cross-attention to the projected
mT5 text (no norm before it, as in PixArt-alpha), a modulated GELU feed-forward.

Config keys, state-dict keys and `forward`'s argument names are the reference's (PKU-YuanGroup/Open-Sora-Plan at its
v1.2.0 image-to-video release, commit 294993ca), so the published `93x480p_i2v` checkpoint loads with `strict=True`.
Only the configuration the v1.2 checkpoints use is implemented (AdaLN-single, RoPE, 1-frame patches, no token
downsampler); other values of those options are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import PixArtAlphaTextProjection
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle
from diffusers.utils import BaseOutput
from torch import nn

MASK_BIAS = -10000.0
"""What a masked-out key adds to the attention scores (the reference's value)."""
ROPE_THETA = 10000.0


@dataclass
class OpenSoraInpaintOutput(BaseOutput):
    """`sample`: the predicted noise, [batch, out_channels, frames, height, width]."""

    sample: torch.Tensor


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def rope_3d(frames: int, height: int, width: int, head_dim: int, scales: Sequence[float], dtype: torch.dtype,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines [tokens, head_dim] of the reference's 3D rotary embedding for a (frames, height, width) grid
    of tokens in that order: each third of a head rotates by one axis's position (divided by that axis's
    interpolation scale), in the half-split layout; the angles are cast to `dtype` before their cosine, as there."""
    third = head_dim // 3
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, third, 2, device=device).float() / third))
    grid = torch.cartesian_prod(*(torch.arange(n, device=device) for n in (frames, height, width)))
    angles = []
    for axis, scale in enumerate(scales):
        freqs = torch.outer(grid[:, axis].float() / scale, inv_freq).to(dtype)
        angles.append(torch.cat([freqs, freqs], dim=-1))
    angles = torch.cat(angles, dim=-1)
    return angles.cos(), angles.sin()


def apply_rope_3d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` [batch, heads, tokens, head_dim]: in each third, (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    halves = x.unflatten(-1, (3, 2, -1))
    rotated = torch.stack([-halves[..., 1, :], halves[..., 0, :]], dim=-2).flatten(-3)
    return x * cos + rotated * sin


class OpenSoraAttnProcessor:
    """Scaled dot-product attention with an additive mask [batch, 1, keys] and, for the video's self-attention, the
    3D rotary embedding on queries and keys."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = (proj(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
                             for proj, x in ((attn.to_q, hidden_states), (attn.to_k, context), (attn.to_v, context)))
        if rotary_emb is not None:
            query, key = apply_rope_3d(query, *rotary_emb), apply_rope_3d(key, *rotary_emb)
        mask = None if attention_mask is None else attention_mask[:, None]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out = out.transpose(1, 2).flatten(2).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class PatchEmbed(nn.Module):
    """Each frame of [batch, channels, frames, height, width] cut into patches: tokens [batch, frames * patches, dim]
    in (frame, row, column) order."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape
        x = self.proj(x.transpose(1, 2).reshape(b * f, -1, h, w))
        return x.flatten(2).transpose(1, 2).reshape(b, -1, x.shape[1])


class OpenSoraBlock(nn.Module):
    """Modulated 3D self-attention with RoPE, cross-attention to the text, modulated feed-forward (AdaLN-single)."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_attention_dim: int, dropout: float,
                 activation_fn: str, attention_bias: bool, upcast_attention: bool, norm_elementwise_affine: bool,
                 norm_eps: float):
        super().__init__()
        attention = dict(query_dim=dim, heads=heads, dim_head=head_dim, dropout=dropout, bias=attention_bias,
                         upcast_attention=upcast_attention, out_bias=True)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.attn1 = Attention(**attention, processor=OpenSoraAttnProcessor())
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.attn2 = Attention(**attention, cross_attention_dim=cross_attention_dim, processor=OpenSoraAttnProcessor())
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, video_mask: torch.Tensor | None, text: torch.Tensor,
                text_mask: torch.Tensor | None, modulation: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`x` [batch, tokens, dim]; masks are additive [batch, 1, keys]; `modulation` [batch, 6 * dim]."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + modulation.reshape(x.shape[0], 6, -1)).chunk(6, dim=1)
        normed = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = gate_msa * self.attn1(normed, attention_mask=video_mask, rotary_emb=rope) + x
        x = self.attn2(x, encoder_hidden_states=text, attention_mask=text_mask) + x
        normed = self.norm2(x) * (1 + scale_mlp) + shift_mlp
        return gate_mlp * self.ff(normed) + x


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """1 (keep) / 0 (drop) as 0 / MASK_BIAS; None when nothing is dropped (attention then runs unmasked)."""
    bias = (1 - mask.bool().to(dtype)) * MASK_BIAS
    return bias if bias.any() else None


class OpenSoraInpaintTransformer3D(ModelMixin, ConfigMixin):
    """Open-Sora-Plan v1.2's inpainting DiT: input [noisy latent | masked-video latent | mask] channels, output the
    noise of the latent.

    The constructor takes the reference's config keys (the published `config.json`); those the reference accepts
    but this architecture does not use (`norm_num_groups`, `num_embeds_ada_norm`, `use_linear_projection`,
    `attention_mode`, `use_stable_fp32`, `use_additional_conditions`) are accepted and ignored, as there.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["OpenSoraBlock"]
    _repeated_blocks: ClassVar[tuple[str, ...]] = ("OpenSoraBlock",)

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 88,
        in_channels: int | None = None,
        out_channels: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.0,
        norm_num_groups: int = 32,
        cross_attention_dim: int | None = None,
        attention_bias: bool = False,
        sample_size: int | Sequence[int] | None = None,
        sample_size_t: int | None = None,
        num_vector_embeds: int | None = None,
        patch_size: int | None = None,
        patch_size_t: int | None = None,
        activation_fn: str = "geglu",
        num_embeds_ada_norm: int | None = None,
        use_linear_projection: bool = False,
        only_cross_attention: bool = False,
        double_self_attention: bool = False,
        upcast_attention: bool = False,
        norm_type: str = "layer_norm",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        attention_type: str = "default",
        caption_channels: int | None = None,
        interpolation_scale_h: float | None = None,
        interpolation_scale_w: float | None = None,
        interpolation_scale_t: float | None = None,
        use_additional_conditions: bool | None = None,
        attention_mode: str = "xformers",
        downsampler: str | None = None,
        use_rope: bool = False,
        use_stable_fp32: bool = False,
        vae_scale_factor_t: int = 4,
    ):
        super().__init__()
        required = {"norm_type": (norm_type, "ada_norm_single"), "use_rope": (use_rope, True),
                    "patch_size_t": (patch_size_t, 1), "downsampler": (downsampler, None),
                    "num_vector_embeds": (num_vector_embeds, None),
                    "only_cross_attention": (only_cross_attention, False),
                    "double_self_attention": (double_self_attention, False),
                    "attention_type": (attention_type, "default")}
        for name, (value, expected) in required.items():
            if value != expected:
                raise ValueError(f"{name}={value!r}: only {expected!r} is implemented (Open-Sora-Plan v1.2's DiT)")
        for name, value in (("in_channels", in_channels), ("patch_size", patch_size), ("sample_size", sample_size),
                            ("sample_size_t", sample_size_t), ("caption_channels", caption_channels)):
            if value is None:
                raise ValueError(f"{name} must be given")
        if attention_head_dim % 6:
            raise ValueError(f"attention_head_dim={attention_head_dim}: the 3D RoPE needs a multiple of 6")
        if vae_scale_factor_t != in_channels:
            raise ValueError(f"vae_scale_factor_t={vae_scale_factor_t}: the mask's patch embedding reads in_channels "
                             f"({in_channels}) channels, so the two must be equal (as in the reference)")
        inner_dim = num_attention_heads * attention_head_dim
        if cross_attention_dim != inner_dim:
            raise ValueError(f"cross_attention_dim={cross_attention_dim}: the text is projected to the model width "
                             f"{inner_dim}, so it must be that")
        out_channels = in_channels if out_channels is None else out_channels
        height, width = _pair(sample_size)
        self.rope_scales = (  # the reference's defaults when the config leaves them unset
            interpolation_scale_t if interpolation_scale_t is not None
            else ((sample_size_t - 1) // 16 + 1 if sample_size_t % 2 == 1 else sample_size_t / 16),
            interpolation_scale_h if interpolation_scale_h is not None else height / 30,
            interpolation_scale_w if interpolation_scale_w is not None else width / 40,
        )
        self.gradient_checkpointing = False

        self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
        self.pos_embed = PatchEmbed(in_channels, inner_dim, patch_size)
        self.transformer_blocks = nn.ModuleList(
            OpenSoraBlock(inner_dim, num_attention_heads, attention_head_dim, cross_attention_dim, dropout,
                          activation_fn, attention_bias, upcast_attention, norm_elementwise_affine, norm_eps)
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * out_channels)
        self.adaln_single = AdaLayerNormSingle(inner_dim, use_additional_conditions=False)
        self.caption_projection = PixArtAlphaTextProjection(in_features=caption_channels, hidden_size=inner_dim)
        self.pos_embed_mask = nn.ModuleList(
            [PatchEmbed(in_channels, inner_dim, patch_size), nn.Linear(inner_dim, inner_dim, bias=False)])
        self.pos_embed_masked_video = nn.ModuleList(
            [PatchEmbed(in_channels, inner_dim, patch_size), nn.Linear(inner_dim, inner_dim, bias=False)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> OpenSoraInpaintOutput | tuple[torch.Tensor]:
        """Predict the noise of the latent.

        Args:
            hidden_states: [batch, 2 * in_channels + vae_scale_factor_t, frames, height, width]: the noisy latent, the
                masked video's latent and the mask, along the channels; two frames or more.
            timestep: a number or [batch] timesteps in [0, 1000).
            encoder_hidden_states: the text encoder's states, [batch, 1, tokens, caption_channels] as the reference
                passes them (or [batch, tokens, caption_channels]).
            attention_mask: [batch, frames, height, width], 1 for latent positions to attend to, 0 for padding; the
                keys of a patch are kept if any of its positions is (the reference's max-pooling). None: all.
            encoder_attention_mask: [batch, 1, tokens] (or [batch, tokens]), 1 for real text tokens, 0 for padding.
        """
        config = self.config
        batch, channels, frames, height, width = hidden_states.shape
        if channels != 2 * config.in_channels + config.vae_scale_factor_t:
            raise ValueError(f"hidden_states has {channels} channels; this model takes "
                             f"{2 * config.in_channels + config.vae_scale_factor_t} (latent, masked video, mask)")
        if frames < 2:
            raise ValueError("the inpainting model takes videos (two latent frames or more), as in the reference")
        dtype, p = self.dtype, config.patch_size
        video_mask = None
        if attention_mask is not None:
            pooled = F.max_pool3d(attention_mask.to(dtype)[:, None], kernel_size=(1, p, p), stride=(1, p, p))
            video_mask = _additive_mask(pooled.flatten(1)[:, None], dtype)
        text_mask = None  # the padded text's mask is kept as it is (whether it drops any token is not looked at)
        if encoder_attention_mask is not None:
            text_mask = (1 - encoder_attention_mask.reshape(batch, 1, -1).bool().to(dtype)) * MASK_BIAS
        if encoder_hidden_states.ndim == 4:
            encoder_hidden_states = encoder_hidden_states[:, 0]

        latent, masked_video, mask = hidden_states.to(dtype).split(
            [config.in_channels, config.in_channels, config.vae_scale_factor_t], dim=1)
        x = (self.pos_embed(latent) + self.pos_embed_masked_video[1](self.pos_embed_masked_video[0](masked_video))
             + self.pos_embed_mask[1](self.pos_embed_mask[0](mask)))
        timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(batch)
        modulation, embedded_timestep = self.adaln_single(timestep, batch_size=batch, hidden_dtype=dtype)
        text = self.caption_projection(encoder_hidden_states.to(dtype))
        rope = rope_3d(frames, height // p, width // p, config.attention_head_dim, self.rope_scales, x.dtype, x.device)

        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, video_mask, text, text_mask, modulation, rope)
            else:
                x = block(x, video_mask, text, text_mask, modulation, rope)

        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        x = self.proj_out(self.norm_out(x) * (1 + scale) + shift)
        out_channels = self.proj_out.out_features // (p * p)
        x = x.reshape(batch, frames, height // p, width // p, p, p, out_channels)
        x = torch.einsum("nthwpqc->ncthpwq", x).reshape(batch, out_channels, frames, height, width)
        if not return_dict:
            return (x,)
        return OpenSoraInpaintOutput(sample=x)
