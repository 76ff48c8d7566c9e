"""ViCLIP: the checkpoint layout, VBench's inputs, and temporal style / TCON / Tmean with a tiny network."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mora_agents.eval.metrics import viclip as metrics
from mora_agents.eval.nets import preprocess
from mora_agents.eval.nets.tokenizer import ClipTokenizer
from mora_agents.eval.nets.viclip import (
    ViCLIP,
    ViCLIPConfig,
    load_viclip,
    read_state,
    sample_indices,
    video_input,
)
from mora_agents.eval.video import Video
from mora_agents.eval.weights import CHECKPOINTS

from .helpers import TRIPPED, Tripwire, cut, pan, static
from .tiny_weights import VICLIP, viclip_state, write_bpe, write_viclip


def _resblocks(prefix: str, width: int, layers: int) -> dict[str, tuple[int, ...]]:
    block = {
        "attn.in_proj_weight": (3 * width, width),
        "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width),
        "attn.out_proj.bias": (width,),
        "ln_1.weight": (width,),
        "ln_1.bias": (width,),
        "mlp.c_fc.weight": (4 * width, width),
        "mlp.c_fc.bias": (4 * width,),
        "mlp.c_proj.weight": (width, 4 * width),
        "mlp.c_proj.bias": (width,),
        "ln_2.weight": (width,),
        "ln_2.bias": (width,),
    }
    return {f"{prefix}.transformer.resblocks.{i}.{k}": s for i in range(layers) for k, s in block.items()}


def vbench_checkpoint_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the ``model`` dict of ``ViClip-InternVid-10M-FLT.pth``.

    Derived from VBench's ``vbench/third_party/ViCLIP``: ``ViCLIP.__init__`` builds ``vision_encoder =
    clip_joint_l14(input_resolution=224, kernel_size=1, num_frames=8)`` (a ``VisionTransformer`` with
    patch 14, width 1024, 24 layers, output_dim 768; Conv3d ``conv1`` without bias; class, spatial
    (16 * 16 + 1) and temporal (1, 8, width) embeddings; ``ln_pre``, ``ln_post``, ``proj``), ``text_encoder
    = clip_text_l14(embed_dim=768, context_length=max_txt_l=32, vocab_size=49408)`` (a ``CLIP_TEXT`` of
    width 768 and 12 layers), and a scalar ``temp``. Every residual block is ``nn.MultiheadAttention``,
    ``ln_1``, ``mlp`` (``c_fc``, QuickGELU, dropout, ``c_proj``) and ``ln_2``; dropout, DropPath and the
    attention mask hold no state. It then runs ``load_state_dict(torch.load(pretrain)["model"])`` with
    the default ``strict=True``, so the checkpoint holds exactly this module's keys, with no prefix.
    Cross-checked once, outside this suite, against ``state_dict()`` of VBench's own modules built from
    its source: the same 447 keys and shapes, 427,590,145 parameters.
    """
    vision, text = 1024, 768
    return {
        "temp": (),
        "vision_encoder.class_embedding": (vision,),
        "vision_encoder.positional_embedding": (16 * 16 + 1, vision),
        "vision_encoder.temporal_positional_embedding": (1, 8, vision),
        "vision_encoder.proj": (vision, 768),
        "vision_encoder.conv1.weight": (vision, 3, 1, 14, 14),
        "vision_encoder.ln_pre.weight": (vision,),
        "vision_encoder.ln_pre.bias": (vision,),
        **_resblocks("vision_encoder", vision, 24),
        "vision_encoder.ln_post.weight": (vision,),
        "vision_encoder.ln_post.bias": (vision,),
        **_resblocks("text_encoder", text, 12),
        "text_encoder.positional_embedding": (32, text),
        "text_encoder.token_embedding.weight": (49408, text),
        "text_encoder.ln_final.weight": (text,),
        "text_encoder.ln_final.bias": (text,),
        "text_encoder.text_projection": (text, 768),
    }


def test_full_size_viclip_has_the_checkpoint_keys_and_shapes():
    with torch.device("meta"):
        state = ViCLIP().state_dict()
    expected = vbench_checkpoint_shapes()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert len(expected) == 447 and sum(int(np.prod(s)) for s in expected.values()) == 427_590_145
    assert ViCLIPConfig.from_state(state) == ViCLIPConfig()
    with torch.device("meta"):
        model = ViCLIP()
        assert model.encode_vision(torch.zeros(2, 8, 3, 224, 224)).shape == (2, 768)
        assert model.encode_text(torch.zeros(2, 32, dtype=torch.long)).shape == (2, 768)


def test_tiny_checkpoint_loads_strictly_with_its_sizes(tmp_path):
    model = load_viclip(write_viclip(tmp_path))
    assert not model.training and ViCLIPConfig.from_state(model.state_dict()) == VICLIP
    assert model.context_length == 32
    for name, tensor in viclip_state().items():
        assert torch.equal(model.state_dict()[name], tensor)

    missing = viclip_state()
    del missing["vision_encoder.ln_post.bias"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*vision_encoder\.ln_post\.bias"):
        load_viclip(write_viclip(tmp_path, missing))
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*vision_encoder\.extra"):
        load_viclip(write_viclip(tmp_path, {**viclip_state(), "vision_encoder.extra": torch.zeros(1)}))


def test_tiny_features_equal_vbench_modules(tmp_path):
    """Golden values from VBench's own ``VisionTransformer`` and ``CLIP_TEXT`` (``third_party/ViCLIP``)
    loaded with :func:`viclip_state`, on the same inputs; computed once outside this suite."""
    model = load_viclip(write_viclip(tmp_path))
    tokens = torch.zeros(1, 32, dtype=torch.long)
    tokens[0, :4] = torch.tensor([516, 515, 515, 517])  # start, "hello", "hello", end in the tiny vocabulary
    with torch.no_grad():
        video = model.encode_vision(video_input(pan(n=8).frames)[None])[0, :6]
        text = model.encode_text(tokens)[0, :6]
    assert video.tolist() == pytest.approx([-0.33773, -1.94162, 0.40766, 1.4333, -1.62867, -0.75643], abs=1e-4)
    assert text.tolist() == pytest.approx([-0.51365, 0.80184, -0.92588, 1.13775, -1.18653, -0.05556], abs=1e-4)


def test_checkpoint_extras_load_without_running_pickled_code(tmp_path):
    TRIPPED.clear()
    state = read_state(write_viclip(tmp_path, config=Tripwire(), epoch=9))
    assert TRIPPED == [] and sorted(state) == sorted(viclip_state())
    assert torch.equal(state["vision_encoder.proj"], viclip_state()["vision_encoder.proj"])


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [
        (16, [0, 2, 4, 6, 8, 10, 12, 14]),
        (8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (20, [0, 3, 5, 8, 10, 13, 15, 18]),  # bounds int(linspace(0, 20, 9)) = 0 2 5 7 10 12 15 17 20
        (49, [2, 8, 14, 20, 26, 32, 38, 45]),  # bounds 0 6 12 18 24 30 36 42 49
        (100, [5, 18, 30, 43, 55, 68, 80, 93]),  # bounds 0 12 25 37 50 62 75 87 100
        (5, [0, 1, 2, 3, 4, 4, 4, 4]),  # fewer frames than 8: the last one repeats
        (1, [0] * 8),
    ],
)
def test_middle_frame_sampling(num_frames, expected):
    assert sample_indices(num_frames) == expected


@pytest.mark.parametrize(("height", "width"), [(64, 96), (96, 64), (576, 1024), (224, 224)])
def test_video_input_size_and_uint8_rounding(height, width):
    frames = np.random.default_rng(0).integers(0, 256, (8, height, width, 3), dtype=np.uint8)
    x = video_input(frames)
    assert x.shape == (8, 3, 224, 224)
    mean, std = torch.tensor(preprocess.CLIP_MEAN).view(3, 1, 1), torch.tensor(preprocess.CLIP_STD).view(3, 1, 1)
    pixels = (x * std + mean) * 255  # resized as uint8, as torchvision does for decord's uint8 frames
    assert torch.allclose(pixels, pixels.round(), atol=1e-3) and pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3


def test_video_input_normalisation_and_centre_crop():
    colour = video_input(np.full((1, 64, 96, 3), (255, 128, 0), np.uint8))
    expected = (np.array([255, 128, 0]) / 255 - preprocess.CLIP_MEAN) / preprocess.CLIP_STD
    assert colour[0, :, 100, 100].numpy() == pytest.approx(expected, abs=1e-5)

    halves = np.zeros((1, 64, 128, 3), np.uint8)
    halves[:, :, 64:] = 255  # 224 x 448 after resizing; the crop keeps columns 112..335, the edge at 224
    x = video_input(halves)[0, 0]
    black, white = [(v / 255 - preprocess.CLIP_MEAN[0]) / preprocess.CLIP_STD[0] for v in (0, 255)]
    assert torch.allclose(x[:, :100], torch.tensor(black)) and torch.allclose(x[:, 125:], torch.tensor(white))


def test_features_are_normalised_and_use_frame_order(tmp_path, context):
    write_viclip(tmp_path)
    model = load_viclip(tmp_path / CHECKPOINTS["viclip"].relpath)
    clip = video_input(pan(n=8).frames)[None]
    with torch.no_grad():
        forward, backward = model.encode_vision(clip), model.encode_vision(clip.flip(1))
        text = model.encode_text(torch.zeros(3, 32, dtype=torch.long))
    assert forward.shape == (1, 48) and text.shape == (3, 48)
    assert not torch.allclose(forward, backward, atol=1e-4)  # temporal embeddings tell the frames apart

    feature, frames = metrics.video_features(context(pan(n=8), weights=tmp_path), pan(n=8))
    assert frames == list(range(8)) and feature.shape == (48,)
    assert np.linalg.norm(feature) == pytest.approx(1.0, abs=1e-6)
    assert feature == pytest.approx(torch.nn.functional.normalize(forward, dim=-1)[0].numpy(), abs=1e-6)


def _hand_features(path: Path, video: Video, frames: list[int]) -> np.ndarray:
    model = load_viclip(path)
    with torch.no_grad():
        feature = model.encode_vision(video_input(video.frames[frames])[None])
    return torch.nn.functional.normalize(feature, dim=-1)[0].numpy()


def test_temporal_style_is_the_raw_video_text_cosine(tmp_path, context):
    path = write_viclip(tmp_path)
    bpe = write_bpe(tmp_path)
    video = cut(n=20, fps=10.0)
    result = metrics.temporal_style(context(video, weights=tmp_path, prompt="hello hello"))

    frames = [0, 3, 5, 8, 10, 13, 15, 18]
    tokens = ClipTokenizer(bpe).tokenize(["hello hello"], context_length=32)
    with torch.no_grad():
        text = torch.nn.functional.normalize(load_viclip(path).encode_text(tokens), dim=-1)[0].numpy()
    assert result.backend == "reference" and result.frames_used == frames and result.fps == 10.0
    assert result.value == pytest.approx(float(_hand_features(path, video, frames) @ text), abs=1e-6)
    assert result.checkpoint == str(path) and result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.details["tokenizer"] == str(bpe)


def test_tcon_and_tmean_are_cosines_of_video_features(tmp_path, context):
    path = write_viclip(tmp_path)
    front, behind, output = static(n=16), cut(n=5), pan(n=20, fps=8.0)

    same = metrics.tcon(context(front, weights=tmp_path, input_videos=[front]))
    assert same.backend == "reference" and same.value == pytest.approx(1.0, abs=1e-6)

    out_frames, front_frames = [0, 3, 5, 8, 10, 13, 15, 18], [0, 2, 4, 6, 8, 10, 12, 14]
    behind_frames = [0, 1, 2, 3, 4, 4, 4, 4]
    out = _hand_features(path, output, out_frames)
    tcon_front = float(_hand_features(path, front, front_frames) @ out)
    tcon_behind = float(_hand_features(path, behind, behind_frames) @ out)
    assert abs(tcon_front - tcon_behind) > 1e-3  # the two inputs are told apart

    tcon = metrics.tcon(context(output, weights=tmp_path, input_videos=[front]))
    assert tcon.value == pytest.approx(tcon_front, abs=1e-6) and tcon.frames_used == out_frames
    assert tcon.details["input_frames_used"] == front_frames and tcon.checkpoint == str(path) and tcon.fps == 8.0

    tmean = metrics.tmean(context(output, weights=tmp_path, input_videos=[front, behind]))
    assert tmean.backend == "reference" and tmean.value == pytest.approx((tcon_front + tcon_behind) / 2, abs=1e-6)
    assert tmean.details["tcon_front"] == pytest.approx(tcon_front, abs=1e-6)
    assert tmean.details["tcon_behind"] == pytest.approx(tcon_behind, abs=1e-6)
    assert tmean.details["input_frames_used"] == [front_frames, behind_frames]


def test_without_weights_temporal_style_is_unavailable_and_tcon_tmean_fall_back(tmp_path, context):
    front, behind, output = static(n=4), cut(n=4), pan(n=6)
    style = metrics.temporal_style(context(output, prompt="hello"))
    assert style.value is None and "ViCLIP/ViClip-InternVid-10M-FLT.pth" in style.reason

    tcon = metrics.tcon(context(output, input_videos=[front]))
    assert tcon.backend == "fallback:color-histogram" and "ViClip" in tcon.details["reference_unavailable"]
    assert tcon.value == pytest.approx(metrics.histogram_similarity(front, output))
    tmean = metrics.tmean(context(output, input_videos=[front, behind]))
    assert tmean.backend == "fallback:color-histogram"
    assert tmean.value == pytest.approx((tcon.value + metrics.histogram_similarity(behind, output)) / 2)

    write_viclip(tmp_path)  # ViCLIP but no BPE vocabulary: only temporal style needs the tokenizer
    style = metrics.temporal_style(context(output, weights=tmp_path, prompt="hello"))
    assert style.value is None and "bpe_simple_vocab_16e6.txt.gz" in style.reason
    assert metrics.tcon(context(output, weights=tmp_path, input_videos=[front])).backend == "reference"
