"""Tensor preprocessing with torchvision's semantics (torchvision itself is not required)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in 0..255."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (H, W) of torchvision ``Resize(size)``: short side -> size, long side truncated."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_short(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Resize a float (T, C, H, W) batch so its short side is ``size`` (no antialiasing)."""
    out = short_side_size(x.shape[-2], x.shape[-1], size)
    return F.interpolate(x, size=out, mode=mode, align_corners=False, antialias=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top = round((x.shape[-2] - size) / 2.0)
    left = round((x.shape[-1] - size) / 2.0)
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def dino_input(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VBench ``dino_transform``: bilinear short side -> size, /255, ImageNet normalisation."""
    return normalize(resize_short(to_tensor(frames), size, "bilinear") / 255.0, IMAGENET_MEAN, IMAGENET_STD)


def clip_input(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VBench ``clip_transform``: bicubic short side -> size, centre crop, /255, CLIP normalisation."""
    x = center_crop(resize_short(to_tensor(frames), size, "bicubic"), size)
    return normalize(x / 255.0, CLIP_MEAN, CLIP_STD)


def clip_input_pil(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VBench ``clip_transform_Image``: the same steps on PIL images (PIL's bicubic filter)."""
    height, width = frames.shape[1:3]
    out_h, out_w = short_side_size(height, width, size)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((out_w, out_h), Image.BICUBIC)) for f in frames])
    return normalize(center_crop(to_tensor(resized), size) / 255.0, CLIP_MEAN, CLIP_STD)
