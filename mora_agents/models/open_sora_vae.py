"""Open-Sora-Plan v1.2's CausalVideoVAE (the reference's `CausalVAEModel`, `CausalVAEModel_D4_4x8x8`), on plain torch.

A KL autoencoder from SD's VAE inflated to video: 8x spatial and 4x temporal compression to 4 channels, causal in
time (a 3D convolution pads the past with copies of the first frame, so the first frame is encoded on its own and a
video of 4k+1 frames has k+1 latent frames). The v1.2 structure: 2D ResNets (per frame) and a 2D downsampling in the
first encoder levels, then 3D ResNets and two joint space-time downsamplings (stride 2, 2, 2); the decoder mirrors it
with trilinear space-time upsamplings that keep the first frame single. GroupNorms of 3D blocks normalise over all
frames of a video, those of 2D blocks per frame. Tiled encoding and decoding (overlapping spatial tiles blended,
temporal chunks sharing a frame) are the reference's, which its sampler switches on.

Config keys and state-dict keys are the reference's (PKU-YuanGroup/Open-Sora-Plan, commit 294993ca), so the published
`vae/` folder of `LanguageBind/Open-Sora-Plan-v1.2.0` loads with `strict=True`. Only the module names of the v1.2
config are implemented; others are refused.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from mora_agents.models.seine_unet import FrameConv2d

SCALING_FACTOR = 0.18215
"""What the reference's wrapper multiplies encoded latents by (SD's VAE factor)."""
TILING = dict(tile_sample_min_size=512, tile_latent_min_size=64, tile_sample_min_size_t=29, tile_latent_min_size_t=8,
              tile_overlap_factor=0.125)
"""The tile sizes of the reference's image-to-video sampler (`sample_inpaint.py` with `--enable_tiling`)."""


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, int) else tuple(value)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class CausalConv3d(nn.Module):
    """A 3D convolution causal in time: the first frame repeated `kernel_t - 1` times in front, zeros around in
    space (`padding` applies to height and width only)."""

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0):
        super().__init__()
        kernel = _triple(kernel_size)
        self.time_pad = kernel[0] - 1
        self.conv = nn.Conv3d(chan_in, chan_out, kernel, stride=_triple(stride), padding=(0, *_triple(padding)[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


def _per_frame(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run a 2D module on every frame of [B, C, T, H, W]."""
    b, _, t, h, w = x.shape
    x = module(x.transpose(1, 2).reshape(b * t, -1, h, w))
    return x.reshape(b, t, *x.shape[1:]).transpose(1, 2)


class ResnetBlock(nn.Module):
    """SD's ResNet block: 3D (causal 3x3x3 convolutions, norms over the whole video) or 2D (run per frame)."""

    def __init__(self, in_channels: int, out_channels: int, three_d: bool):
        super().__init__()
        conv = (lambda i, o, k: CausalConv3d(i, o, k, padding=k // 2)) if three_d else (
            lambda i, o, k: nn.Conv2d(i, o, k, padding=k // 2))
        self.three_d = three_d
        self.norm1 = _norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3)
        self.norm2 = _norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3)
        self.nin_shortcut = conv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x) if self.three_d else _per_frame(self._forward, x)


class AttnBlock3DFix(nn.Module):
    """Single-head self-attention over each frame's positions (the reference's fixed 3D attention block); its
    GroupNorm normalises over the whole video."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (CausalConv3d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, t, height, width = x.shape

        def tokens(y: torch.Tensor) -> torch.Tensor:  # [B * T, 1, H * W, C]
            return y.permute(0, 2, 3, 4, 1).reshape(b * t, 1, height * width, c)

        out = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        out = out.reshape(b, t, height, width, c).permute(0, 4, 1, 2, 3)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """2x spatial downsampling of each frame: zero padding right and bottom, a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(lambda y: self.conv(F.pad(y, (0, 1, 0, 1))), x)


class Spatial2xTime2x3DDownsample(nn.Module):
    """2x downsampling in time and space at once: a causal stride-2 3x3x3 convolution (k + 1 frames from 2k + 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1, 0, 0)))


class SpatialUpsample2x(nn.Module):
    """Nearest-neighbour 2x upsampling of each frame, then a 1x3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, (1, 3, 3), padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class Spatial2xTime2x3DUpsample(nn.Module):
    """Trilinear 2x upsampling in space, and in time for all frames but the first (2k + 1 frames from k + 1), then a
    causal 3x3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = F.interpolate(x[:, :, :1] if x.shape[2] > 1 else x, scale_factor=(1, 2, 2), mode="trilinear")
        if x.shape[2] > 1:
            first = torch.cat([first, F.interpolate(x[:, :, 1:], scale_factor=(2, 2, 2), mode="trilinear")], dim=2)
        return self.conv(first)


_RESNETS = {"ResnetBlock2D": False, "ResnetBlock3D": True}
_RESAMPLERS: dict[str, type[nn.Module]] = {
    "Downsample": Downsample, "Spatial2xTime2x3DDownsample": Spatial2xTime2x3DDownsample,
    "SpatialUpsample2x": SpatialUpsample2x, "Spatial2xTime2x3DUpsample": Spatial2xTime2x3DUpsample,
}


def _known(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: not implemented (Open-Sora-Plan v1.2's VAE uses {', '.join(allowed)})")
    return value


def _level(resnets: list[nn.Module], resample: nn.Module | None, resample_name: str) -> nn.Module:
    """One encoder or decoder level with the reference's key names (`block.i`, then `downsample`/`upsample`)."""
    level = nn.Module()
    level.block = nn.ModuleList(resnets)
    if resample is not None:
        setattr(level, resample_name, resample)
    return level


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, three_d=True)
    mid.attn_1 = AttnBlock3DFix(channels)
    mid.block_2 = ResnetBlock(channels, channels, three_d=True)
    return mid


def _run_mid(mid: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        widths = [config["hidden_size"] * m for m in config["hidden_size_mult"]]
        self.conv_in = (nn.Conv2d(3, widths[0], 3, padding=1) if config["encoder_conv_in"] == "Conv2d"
                        else CausalConv3d(3, widths[0], 3, padding=1))
        self.down = nn.ModuleList()
        channels = widths[0]
        for i, width in enumerate(widths):
            three_d = _RESNETS[config["encoder_resnet_blocks"][i]]
            resnets = [ResnetBlock(channels if j == 0 else width, width, three_d)
                       for j in range(config["num_res_blocks"])]
            name = config["encoder_spatial_downsample"][i]
            self.down.append(_level(resnets, _RESAMPLERS[name](width) if name else None, "downsample"))
            channels = width
        self.mid = _mid(channels)
        self.norm_out = _norm(channels)
        self.conv_out = CausalConv3d(channels, 2 * config["z_channels"], 3, padding=1)
        self.gradient_checkpointing = False
        """Recompute each block's activations in the backward pass (`enable_gradient_checkpointing`): training
        backpropagates through the encoder when a generated frame is the known frame of the masked video."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _per_frame(self.conv_in, x) if isinstance(self.conv_in, nn.Conv2d) else self.conv_in(x)
        blocks = [block for level in self.down
                  for block in (*level.block, *([level.downsample] if hasattr(level, "downsample") else []))]
        for block in (*blocks, self.mid.block_1, self.mid.attn_1, self.mid.block_2):
            checkpointed = torch.is_grad_enabled() and self.gradient_checkpointing
            x = self._gradient_checkpointing_func(block, x) if checkpointed else block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        widths = [config["hidden_size"] * m for m in config["hidden_size_mult"]]
        channels = widths[-1]
        self.conv_in = CausalConv3d(config["z_channels"], channels, 3, padding=1)
        self.mid = _mid(channels)
        levels = []
        for i in reversed(range(len(widths))):
            resnets = [ResnetBlock(channels if j == 0 else widths[i], widths[i], three_d=True)
                       for j in range(config["num_res_blocks"] + 1)]
            name = config["decoder_spatial_upsample"][i]
            levels.insert(0, _level(resnets, _RESAMPLERS[name](widths[i]) if name else None, "upsample"))
            channels = widths[i]
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(channels)
        self.conv_out = CausalConv3d(channels, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = _run_mid(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            for resnet in level.block:
                x = resnet(x)
            if hasattr(level, "upsample"):
                x = level.upsample(x)
        return self.conv_out(F.silu(self.norm_out(x)))


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Cross-fade the first `extent` positions of `b` along `dim` from the last of `a` (in place, as the reference)."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    for i in range(extent):
        faded = a.select(dim, a.shape[dim] - extent + i) * (1 - i / extent) + b.select(dim, i) * (i / extent)
        b.select(dim, i).copy_(faded)
    return b


def _time_chunks(frames: int, size: int) -> list[tuple[int, int]]:
    """The reference's temporal tiles: [0, size), [size - 1, 2 size - 1), ... sharing one frame, the last one cut."""
    starts = list(range(0, frames, size - 1))
    if len(starts) == 1:
        return [(0, frames)]
    chunks = [(starts[i], starts[i + 1] + 1) for i in range(len(starts) - 1)]
    if chunks[-1][1] > frames:
        chunks[-1] = (chunks[-1][0], frames)
    elif chunks[-1][1] < frames:
        chunks.append((starts[-1], frames))
    return chunks


class OpenSoraCausalVAE(ModelMixin, ConfigMixin):
    """Open-Sora-Plan v1.2's CausalVideoVAE: videos [B, 3, 4k+1, H, W] in [-1, 1] to latents [B, 4, k+1, H/8, W/8].

    `encode` returns the posterior (`latent_dist`), `decode` the video, as diffusers' VAEs do; neither applies the
    scaling factor (`SCALING_FACTOR`: the pipeline does, as the reference's wrapper). The constructor takes the
    reference's config keys.
    """

    _supports_gradient_checkpointing = True  # the encoder's (what training backpropagates through)

    @register_to_config
    def __init__(
        self,
        hidden_size: int = 128,
        z_channels: int = 4,
        hidden_size_mult: Sequence[int] = (1, 2, 4, 4),
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        resolution: int = 256,
        double_z: bool = True,
        embed_dim: int = 4,
        num_res_blocks: int = 2,
        q_conv: str = "CausalConv3d",
        encoder_conv_in: str = "CausalConv3d",
        encoder_conv_out: str = "CausalConv3d",
        encoder_attention: str = "AttnBlock3D",
        encoder_resnet_blocks: Sequence[str] = ("ResnetBlock3D",) * 4,
        encoder_spatial_downsample: Sequence[str] = ("SpatialDownsample2x", "SpatialDownsample2x",
                                                     "SpatialDownsample2x", ""),
        encoder_temporal_downsample: Sequence[str] = ("", "TimeDownsample2x", "TimeDownsample2x", ""),
        encoder_mid_resnet: str = "ResnetBlock3D",
        decoder_conv_in: str = "CausalConv3d",
        decoder_conv_out: str = "CausalConv3d",
        decoder_attention: str = "AttnBlock3D",
        decoder_resnet_blocks: Sequence[str] = ("ResnetBlock3D",) * 4,
        decoder_spatial_upsample: Sequence[str] = ("", "SpatialUpsample2x", "SpatialUpsample2x", "SpatialUpsample2x"),
        decoder_temporal_upsample: Sequence[str] = ("", "", "TimeUpsample2x", "TimeUpsample2x"),
        decoder_mid_resnet: str = "ResnetBlock3D",
        use_quant_layer: bool = True,
    ):
        super().__init__()
        if (list(attn_resolutions) or not double_z or not use_quant_layer or embed_dim != z_channels
                or encoder_spatial_downsample[-1]):
            raise ValueError("attn_resolutions, double_z, use_quant_layer, embed_dim, encoder_spatial_downsample: "
                             "only [], true, true, embed_dim == z_channels and no downsampling in the last level are "
                             "implemented (Open-Sora-Plan v1.2's VAE)")
        for name, values, allowed in (
            ("encoder_temporal_downsample", encoder_temporal_downsample, [""]),
            ("decoder_temporal_upsample", decoder_temporal_upsample, [""]),
            ("encoder_spatial_downsample", encoder_spatial_downsample,
             ["", "Downsample", "Spatial2xTime2x3DDownsample"]),
            ("decoder_spatial_upsample", decoder_spatial_upsample,
             ["", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample"]),
            ("encoder_resnet_blocks", encoder_resnet_blocks, list(_RESNETS)),
            ("decoder_resnet_blocks", decoder_resnet_blocks, ["ResnetBlock3D"]),
            ("encoder_conv_in", [encoder_conv_in], ["Conv2d", "CausalConv3d"]),
            ("mid, conv and attention blocks",
             [q_conv, encoder_conv_out, decoder_conv_in, decoder_conv_out, encoder_mid_resnet, decoder_mid_resnet,
              encoder_attention, decoder_attention], ["CausalConv3d", "ResnetBlock3D", "AttnBlock3DFix"]),
        ):
            for value in values:
                _known(name, value, allowed)
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quant_conv = CausalConv3d(2 * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = CausalConv3d(embed_dim, z_channels, 1)
        self.use_tiling = False
        self.tiling = dict(TILING)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(name == "Spatial2xTime2x3DDownsample" for name in self.config.encoder_spatial_downsample)

    @property
    def spatial_compression(self) -> int:
        return 2 ** sum(bool(name) for name in self.config.encoder_spatial_downsample)

    def enable_tiling(self, **sizes: float) -> None:
        """Encode and decode in tiles (`sizes`: any of the keys of `TILING`, default the reference sampler's)."""
        unknown = set(sizes) - set(TILING)
        if unknown:
            raise ValueError(f"unknown tiling sizes {sorted(unknown)} (known: {', '.join(TILING)})")
        self.tiling.update(sizes)
        self.use_tiling = True

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """The posterior of a video [B, 3, T, H, W] in [-1, 1] (tiled when on and the video exceeds a tile)."""
        t = self.tiling
        tiled = self.use_tiling and (max(x.shape[-2:]) > t["tile_sample_min_size"]
                                     or x.shape[2] > t["tile_sample_min_size_t"])
        moments = self._tiled(x, self._moments, sample_side=True) if tiled else self._moments(x)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """The video [B, 3, T, H, W] of latents [B, 4, t, h, w] (tiled when on and the latents exceed a tile)."""
        t = self.tiling
        tiled = self.use_tiling and (max(z.shape[-2:]) > t["tile_latent_min_size"]
                                     or z.shape[2] > t["tile_latent_min_size_t"])
        video = self._tiled(z, self._decode, sample_side=False) if tiled else self._decode(z)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def _tiled(self, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], sample_side: bool) -> torch.Tensor:
        """The reference's tiling: temporal chunks sharing a frame (the repeat dropped from all but the first), each
        cut into overlapping spatial tiles whose overlaps are cross-faded."""
        t = self.tiling
        sample, latent = t["tile_sample_min_size"], t["tile_latent_min_size"]
        size_in, size_out = (sample, latent) if sample_side else (latent, sample)
        step = int(size_in * (1 - t["tile_overlap_factor"]))
        extent = int(size_out * t["tile_overlap_factor"])
        limit = size_out - extent
        chunk_t = t["tile_sample_min_size_t"] if sample_side else t["tile_latent_min_size_t"]
        chunks = []
        for index, (start, end) in enumerate(_time_chunks(x.shape[2], chunk_t)):
            part = x[:, :, start:end]
            rows = [[run(part[:, :, :, i:i + size_in, j:j + size_in]) for j in range(0, x.shape[4], step)]
                    for i in range(0, x.shape[3], step)]
            result_rows = []
            for i, row in enumerate(rows):
                result_row = []
                for j, tile in enumerate(row):
                    if i > 0:
                        tile = _blend(rows[i - 1][j], tile, extent, dim=3)
                    if j > 0:
                        tile = _blend(row[j - 1], tile, extent, dim=4)
                    result_row.append(tile[:, :, :, :limit, :limit])
                result_rows.append(torch.cat(result_row, dim=4))
            out = torch.cat(result_rows, dim=3)
            chunks.append(out if index == 0 else out[:, :, 1:])
        return torch.cat(chunks, dim=2)

    @classmethod
    def from_reference_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32) -> OpenSoraCausalVAE:
        """The published `vae/` folder: its `config.json` and its weights, a `*.ckpt` training checkpoint (the EMA
        weights when it has them, as the reference reads it) or a diffusers `diffusion_pytorch_model.*` file."""
        folder = Path(folder)
        checkpoints = sorted(glob.glob(str(folder / "*.ckpt")))
        if not checkpoints:
            return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
        checkpoint = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
        if checkpoint.get("ema_state_dict"):
            state = {key.replace("module.", ""): value for key, value in checkpoint["ema_state_dict"].items()}
        else:
            state = checkpoint.get("state_dict", checkpoint)
            state = state.get("gen_model", state)
        state = {key: value for key, value in state.items() if "loss" not in key}  # the discriminator's
        with torch.device("meta"):
            model = cls.from_config(cls.load_config(folder))
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(dtype).eval()
