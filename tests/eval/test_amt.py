"""AMT-S (motion smoothness reference): network, checkpoint layout, VBench's frame handling."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mora_agents.eval.metrics import motion_smoothness
from mora_agents.eval.nets.amt import AMT, InputPadder, load_amt
from mora_agents.eval.video import Video

from .helpers import TRIPPED, Tripwire, pan, static, texture
from .tiny_weights import write_amt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_interpolator(monkeypatch: pytest.MonkeyPatch, predict) -> list[tuple]:
    """Replace the network by ``predict(img0, img1)``; returns the (shape, img0, img1, embt) of each call."""
    calls = []

    def forward(self, img0, img1, embt=0.5):
        calls.append(
            (tuple(img0.shape), round(float(img0[0, 0, 0, 0]) * 255), round(float(img1[0, 0, 0, 0]) * 255), embt)
        )
        return predict(img0, img1)

    monkeypatch.setattr(AMT, "forward", forward)
    return calls


def test_network_output_shape_and_range():
    torch.manual_seed(0)
    model = AMT().eval()
    img0, img1 = torch.rand(1, 3, 128, 160), torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        out = model(img0, img1)
    assert out.shape == (1, 3, 128, 160) and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1


def test_input_padder_splits_padding_like_vbench():
    # VBench: pad = (((h // 16) + 1) * 16 - h) % 16, split as [p // 2, p - p // 2] (left/top first).
    padder = InputPadder.for_size(125, 130)
    assert padder == InputPadder(left=7, right=7, top=1, bottom=2)
    assert InputPadder.for_size(128, 144) == InputPadder(0, 0, 0, 0)
    x = torch.rand(1, 3, 125, 130)
    padded = padder.pad(x)
    assert padded.shape == (1, 3, 128, 144)
    assert torch.equal(padded[..., 0, 7:-7], x[..., 0, :]) and torch.equal(padded[..., -1, 7:-7], x[..., -1, :])
    assert torch.equal(padded[..., 1:-2, 0], x[..., 0]) and torch.equal(padder.unpad(padded), x)


def test_checkpoint_loads_strictly_from_state_dict_entry(tmp_path):
    path = write_amt(tmp_path)
    model = load_amt(path)
    assert not model.training
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    del state["decoder1.convblock.2.bias"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(RuntimeError, match=r"Missing key.*decoder1\.convblock\.2\.bias"):
        load_amt(path)
    state = AMT().state_dict() | {"extra.weight": torch.zeros(1)}
    torch.save({"state_dict": state}, path)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_amt(path)


def test_checkpoint_metadata_is_never_executed(tmp_path):
    # VBench loads amt-s.pth with weights_only=False: it holds more than plain tensors (see test_checkpoint).
    TRIPPED.clear()
    load_amt(write_amt(tmp_path, psnr=np.float64(36.5), config=Tripwire()))
    assert TRIPPED == []


def test_full_size_amt_s_matches_reference_checkpoint_keys():
    expected = {}
    for line in REFERENCE_KEYS.strip().splitlines():
        name, shape = line.split()
        expected[name] = tuple(int(d) for d in shape.split("x"))
    ours = {k: tuple(v.shape) for k, v in AMT().state_dict().items()}
    assert len(expected) == 213 and ours == expected
    assert sum(int(np.prod(s)) for s in expected.values()) == 2_990_543


def test_reference_runs_and_records_checkpoint(tmp_path, context):
    path = write_amt(tmp_path)
    result = motion_smoothness.compute(context(pan(n=5, step=2, height=128, width=136), weights=tmp_path))
    assert result.backend == "reference" and 0.0 <= result.value <= 1.0
    assert result.checkpoint == str(path) and result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.frames_used == [0, 1, 2, 3, 4] and result.fps == 16.0
    assert result.details["interpolated_frames"] == [1, 3]
    assert result.value == pytest.approx((255 - np.mean(result.details["mean_abs_diffs"])) / 255)


def test_static_video_with_identity_network(tmp_path, context):
    # Zero flows, residuals and fusion correction: the prediction is the input up to float rounding,
    # but VBench truncates x * 255 to uint8, so a value a hair below k becomes k - 1: the score may miss 1 by
    # up to 1 / 255.
    torch.manual_seed(0)
    model = AMT()
    with torch.no_grad():
        for decoder in (model.decoder4, model.decoder3, model.decoder2, model.decoder1):
            decoder.convblock[2].weight.zero_()
            decoder.convblock[2].bias.zero_()
        for head in (model.update4.flow_head, model.update3.flow_head, model.update2.flow_head, model.comb_block):
            head[2].weight.zero_()
            head[2].bias.zero_()
    frame = torch.from_numpy(texture(128, 128)).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        assert (model(frame, frame) - frame).abs().max() < 1e-5
    write_amt(tmp_path, model)
    result = motion_smoothness.compute(context(static(n=3, height=128, width=128), weights=tmp_path))
    assert result.backend == "reference" and 1 - 1 / 255 <= result.value <= 1


def test_exact_interpolation_of_static_video_scores_one(tmp_path, context, monkeypatch):
    # k / 255 * 255 is exactly k in float32 for every k in 0..255, so an exact copy survives truncation.
    write_amt(tmp_path)
    fake_interpolator(monkeypatch, lambda img0, img1: img0.clone())
    result = motion_smoothness.compute(context(static(n=5, height=128, width=128), weights=tmp_path))
    assert result.value == 1.0 and result.details["mean_abs_diffs"] == [0.0, 0.0]


def test_prediction_is_truncated_to_uint8(tmp_path, context, monkeypatch):
    write_amt(tmp_path)
    fake_interpolator(monkeypatch, lambda img0, img1: img0 - 1e-6)
    frames = np.full((3, 128, 128, 3), 100, np.uint8)
    result = motion_smoothness.compute(context(Video(frames, 8.0), weights=tmp_path))
    assert result.value == 254 / 255 and result.details["mean_abs_diffs"] == [1.0]


@pytest.mark.parametrize("num_frames", [7, 8])
def test_frame_sampling_and_padding(tmp_path, context, monkeypatch, num_frames):
    write_amt(tmp_path)
    calls = fake_interpolator(monkeypatch, lambda img0, img1: img0.clone())  # predicts the previous even frame
    values = [i * i + 3 for i in range(num_frames)]  # 3, 4, 7, 12, 19, 28, 39, 52
    frames = np.stack([np.full((130, 200, 3), v, np.uint8) for v in values])
    result = motion_smoothness.compute(context(Video(frames, 8.0), weights=tmp_path))
    # Even frames 0, 2, 4, 6 in; odd frames 1, 3, 5 compared; with 8 frames, frame 7 has no right neighbour.
    assert [(c[1], c[2]) for c in calls] == [(3, 7), (7, 19), (19, 39)]
    assert {(c[0], c[3]) for c in calls} == {((1, 3, 144, 208), 0.5)}
    assert result.details["interpolated_frames"] == [1, 3, 5] and result.frames_used == list(range(7))
    assert result.details["mean_abs_diffs"] == [1.0, 5.0, 9.0]
    assert result.value == pytest.approx((255 - 5.0) / 255)


def test_too_few_frames_raise_with_weights(tmp_path, context):
    write_amt(tmp_path)
    two = Video(np.stack([texture(128, 128)] * 2), 8.0)
    with pytest.raises(ValueError, match="three frames"):
        motion_smoothness.compute(context(two, weights=tmp_path))


def test_small_frames_fall_back_from_amt(tmp_path, context):
    write_amt(tmp_path)
    result = motion_smoothness.compute(context(static(n=5, height=112, width=200), weights=tmp_path))
    assert result.backend == "fallback:flow-jerk" and "128 px" in result.details["reference_unavailable"]


def test_missing_weights_fall_back(context):
    result = motion_smoothness.compute(context(pan(n=5, height=128, width=128)))
    assert result.backend == "fallback:flow-jerk" and 0 < result.value <= 1
    assert "amt_model/amt-s.pth" in result.details["reference_unavailable"]


# Names and shapes of every entry of ``amt-s.pth``'s "state_dict". VBench loads that dict strictly
# (``load_state_dict(ckpt['state_dict'])``) into ``networks.AMT-S.Model(corr_radius=3, corr_lvls=4,
# num_flows=3)`` built from its ``AMT-S.yaml``, so it has exactly the keys of that model's
# ``state_dict()``. The list was produced by instantiating that class from VBench's
# ``vbench/third_party/amt/networks`` (commit 45e79ec, pure PyTorch) and printing its state dict.
REFERENCE_KEYS = """
feat_encoder.conv1.weight 32x3x7x7
feat_encoder.conv1.bias 32
feat_encoder.layer1.0.conv1.weight 8x32x1x1
feat_encoder.layer1.0.conv1.bias 8
feat_encoder.layer1.0.conv2.weight 8x8x3x3
feat_encoder.layer1.0.conv2.bias 8
feat_encoder.layer1.0.conv3.weight 32x8x1x1
feat_encoder.layer1.0.conv3.bias 32
feat_encoder.layer1.1.conv1.weight 8x32x1x1
feat_encoder.layer1.1.conv1.bias 8
feat_encoder.layer1.1.conv2.weight 8x8x3x3
feat_encoder.layer1.1.conv2.bias 8
feat_encoder.layer1.1.conv3.weight 32x8x1x1
feat_encoder.layer1.1.conv3.bias 32
feat_encoder.layer2.0.conv1.weight 16x32x1x1
feat_encoder.layer2.0.conv1.bias 16
feat_encoder.layer2.0.conv2.weight 16x16x3x3
feat_encoder.layer2.0.conv2.bias 16
feat_encoder.layer2.0.conv3.weight 64x16x1x1
feat_encoder.layer2.0.conv3.bias 64
feat_encoder.layer2.0.downsample.0.weight 64x32x1x1
feat_encoder.layer2.0.downsample.0.bias 64
feat_encoder.layer2.1.conv1.weight 16x64x1x1
feat_encoder.layer2.1.conv1.bias 16
feat_encoder.layer2.1.conv2.weight 16x16x3x3
feat_encoder.layer2.1.conv2.bias 16
feat_encoder.layer2.1.conv3.weight 64x16x1x1
feat_encoder.layer2.1.conv3.bias 64
feat_encoder.layer3.0.conv1.weight 24x64x1x1
feat_encoder.layer3.0.conv1.bias 24
feat_encoder.layer3.0.conv2.weight 24x24x3x3
feat_encoder.layer3.0.conv2.bias 24
feat_encoder.layer3.0.conv3.weight 96x24x1x1
feat_encoder.layer3.0.conv3.bias 96
feat_encoder.layer3.0.downsample.0.weight 96x64x1x1
feat_encoder.layer3.0.downsample.0.bias 96
feat_encoder.layer3.1.conv1.weight 24x96x1x1
feat_encoder.layer3.1.conv1.bias 24
feat_encoder.layer3.1.conv2.weight 24x24x3x3
feat_encoder.layer3.1.conv2.bias 24
feat_encoder.layer3.1.conv3.weight 96x24x1x1
feat_encoder.layer3.1.conv3.bias 96
feat_encoder.conv2.weight 84x96x1x1
feat_encoder.conv2.bias 84
encoder.pyramid1.0.0.weight 20x3x3x3
encoder.pyramid1.0.0.bias 20
encoder.pyramid1.0.1.weight 20
encoder.pyramid1.1.0.weight 20x20x3x3
encoder.pyramid1.1.0.bias 20
encoder.pyramid1.1.1.weight 20
encoder.pyramid2.0.0.weight 32x20x3x3
encoder.pyramid2.0.0.bias 32
encoder.pyramid2.0.1.weight 32
encoder.pyramid2.1.0.weight 32x32x3x3
encoder.pyramid2.1.0.bias 32
encoder.pyramid2.1.1.weight 32
encoder.pyramid3.0.0.weight 44x32x3x3
encoder.pyramid3.0.0.bias 44
encoder.pyramid3.0.1.weight 44
encoder.pyramid3.1.0.weight 44x44x3x3
encoder.pyramid3.1.0.bias 44
encoder.pyramid3.1.1.weight 44
encoder.pyramid4.0.0.weight 56x44x3x3
encoder.pyramid4.0.0.bias 56
encoder.pyramid4.0.1.weight 56
encoder.pyramid4.1.0.weight 56x56x3x3
encoder.pyramid4.1.0.bias 56
encoder.pyramid4.1.1.weight 56
decoder4.convblock.0.0.weight 112x113x3x3
decoder4.convblock.0.0.bias 112
decoder4.convblock.0.1.weight 112
decoder4.convblock.1.conv1.0.weight 112x112x3x3
decoder4.convblock.1.conv1.0.bias 112
decoder4.convblock.1.conv1.1.weight 112
decoder4.convblock.1.conv2.0.weight 20x20x3x3
decoder4.convblock.1.conv2.0.bias 20
decoder4.convblock.1.conv2.1.weight 20
decoder4.convblock.1.conv3.0.weight 112x112x3x3
decoder4.convblock.1.conv3.0.bias 112
decoder4.convblock.1.conv3.1.weight 112
decoder4.convblock.1.conv4.0.weight 20x20x3x3
decoder4.convblock.1.conv4.0.bias 20
decoder4.convblock.1.conv4.1.weight 20
decoder4.convblock.1.conv5.weight 112x112x3x3
decoder4.convblock.1.conv5.bias 112
decoder4.convblock.1.prelu.weight 112
decoder4.convblock.2.weight 112x48x4x4
decoder4.convblock.2.bias 48
decoder3.convblock.0.0.weight 132x136x3x3
decoder3.convblock.0.0.bias 132
decoder3.convblock.0.1.weight 132
decoder3.convblock.1.conv1.0.weight 132x132x3x3
decoder3.convblock.1.conv1.0.bias 132
decoder3.convblock.1.conv1.1.weight 132
decoder3.convblock.1.conv2.0.weight 20x20x3x3
decoder3.convblock.1.conv2.0.bias 20
decoder3.convblock.1.conv2.1.weight 20
decoder3.convblock.1.conv3.0.weight 132x132x3x3
decoder3.convblock.1.conv3.0.bias 132
decoder3.convblock.1.conv3.1.weight 132
decoder3.convblock.1.conv4.0.weight 20x20x3x3
decoder3.convblock.1.conv4.0.bias 20
decoder3.convblock.1.conv4.1.weight 20
decoder3.convblock.1.conv5.weight 132x132x3x3
decoder3.convblock.1.conv5.bias 132
decoder3.convblock.1.prelu.weight 132
decoder3.convblock.2.weight 132x36x4x4
decoder3.convblock.2.bias 36
decoder2.convblock.0.0.weight 96x100x3x3
decoder2.convblock.0.0.bias 96
decoder2.convblock.0.1.weight 96
decoder2.convblock.1.conv1.0.weight 96x96x3x3
decoder2.convblock.1.conv1.0.bias 96
decoder2.convblock.1.conv1.1.weight 96
decoder2.convblock.1.conv2.0.weight 20x20x3x3
decoder2.convblock.1.conv2.0.bias 20
decoder2.convblock.1.conv2.1.weight 20
decoder2.convblock.1.conv3.0.weight 96x96x3x3
decoder2.convblock.1.conv3.0.bias 96
decoder2.convblock.1.conv3.1.weight 96
decoder2.convblock.1.conv4.0.weight 20x20x3x3
decoder2.convblock.1.conv4.0.bias 20
decoder2.convblock.1.conv4.1.weight 20
decoder2.convblock.1.conv5.weight 96x96x3x3
decoder2.convblock.1.conv5.bias 96
decoder2.convblock.1.prelu.weight 96
decoder2.convblock.2.weight 96x24x4x4
decoder2.convblock.2.bias 24
decoder1.convblock.0.0.weight 60x64x3x3
decoder1.convblock.0.0.bias 60
decoder1.convblock.0.1.weight 60
decoder1.convblock.1.conv1.0.weight 60x60x3x3
decoder1.convblock.1.conv1.0.bias 60
decoder1.convblock.1.conv1.1.weight 60
decoder1.convblock.1.conv2.0.weight 20x20x3x3
decoder1.convblock.1.conv2.0.bias 20
decoder1.convblock.1.conv2.1.weight 20
decoder1.convblock.1.conv3.0.weight 60x60x3x3
decoder1.convblock.1.conv3.0.bias 60
decoder1.convblock.1.conv3.1.weight 60
decoder1.convblock.1.conv4.0.weight 20x20x3x3
decoder1.convblock.1.conv4.0.bias 20
decoder1.convblock.1.conv4.1.weight 20
decoder1.convblock.1.conv5.weight 60x60x3x3
decoder1.convblock.1.conv5.bias 60
decoder1.convblock.1.prelu.weight 60
decoder1.convblock.2.weight 60x24x4x4
decoder1.convblock.2.bias 24
update4.convc1.weight 64x392x1x1
update4.convc1.bias 64
update4.convf1.weight 40x4x7x7
update4.convf1.bias 40
update4.convf2.weight 20x40x3x3
update4.convf2.bias 20
update4.conv.weight 68x84x3x3
update4.conv.bias 68
update4.gru.0.weight 76x116x3x3
update4.gru.0.bias 76
update4.gru.2.weight 76x76x3x3
update4.gru.2.bias 76
update4.feat_head.0.weight 76x76x3x3
update4.feat_head.0.bias 76
update4.feat_head.2.weight 44x76x3x3
update4.feat_head.2.bias 44
update4.flow_head.0.weight 76x76x3x3
update4.flow_head.0.bias 76
update4.flow_head.2.weight 4x76x3x3
update4.flow_head.2.bias 4
update3.convc1.weight 64x392x1x1
update3.convc1.bias 64
update3.convf1.weight 40x4x7x7
update3.convf1.bias 40
update3.convf2.weight 20x40x3x3
update3.convf2.bias 20
update3.conv.weight 68x84x3x3
update3.conv.bias 68
update3.gru.0.weight 76x104x3x3
update3.gru.0.bias 76
update3.gru.2.weight 76x76x3x3
update3.gru.2.bias 76
update3.feat_head.0.weight 76x76x3x3
update3.feat_head.0.bias 76
update3.feat_head.2.weight 32x76x3x3
update3.feat_head.2.bias 32
update3.flow_head.0.weight 76x76x3x3
update3.flow_head.0.bias 76
update3.flow_head.2.weight 4x76x3x3
update3.flow_head.2.bias 4
update2.convc1.weight 64x392x1x1
update2.convc1.bias 64
update2.convf1.weight 40x4x7x7
update2.convf1.bias 40
update2.convf2.weight 20x40x3x3
update2.convf2.bias 20
update2.conv.weight 68x84x3x3
update2.conv.bias 68
update2.gru.0.weight 76x92x3x3
update2.gru.0.bias 76
update2.gru.2.weight 76x76x3x3
update2.gru.2.bias 76
update2.feat_head.0.weight 76x76x3x3
update2.feat_head.0.bias 76
update2.feat_head.2.weight 20x76x3x3
update2.feat_head.2.bias 20
update2.flow_head.0.weight 76x76x3x3
update2.flow_head.0.bias 76
update2.flow_head.2.weight 4x76x3x3
update2.flow_head.2.bias 4
comb_block.0.weight 18x9x3x3
comb_block.0.bias 18
comb_block.1.weight 18
comb_block.2.weight 3x18x3x3
comb_block.2.bias 3
"""
