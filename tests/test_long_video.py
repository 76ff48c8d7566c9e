"""Long videos with models built for length: SkyReels-V2 diffusion forcing (image-to-video and extension of a video
from its end) and FramePack run on their tiny pipelines, make whole windows and sections, give the same frames for the
same seed, and follow their rules before anything runs; the `long_video` SOP runs from a text and from a video, with
its drift over time in run.json; the planner picks it for long requests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_video

from mora_agents.errors import InputError, ModelNotAvailable
from mora_agents.eval.drift import clip_drift
from mora_agents.llm.offline import route
from mora_agents.media import read_video
from mora_agents.pipelines.sources import check_available
from mora_agents.runs.runner import RunOptions, check_overrides, run_request
from mora_agents.settings import use_settings
from mora_agents.tools import extend_video, image_to_video, text_to_image
from mora_agents.tools.long_video import framepack_sections, skyreels_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> str:
    with use_settings(preset="tiny", device="cpu", out_dir=tmp_path_factory.mktemp("start")):
        return text_to_image("a red fox in the snow", seed=1).path


def test_window_arithmetic_matches_the_authors_lengths() -> None:
    # SkyReels-V2's own long examples: 257 frames (10 s) and 737 frames (30 s), windows of 97 overlapping by 17
    assert skyreels_frames(10, 24, 97, 17, 1) == 257 and skyreels_frames(30, 24, 97, 17, 1) == 737
    assert skyreels_frames(4, 24, 97, 17, 1) == 97  # one window: the short mode
    assert skyreels_frames(60, 24, 97, 17, 17) - 17 == 1440  # an extension: its history, then 60 s of new frames
    assert framepack_sections(60, 30) == 50 and framepack_sections(0.5, 30) == 1  # 36 frames a section


def test_skyreels_makes_whole_windows_the_same_way_every_time(tiny, start: str) -> None:
    one = image_to_video(start, prompt="the fox runs", backend="skyreels-v2-df", seconds=20, seed=3)
    async_ = image_to_video(start, prompt="the fox runs", backend="skyreels-v2-df", seconds=20, ar_step=2, seed=3)
    again = image_to_video(start, prompt="the fox runs", backend="skyreels-v2-df", seconds=20, seed=3)
    assert (one.frames, one.fps, one.width, one.height) == (41, 2.0, 64, 64)  # tiny: 17 + 2 windows of 12 at 2 fps
    assert one.sha256 == again.sha256  # after an asynchronous call too: the pipeline's block size is reset
    assert async_.sha256 != one.sha256


def test_framepack_makes_whole_sections(tiny, start: str) -> None:
    clip = image_to_video(start, prompt="the fox runs", backend="framepack", seconds=9, seed=4)
    again = image_to_video(start, prompt="the fox runs", backend="framepack", seconds=9, seed=4)
    assert (clip.frames, clip.fps) == (2 * 36 + 1, 8.0) and clip.sha256 == again.sha256


def test_extend_video_continues_from_the_end_of_the_whole_clip(tiny, tmp_path: Path) -> None:
    video = make_video(tmp_path / "in.mp4", frames=14, size=(64, 48), fps=7.0)
    more = extend_video(str(video), prompt="it goes on", seconds=12, seed=5)
    short = extend_video(str(make_video(tmp_path / "short.mp4", frames=3, fps=7.0)), seconds=4, seed=5)
    assert (more.frames, more.fps, more.width, more.height) == (25, 2.0, 64, 64)  # 24 new frames after the seam frame
    assert short.frames == 9  # a clip shorter than the history is padded with its first frame
    frames, _ = read_video(more.path)
    assert frames.shape == (25, 64, 64, 3) and more.noise


@pytest.mark.parametrize(("overrides", "message"), [
    ({"image_to_video": {"backend": "skyreels-v2-df", "frames": 97}},
     "frames: backend skyreels-v2-df does not take it (only svd-xt, wan2.2-ti2v-5b, ltx-video, open-sora-plan)"),
    ({"image_to_video": {"backend": "skyreels-v2-df", "overlap_history": 16}},
     "--set image_to_video: overlap_history 16: backend skyreels-v2-df makes 4k+1 frames (e.g. 13 or 17)"),
    ({"extend_video": {"overlap_history": 97, "base_frames": 97}},
     "overlap_history 97: backend skyreels-v2-df needs it below base_frames (97)"),
    ({"image_to_video": {"backend": "framepack", "ar_step": 5}}, "ar_step: backend framepack does not take it"),
    ({"image_to_video": {"seconds": 10}}, "seconds: backend svd-xt does not take it (only skyreels-v2-df, framepack)"),
    ({"image_to_video": {"backend": "framepack", "seconds": 121}}, "less than or equal to 120"),
    ({"extend_video": {"addnoise_condition": 70}}, "less than or equal to 60"),
])
def test_the_long_backends_rules_are_checked_before_a_run(overrides: dict, message: str) -> None:
    with pytest.raises(InputError) as error:
        check_overrides(overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_weights_fail_fast_naming_each_part(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelNotAvailable, match="\n  hf download Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers   # model 'skyreels_df'"):
        check_available(["skyreels_df"])
    for key, repo in [("framepack", "lllyasviel/FramePackI2V_HY"), ("hunyuan_video", "hunyuanvideo-community/HunyuanVideo"),
                      ("flux_redux", "lllyasviel/flux_redux_bfl")]:
        with pytest.raises(ModelNotAvailable, match=f"\n  hf download {repo}   # model '{key}'"):
            check_available([key])
    folder = tmp_path / "redux"
    folder.mkdir()
    monkeypatch.setenv("MORA_MODEL_FLUX_REDUX", str(folder))
    with pytest.raises(ModelNotAvailable, match="has no image_encoder/config.json"):
        check_available(["flux_redux"])


def test_long_requests_go_to_long_video() -> None:
    tasks = ["text_to_video", "extend_video", "long_video", "edit_video", "connect_videos", "digital_world"]
    assert route({"text": "a long video of a fox in the snow"}, tasks)["task"] == "long_video"
    two = route({"text": "a 2 minute video of waves"}, tasks)
    assert (two["task"], two["duration"]) == ("long_video", 120.0)
    assert route({"text": "a long video of a fox, 12 seconds"}, tasks)["task"] == "text_to_video"  # too short for it
    assert route({"text": "extend it by a minute", "videos": ["a.mp4"]}, tasks)["task"] == "extend_video"
    assert route({"text": "a fox, 60 seconds"}, tasks)["task"] == "text_to_video"  # the paper's chain by default


def _info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_long_video_runs_from_a_text_and_from_a_video_with_its_drift(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=7)
    text = asyncio.run(run_request("a long video of a fox", duration=30, options=options))
    info = _info(text.run_dir)
    assert (info["status"], info["task"]) == ("finished", "long_video")  # the planner's pick: "a long video"
    assert info["backends"] == {"text_to_image": ["sdxl"], "image_to_video": ["skyreels-v2-df"]}
    rows = info["drift"]["clip"]
    # 30 s asked, made in whole windows (tiny: 17 + 4 x 12 frames at 2 fps, 32.5 s), measured every 4 s
    assert [r["start"] for r in rows] == [4.0 * i for i in range(len(rows))] and len(rows) == 9
    assert rows[0]["to_previous"] is None and rows[0]["to_first"] == {"color": 0.0, "sharpness": 1.0}
    assert rows == clip_drift(text.run_dir / "artifacts" / "clip.mp4")
    video = make_video(tmp_path / "clip.mp4", frames=14, size=(64, 48), fps=7.0)
    more = asyncio.run(run_request("continue it", videos=[video], task="long_video", duration=30, options=options))
    info = _info(more.run_dir)
    assert info["backends"] == {"extend_video": ["skyreels-v2-df"]} and list(info["drift"]) == ["extend"]
    frames, fps = read_video(more.run_dir / "result.mp4")
    assert fps == 7.0 and frames.shape[1:3] == (48, 64)  # at the input's size and frame rate
    assert abs(len(frames) / fps - (14 / 7.0 + 30)) < 0.5  # the input, then 30 s more
    original, _ = read_video(video)
    assert np.abs(frames[:14].astype(int) - original.astype(int)).mean() < 3  # the input comes first, as it was
