"""Checkpoint lookup in a VBench-layout cache directory (``--weights`` / ``VBENCH_CACHE_DIR``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "VBENCH_CACHE_DIR"


@dataclass(frozen=True)
class Checkpoint:
    """A file of the VBench cache: its path inside the cache and where VBench downloads it."""

    relpath: str
    url: str
    archive_member: str | None = None  # set when ``url`` is a zip that holds the file


CHECKPOINTS: dict[str, Checkpoint] = {
    "dino_vitb16": Checkpoint(
        "dino_model/dino_vitbase16_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
    ),
    "clip_vit_b32": Checkpoint(
        "clip_model/ViT-B-32.pt",
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    ),
    "clip_vit_l14": Checkpoint(
        "clip_model/ViT-L-14.pt",
        "https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    ),
    "laion_aesthetic": Checkpoint(
        "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth",
        "https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/main/sa_0_4_vit_l_14_linear.pth",
    ),
    "clip_bpe": Checkpoint(
        "ViCLIP/bpe_simple_vocab_16e6.txt.gz",
        "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
    ),
    "raft_things": Checkpoint(
        "raft_model/models/raft-things.pth",
        "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
        archive_member="models/raft-things.pth",
    ),
    "amt_s": Checkpoint(
        "amt_model/amt-s.pth",
        "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth",
    ),
    "musiq_spaq": Checkpoint(
        "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
        "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth",
    ),
    "viclip": Checkpoint(
        "ViCLIP/ViClip-InternVid-10M-FLT.pth",
        "https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/ViClip-InternVid-10M-FLT.pth",
    ),
}


class MissingWeightsError(FileNotFoundError):
    """A checkpoint is not in the weights directory (and downloading was not allowed)."""


def default_root() -> Path:
    """``$VBENCH_CACHE_DIR`` or VBench's default ``~/.cache/vbench``."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "vbench"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WeightStore:
    """Resolves checkpoints by key; downloads only when ``download`` is true."""

    def __init__(self, root: str | Path | None = None, download: bool = False) -> None:
        self.root = Path(root) if root else default_root()
        self.download = download
        self._hashes: dict[Path, str] = {}

    def path(self, key: str) -> Path:
        """Local path of checkpoint ``key``; raises :class:`MissingWeightsError` if absent."""
        checkpoint = CHECKPOINTS[key]
        target = self.root / checkpoint.relpath
        if target.is_file():
            return target
        if not self.download:
            raise MissingWeightsError(
                f"missing {checkpoint.relpath} in weights directory {self.root} "
                f"(pass --weights DIR or set {ENV_VAR} to a VBench cache, or add --download)"
            )
        self._fetch(checkpoint, target)
        return target

    def sha256(self, path: Path) -> str:
        if path not in self._hashes:
            self._hashes[path] = sha256_of(path)
        return self._hashes[path]

    @staticmethod
    def _fetch(checkpoint: Checkpoint, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            downloaded = Path(tmp) / "download"
            with urllib.request.urlopen(checkpoint.url) as response, downloaded.open("wb") as out:
                shutil.copyfileobj(response, out)
            if checkpoint.archive_member:
                with (
                    zipfile.ZipFile(downloaded) as archive,
                    archive.open(checkpoint.archive_member) as src,
                    (Path(tmp) / "member").open("wb") as out,
                ):
                    shutil.copyfileobj(src, out)
                downloaded = Path(tmp) / "member"
            downloaded.replace(target)
