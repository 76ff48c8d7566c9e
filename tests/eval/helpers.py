"""Synthetic videos, MP4 files, run directories and the ``mora eval`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from click.testing import Result
from typer.testing import CliRunner

from mora_agents.eval.cli import eval_command
from mora_agents.eval.video import Video

app = typer.Typer()
app.command("eval")(eval_command)
app.command("noop")(lambda: None)  # a second command keeps "eval" as a subcommand, as in `mora`


def invoke(*args: object) -> Result:
    """``mora eval ARGS...``."""
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def texture(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (uint8), periodic so that np.roll pans without seams."""
    rng = np.random.default_rng(seed)
    spectrum = rng.normal(size=(height, width, 3)) + 1j * rng.normal(size=(height, width, 3))
    fy = np.fft.fftfreq(height)[:, None, None]
    fx = np.fft.fftfreq(width)[None, :, None]
    spectrum *= np.exp(-((fx**2 + fy**2) / (2 * 0.06**2)))
    img = np.real(np.fft.ifft2(spectrum, axes=(0, 1)))
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def static(n: int = 16, fps: float = 16.0, **kw: int) -> Video:
    frame = texture(**kw)
    return Video(np.stack([frame] * n), fps)


def pan(n: int = 16, fps: float = 16.0, step: int = 2, **kw: int) -> Video:
    frame = texture(**kw)
    return Video(np.stack([np.roll(frame, step * i, axis=1) for i in range(n)]), fps)


def jitter(n: int = 16, fps: float = 16.0, amplitude: int = 3, **kw: int) -> Video:
    frame = texture(**kw)
    return Video(np.stack([np.roll(frame, amplitude * (i % 2), axis=1) for i in range(n)]), fps)


def scenes(**kw: int) -> tuple[np.ndarray, np.ndarray]:
    """Two unrelated frames: different textures, warm and cool palettes."""
    a, b = texture(seed=1, **kw), texture(seed=2, **kw)
    a[..., 2] //= 4
    b[..., 0] //= 4
    return a, b


def cut(n: int = 16, fps: float = 16.0, **kw: int) -> Video:
    a, b = scenes(**kw)
    return Video(np.stack([a] * (n // 2) + [b] * (n - n // 2)), fps)


def write_mp4(path: Path, video: Video) -> Path:
    """Lossless (libx264rgb, qp 0) MP4, so decoded frames equal ``video.frames``."""
    import imageio_ffmpeg

    height, width = video.frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=video.fps,
        codec="libx264rgb",
        pix_fmt_out="rgb24",
        output_params=["-qp", "0"],
        macro_block_size=1,
        quality=None,
    )
    writer.send(None)
    for frame in video.frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def make_run(root: Path, name: str, task: str, inputs: dict[str, str | Video], result: Video | None = None) -> Path:
    """A finished run directory as ``mora`` writes it: run.json, plan.json, inputs/ and result.mp4.

    Video inputs are written to ``inputs/{i}-{key}.mp4`` and named in the plan by that relative path.
    """
    run = root / name
    (run / "inputs").mkdir(parents=True)
    plan_inputs: dict[str, str] = {}
    for i, (key, value) in enumerate(inputs.items()):
        if isinstance(value, Video):
            plan_inputs[key] = f"inputs/{i}-{key}.mp4"
            write_mp4(run / plan_inputs[key], value)
        else:
            plan_inputs[key] = value
    write_mp4(run / "result.mp4", pan() if result is None else result)
    (run / "plan.json").write_text(json.dumps({"task": task, "inputs": plan_inputs, "reason": ""}))
    (run / "run.json").write_text(json.dumps({"status": "finished", "task": task}))
    return run


TRIPPED: list[str] = []


def _trip() -> str:
    TRIPPED.append("unpickled")
    return "unpickled"


class Tripwire:
    """Unpickling it calls :func:`_trip` (appends to :data:`TRIPPED`): code a training checkpoint could pickle."""

    def __reduce__(self) -> tuple:
        return _trip, ()
