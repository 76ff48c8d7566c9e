"""Tiny random checkpoints written in VBench's cache layout, standing in for the real ones."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch

from mora_agents.eval.nets.clip import CLIP, Transformer
from mora_agents.eval.nets.dino import DinoViT
from mora_agents.eval.nets.raft import RAFT
from mora_agents.eval.weights import CHECKPOINTS

MERGES = ["h e", "l l", "he ll", "hell o</w>"]
VOCAB = 512 + len(MERGES) + 2


def _target(root: Path, key: str) -> Path:
    path = root / CHECKPOINTS[key].relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_dino(root: Path) -> Path:
    torch.manual_seed(0)
    model = DinoViT(dim=64, depth=1, patch=16, grid=14, mlp_hidden=128)
    with torch.no_grad():
        model.cls_token.normal_(std=0.5)
        model.pos_embed.normal_(std=0.5)
    path = _target(root, "dino_vitb16")
    torch.save(model.state_dict(), path)
    return path


def clip_state(embed_dim: int, logit_scale: float = math.log(100.0), seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a CLIP with one 64-wide layer per tower, 32-px patches on a 7x7 grid."""
    torch.manual_seed(seed)
    width = 64
    state = {
        "visual.conv1.weight": torch.randn(width, 3, 32, 32) * 0.02,
        "visual.class_embedding": torch.randn(width),
        "visual.positional_embedding": torch.randn(50, width) * 0.1,
        "visual.proj": torch.randn(width, embed_dim),
        "token_embedding.weight": torch.randn(VOCAB, width),
        "positional_embedding": torch.randn(77, width) * 0.1,
        "text_projection": torch.randn(width, embed_dim),
        "logit_scale": torch.tensor(logit_scale),
        "input_resolution": torch.tensor(224),  # metadata key present in OpenAI archives
    }
    for name in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.ones(width), torch.zeros(width)
    for prefix in ("visual.transformer", "transformer"):
        state.update({f"{prefix}.{k}": v for k, v in Transformer(width, 1).state_dict().items()})
    return state


def write_clip(root: Path, key: str = "clip_vit_b32", jit: bool = False, **kw: float) -> Path:
    """``clip_vit_b32`` (512-d) or ``clip_vit_l14`` (768-d); ``jit`` saves a TorchScript archive."""
    state = clip_state(768 if key == "clip_vit_l14" else 512, **kw)
    path = _target(root, key)
    if jit:
        torch.jit.script(CLIP(state)).save(str(path))
    else:
        torch.save(state, path)
    return path


def write_bpe(root: Path) -> Path:
    path = _target(root, "clip_bpe")
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return path


def write_laion(root: Path, weight: torch.Tensor, bias: float) -> Path:
    path = _target(root, "laion_aesthetic")
    torch.save({"weight": weight.reshape(1, 768), "bias": torch.tensor([bias])}, path)
    return path


def write_raft(root: Path) -> Path:
    torch.manual_seed(0)
    path = _target(root, "raft_things")
    torch.save({f"module.{k}": v for k, v in RAFT().state_dict().items()}, path)
    return path
