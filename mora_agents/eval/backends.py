"""Loading reference networks once per evaluation and running them over frames in batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.result import REFERENCE, MetricResult
from mora_agents.eval.weights import WeightStore

BATCH = 16


class ReferenceUnavailableError(RuntimeError):
    """The reference network of a metric is not implemented here; the message says why."""


@dataclass(frozen=True)
class Loaded:
    """A loaded network and the checkpoint it came from."""

    model: Any
    path: Path
    sha256: str

    def result(self, name: str, value: float, frames: list[int], fps: float, **details: Any) -> MetricResult:
        return MetricResult(
            name=name,
            value=float(value),
            backend=REFERENCE,
            frames_used=frames,
            fps=fps,
            checkpoint=str(self.path),
            sha256=self.sha256,
            details=details,
        )


class Backends:
    """Caches the reference networks of one evaluation run."""

    def __init__(self, weights: WeightStore, device: str | None = None) -> None:
        self.weights = weights
        self.device = device
        self._loaded: dict[str, Loaded] = {}

    def _load(self, key: str, build: Callable[[Path], Any]) -> Loaded:
        if key not in self._loaded:
            path = self.weights.path(key)
            torch = require("torch")
            model = build(path)
            if isinstance(model, torch.nn.Module):
                model = model.to(self.torch_device).eval()
            self._loaded[key] = Loaded(model, path, self.weights.sha256(path))
        return self._loaded[key]

    @property
    def torch_device(self) -> str:
        if self.device is None:
            self.device = "cuda" if require("torch").cuda.is_available() else "cpu"
        return self.device

    def dino(self) -> Loaded:
        def build(path: Path) -> Any:
            from mora_agents.eval.nets.dino import DinoViT

            return DinoViT.from_state_dict(require("torch").load(path, map_location="cpu", weights_only=True))

        return self._load("dino_vitb16", build)

    def clip(self, key: str) -> Loaded:
        """``clip_vit_b32`` or ``clip_vit_l14``."""

        def build(path: Path) -> Any:
            from mora_agents.eval.nets.clip import CLIP, load_clip_state

            return CLIP(load_clip_state(path))

        return self._load(key, build)

    def laion_head(self) -> Loaded:
        def build(path: Path) -> Any:
            torch = require("torch")
            head = torch.nn.Linear(768, 1)
            head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return head

        return self._load("laion_aesthetic", build)

    def tokenizer(self) -> Loaded:
        def build(path: Path) -> Any:
            from mora_agents.eval.nets.tokenizer import ClipTokenizer

            return ClipTokenizer(path)

        return self._load("clip_bpe", build)

    def raft(self) -> Loaded:
        def build(path: Path) -> Any:
            from mora_agents.eval.nets.raft import RAFT

            return RAFT.from_state_dict(require("torch").load(path, map_location="cpu", weights_only=True))

        return self._load("raft_things", build)

    def amt(self) -> Loaded:
        def build(path: Path) -> Any:
            from mora_agents.eval.nets.amt import load_amt

            return load_amt(path)

        return self._load("amt_s", build)

    def musiq(self) -> Loaded:
        def build(path: Path) -> Any:
            from mora_agents.eval.nets.musiq import load_musiq

            return load_musiq(path)

        return self._load("musiq_spaq", build)

    def viclip(self) -> Loaded:
        def build(path: Path) -> Any:
            from mora_agents.eval.nets.viclip import load_viclip

            return load_viclip(path)

        return self._load("viclip", build)

    def encode_frames(
        self, frames: np.ndarray, preprocess: Callable[[np.ndarray], Any], encode: Callable[[Any], Any]
    ) -> np.ndarray:
        """L2-normalised features (T, D) of ``frames``, preprocessed and encoded in batches."""
        torch = require("torch")
        features = []
        with torch.no_grad():
            for start in range(0, len(frames), BATCH):
                batch = preprocess(frames[start : start + BATCH]).to(self.torch_device)
                features.append(torch.nn.functional.normalize(encode(batch).float(), dim=-1).cpu())
        return torch.cat(features).numpy()
