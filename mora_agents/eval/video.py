"""Video decoding and the frame-sampling rules VBench uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mora_agents.eval._deps import require


class BadInputError(ValueError):
    """An input path is missing or is not a readable video."""


@dataclass(frozen=True)
class Video:
    """Decoded RGB frames, shape (T, H, W, 3), dtype uint8."""

    frames: np.ndarray
    fps: float
    path: str = "<memory>"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def read_video(path: str | Path) -> Video:
    """Decode every frame of ``path`` as RGB uint8 with ffmpeg."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file")
    imageio_ffmpeg = require("imageio_ffmpeg", "imageio-ffmpeg")
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in reader]
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError) as exc:
        raise BadInputError(
            f"{path}: not a readable video ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    fps = float(meta.get("fps") or 0.0)
    if not frames or fps <= 0:
        raise BadInputError(f"{path}: not a readable video (no frames or no frame rate)")
    return Video(frames=np.stack(frames), fps=fps, path=str(path))


def stride_indices(num_frames: int, fps: float, target_fps: float = 8.0) -> list[int]:
    """Every ``max(1, round(fps / target_fps))``-th frame, starting at 0 (dynamic degree)."""
    interval = max(1, round(fps / target_fps))
    return list(range(0, num_frames, interval))
