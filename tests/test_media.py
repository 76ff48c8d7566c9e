from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, make_video
from PIL import Image

from mora_agents.errors import InputError
from mora_agents.media import fit_image, probe, read_video, resample_fps
from mora_agents.tools import concat_videos, first_frame, last_frame


def test_video_round_trip_is_h264_yuv420p_with_exact_frame_count(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.mp4", frames=10, size=(64, 48), fps=8)
    frames, fps = read_video(path)
    assert frames.shape == (10, 48, 64, 3) and fps == 8
    art = probe(path)
    assert (art.kind, art.frames, art.width, art.height, art.seconds) == ("video", 10, 64, 48, 1.25)


@pytest.mark.parametrize("content, message", [
    (None, "no such video file"),
    (b"", r"empty file \(0 bytes\)"),
    (b"hello, I am text", "not a readable video"),
])
def test_bad_videos_raise_input_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "v.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        probe(path)


def test_corrupt_image_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(InputError, match="not a readable image"):
        probe(path)


def test_fit_image_covers_and_centre_crops() -> None:
    image = Image.new("RGB", (200, 100))
    image.paste((255, 0, 0), (0, 0, 50, 100))  # a red band on the left, cropped away
    fitted = fit_image(image, 64, 64)
    assert fitted.size == (64, 64)
    assert fitted.getpixel((0, 32))[0] < 50


def test_resample_fps_keeps_duration() -> None:
    frames = np.arange(14)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = resample_fps(frames, 7, 14)
    assert len(out) == 28 and out[1, 0, 0, 0] == 0 and out[-1, 0, 0, 0] == 13


def test_frames_and_concat(tmp_path: Path, tiny) -> None:
    a = make_video(tmp_path / "a.mp4", frames=10, fps=7, seed=1)
    b = make_video(tmp_path / "b.mp4", frames=14, size=(32, 24), fps=14, seed=2)
    first, last = first_frame(str(a)), last_frame(str(a))
    frames, _ = read_video(a)
    assert np.abs(np.asarray(Image.open(last.path), int) - frames[-1]).max() == 0
    assert np.abs(np.asarray(Image.open(first.path), int) - frames[0]).max() == 0
    joined = concat_videos([str(a), str(b)], overlap=1)
    # b is fitted to 64x48 and resampled from 14 to 7 fps (14 -> 7 frames), minus one overlapping frame
    assert (joined.width, joined.height, joined.fps, joined.frames) == (64, 48, 7, 10 + 7 - 1)
    assert Path(joined.path).parent == tiny.out_dir


def test_image_kind_is_checked(tmp_path: Path) -> None:
    art = probe(make_image(tmp_path / "a.png"))
    assert (art.kind, art.width, art.height, art.frames) == ("image", 80, 60, 1)
    with pytest.raises(InputError, match="unsupported file type"):
        probe(tmp_path / "notes.txt")


def test_atomic_writes_get_the_permissions_of_a_plainly_created_file(tmp_path: Path) -> None:
    from mora_agents.media import atomic_path

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == plain.stat().st_mode
