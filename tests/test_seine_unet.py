"""SEINEUNet3D: conformance with the reference (fixtures in ../shared/fixtures/seine) and general configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mora_agents.models.seine_unet import SEINE_CONFIG_PATH, SEINEUNet3D

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "seine"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"SEINE conformance fixtures not found at {FIXTURES}")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_config() -> dict:
    return json.loads((FIXTURES / "tiny.config.json").read_text())


@pytest.fixture(scope="module")
def tiny_io() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "tiny.io.safetensors")


@pytest.fixture(scope="module")
def tiny_model(tiny_config) -> SEINEUNet3D:
    model = SEINEUNet3D.from_config(tiny_config)
    model.load_state_dict(load_file(FIXTURES / "tiny.weights.safetensors"), strict=True)
    return model.eval()


def run(model: SEINEUNet3D, io: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    with torch.no_grad():
        return model(
            io["sample"].to(dtype), io["timestep"], encoder_hidden_states=io["encoder_hidden_states"].to(dtype)
        ).sample


@needs_fixtures
def test_full_size_state_dict_has_the_checkpoint_keys_and_shapes():
    reference = json.loads((FIXTURES / "full_keys.json").read_text())
    assert json.loads(SEINE_CONFIG_PATH.read_text()) == reference["config"]
    with torch.device("meta"):
        model = SEINEUNet3D.from_config(reference["config"])
    ours = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert ours == reference["keys"]


@needs_fixtures
def test_tiny_fixture_output_matches_reference(tiny_model, tiny_io):
    out = run(tiny_model, tiny_io)
    assert out.shape == tiny_io["output"].shape == (2, 4, 4, 8, 8)
    assert (out - tiny_io["output"]).abs().max().item() < 1e-4


@needs_fixtures
def test_bf16_forward_stays_close_to_fp32(tiny_config, tiny_io):
    model = SEINEUNet3D.from_config(tiny_config)
    model.load_state_dict(load_file(FIXTURES / "tiny.weights.safetensors"), strict=True)
    model = model.eval().to(torch.bfloat16)
    rotary = model.down_blocks[0].attentions[0].transformer_blocks[0].attn_temp.rotary_emb
    assert rotary.freqs.dtype == torch.float32
    out = run(model, tiny_io, torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert (out.float() - tiny_io["output"]).abs().max().item() < 0.05


@needs_fixtures
def test_from_seine_checkpoint_loads_the_ema_weights(tmp_path, tiny_config, tiny_io):
    checkpoint = tmp_path / "seine.pt"
    torch.save({"ema": load_file(FIXTURES / "tiny.weights.safetensors")}, checkpoint)
    model = SEINEUNet3D.from_seine_checkpoint(checkpoint, config=tiny_config)
    assert not model.training and model.dtype == torch.float32
    assert (run(model, tiny_io) - tiny_io["output"]).abs().max().item() < 1e-4


def test_from_seine_checkpoint_missing_file_names_path_and_source(tmp_path):
    missing = tmp_path / "nowhere" / "seine.pt"
    with pytest.raises(FileNotFoundError) as error:
        SEINEUNet3D.from_seine_checkpoint(missing)
    message = str(error.value)
    assert str(missing) in message and "Vchitect/SEINE" in message and "seine.pt" in message


@pytest.fixture(scope="module")
def deep_model() -> SEINEUNet3D:
    """Three levels, two resnets per level, per-level head counts, 8 groups."""
    torch.manual_seed(0)
    config = {
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
        "layers_per_block": 2,
        "attention_head_dim": [1, 2, 2],
        "norm_num_groups": 8,
        "cross_attention_dim": 24,
        "in_channels": 9,
        "out_channels": 4,
        "use_first_frame": False,
    }
    return SEINEUNet3D.from_config(config).eval()


def test_other_config_builds_per_level_heads_and_resnets(deep_model):
    heads = [
        [attn.transformer_blocks[0].attn1.heads for attn in block.attentions] for block in deep_model.down_blocks[:2]
    ]
    assert heads == [[1, 1], [2, 2]]
    assert deep_model.down_blocks[2].attentions is None
    assert [len(block.resnets) for block in deep_model.up_blocks] == [3, 3, 3]


def test_other_config_forward_shapes_and_frame_mixing(deep_model):
    sample = torch.randn(2, 9, 5, 12, 10)  # 5 frames; 12x10 latents are not a multiple of 4
    text = torch.randn(2, 7, 24)
    with torch.no_grad():
        out = deep_model(sample, torch.tensor([10, 900]), encoder_hidden_states=text).sample
        changed = sample.clone()
        changed[0, :, 0] += 1.0  # perturb the first frame of the first video only
        out_changed = deep_model(changed, torch.tensor([10, 900]), encoder_hidden_states=text).sample
    assert out.shape == (2, 4, 5, 12, 10) and torch.isfinite(out).all()
    assert (out_changed[0, :, 4] - out[0, :, 4]).abs().max() > 1e-4  # frames interact (temporal attention, norms)
    assert torch.equal(out_changed[1], out[1])  # and nothing leaks across the batch


def test_other_config_forward_depends_on_text_and_timestep(deep_model):
    sample = torch.randn(1, 9, 3, 8, 8)
    text = torch.randn(1, 7, 24)
    with torch.no_grad():
        base = deep_model(sample, 500, encoder_hidden_states=text).sample
        other_text = deep_model(sample, 500, encoder_hidden_states=text + 1).sample
        other_time = deep_model(sample, 100, encoder_hidden_states=text).sample
    assert (base - other_text).abs().max() > 1e-4
    assert (base - other_time).abs().max() > 1e-4


def test_heads_narrower_than_the_rotary_embedding_are_rejected():
    config = {
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
        "attention_head_dim": 2,
        "norm_num_groups": 8,
    }
    with pytest.raises(ValueError, match="at least 32 channels"):
        SEINEUNet3D.from_config(config)
