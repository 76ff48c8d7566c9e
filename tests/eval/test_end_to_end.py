"""``mora eval`` end to end with every reference checkpoint (tiny random weights in VBench's layout)."""

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

pytest.importorskip("torch")

from mora_agents.eval.metrics import METRICS
from mora_agents.eval.metrics.summary import QUALITY_DIMENSIONS
from mora_agents.eval.nets.viclip import sample_indices
from mora_agents.eval.result import MetricResult
from mora_agents.eval.video import Video
from mora_agents.eval.weights import ENV_VAR

from .helpers import invoke, make_run, pan, write_mp4
from .tiny_weights import write_all

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The checkpoint each network metric records as its own (video_length and video_quality use none).
CHECKPOINT_OF = {
    "subject_consistency": "dino_vitb16",
    "background_consistency": "clip_vit_b32",
    "motion_smoothness": "amt_s",
    "dynamic_degree": "raft_things",
    "aesthetic_quality": "laion_aesthetic",
    "imaging_quality": "musiq_spaq",
    "temporal_style": "viclip",
    "appearance_style": "clip_vit_b32",
    "video_ti": "clip_vit_b32",
    "tcon": "viclip",
    "tmean": "viclip",
}
TOKENIZED = {"temporal_style", "appearance_style", "video_ti"}
# Metrics that do not apply to each evaluated video (in order: plain MP4, small MP4, connect run, edit run).
NOT_APPLICABLE = [{"video_ti", "tcon", "tmean"}, {"video_ti", "tcon", "tmean"}, {"video_ti"}, {"tmean"}]
# Under 128 px per side AMT-S and RAFT fall back by design.
SMALL_FALLBACKS = {"motion_smoothness": "fallback:flow-jerk", "dynamic_degree": "fallback:opencv-dis"}


def clip(n: int = 5, size: int = 128, seed: int = 0) -> Video:
    """A short 8-fps pan, large enough for AMT-S and RAFT by default."""
    return pan(n=n, fps=8.0, step=4, height=size, width=size, seed=seed)


class Evaluated(NamedTuple):
    payloads: list[dict]  # the two JSON outputs
    videos: list[dict]  # their videos, in NOT_APPLICABLE's order
    weights: dict[str, Path]
    sources: list[Path]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """Two ``mora eval`` runs: two MP4s with ``--prompt`` and ``--weights``, then two run directories with the
    weights found through ``$VBENCH_CACHE_DIR``."""
    tmp = tmp_path_factory.mktemp("e2e")
    weights = write_all(tmp / "vbench")
    plain = [write_mp4(tmp / "clip.mp4", clip()), write_mp4(tmp / "small.mp4", clip(size=64))]
    connect = make_run(
        tmp,
        "connect",
        "connect_videos",
        {"video_a": clip(seed=1), "video_b": clip(seed=2), "prompt": "a bridge"},
        result=clip(n=6),
    )
    captions = {"input_caption": "a hill", "output_caption": "a snowy hill"}
    edit = make_run(
        tmp, "edit", "edit_video", {"video": clip(seed=3), "prompt": "make it snowy", **captions}, result=clip(n=7)
    )
    result = invoke(*plain, "--prompt", "a red fox", "--json-out", tmp / "plain.json", "--weights", tmp / "vbench")
    assert result.exit_code == 0, result.output
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ENV_VAR, str(tmp / "vbench"))
        result = invoke(connect, edit, "--json-out", tmp / "runs.json")
    assert result.exit_code == 0, result.output
    payloads = [json.loads((tmp / name).read_text()) for name in ("plain.json", "runs.json")]
    return Evaluated(payloads, [v for p in payloads for v in p["videos"]], weights, [*plain, connect, edit])


def test_json_has_every_field_for_every_target(evaluated):
    videos, sources = evaluated.videos, evaluated.sources
    assert [p["schema_version"] for p in evaluated.payloads] == [1, 1]
    assert [(v["source"], v["video"], v["prompt"], v["task"]) for v in videos] == [
        (str(sources[0]), str(sources[0]), "a red fox", None),
        (str(sources[1]), str(sources[1]), "a red fox", None),
        (str(sources[2]), str(sources[2] / "result.mp4"), "a bridge", "connect_videos"),
        (str(sources[3]), str(sources[3] / "result.mp4"), "make it snowy", "edit_video"),
    ]
    for video, skipped in zip(videos, NOT_APPLICABLE):
        assert list(video["metrics"]) == list(METRICS)
        assert all(list(m) == list(MetricResult.__dataclass_fields__) for m in video["metrics"].values())
        assert {name for name, m in video["metrics"].items() if m["value"] is None} == skipped
        assert all(video["metrics"][name]["backend"] is None and video["metrics"][name]["reason"] for name in skipped)


def test_applicable_metrics_record_their_reference_checkpoints(evaluated):
    videos, weights = evaluated.videos, evaluated.weights
    digests = {key: hashlib.sha256(path.read_bytes()).hexdigest() for key, path in weights.items()}
    for i, (video, skipped) in enumerate(zip(videos, NOT_APPLICABLE)):
        metrics = video["metrics"]
        fell_back = SMALL_FALLBACKS if i == 1 else {}
        for name in CHECKPOINT_OF.keys() - skipped - fell_back.keys():
            result, key = metrics[name], CHECKPOINT_OF[name]
            assert result["backend"] == "reference", (i, name, result)
            assert (result["checkpoint"], result["sha256"]) == (str(weights[key]), digests[key]), (i, name)
            assert result["fps"] == 8.0 and (result["frames_used"] or name == "video_ti")  # VideoTI reads text
        for name in TOKENIZED - skipped:
            details = metrics[name]["details"]
            assert details["tokenizer"] == str(weights["clip_bpe"])
            assert details["tokenizer_sha256"] == digests["clip_bpe"]
        aesthetic = metrics["aesthetic_quality"]["details"]
        assert aesthetic["clip_checkpoint"] == str(weights["clip_vit_l14"])
        assert aesthetic["clip_sha256"] == digests["clip_vit_l14"]
        assert metrics["video_length"]["backend"] == "reference" and metrics["video_length"]["checkpoint"] is None
        for name, backend in fell_back.items():
            assert metrics[name]["backend"] == backend and "128 px" in metrics[name]["details"]["reference_unavailable"]


def test_video_quality_is_reference_exactly_when_all_six_dimensions_are(evaluated):
    backends = []
    for video in evaluated.videos:
        quality, dimensions = video["metrics"]["video_quality"], [video["metrics"][d] for d in QUALITY_DIMENSIONS]
        assert quality["value"] == pytest.approx(np.mean([d["value"] for d in dimensions]))
        all_reference = all(d["backend"] == "reference" for d in dimensions)
        assert quality["backend"] == ("reference" if all_reference else "fallback:proxy-mean")
        assert quality["details"]["missing"] == [] and quality["checkpoint"] is None
        backends.append(quality["backend"])
    assert backends == ["reference", "fallback:proxy-mean", "reference", "reference"]


def test_run_inputs_feed_tcon_and_tmean(evaluated):
    connect, edit = evaluated.videos[2]["metrics"], evaluated.videos[3]["metrics"]
    # TCON compares the output with the first input (video_a); Tmean averages both inputs' TCON.
    assert connect["tcon"]["value"] == pytest.approx(connect["tmean"]["details"]["tcon_front"])
    tmean = connect["tmean"]
    assert tmean["value"] == pytest.approx((tmean["details"]["tcon_front"] + tmean["details"]["tcon_behind"]) / 2)
    assert tmean["details"]["input_frames_used"] == [sample_indices(5)] * 2
    assert connect["tcon"]["frames_used"] == sample_indices(6) and edit["tcon"]["frames_used"] == sample_indices(7)
    assert edit["tcon"]["details"]["input_frames_used"] == sample_indices(5)
