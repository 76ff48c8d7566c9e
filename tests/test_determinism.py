"""A model call is a function of its inputs and seed: every backend of every model tool gives bit-identical frames
for the same call twice in one process and after any other calls, and leaves the process's random state as it
found it (resumed runs, batch workers and `mora serve` rely on it; tests/test_resume.py checks resumed SOP runs)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, make_video
from PIL import Image

from mora_agents.media import Artifact, read_video
from mora_agents.models import tiny_backends
from mora_agents.pipelines.loading import build_pipeline, load_pipeline
from mora_agents.pipelines.sources import COMPONENT_FOLDERS, MODEL_IDS
from mora_agents.settings import use_settings
from mora_agents.tools import connect_images, connect_videos, edit_image, image_to_video, keyframe, text_to_image
from mora_agents.tools.backends import BACKENDS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def frames(artifact: Artifact) -> np.ndarray:
    return np.asarray(Image.open(artifact.path)) if artifact.kind == "image" else read_video(artifact.path)[0]


def calls(folder: Path) -> dict[str, Callable[[], Artifact]]:
    """One call of every backend of every model tool (text_to_image also from an image), by name."""
    start, end = make_image(folder / "start.png", (64, 64)), make_image(folder / "end.png", (64, 64), (20, 90, 200))
    a, b = make_video(folder / "a.mp4", seed=1), make_video(folder / "b.mp4", seed=2)
    made = {}
    for backend in BACKENDS["text_to_image"]:
        made[f"text_to_image {backend}"] = functools.partial(text_to_image, "a red fox", backend=backend, seed=5)
        made[f"text_to_image {backend} img2img"] = functools.partial(
            text_to_image, "a red fox", image=str(start), strength=0.5, backend=backend, seed=5)
    for backend in BACKENDS["edit_image"]:
        made[f"edit_image {backend}"] = functools.partial(edit_image, str(start), "make it winter", backend=backend,
                                                          seed=5)
    for backend in BACKENDS["image_to_video"]:
        made[f"image_to_video {backend}"] = functools.partial(
            image_to_video, str(start), prompt="the fox runs", backend=backend, seed=5,
            **({"frames": 4, "decode_chunk_size": 4} if backend == "svd-xt" else {}))
    for backend in BACKENDS["connect_videos"]:
        made[f"connect_videos {backend}"] = functools.partial(connect_videos, str(a), str(b), backend=backend, seed=5)
        made[f"connect_images {backend}"] = functools.partial(connect_images, str(start), str(end), backend=backend,
                                                              seed=5)
    for backend in BACKENDS["keyframe"]:
        made[f"keyframe {backend}"] = functools.partial(keyframe, "the fox by the lake", [str(start), str(end)],
                                                        backend=backend, seed=5)
    assert {name.split()[1] for name in made} == {b for tool in BACKENDS.values() for b in tool}
    return made


def draw_elsewhere() -> None:
    """What other code in the process may do between two calls: seed and draw from every global generator."""
    torch.manual_seed(1234)
    torch.rand(1000)
    np.random.seed(1234)
    random.seed(1234)


def test_every_backend_gives_the_same_frames_for_the_same_seed_whatever_ran_before(tiny, tmp_path: Path) -> None:
    made = calls(tmp_path)
    first = {name: frames(call()) for name, call in made.items()}
    draw_elsewhere()
    for name, call in reversed(made.items()):  # each after other calls than the first time
        state = torch.get_rng_state()
        again = frames(call())
        assert np.array_equal(again, first[name]), f"{name}: other frames for the same seed"
        assert torch.equal(torch.get_rng_state(), state), f"{name}: changed the global random state"
    assert not np.array_equal(frames(made["text_to_image sdxl"].func("a red fox", seed=6)),
                              first["text_to_image sdxl"])  # the seed does decide


def test_pipelines_are_built_in_inference_mode_and_leave_the_random_state_alone(tiny) -> None:
    """Models built from a config start in training mode, where dropout (T5, UMT5) draws from the global random
    state; the tiny builders seed their weights without changing it."""
    for key in [key for key in MODEL_IDS if key not in COMPONENT_FOLDERS]:
        state = torch.get_rng_state()
        built = build_pipeline(key, torch.device("cpu"), torch.float32)
        assert torch.equal(torch.get_rng_state(), state), key
        for pipe in (built, load_pipeline(key)):
            training = [f"{name}.{sub}" for name, model in pipe.components.items() if isinstance(model, torch.nn.Module)
                        for sub, module in model.named_modules() if module.training]
            assert not training, f"{key}: in training mode: {training[:3]}"
    a, b = tiny_backends.wan_ti2v(), tiny_backends.wan_ti2v()
    assert all(torch.equal(x, y) for x, y in zip(a.transformer.parameters(), b.transformer.parameters()))


def test_library_code_drawing_from_the_global_random_state_is_seeded_by_the_call(tiny, tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """LTX-Video 0.9.1's decoder injects noise that it draws without a generator: each call seeds it from its own
    seed, so it is the same on every call, whatever was drawn before."""
    monkeypatch.setattr(tiny_backends, "ltx_video", functools.partial(tiny_backends.ltx_video, decoder_noise=True))
    start = make_image(tmp_path / "start.png", (64, 64))
    with use_settings(models={"ltx_video": "ltx-video-0.9.1"}):  # its own cache entry
        assert load_pipeline("ltx_video").vae.config.timestep_conditioning
        clips = []
        for draws in (1, 2):
            torch.manual_seed(draws)
            torch.rand(draws)
            clips.append(frames(image_to_video(str(start), prompt="the fox runs", backend="ltx-video", seed=5)))
    assert np.array_equal(*clips)
