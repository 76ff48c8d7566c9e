"""Media files: artifact references, image and MP4 reading/writing, atomic writes.

Videos are H.264 MP4 (yuv420p) through imageio-ffmpeg. Frames are numpy uint8 arrays [H, W, 3].
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import imageio_ffmpeg
import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from mora_agents.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif"}
MediaKind = Literal["image", "video"]


class Artifact(BaseModel):
    """A reference to a media file: never pixels, only where it is and what it holds."""

    path: str
    kind: MediaKind
    sha256: str
    width: int
    height: int
    frames: int = 1
    fps: float | None = None
    noise: bool = False
    """True when made by random-weight (tiny) models: the pixels are noise, not a result."""

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    def relative_to(self, root: Path) -> Artifact:
        path = Path(self.path)
        if path.is_absolute() and path.is_relative_to(root):
            return self.model_copy(update={"path": str(path.relative_to(root))})
        return self

    def absolute(self, root: Path) -> Artifact:
        path = Path(self.path)
        return self if path.is_absolute() else self.model_copy(update={"path": str(root / path)})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it is renamed onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # on disk before it takes the final name, even on power loss
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # the permissions of a plainly created file, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def media_kind(path: Path) -> MediaKind:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise InputError(f"{path}: unsupported file type '{suffix}' (images: {sorted(IMAGE_SUFFIXES)}, videos: {sorted(VIDEO_SUFFIXES)})")


# -- images -------------------------------------------------------------------------------------


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB; a missing, unreadable or corrupt file raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def save_image(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG" if path.suffix.lower() == ".png" else None)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover width x height, then centre-crop: the aspect ratio is kept, nothing is stretched."""
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))


# -- videos -------------------------------------------------------------------------------------


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video to frames [N, H, W, 3] uint8 and its frame rate; bad files raise InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes), not a video")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in reader]
    except (RuntimeError, OSError, KeyError, StopIteration) as e:
        raise InputError(f"{path}: not a readable video ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not frames:
        raise InputError(f"{path}: video has no frames")
    return np.stack(frames), float(meta.get("fps") or 0) or 1.0


def write_video(frames: np.ndarray | Sequence[np.ndarray], fps: float, path: Path) -> None:
    """Write RGB frames as H.264 MP4 (yuv420p; odd sizes are padded to even by ffmpeg's rule)."""
    frames = np.asarray(frames, dtype=np.uint8)
    height, width = frames.shape[1:3]
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
            quality=8, macro_block_size=2, output_params=["-movflags", "+faststart"],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(fit_image(Image.fromarray(f), width, height)) for f in frames])


def resample_fps(frames: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Change the frame rate by picking the nearest source frame for each output time (duration kept)."""
    if abs(fps - target_fps) < 1e-6:
        return frames
    count = max(1, round(len(frames) * target_fps / fps))
    index = np.minimum((np.arange(count) * fps / target_fps).round().astype(int), len(frames) - 1)
    return frames[index]


# -- artifacts ----------------------------------------------------------------------------------


def article(kind: str) -> str:
    """'an image', 'a video': for messages."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def probe(path: str | Path, noise: bool = False) -> Artifact:
    """Describe an image or video file as an Artifact, validating that it decodes."""
    path = Path(path)
    kind = media_kind(path)
    if kind == "image":
        image = load_image(path)
        return Artifact(path=str(path), kind=kind, sha256=sha256_file(path), width=image.width,
                        height=image.height, noise=noise)
    frames, fps = read_video(path)
    return Artifact(path=str(path), kind=kind, sha256=sha256_file(path), width=frames.shape[2],
                    height=frames.shape[1], frames=len(frames), fps=fps, noise=noise)
