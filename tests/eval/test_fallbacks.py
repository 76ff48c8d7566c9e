"""Weight-free backends on synthetic videos with known answers."""

import numpy as np
import pytest

from mora_agents.eval.features import color_histograms, ssim
from mora_agents.eval.formulas import cosine
from mora_agents.eval.metrics import (
    background_consistency,
    dynamic_degree,
    imaging_quality,
    motion_smoothness,
    subject_consistency,
)
from mora_agents.eval.video import Video

from .helpers import cut, jitter, pan, scenes, static, texture


def test_static_video(context):
    ctx = context(static())
    assert subject_consistency.compute(ctx).value == pytest.approx(1.0)
    assert background_consistency.compute(ctx).value == pytest.approx(1.0)
    smooth = motion_smoothness.compute(ctx)
    assert smooth.value == 1.0
    dynamic = dynamic_degree.compute(ctx)
    assert dynamic.value == 0.0
    assert dynamic.details["pair_scores"] == [0.0] * 7


def test_fallbacks_are_labelled_and_say_why(context):
    results = [
        m.compute(context(static()))
        for m in (subject_consistency, background_consistency, motion_smoothness, dynamic_degree, imaging_quality)
    ]
    assert [r.backend for r in results] == [
        "fallback:ssim",
        "fallback:color-histogram",
        "fallback:flow-jerk",
        "fallback:opencv-dis",
        "fallback:brisque",
    ]
    assert "dino_model/dino_vitbase16_pretrain.pth" in results[0].details["reference_unavailable"]
    assert "AMT-S" in results[2].details["reference_unavailable"]
    assert all(r.checkpoint is None and r.sha256 is None and r.fps == 16.0 for r in results)


def test_panning_video_is_dynamic_and_smooth(context):
    ctx = context(pan(step=2, fps=16.0))
    dynamic = dynamic_degree.compute(ctx)
    assert dynamic.value == 1.0
    assert dynamic.frames_used == list(range(0, 16, 2))
    # sampled pairs are two frames apart: 2 px/frame -> 4 px per pair
    assert np.median(dynamic.details["pair_scores"]) == pytest.approx(4.0, abs=0.5)
    assert dynamic.details["threshold"] == 1.5 and dynamic.details["required_pairs"] == 2
    assert motion_smoothness.compute(ctx).value > 0.95
    assert background_consistency.compute(ctx).value > 0.99  # same colours, only moved


def test_slow_pan_below_threshold_is_not_dynamic(context):
    # 0.5 px/frame at 8 fps on 64x64: ~0.5 px per pair < 1.5 threshold
    frames = texture(seed=3)
    shifted = [np.roll(frames, i // 2, axis=1) for i in range(16)]
    result = dynamic_degree.compute(context(Video(np.stack(shifted), 8.0)))
    assert result.value == 0.0 and result.frames_used == list(range(16))
    assert result.details["required_pairs"] == 4


def test_jitter_is_less_smooth_than_pan(context):
    jittery = motion_smoothness.compute(context(jitter(amplitude=3))).value
    steady = motion_smoothness.compute(context(pan(step=3))).value
    assert jittery < 0.5
    assert steady > 0.95


def test_scene_cut_lowers_consistency(context):
    # 16 frames cut at 8: frames 1-7 score 1, frame 8 scores s, frames 9-15 (1 + s) / 2,
    # where s is the similarity of the two scenes: mean = (7 + s + 7 (1 + s) / 2) / 15 = 0.7 + 0.3 s.
    a, b = scenes()
    hists = color_histograms(np.stack([a, b]))
    for metric, s in ((subject_consistency, ssim(a, b)), (background_consistency, cosine(*hists))):
        value = metric.compute(context(cut())).value
        assert value == pytest.approx(0.7 + 0.3 * max(0.0, s))
        assert value < 0.85


def test_imaging_quality_penalises_noise(context):
    rng = np.random.default_rng(0)
    noise = Video(rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8), 8.0)
    clean = imaging_quality.compute(context(static(n=4)))
    noisy = imaging_quality.compute(context(noise))
    assert 0.0 <= noisy.value < clean.value <= 1.0
    assert clean.details["mean_brisque"] == pytest.approx(100 * (1 - clean.value), abs=1e-9)


@pytest.mark.parametrize(
    ("shape", "expected"), [((576, 1024), (288, 512)), ((300, 200), (300, 200)), ((1000, 700), (512, 358))]
)
def test_imaging_quality_long_side_limit(shape, expected):
    frame = np.zeros((*shape, 3), np.uint8)
    assert imaging_quality.limit_long_side(frame).shape[:2] == expected


def test_too_short_videos_raise(context):
    two = Video(np.stack([texture()] * 2), 8.0)
    with pytest.raises(ValueError, match="three frames"):
        motion_smoothness.compute(context(two))
