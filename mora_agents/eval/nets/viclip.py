"""ViCLIP (InternVid-10M-FLT) in the layout of VBench's ``third_party/ViCLIP``, with its video and text inputs.

The video tower is CLIP ViT-L/14 whose patch tokens of all 8 frames attend jointly, each with a
learned temporal embedding, under one class token; the text tower is CLIP's with a 32-token context.
Parameter names match the checkpoint's ``model`` state dict, which VBench loads whole and strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mora_agents.eval.nets import preprocess
from mora_agents.eval.nets.checkpoint import load_checkpoint
from mora_agents.eval.nets.clip import Transformer, _count_layers, causal_mask

NUM_FRAMES = 8
INPUT_SIZE = 224


@dataclass(frozen=True)
class ViCLIPConfig:
    """Tower sizes; the defaults are VBench's ``clip_joint_l14`` and ``clip_text_l14`` (ViCLIP-L/14)."""

    vision_width: int = 1024
    vision_layers: int = 24
    patch: int = 14
    grid: int = 16
    frames: int = NUM_FRAMES
    text_width: int = 768
    text_layers: int = 12
    context_length: int = 32
    vocab_size: int = 49408
    embed_dim: int = 768

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ViCLIPConfig:
        """Sizes read from a state dict's shapes and layer indices."""
        conv = state["vision_encoder.conv1.weight"].shape
        vocab, text_width = state["text_encoder.token_embedding.weight"].shape
        return cls(
            vision_width=conv[0],
            vision_layers=_count_layers(state, "vision_encoder.transformer.resblocks"),
            patch=conv[-1],
            grid=round((state["vision_encoder.positional_embedding"].shape[0] - 1) ** 0.5),
            frames=state["vision_encoder.temporal_positional_embedding"].shape[1],
            text_width=text_width,
            text_layers=_count_layers(state, "text_encoder.transformer.resblocks"),
            context_length=state["text_encoder.positional_embedding"].shape[0],
            vocab_size=vocab,
            embed_dim=state["text_encoder.text_projection"].shape[1],
        )


class VideoTransformer(nn.Module):
    """``clip_joint_l14``: frame-wise patches (a 1 x p x p Conv3d) plus spatial and temporal embeddings."""

    def __init__(self, width: int, layers: int, patch: int, grid: int, frames: int, output_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, width, (1, patch, patch), (1, patch, patch), bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, frames, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) with T = the number of temporal embeddings -> (B, output_dim)."""
        x = self.conv1(video.transpose(1, 2)).flatten(3).permute(0, 3, 2, 1)  # (B, patches, T, width)
        x = x + self.positional_embedding[1:, None] + self.temporal_positional_embedding
        cls = (self.class_embedding + self.positional_embedding[0]).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x.flatten(1, 2)], dim=1)  # tokens patch-major, frame-minor, as in VBench
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class TextTransformer(nn.Module):
    """``clip_text_l14``: CLIP's causal text transformer, read out at the end-of-text token."""

    def __init__(self, width: int, layers: int, context_length: int, vocab_size: int, output_dim: int) -> None:
        super().__init__()
        self.transformer = Transformer(width, layers)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, context_length) token ids -> (B, output_dim)."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal_mask(x)))
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection


class ViCLIP(nn.Module):
    """VBench's ``ViCLIP``: video and text towers projecting into one space (ViCLIP-L/14 by default)."""

    def __init__(self, config: ViCLIPConfig | None = None) -> None:
        super().__init__()
        c = config or ViCLIPConfig()
        self.vision_encoder = VideoTransformer(c.vision_width, c.vision_layers, c.patch, c.grid, c.frames, c.embed_dim)
        self.text_encoder = TextTransformer(c.text_width, c.text_layers, c.context_length, c.vocab_size, c.embed_dim)
        self.temp = nn.Parameter(torch.tensor(0.01))  # contrastive temperature, used only in training

    @property
    def context_length(self) -> int:
        return self.text_encoder.positional_embedding.shape[0]

    def encode_vision(self, video: torch.Tensor) -> torch.Tensor:
        """Video features (B, D) of (B, T, 3, H, W) frames from :func:`video_input`."""
        return self.vision_encoder(video)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features (B, D) of (B, context_length) token ids."""
        return self.text_encoder(tokens)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a ViCLIP checkpoint, as VBench reads it (no prefix, no key dropped)."""
    return dict(load_checkpoint(path)["model"])


def load_viclip(path: Path) -> ViCLIP:
    """ViCLIP with the sizes of the checkpoint at ``path``, loaded strictly, in eval mode."""
    state = read_state(path)
    model = ViCLIP(ViCLIPConfig.from_state(state))
    model.load_state_dict(state, strict=True)
    return model.eval()


def sample_indices(num_frames: int) -> list[int]:
    """VBench's ``get_frame_indices(8, num_frames, sample="middle")``.

    The video is cut into ``min(8, num_frames)`` segments at ``int(linspace(0, num_frames))``
    bounds and the middle frame of each is taken; shorter videos repeat their last frame.
    """
    segments = min(NUM_FRAMES, num_frames)
    bounds = np.linspace(0, num_frames, segments + 1).astype(int)
    indices = [(int(start) + int(end) - 1) // 2 for start, end in pairwise(bounds)]
    return indices + [indices[-1]] * (NUM_FRAMES - segments)


def video_input(frames: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """VBench ``clip_transform`` on decord's uint8 frames (T, H, W, 3) -> (T, 3, size, size).

    Bicubic short side -> ``size`` (torchvision clamps and rounds a uint8 input back to uint8),
    centre crop, /255, CLIP normalisation.
    """
    x = preprocess.resize_short(preprocess.to_tensor(frames), size, "bicubic").clamp(0, 255).round()
    return preprocess.normalize(preprocess.center_crop(x, size) / 255.0, preprocess.CLIP_MEAN, preprocess.CLIP_STD)
