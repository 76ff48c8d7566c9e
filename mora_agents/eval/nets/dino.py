"""DINO ViT (facebookresearch/dino ``vision_transformer.py`` layout): CLS feature of the last norm."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 64


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


class DinoViT(nn.Module):
    """ViT returning the normalised CLS token; positional grid interpolated like DINO."""

    def __init__(self, dim: int, depth: int, patch: int, grid: int, mlp_hidden: int) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, dim // HEAD_DIM, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> DinoViT:
        dim = state["cls_token"].shape[-1]
        depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
        model = cls(
            dim=dim,
            depth=depth,
            patch=state["patch_embed.proj.weight"].shape[-1],
            grid=math.isqrt(state["pos_embed"].shape[1] - 1),
            mlp_hidden=state["blocks.0.mlp.fc1.weight"].shape[0],
        )
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
        return model.eval()

    def _pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        grid = math.isqrt(self.pos_embed.shape[1] - 1)
        if rows == cols == grid:
            return self.pos_embed
        patch_pos = self.pos_embed[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        # DINO adds 0.1 to the target grid and interpolates by scale factor, not by size.
        patch_pos = F.interpolate(patch_pos, scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid), mode="bicubic")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([self.pos_embed[:, :1], patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self._pos_embed(rows, cols)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]
