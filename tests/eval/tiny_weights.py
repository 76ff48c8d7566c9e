"""Tiny random checkpoints written in VBench's cache layout, standing in for the real ones."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch

from mora_agents.eval.nets.amt import AMT
from mora_agents.eval.nets.clip import CLIP, Transformer
from mora_agents.eval.nets.dino import DinoViT
from mora_agents.eval.nets.musiq import Musiq
from mora_agents.eval.nets.raft import RAFT
from mora_agents.eval.nets.viclip import ViCLIP, ViCLIPConfig
from mora_agents.eval.weights import CHECKPOINTS

MERGES = ["h e", "l l", "he ll", "hell o</w>"]
VOCAB = 512 + len(MERGES) + 2
# ViCLIP-L/14 with one 64-wide layer per tower and 32-px patches on a 7x7 grid; 8 frames, 32 tokens.
VICLIP = ViCLIPConfig(
    vision_width=64,
    vision_layers=1,
    patch=32,
    grid=7,
    text_width=64,
    text_layers=1,
    vocab_size=VOCAB,
    embed_dim=48,
)


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


def write_amt(root: Path, model: AMT | None = None, **extra: object) -> Path:
    """An AMT-S checkpoint (random weights by default) in VBench's layout: ``{"epoch", "state_dict", ...}``."""
    torch.manual_seed(0)
    path = _target(root, "amt_s")
    torch.save({"epoch": 299, "state_dict": (model or AMT()).state_dict(), **extra}, path)
    return path


def write_musiq(root: Path, prefix: str = "", drop: str | None = None, extra: bool = False) -> Path:
    """A MUSIQ with two 128-wide layers (2 heads); scores are about 50."""
    torch.manual_seed(0)
    model = Musiq(hidden=128, mlp=64, layers=2)
    encoder = model.transformer_encoder
    with torch.no_grad():
        for table in (encoder.cls, encoder.posembed_input["position_emb"], encoder.scaleembed_input["scale_emb"]):
            table.normal_(std=0.5)
        model.head.bias.fill_(50.0)
    state = {prefix + k: v for k, v in model.state_dict().items() if k != drop}
    if extra:
        state["unexpected.weight"] = torch.zeros(1)
    path = _target(root, "musiq_spaq")
    torch.save(state, path)
    return path


def viclip_state() -> dict[str, torch.Tensor]:
    """Random :data:`VICLIP` weights drawn in key order (layer norms left at identity)."""
    generator = torch.Generator().manual_seed(0)
    return {
        k: v if ".ln_" in k else torch.randn(v.shape, generator=generator) * 0.1
        for k, v in sorted(ViCLIP(VICLIP).state_dict().items())
    }


def write_viclip(root: Path, state: dict[str, torch.Tensor] | None = None, **extra: object) -> Path:
    """``{"model": state, **extra}`` at VBench's ViCLIP path; VBench reads ``["model"]``."""
    path = _target(root, "viclip")
    torch.save({"model": viclip_state() if state is None else state, **extra}, path)
    return path


def write_all(root: Path) -> dict[str, Path]:
    """Every checkpoint of :data:`CHECKPOINTS`, by key."""
    paths = {
        "dino_vitb16": write_dino(root),
        "clip_vit_b32": write_clip(root),
        "clip_vit_l14": write_clip(root, "clip_vit_l14"),
        "clip_bpe": write_bpe(root),
        "laion_aesthetic": write_laion(root, torch.randn(768, generator=torch.Generator().manual_seed(0)) * 0.1, 5.0),
        "raft_things": write_raft(root),
        "amt_s": write_amt(root),
        "musiq_spaq": write_musiq(root),
        "viclip": write_viclip(root),
    }
    assert paths.keys() == CHECKPOINTS.keys(), "a checkpoint has no tiny writer"
    return paths
