"""MUSIQ (Ke et al., ICCV 2021) as pyiqa runs it, in the layout of ``musiq_spaq_ckpt-358bb6af.pth``.

An image in [0, 1] is mapped to [-1, 1] and cut into 32-px patches at three scales: resized (bicubic,
aspect kept) to long sides 224 and 384, and at full size. Every patch goes through a ResNet root
(weight-standardised convolutions, group norm, TensorFlow 'SAME' padding) and one bottleneck, and is
projected to a token; tokens get a hashed 2D position (their row and column mapped onto a 10x10 grid)
and a scale embedding. The resized scales are zero-padded to their largest patch count (49 and 144)
and masked. A transformer encoder reads a CLS token and the tokens; a linear head on the CLS token
gives the SPAQ quality score (mean opinion score, about 0-100).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mora_agents.eval.nets.dino import Mlp

STEM = 64  # width of the ResNet root; the bottleneck widens it to 4 * STEM
HEAD_DIM = 64
PATCH = 32
SCALES = (224, 384)
MASKED_LOGIT = -1e3  # pyiqa fills masked attention logits with -1000, not -inf
BLOCK_PREFIX = "transformer_encoder.transformer.encoderblock_"


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero padding of TensorFlow's 'SAME' mode (an odd pixel goes to the bottom / right)."""
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):
        total = (math.ceil(size / stride) - 1) * stride + kernel - size
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class StdConv(nn.Conv2d):
    """Bias-free convolution with weight standardisation and 'SAME' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(same_pad(x, self.kernel_size[0], self.stride[0]), w, None, self.stride)


class Bottleneck(nn.Module):
    """ResNet bottleneck (stride 1) with a projected shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.gn1 = StdConv(cin, cin, 1), nn.GroupNorm(32, cin, eps=1e-4)
        self.conv2, self.gn2 = StdConv(cin, cin, 3), nn.GroupNorm(32, cin, eps=1e-4)
        self.conv3, self.gn3 = StdConv(cin, cout, 1), nn.GroupNorm(32, cout, eps=1e-4)
        self.conv_proj, self.gn_proj = StdConv(cin, cout, 1), nn.GroupNorm(32, cout, eps=1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(self.gn3(self.conv3(y)) + self.gn_proj(self.conv_proj(x)))


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = dim // HEAD_DIM
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, N) is false on padding; a logit is masked unless both of its tokens are valid."""
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.query, self.key, self.value))
        logits = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        pairs = mask[:, None, :, None] & mask[:, None, None, :]
        attn = logits.masked_fill(~pairs, MASKED_LOGIT).softmax(dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = Attention(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class Tokens:
    """The multi-scale patch sequence of a batch; positions, scales and mask are shared by the batch."""

    patches: torch.Tensor  # (B, N, 3, P, P)
    positions: torch.Tensor  # (N,) index into the grid x grid spatial table, 0 on padding
    scales: torch.Tensor  # (N,) scale index, 0 on padding
    mask: torch.Tensor  # (N,) bool, false on padding


def resized_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """pyiqa's aspect-preserving size: each side times ``long_side / max side``, Python-rounded."""
    ratio = long_side / max(height, width)
    return round(height * ratio), round(width * ratio)


def hash_positions(grid: int, rows: int, cols: int) -> torch.Tensor:
    """Row-major grid index of each patch of a rows x cols layout; rows and columns are mapped onto
    the grid by torch's 'nearest' interpolation (``floor(i * grid / count)``)."""
    axis = torch.arange(grid, dtype=torch.float32).view(1, 1, grid)
    row = F.interpolate(axis, size=rows, mode="nearest")[0, 0]
    col = F.interpolate(axis, size=cols, mode="nearest")[0, 0]
    return (row[:, None] * grid + col[None, :]).flatten().long()


def _scale_tokens(image: torch.Tensor, patch: int, grid: int, scale: int, length: int | None) -> Tokens:
    """Non-overlapping 'SAME'-padded patches of one scale, zero-padded to ``length`` if given."""
    x = same_pad(image, patch, patch)
    b, c, rows, cols = x.shape[0], x.shape[1], x.shape[2] // patch, x.shape[3] // patch
    patches = x.view(b, c, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c, patch, patch)
    count = rows * cols
    pad = 0 if length is None else length - count
    valid = torch.arange(count + pad, device=image.device) < count
    return Tokens(
        torch.cat([patches, patches.new_zeros(b, pad, c, patch, patch)], dim=1),
        F.pad(hash_positions(grid, rows, cols).to(image.device), (0, pad)),
        valid.long() * scale,
        valid,
    )


def multiscale_tokens(
    image: torch.Tensor, patch: int = PATCH, grid: int = 10, scales: tuple[int, ...] = SCALES
) -> Tokens:
    """Tokens of ``image`` (B, 3, H, W): each resized scale (ascending) padded to ``ceil(s / patch)**2``
    patches, then all patches of the full-size image."""
    height, width = image.shape[-2:]
    parts = []
    for index, long_side in enumerate(sorted(scales)):
        size = resized_size(height, width, long_side)
        resized = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
        parts.append(_scale_tokens(resized, patch, grid, index, math.ceil(long_side / patch) ** 2))
    parts.append(_scale_tokens(image, patch, grid, len(scales), None))
    return Tokens(
        torch.cat([p.patches for p in parts], dim=1),
        torch.cat([p.positions for p in parts]),
        torch.cat([p.scales for p in parts]),
        torch.cat([p.mask for p in parts]),
    )


class Encoder(nn.Module):
    """Transformer encoder with hashed spatial and scale embeddings and a CLS token."""

    def __init__(self, dim: int, mlp: int, layers: int, grid: int, num_scales: int) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.posembed_input = nn.ParameterDict({"position_emb": nn.Parameter(torch.zeros(1, grid * grid, dim))})
        self.scaleembed_input = nn.ParameterDict({"scale_emb": nn.Parameter(torch.zeros(num_scales, dim))})
        self.encoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.transformer = nn.ModuleDict({f"encoderblock_{i}": EncoderBlock(dim, mlp) for i in range(layers)})

    def forward(self, x: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        x = x + self.posembed_input["position_emb"][0, tokens.positions]
        x = x + self.scaleembed_input["scale_emb"][tokens.scales]
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
        mask = torch.cat([tokens.mask.new_ones(1), tokens.mask]).expand(len(x), -1)
        for block in self.transformer.values():
            x = block(x, mask)
        return self.encoder_norm(x)


class Musiq(nn.Module):
    """MUSIQ with a single-output head; the defaults are the SPAQ model's."""

    def __init__(
        self, hidden: int = 384, mlp: int = 1152, layers: int = 14, grid: int = 10, scales: tuple[int, ...] = SCALES
    ) -> None:
        super().__init__()
        self.grid, self.scales = grid, scales
        self.conv_root = StdConv(3, STEM, 7, 2)
        self.gn_root = nn.GroupNorm(32, STEM, eps=1e-6)
        self.block1 = Bottleneck(STEM, 4 * STEM)
        self.embedding = nn.Linear(4 * STEM * (PATCH // 4) ** 2, hidden)
        self.transformer_encoder = Encoder(hidden, mlp, layers, grid, len(scales) + 1)
        self.head = nn.Linear(hidden, 1)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """(M, 3, P, P) patches -> (M, hidden) tokens; features flattened in TensorFlow's (h, w, c) order."""
        x = F.relu(self.gn_root(self.conv_root(patches)))
        x = self.block1(F.max_pool2d(same_pad(x, 3, 2), 3, 2))
        return self.embedding(x.permute(0, 2, 3, 1).flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of images (B, 3, H, W) in [0, 1]."""
        tokens = multiscale_tokens((images - 0.5) * 2, PATCH, self.grid, self.scales)
        b, n = tokens.patches.shape[:2]
        x = self.embed(tokens.patches.flatten(0, 1)).view(b, n, -1)
        return self.head(self.transformer_encoder(x, tokens)[:, 0])[:, 0]


def load_musiq(path: str | Path) -> Musiq:
    """A MUSIQ loaded strictly from a pyiqa checkpoint (a flat state dict, ``module.`` prefixes stripped)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    layers = {m.group(1) for k in state if (m := re.match(re.escape(BLOCK_PREFIX) + r"(\d+)\.", k))}
    model = Musiq(
        hidden=state["head.weight"].shape[1],
        mlp=state[f"{BLOCK_PREFIX}0.mlp.fc1.weight"].shape[0],
        layers=len(layers),
        grid=math.isqrt(state["transformer_encoder.posembed_input.position_emb"].shape[1]),
    )
    model.load_state_dict(state)
    return model.eval()
