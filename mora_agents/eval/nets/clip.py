"""OpenAI CLIP (ViT variants) in the layout of the original ``ViT-*.pt`` checkpoints."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 64
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // HEAD_DIM, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=QuickGELU(), c_proj=nn.Linear(width * 4, width))
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, width: int, layers: int, patch: int, grid: int, output_dim: int) -> None:
        super().__init__()
        self.input_resolution = patch * grid
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


def causal_mask(x: torch.Tensor) -> torch.Tensor:
    """CLIP's additive text mask for ``x`` (B, L, width): -inf above the diagonal, on ``x``'s device and dtype."""
    n = x.shape[1]
    return torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu(1)


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


class CLIP(nn.Module):
    """Image and text towers; dimensions are read from the checkpoint as OpenAI's ``build_model`` does."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        conv = state["visual.conv1.weight"]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        embed_dim = state["text_projection"].shape[1]
        self.visual = VisionTransformer(
            conv.shape[0], _count_layers(state, "visual.transformer.resblocks"), conv.shape[-1], grid, embed_dim
        )
        width = state["ln_final.weight"].shape[0]
        context, vocab = state["positional_embedding"].shape[0], state["token_embedding.weight"].shape[0]
        self.context_length = context
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context, width))
        self.transformer = Transformer(width, _count_layers(state, "transformer.resblocks"))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.load_state_dict({k: v.float() for k, v in state.items() if k not in _METADATA_KEYS})
        self.eval()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal_mask(x)))
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection

    def image_text_cosine(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (N_images, N_texts) of L2-normalised features."""
        image = F.normalize(self.encode_image(images), dim=-1)
        text = F.normalize(self.encode_text(tokens), dim=-1)
        return image @ text.T


def load_clip_state(path: Path) -> dict[str, torch.Tensor]:
    """State dict of an OpenAI TorchScript archive, or of a plain ``torch.save``'d state dict."""
    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)
