"""MUSIQ (imaging quality reference): preprocessing, layout of the SPAQ checkpoint, the metric."""

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mora_agents.eval.metrics import imaging_quality
from mora_agents.eval.nets.musiq import (
    Attention,
    Musiq,
    hash_positions,
    load_musiq,
    multiscale_tokens,
    resized_size,
)
from mora_agents.eval.video import Video
from mora_agents.eval.weights import CHECKPOINTS

from .helpers import cut, static, texture
from .tiny_weights import write_musiq

CLS_KEY = "transformer_encoder.cls"


def _pyiqa_spaq_layout() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of ``musiq_spaq_ckpt-358bb6af.pth``.

    VBench builds pyiqa's ``MUSIQ(pretrained_model_path=...)`` (num_class stays 1) and pyiqa loads the
    file with ``load_state_dict(strict=True)`` after stripping ``module.``, so the file holds exactly
    that module's state dict. It is written out here from the attribute names and layer sizes in
    pyiqa/archs/musiq_arch.py (IQA-PyTorch v0.1.15): ``MUSIQ.__init__`` (ResNet token dim 64, 32-px
    patches, hidden 384, mlp 1152, 14 layers, 3 scales, 10x10 grid, ``nn.Linear`` head), ``Bottleneck``
    (StdConv without bias + GroupNorm, projected shortcut), ``TransformerEncoder`` (a ModuleDict of
    ``encoderblock_{i}``), ``TransformerBlock``, ``MultiHeadAttention`` (query/key/value/out with bias),
    ``Mlp``, ``AddHashSpatialPositionEmbs`` and ``AddScaleEmbs``; none of them has buffers.
    """
    layout: dict[str, tuple[int, ...]] = {
        "conv_root.weight": (64, 3, 7, 7),
        "gn_root.weight": (64,),
        "gn_root.bias": (64,),
        "block1.conv1.weight": (64, 64, 1, 1),
        "block1.gn1.weight": (64,),
        "block1.gn1.bias": (64,),
        "block1.conv2.weight": (64, 64, 3, 3),
        "block1.gn2.weight": (64,),
        "block1.gn2.bias": (64,),
        "block1.conv3.weight": (256, 64, 1, 1),
        "block1.gn3.weight": (256,),
        "block1.gn3.bias": (256,),
        "block1.conv_proj.weight": (256, 64, 1, 1),
        "block1.gn_proj.weight": (256,),
        "block1.gn_proj.bias": (256,),
        "embedding.weight": (384, 256 * 8 * 8),
        "embedding.bias": (384,),
        "transformer_encoder.cls": (1, 1, 384),
        "transformer_encoder.posembed_input.position_emb": (1, 100, 384),
        "transformer_encoder.scaleembed_input.scale_emb": (3, 384),
        "transformer_encoder.encoder_norm.weight": (384,),
        "transformer_encoder.encoder_norm.bias": (384,),
        "head.weight": (1, 384),
        "head.bias": (1,),
    }
    block = {
        "norm1.weight": (384,),
        "norm1.bias": (384,),
        "attention.query.weight": (384, 384),
        "attention.query.bias": (384,),
        "attention.key.weight": (384, 384),
        "attention.key.bias": (384,),
        "attention.value.weight": (384, 384),
        "attention.value.bias": (384,),
        "attention.out.weight": (384, 384),
        "attention.out.bias": (384,),
        "norm2.weight": (384,),
        "norm2.bias": (384,),
        "mlp.fc1.weight": (1152, 384),
        "mlp.fc1.bias": (1152,),
        "mlp.fc2.weight": (384, 1152),
        "mlp.fc2.bias": (384,),
    }
    for i in range(14):
        layout.update({f"transformer_encoder.transformer.encoderblock_{i}.{k}": s for k, s in block.items()})
    return layout


def test_spaq_model_has_the_checkpoint_layout():
    with torch.device("meta"):
        model = Musiq()
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(layout) == 248
    assert layout == _pyiqa_spaq_layout()


def test_tiny_musiq_scores_shape_range_and_batch_independence(tmp_path):
    model = load_musiq(write_musiq(tmp_path))
    assert model.transformer_encoder.transformer["encoderblock_0"].attention.heads == 2
    images = torch.rand(3, 3, 64, 96)
    with torch.no_grad():
        scores = model(images)
        single = model(images[1:2])
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert ((scores > 0) & (scores < 100)).all() and scores.std() > 0
    assert single[0] == pytest.approx(float(scores[1]), abs=1e-4)


@pytest.mark.parametrize(
    ("height", "width", "valid", "sizes"),
    [
        # (h, w), valid patches at long sides 224 / 384 / full size, resized sizes at 224 / 384
        (288, 512, (4 * 7, 7 * 12, 9 * 16), ((126, 224), (216, 384))),
        (100, 100, (7 * 7, 12 * 12, 4 * 4), ((224, 224), (384, 384))),
        # 129 * 224 / 448 = 64.5 rounds half to even (Python round) -> 64 rows = 2 patches, not 3
        (129, 448, (2 * 7, 4 * 12, 5 * 14), ((64, 224), (111, 384))),
        (333, 500, (5 * 7, 8 * 12, 11 * 16), ((149, 224), (256, 384))),
    ],
)
def test_multiscale_patch_counts(height, width, valid, sizes):
    assert [resized_size(height, width, s) for s in (224, 384)] == list(sizes)
    tokens = multiscale_tokens(torch.zeros(1, 3, height, width))
    lengths = (49, 144, valid[2])  # resized scales are padded to ceil(224 / 32)**2 and ceil(384 / 32)**2
    assert tokens.patches.shape == (1, sum(lengths), 3, 32, 32)
    start = 0
    for scale, (length, count) in enumerate(zip(lengths, valid, strict=True)):
        segment = slice(start, start + length)
        assert tokens.mask[segment].tolist() == [True] * count + [False] * (length - count)
        assert tokens.scales[segment].tolist() == [scale] * count + [0] * (length - count)
        assert tokens.positions[segment][count:].eq(0).all()
        start += length
    rows, cols = (-(-s // 32) for s in sizes[0])
    assert tokens.positions[: rows * cols].tolist() == hash_positions(10, rows, cols).tolist()


def test_hash_positions_hand_computed():
    # column i of n maps to floor(i * grid / n); index = row_cell * grid + column_cell
    assert hash_positions(10, 2, 3).tolist() == [0, 3, 6, 50, 53, 56]
    assert hash_positions(4, 3, 5).tolist() == [0, 0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 10, 11]
    assert hash_positions(10, 1, 7).tolist() == [0, 1, 2, 4, 5, 7, 8]
    twelve = hash_positions(10, 12, 12).view(12, 12)
    assert twelve[0].tolist() == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]
    assert twelve[:, 0].tolist() == [0, 0, 10, 20, 30, 40, 50, 50, 60, 70, 80, 90]


def test_full_size_patches_use_same_padding_in_row_major_order():
    image = torch.arange(3 * 40 * 70, dtype=torch.float32).view(1, 3, 40, 70)
    tokens = multiscale_tokens(image)
    native = tokens.patches[0, 49 + 144 :]
    assert len(native) == 2 * 3
    # 'SAME' padding: 24 rows (12 top, 12 bottom) and 26 columns (13 left, 13 right) of zeros
    second = native[1]  # row 0, column 1: image rows -12..19, columns 19..50
    assert torch.equal(second[:, 12:, :], image[0, :, :20, 19:51])
    assert second[:, :12].eq(0).all()
    assert torch.equal(native[3][:, :8, 13:], image[0, :, 20:28, :19])  # row 1, column 0


def test_attention_ignores_masked_tokens():
    torch.manual_seed(0)
    attention = Attention(128)
    x = torch.randn(1, 5, 128)
    y = x.clone()
    y[:, 3:] = 10 * torch.randn(1, 2, 128)
    mask = torch.tensor([[True, True, True, False, False]])
    everything = torch.ones_like(mask)
    with torch.no_grad():
        assert torch.allclose(attention(x, mask)[:, :3], attention(y, mask)[:, :3], atol=1e-5)
        assert not torch.allclose(attention(x, everything)[:, :3], attention(y, everything)[:, :3])


def test_loading_is_strict_and_strips_module_prefix(tmp_path):
    images = torch.rand(1, 3, 40, 50)
    with torch.no_grad():
        plain = load_musiq(write_musiq(tmp_path / "plain"))(images)
        prefixed = load_musiq(write_musiq(tmp_path / "prefixed", prefix="module."))(images)
    assert torch.equal(plain, prefixed)
    with pytest.raises(RuntimeError, match=f"Missing key.*{CLS_KEY}"):
        load_musiq(write_musiq(tmp_path / "missing", drop=CLS_KEY))
    with pytest.raises(RuntimeError, match="Unexpected key.*unexpected.weight"):
        load_musiq(write_musiq(tmp_path / "extra", extra=True))


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((576, 1024), (288, 512)),
        ((480, 854), (287, 512)),  # 512 / 854 * 480 = 287.78, truncated
        ((513, 100), (512, 99)),
        ((1000, 700), (512, 358)),
        ((512, 300), (512, 300)),
        ((64, 96), (64, 96)),
    ],
)
def test_long_side_sizes(shape, expected):
    assert imaging_quality.long_side_size(*shape) == expected
    assert imaging_quality.limit_long_side(np.zeros((*shape, 3), np.uint8)).shape == (*expected, 3)


def test_vbench_longer_transform_values():
    small = texture(64, 96)
    assert torch.equal(imaging_quality.vbench_input(small)[0], torch.from_numpy(small).permute(2, 0, 1).float() / 255)
    # Halving a 2x2-periodic pattern (0, 1 / 2, 3) gives each block's mean, 1.5: float, not rounded to uint8.
    ys, xs = np.mgrid[:1024, :600]
    pattern = np.repeat((xs % 2 + 2 * (ys % 2))[..., None], 3, axis=2).astype(np.uint8)
    halved = imaging_quality.vbench_input(pattern)
    assert halved.shape == (1, 3, 512, 300) and halved.dtype == torch.float32
    assert torch.allclose(halved, torch.full_like(halved, 1.5 / 255))
    big = texture(600, 700)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(big).permute(2, 0, 1)[None].float(), size=(438, 512), mode="bilinear", antialias=False
    )
    assert torch.equal(imaging_quality.vbench_input(big), expected / 255)
    assert np.array_equal(imaging_quality.limit_long_side(big), (expected / 255)[0].permute(1, 2, 0).numpy())


def test_imaging_quality_reference_with_tiny_musiq(tmp_path, context):
    path = write_musiq(tmp_path)
    frames = np.stack([texture(600, 300, seed=s) for s in range(2)])
    result = imaging_quality.compute(context(Video(frames, 8.0), weights=tmp_path))
    assert result.backend == "reference" and result.frames_used == [0, 1] and result.fps == 8.0
    assert result.checkpoint == str(path)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.details["input_size"] == [512, 256]
    model = load_musiq(path)
    with torch.no_grad():
        scores = [float(model(imaging_quality.vbench_input(f))) for f in frames]
    assert result.details["mean_musiq"] == pytest.approx(np.mean(scores), abs=1e-4)
    assert 0.0 <= result.value <= 1.0 and result.value == pytest.approx(np.mean(scores) / 100, abs=1e-6)

    cut_result = imaging_quality.compute(context(cut(n=2), weights=tmp_path))
    assert cut_result.backend == "reference" and cut_result.details["input_size"] == [64, 64]


def test_imaging_quality_without_weights_falls_back_to_brisque(context):
    result = imaging_quality.compute(context(static(n=2)))
    assert result.backend == "fallback:brisque" and 0.0 <= result.value <= 1.0
    assert CHECKPOINTS["musiq_spaq"].relpath in result.details["reference_unavailable"]
