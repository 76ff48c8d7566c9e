from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mora_agents.media import write_video
from mora_agents.runs.transcript import read_transcript
from mora_agents.settings import use_settings

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started as a background job: the tests' Ctrl-C must reach
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the processes they start, which would inherit SIG_IGN


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: one intra-op thread is fastest, and spares shared CPUs from oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(tmp_path: Path):
    """Tools on the tiny preset, CPU, writing into tmp_path."""
    with use_settings(preset="tiny", device="cpu", out_dir=tmp_path / "out") as s:
        yield s


def make_video(path: Path, frames: int = 14, size: tuple[int, int] = (64, 48), fps: float = 7.0, seed: int = 0) -> Path:
    """A small video of a drifting colour gradient: every frame differs, smoothly (codec-friendly)."""
    w, h = size
    offset = np.random.default_rng(seed).integers(0, 255, 3)
    ramp = np.linspace(0, 127, w)[None, :, None] + np.linspace(0, 127, h)[:, None, None]
    clip = [((ramp + offset + 9 * i) % 256).astype(np.uint8) for i in range(frames)]
    write_video(np.stack(clip), fps, path)
    return path


def make_image(path: Path, size: tuple[int, int] = (80, 60), color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One `mora serve --preset tiny` for the API and browser tests (small upload limits: 50 KB images, 1 MB videos)."""
    from serve_server import Server

    server = Server(tmp_path_factory.mktemp("serve"), "--max-image-mb", "0.05", "--max-video-mb", "1").start()
    yield server
    server.stop()


def signal_when_asked(command: list[str], out: Path, signum: int, step: str, iteration: int) -> tuple[Path, int]:
    """Start a command that makes one run in `out` (`mora run ...`), send it `signum` once the run asks for `step`'s
    iteration `iteration`; the run directory and the exit code."""
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            transcripts = list(out.glob("*/transcript.jsonl"))
            if transcripts and any(r.type.endswith("[StepRequest]") and r.message["content"]["step"] == step
                                   and r.message["content"]["iteration"] == iteration
                                   for r in read_transcript(transcripts[0])):
                process.send_signal(signum)
                return transcripts[0].parent, process.wait(timeout=120)
            if process.poll() is not None:
                raise AssertionError(f"the run ended (exit {process.returncode}) before {step} #{iteration}")
            time.sleep(0.05)
        raise AssertionError(f"the run did not reach {step} #{iteration} in time")
    finally:
        if process.poll() is None:
            process.kill()
