"""Reference code paths with tiny random networks in VBench's cache layout."""

import hashlib
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mora_agents.eval.formulas import cosine
from mora_agents.eval.metrics import (
    aesthetic_quality,
    appearance_style,
    background_consistency,
    dynamic_degree,
    subject_consistency,
)
from mora_agents.eval.nets import preprocess
from mora_agents.eval.nets.clip import CLIP, causal_mask, load_clip_state
from mora_agents.eval.nets.dino import DinoViT
from mora_agents.eval.nets.raft import RAFT, pad_to_multiple_of_8
from mora_agents.eval.nets.tokenizer import ClipTokenizer
from mora_agents.eval.video import Video

from . import tiny_weights
from .helpers import cut, scenes, static


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (576, 1024, (224, 398)),
        (1024, 576, (398, 224)),
        (100, 100, (224, 224)),
        (480, 854, (224, 398)),
        (64, 96, (224, 336)),
    ],
)
def test_short_side_resize_size(height, width, expected):
    assert preprocess.short_side_size(height, width, 224) == expected


def test_clip_and_dino_preprocessing_values():
    frame = np.full((1, 64, 96, 3), (255, 128, 0), np.uint8)
    clip = preprocess.clip_input(frame)
    dino = preprocess.dino_input(frame)
    assert clip.shape == (1, 3, 224, 224) and dino.shape == (1, 3, 224, 336)
    rgb = np.array([255, 128, 0]) / 255
    expected_clip = (rgb - preprocess.CLIP_MEAN) / preprocess.CLIP_STD
    expected_dino = (rgb - preprocess.IMAGENET_MEAN) / preprocess.IMAGENET_STD
    assert clip[0, :, 100, 100].numpy() == pytest.approx(expected_clip, abs=1e-4)
    assert dino[0, :, 100, 200].numpy() == pytest.approx(expected_dino, abs=1e-4)
    assert preprocess.clip_input_pil(frame)[0, :, 100, 100].numpy() == pytest.approx(expected_clip, abs=1e-2)


def test_subject_consistency_reference_with_tiny_dino(tmp_path, context):
    path = tiny_weights.write_dino(tmp_path)
    result = subject_consistency.compute(context(static(width=96), weights=tmp_path))
    assert result.backend == "reference"
    assert result.value == pytest.approx(1.0, abs=1e-6)
    assert result.checkpoint == str(path)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.details["input_size"] == [224, 336]  # short side 224, aspect kept, no crop

    model = DinoViT.from_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        fa, fb = model(preprocess.dino_input(np.stack(scenes(width=96)))).numpy()
    cut_result = subject_consistency.compute(context(cut(width=96), weights=tmp_path))
    assert cut_result.value == pytest.approx(0.7 + 0.3 * max(0.0, cosine(fa, fb)), abs=1e-5)
    assert cut_result.value < 0.99


def test_dino_positional_grid_follows_input_shape(tmp_path):
    model = DinoViT.from_state_dict(torch.load(tiny_weights.write_dino(tmp_path), weights_only=True))
    assert model._pos_embed(14, 21).shape == (1, 1 + 14 * 21, 64)
    assert model._pos_embed(14, 14) is model.pos_embed
    assert model(torch.zeros(2, 3, 224, 336)).shape == (2, 64)


def test_background_consistency_reference_with_tiny_clip(tmp_path, context):
    tiny_weights.write_clip(tmp_path)
    result = background_consistency.compute(context(static(), weights=tmp_path))
    assert result.backend == "reference" and result.value == pytest.approx(1.0, abs=1e-6)
    assert result.details["input_size"] == [224, 224]
    cut_result = background_consistency.compute(context(cut(), weights=tmp_path))
    assert cut_result.backend == "reference" and cut_result.value < 0.999


def test_text_mask_follows_the_tokens_device_and_dtype():
    # On the meta device, a mask built on the CPU fails with "Tensor on device cpu is not on the expected device".
    model = CLIP(tiny_weights.clip_state(512)).to("meta", torch.float16)
    assert model.encode_text(torch.zeros(2, 77, dtype=torch.long, device="meta")).shape == (2, 512)
    mask = causal_mask(torch.zeros(1, 3, 8, dtype=torch.float16))
    assert mask.dtype == torch.float16 and mask.tolist() == [[0, -math.inf, -math.inf], [0, 0, -math.inf], [0, 0, 0]]


def test_clip_loads_torchscript_archive(tmp_path):
    path = tiny_weights.write_clip(tmp_path, "clip_vit_l14", jit=True)
    state = load_clip_state(path)
    model = CLIP(state)
    assert model.visual.input_resolution == 224 and model.text_projection.shape == (64, 768)


def test_appearance_style_uses_logit_scale_over_100(tmp_path, context):
    tiny_weights.write_bpe(tmp_path)
    video = cut(n=4)
    values = {}
    for scale in (100.0, 50.0):
        tiny_weights.write_clip(tmp_path, logit_scale=math.log(scale))
        result = appearance_style.compute(context(video, weights=tmp_path, prompt="hello"))
        assert result.backend == "reference" and result.frames_used == [0, 1, 2, 3]
        values[scale] = result.value
    model = CLIP(tiny_weights.clip_state(512))
    tokens = ClipTokenizer(tmp_path / "ViCLIP/bpe_simple_vocab_16e6.txt.gz").tokenize(["hello"])
    with torch.no_grad():
        cosines = model.image_text_cosine(preprocess.clip_input_pil(video.frames), tokens)
    assert values[100.0] == pytest.approx(float(cosines.mean()), abs=1e-5)
    assert values[50.0] == pytest.approx(values[100.0] / 2, abs=1e-6)
    assert appearance_style.compute(context(video, weights=tmp_path)).reason.startswith("needs a prompt")


def test_aesthetic_quality_laion_head(tmp_path, context):
    tiny_weights.write_clip(tmp_path, "clip_vit_l14")
    head = tiny_weights.write_laion(tmp_path, torch.zeros(768), bias=5.0)
    result = aesthetic_quality.compute(context(cut(n=4), weights=tmp_path))
    assert result.value == pytest.approx(0.5)  # (0 . f + 5) / 10
    assert result.checkpoint == str(head) and result.details["clip_checkpoint"].endswith("clip_model/ViT-L-14.pt")

    tiny_weights.write_laion(tmp_path, torch.ones(768), bias=0.0)
    model = CLIP(tiny_weights.clip_state(768))
    with torch.no_grad():
        features = torch.nn.functional.normalize(model.encode_image(preprocess.clip_input(cut(n=4).frames)), dim=-1)
    fresh = aesthetic_quality.compute(context(cut(n=4), weights=tmp_path))
    assert fresh.value == pytest.approx(float(features.sum(-1).mean() / 10), abs=1e-5)


def test_aesthetic_quality_without_weights_is_unavailable(context):
    result = aesthetic_quality.compute(context(static(n=2)))
    assert result.value is None and "clip_model/ViT-L-14.pt" in result.reason


def test_raft_checkpoint_loads_and_predicts_full_resolution(tmp_path):
    state = torch.load(tiny_weights.write_raft(tmp_path), weights_only=True)
    assert all(k.startswith("module.") for k in state)
    model = RAFT.from_state_dict(state)
    images = pad_to_multiple_of_8(torch.rand(1, 3, 125, 130) * 255, torch.rand(1, 3, 125, 130) * 255)
    assert images[0].shape == (1, 3, 128, 136)
    with torch.no_grad():
        flow = model(*images, iters=2)
    assert flow.shape == (1, 2, 128, 136) and torch.isfinite(flow).all()


def test_dynamic_degree_small_frames_fall_back_from_raft(tmp_path, context):
    tiny_weights.write_raft(tmp_path)
    result = dynamic_degree.compute(context(static(), weights=tmp_path))
    assert result.backend == "fallback:opencv-dis" and "128 px" in result.details["reference_unavailable"]


@pytest.mark.parametrize(("moving_pairs", "dynamic"), [(3, 0.0), (4, 1.0)])
def test_dynamic_degree_reference_sampling_padding_and_rule(tmp_path, context, monkeypatch, moving_pairs, dynamic):
    tiny_weights.write_raft(tmp_path)
    calls = []

    def fake_forward(self, image1, image2, iters=20):
        calls.append((image1.shape, float(image1[0, 0, 0, 0]), float(image2[0, 0, 0, 0]), iters))
        magnitude = 4.0 if len(calls) <= moving_pairs else 3.0  # threshold for 130x200 is 3.046875
        flow = torch.zeros(1, 2, *image1.shape[-2:])
        flow[:, 0] = magnitude
        return flow

    monkeypatch.setattr(RAFT, "forward", fake_forward)
    # 49 frames at 24 fps: every 3rd frame -> 17 frames, 16 pairs, round(4 * 17 / 16) = 4 required.
    frames = np.stack([np.full((130, 200, 3), i, np.uint8) for i in range(49)])
    result = dynamic_degree.compute(context(Video(frames, 24.0), weights=tmp_path))
    sampled = list(range(0, 49, 3))
    assert result.backend == "reference" and result.frames_used == sampled
    assert [(c[1], c[2]) for c in calls] == list(zip(map(float, sampled), map(float, sampled[1:])))
    assert {c[0] for c in calls} == {(1, 3, 136, 200)} and {c[3] for c in calls} == {20}
    assert result.details["threshold"] == pytest.approx(3.046875) and result.details["required_pairs"] == 4
    assert result.details["pair_scores"] == [4.0] * moving_pairs + [3.0] * (16 - moving_pairs)
    assert result.value == dynamic
