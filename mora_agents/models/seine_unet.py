"""SEINE's video UNet: Stable Diffusion v1.4's UNet inflated to video, on current diffusers.

Every 2D convolution runs per frame. Each transformer block does spatial self-attention, text
cross-attention, then temporal attention across frames (with its own LayerNorm, a learned T5-style
relative-position bias and a rotary embedding), then a feed-forward. The reference shares one rotary
module across the network; its frequencies are constants, so here each temporal attention holds its own
copy of the same values, which keeps the state dict free of shared tensors (safetensors can save it).
ResNet GroupNorms normalise over all frames of a video at once, the transformers' GroupNorm per frame.
State-dict keys match the published checkpoint (Hugging Face `Vchitect/SEINE`, file `seine.pt`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

SEINE_CONFIG_PATH = Path(__file__).with_name("seine_config.json")
SEINE_REPO_ID = "Vchitect/SEINE"
SEINE_FILENAME = "seine.pt"

ROTARY_DIM = 32
REL_POS_BUCKETS = 32
REL_POS_MAX_DISTANCE = 32


@dataclass
class SEINEUNet3DOutput(BaseOutput):
    """`sample`: the predicted noise, [batch, out_channels, frames, height, width]."""

    sample: torch.Tensor


class FrameConv2d(nn.Conv2d):
    """A 2D convolution applied to every frame of a [B, C, F, H, W] video."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape
        x = super().forward(x.transpose(1, 2).reshape(b * f, -1, h, w))
        return x.reshape(b, f, *x.shape[1:]).transpose(1, 2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over frames, on the first `dim` channels of each head (interleaved pairs)."""

    def __init__(self, dim: int = ROTARY_DIM, theta: float = 10000.0):
        super().__init__()
        self.register_buffer("freqs", theta ** -(torch.arange(0, dim, 2).float() / dim))

    def _apply(self, fn, recurse=True):
        # Casting the model to fp16/bf16 would round the frequencies: keep them in fp32.
        super()._apply(fn, recurse)
        self.freqs = self.freqs.float()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate `x` [..., frames, head_dim] by its frame position."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
        angles = (positions[:, None] * self.freqs[None, :]).repeat_interleave(2, dim=-1)
        rot_dim = angles.shape[-1]
        x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
        pairs = x_rot.unflatten(-1, (-1, 2))
        x_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        x_rot = x_rot * angles.cos().to(x.dtype) + x_half * angles.sin().to(x.dtype)
        return torch.cat((x_rot, x_pass), dim=-1)


class RelativePositionBias(nn.Module):
    """T5-style bucketed relative-position bias between frames, one value per head."""

    def __init__(self, heads: int, num_buckets: int = REL_POS_BUCKETS, max_distance: int = REL_POS_MAX_DISTANCE):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def buckets(self, num_frames: int, device: torch.device) -> torch.Tensor:
        position = torch.arange(num_frames, device=device)
        distance = position[:, None] - position[None, :]  # query minus key
        half = self.num_buckets // 2
        bucket = (distance < 0).long() * half
        distance = distance.abs()
        max_exact = half // 2
        log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(self.max_distance / max_exact)
        far = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
        return bucket + torch.where(distance < max_exact, distance, far)

    def forward(self, num_frames: int, device: torch.device) -> torch.Tensor:
        """The bias [heads, frames, frames]."""
        return self.relative_attention_bias(self.buckets(num_frames, device)).permute(2, 0, 1)


class TemporalAttention(nn.Module):
    """Self-attention across frames with relative-position bias and rotary embedding."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim // heads < ROTARY_DIM:
            raise ValueError(
                f"temporal attention needs heads of at least {ROTARY_DIM} channels for its rotary embedding, "
                f"got {dim} channels in {heads} heads"
            )
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # a list, as in the checkpoint's keys (`to_out.0`)
        self.time_rel_pos_bias = RelativePositionBias(heads)
        self.rotary_emb = RotaryEmbedding()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: [sequences, frames, dim]."""
        n, f, _ = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, f, self.heads, -1).transpose(1, 2)

        q = self.rotary_emb(split_heads(self.to_q(x)))
        k = self.rotary_emb(split_heads(self.to_k(x)))
        v = split_heads(self.to_v(x))
        bias = self.time_rel_pos_bias(f, x.device).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(n, f, -1)
        return self.to_out[0](out)


class TransformerBlock3D(nn.Module):
    """Spatial self-attention, text cross-attention, temporal attention and feed-forward, each pre-norm."""

    def __init__(self, dim: int, heads: int, cross_attention_dim: int):
        super().__init__()
        head_dim = dim // heads
        self.attn1 = Attention(dim, heads=heads, dim_head=head_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn_temp = TemporalAttention(dim, heads)
        self.norm_temp = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`x`: [batch * frames, pixels, dim]; `encoder_hidden_states`: [batch * frames, tokens, cross_dim]."""
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states=encoder_hidden_states) + x
        bf, pixels, dim = x.shape
        x = x.view(-1, num_frames, pixels, dim).transpose(1, 2).reshape(-1, num_frames, dim)
        x = self.attn_temp(self.norm_temp(x)) + x
        x = x.view(-1, pixels, num_frames, dim).transpose(1, 2).reshape(bf, pixels, dim)
        return self.ff(self.norm3(x)) + x


class Transformer3D(nn.Module):
    """GroupNorm and 1x1 projections around one `TransformerBlock3D`, with a residual; per frame."""

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock3D(channels, heads, cross_attention_dim)])
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * f, c, h, w)
        residual = x
        x = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b * f, h * w, c)
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states, num_frames=f)
        x = self.proj_out(x.reshape(b * f, h, w, c).permute(0, 3, 1, 2)) + residual
        return x.reshape(b, f, c, h, w).transpose(1, 2)


class ResnetBlock3D(nn.Module):
    """SD's ResNet block with per-frame convolutions; its GroupNorms see all frames of a video together."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float, output_scale: float
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = FrameConv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = FrameConv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            FrameConv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        self.output_scale = output_scale

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (shortcut + h) / self.output_scale


class Downsample3D(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Nearest-neighbour upsampling of each frame to `size` (height, width), then a convolution."""
        return self.conv(F.interpolate(x, size=(x.shape[2], *size), mode="nearest"))


class DownBlock3D(nn.Module):
    """One encoder level: resnets (each followed by a transformer when `attention`), then a downsampler.

    Submodules are registered in the checkpoint's key order (attentions before resnets).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        attention: bool,
        add_downsample: bool,
        block_kwargs: dict[str, Any],
        attn_kwargs: dict[str, Any],
        downsample_padding: int,
    ):
        super().__init__()
        self.attentions = (
            nn.ModuleList(Transformer3D(out_channels, **attn_kwargs) for _ in range(num_layers)) if attention else None
        )
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, **block_kwargs)
            for i in range(num_layers)
        )
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels, downsample_padding)]) if add_downsample else None

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock3D(nn.Module):
    """One decoder level: resnets over [x, skip] (each followed by a transformer when `attention`), then an upsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        prev_channels: int,
        num_layers: int,
        attention: bool,
        add_upsample: bool,
        block_kwargs: dict[str, Any],
        attn_kwargs: dict[str, Any],
    ):
        super().__init__()
        self.attentions = (
            nn.ModuleList(Transformer3D(out_channels, **attn_kwargs) for _ in range(num_layers)) if attention else None
        )
        self.resnets = nn.ModuleList(
            ResnetBlock3D(
                (prev_channels if i == 0 else out_channels) + (in_channels if i == num_layers - 1 else out_channels),
                out_channels,
                **block_kwargs,
            )
            for i in range(num_layers)
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        upsample_size: Sequence[int] | None,
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class MidBlock3D(nn.Module):
    def __init__(self, channels: int, block_kwargs: dict[str, Any], attn_kwargs: dict[str, Any]):
        super().__init__()
        self.attentions = nn.ModuleList([Transformer3D(channels, **attn_kwargs)])
        self.resnets = nn.ModuleList([ResnetBlock3D(channels, channels, **block_kwargs) for _ in range(2)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, encoder_hidden_states)
        return self.resnets[1](x, temb)


_BLOCK_HAS_ATTENTION = {
    "CrossAttnDownBlock3D": True,
    "DownBlock3D": False,
    "CrossAttnUpBlock3D": True,
    "UpBlock3D": False,
}


def _has_attention(block_type: str) -> bool:
    if block_type not in _BLOCK_HAS_ATTENTION:
        raise ValueError(f"unknown block type {block_type!r}; expected one of {sorted(_BLOCK_HAS_ATTENTION)}")
    return _BLOCK_HAS_ATTENTION[block_type]


class SEINEUNet3D(ModelMixin, ConfigMixin):
    """SEINE's denoiser: input [noisy latent 4 | mask 1 | masked-video latent 4] channels, output the noise.

    The config uses the reference's keys (`tiny.config.json`/`seine_config.json` format). As in SD v1.4,
    `attention_head_dim` is the number of attention heads per level (an int or one per level).
    `use_first_frame` is accepted for compatibility with reference configs and has no effect.
    """

    _keep_in_fp32_modules: ClassVar[list[str]] = ["rotary_emb"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 9,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int | Sequence[int] = 8,
        use_first_frame: bool = False,
    ):
        super().__init__()
        if act_fn not in ("silu", "swish"):
            raise ValueError(f"act_fn {act_fn!r} is not supported (SEINE uses 'silu')")
        levels = len(block_out_channels)
        if len(down_block_types) != levels or len(up_block_types) != levels:
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
        heads = [attention_head_dim] * levels if isinstance(attention_head_dim, int) else list(attention_head_dim)
        if len(heads) != levels:
            raise ValueError("attention_head_dim must be an int or have one entry per level")

        time_embed_dim = block_out_channels[0] * 4
        self.conv_in = FrameConv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)

        block_kwargs = {
            "temb_channels": time_embed_dim,
            "groups": norm_num_groups,
            "eps": norm_eps,
            "output_scale": 1.0,
        }

        def attn_kwargs(level: int) -> dict[str, Any]:
            return {"heads": heads[level], "cross_attention_dim": cross_attention_dim, "groups": norm_num_groups}

        self.down_blocks = nn.ModuleList()
        for i, block_type in enumerate(down_block_types):
            self.down_blocks.append(
                DownBlock3D(
                    block_out_channels[max(i - 1, 0)],
                    block_out_channels[i],
                    layers_per_block,
                    attention=_has_attention(block_type),
                    add_downsample=i < levels - 1,
                    block_kwargs=block_kwargs,
                    attn_kwargs=attn_kwargs(i),
                    downsample_padding=downsample_padding,
                )
            )

        reversed_channels = list(reversed(block_out_channels))
        self.up_blocks = nn.ModuleList()
        for i, block_type in enumerate(up_block_types):
            self.up_blocks.append(
                UpBlock3D(
                    in_channels=reversed_channels[min(i + 1, levels - 1)],
                    out_channels=reversed_channels[i],
                    prev_channels=reversed_channels[max(i - 1, 0)],
                    num_layers=layers_per_block + 1,
                    attention=_has_attention(block_type),
                    add_upsample=i < levels - 1,
                    block_kwargs=block_kwargs,
                    attn_kwargs=attn_kwargs(levels - 1 - i),
                )
            )

        # Registered after the up blocks, so that the state dict lists keys in the checkpoint's order.
        self.mid_block = MidBlock3D(
            block_out_channels[-1], {**block_kwargs, "output_scale": mid_block_scale_factor}, attn_kwargs(levels - 1)
        )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_out = FrameConv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
    ) -> SEINEUNet3DOutput | tuple[torch.Tensor]:
        """Predict the noise.

        Args:
            sample: [batch, in_channels, frames, height, width].
            timestep: a number or [batch] timesteps in [0, 1000).
            encoder_hidden_states: text embeddings [batch, tokens, cross_attention_dim].
        """
        batch, _, num_frames = sample.shape[:3]
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = timesteps.reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        text = encoder_hidden_states.repeat_interleave(num_frames, dim=0)

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb, text)
            skips.extend(block_skips)

        x = self.mid_block(x, emb, text)

        for block in self.up_blocks:
            block_skips = skips[-len(block.resnets) :]
            del skips[-len(block.resnets) :]
            upsample_size = skips[-1].shape[-2:] if skips else None
            x = block(x, block_skips, emb, text, upsample_size)

        x = self.conv_out(F.silu(self.conv_norm_out(x)))
        if not return_dict:
            return (x,)
        return SEINEUNet3DOutput(sample=x)

    @classmethod
    def from_seine_checkpoint(cls, checkpoint_path: str | Path, config: dict[str, Any] | None = None) -> SEINEUNet3D:
        """Load the published SEINE weights (`seine.pt`, key "ema", or a bare state dict) strictly, fp32 on the CPU.

        `config` defaults to the full-size SEINE config shipped as `seine_config.json`.
        """
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"SEINE checkpoint not found at {str(path)!r}. Download it from the Hugging Face repo "
                f"{SEINE_REPO_ID} (file {SEINE_FILENAME}), e.g. `hf download {SEINE_REPO_ID} {SEINE_FILENAME}`."
            )
        if config is None:
            config = json.loads(SEINE_CONFIG_PATH.read_text())
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = checkpoint.get("ema", checkpoint)
        with torch.device("meta"):
            model = cls.from_config(config)
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model.float().eval()
