"""Media files: artifact references, image and MP4 reading/writing, atomic writes.

Videos are H.264 MP4 (yuv420p) through imageio-ffmpeg. Frames are numpy uint8 arrays [H, W, 3].
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps
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


def media_kind(path: Path, label: str | None = None) -> MediaKind:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise InputError(f"{label or path}: unsupported file type '{suffix}' (images: {sorted(IMAGE_SUFFIXES)}, "
                     f"videos: {sorted(VIDEO_SUFFIXES)})")


# -- files ------------------------------------------------------------------------------------


def check_file(path: Path, name: str, kind: str) -> None:
    """A non-empty regular file (a folder, FIFO or device is refused before anything opens it)."""
    try:
        status = path.stat()
    except OSError:
        raise InputError(f"{name}: no such {kind} file") from None
    if not stat.S_ISREG(status.st_mode):
        raise InputError(f"{name}: not a regular file (a folder, pipe or device), so not {article(kind)}")
    if status.st_size == 0:
        raise InputError(f"{name}: empty file (0 bytes), not {article(kind)}")


# -- images -------------------------------------------------------------------------------------

MAX_IMAGE_PIXELS = 150_000_000
"""Larger images are refused before decoding (12000 x 12000 is fine; a header claiming more is a decompression bomb)."""


def load_image(path: str | Path, label: str | None = None) -> Image.Image:
    """Decode a whole image as RGB, EXIF orientation applied; a missing, truncated, corrupt or too large file
    raises InputError naming `label` (default: the path). Decoding is strict: an image whose data ends before its
    last pixel is refused, also where Pillow would fill the rest in (`data_ends_early`).

    Transparency is laid over white, 16-bit greys are scaled (not clipped) to 8 bits, palette and CMYK
    images are converted; only the first frame of an animated file is read.
    """
    path = Path(path)
    name = label or str(path)
    check_file(path, name, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked here, with our own limit
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise InputError(f"{name}: {im.width}x{im.height} pixels is over the limit of "
                                     f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels")
                im.load()  # every pixel: a truncated file fails here, not later in a tool
                if (problem := data_ends_early(path, im.format)) is not None:
                    raise InputError(f"{name}: truncated {im.format} image: {problem}")
                return _to_rgb(ImageOps.exif_transpose(im, in_place=True) or im)
    except Image.DecompressionBombError:
        raise InputError(f"{name}: declares a size over the limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels") from None
    except InputError:
        raise
    except Exception as e:  # Pillow raises many kinds on damaged files; all mean the same to a person
        raise InputError(f"{name}: not a readable image ({_first_line(e)})") from None


def data_ends_early(path: Path, image_format: str | None) -> str | None:
    """How an image file's data ends before its pixels do, for the formats whose decoder then fills the missing
    pixels in without an error (PNG: a compressed stream that ends early, or no end chunk; JPEG: a scan cut
    short); None if it is whole. The other formats' decoders refuse such files themselves."""
    if image_format == "PNG":
        return _png_ends_early(path)
    if image_format in ("JPEG", "MPO"):
        import simplejpeg

        try:  # libjpeg-turbo's warnings as errors; it decoded the data that Pillow's libjpeg did
            simplejpeg.decode_jpeg(path.read_bytes(), colorspace="GRAY", strict=True)
        except ValueError as e:
            if "premature end" in str(e).lower():
                return _first_line(e)
    return None


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel of each PNG colour type."""
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
"""The passes of an interlaced PNG: first column and row, column and row step."""


def _png_ends_early(path: Path) -> str | None:
    """Whether the chunks of a PNG (that Pillow decoded) run to its IEND chunk, and its image data inflates to
    every row that the header declares (Pillow zero-fills the rows that a short stream lacks)."""
    with open(path, "rb") as f:
        f.seek(8)
        header, stream, inflated = b"", zlib.decompressobj(), 0
        while len(head := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            body = f.read(length)
            if len(body) < length:
                return f"the file ends inside its {kind.decode('latin-1')} chunk"
            if kind == b"IHDR":
                header = body
            elif kind == b"IDAT":
                while body:  # only counted, a MiB at a time
                    inflated += len(stream.decompress(body, 1 << 20))
                    body = stream.unconsumed_tail
            elif kind == b"IEND":
                break
            f.seek(4, os.SEEK_CUR)  # the CRC
        else:
            return "the file ends before its IEND chunk"
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    bits = depth * PNG_CHANNELS[color]
    needed = sum(rows * (1 + (columns * bits + 7) // 8) for x, y, dx, dy in (ADAM7 if interlace else ((0, 0, 1, 1),))
                 if (columns := (width - x + dx - 1) // dx) and (rows := (height - y + dy - 1) // dy))
    if inflated < needed:
        return f"its image data holds {inflated} of the {needed} bytes of its {width}x{height} pixels"
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):  # 16-bit (or 32-bit) greys: scale 0..65535 to 0..255
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257
        return Image.fromarray(grey.round().astype(np.uint8)).convert("RGB")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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


def shrink_image(image: Image.Image, max_side: int) -> Image.Image:
    """The image scaled down (aspect ratio kept) so that no side exceeds `max_side`; smaller ones are unchanged."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


# -- videos -------------------------------------------------------------------------------------

MIN_FPS, MAX_FPS = 1.0, 240.0
MAX_VIDEO_SIDE = 4096
MAX_VIDEO_PIXELS = 1_000_000_000
"""Frames x width x height decoded from one video at most (3 GB as RGB): about 20 s of 1920x1080 at 24 fps."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float

    @property
    def max_frames(self) -> int:
        return MAX_VIDEO_PIXELS // (self.width * self.height)


def video_info(path: Path, name: str) -> VideoInfo:
    """A video's size and frame rate from its header, within the limits; nothing is decoded yet."""
    reader, info = _open_video(path, name)
    reader.close()
    return info


def _open_video(path: Path, name: str) -> tuple[Iterator, VideoInfo]:
    """An ffmpeg reader of a video's RGB frames, past its header, and the header's info, checked against the limits
    (the reader is closed when they are not met)."""
    check_file(path, name, "video")
    reader = imageio_ffmpeg.read_frames(str(path))  # a generator: ffmpeg starts at the first `next`
    try:
        try:
            meta = next(reader)
            (width, height), fps = meta["size"], float(meta.get("fps") or 0)
        except Exception as e:  # ffmpeg's errors: no video stream, not a container, ...
            raise InputError(f"{name}: not a readable video ({_first_line(e)})") from None
        if not MIN_FPS <= fps <= MAX_FPS:
            rate = f"frame rate {fps:g} fps" if fps else "no frame rate that can be read"
            raise InputError(f"{name}: {rate}; videos need {MIN_FPS:g}-{MAX_FPS:g} fps")
        if not 0 < max(width, height) <= MAX_VIDEO_SIDE:
            raise InputError(f"{name}: {width}x{height} pixels; videos may have at most {MAX_VIDEO_SIDE} px per side")
    except InputError:
        reader.close()
        raise
    return reader, VideoInfo(width, height, fps)


def _too_long(name: str, info: VideoInfo) -> InputError:
    return InputError(f"{name}: more than {info.max_frames} frames of {info.width}x{info.height} (at most "
                      f"{MAX_VIDEO_PIXELS / 1e9:g} gigapixels are decoded from one video)")


def scan_video(path: str | Path, label: str | None = None) -> tuple[VideoInfo, int]:
    """Decode a whole video without keeping it (ffmpeg to a null output): its info and frame count.

    A truncated or damaged file (any decoding error), no frames, or one past the limits raises InputError.
    """
    path = Path(path)
    name = label or str(path)
    info = video_info(path, name)
    process = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(path), "-map", "0:v:0",
         "-frames:v", str(info.max_frames + 1), "-f", "null", "-", "-progress", "pipe:1"],
        capture_output=True, text=True, errors="replace", check=False)
    if process.returncode or process.stderr.strip():
        first = process.stderr.strip().splitlines()[0] if process.stderr.strip() else ""
        problem = re.sub(r"^(\[[^]]*\] *)+", "", first)  # without ffmpeg's "[h264 @ 0x...]" prefixes
        raise InputError(f"{name}: damaged or truncated video (ffmpeg: {problem or f'exit code {process.returncode}'})")
    frames = int((re.findall(r"^frame=(\d+)", process.stdout, re.MULTILINE) or ["0"])[-1])
    if frames == 0:
        raise InputError(f"{name}: video has no frames")
    if frames > info.max_frames:
        raise _too_long(name, info)
    return info, frames


def read_video(path: str | Path, label: str | None = None) -> tuple[np.ndarray, float]:
    """Decode a video to frames [N, H, W, 3] uint8 and its frame rate; bad or too large files raise InputError."""
    path = Path(path)
    name = label or str(path)
    reader, info = _open_video(path, name)
    frames = []
    try:
        for buf in reader:
            if len(frames) == info.max_frames:
                raise _too_long(name, info)
            frames.append(np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3))
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{name}: not a readable video ({_first_line(e)})") from None
    finally:
        reader.close()
    if not frames:
        raise InputError(f"{name}: video has no frames")
    return np.stack(frames), info.fps


def write_video(frames: np.ndarray | Sequence[np.ndarray], fps: float, path: Path, noise: bool = False) -> Artifact:
    """Write RGB frames as H.264 MP4 (yuv420p; an odd side is scaled up to even) and return its Artifact, told from
    what was written (no decoding it again, as `probe` would)."""
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
    return Artifact(path=str(path), kind="video", sha256=sha256_file(path), width=width + width % 2,
                    height=height + height % 2, frames=len(frames), fps=float(fps), noise=noise)


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


def probe(path: str | Path, noise: bool = False, label: str | None = None) -> Artifact:
    """Describe an image or video file as an Artifact, validating that it decodes (errors name `label`)."""
    path = Path(path)
    kind = media_kind(path, label)
    if kind == "image":
        image = load_image(path, label)
        return Artifact(path=str(path), kind=kind, sha256=sha256_file(path), width=image.width,
                        height=image.height, noise=noise)
    info, frames = scan_video(path, label)
    return Artifact(path=str(path), kind=kind, sha256=sha256_file(path), width=info.width, height=info.height,
                    frames=frames, fps=info.fps, noise=noise)
