"""Open-Sora-Plan v1.2 port: conformance with the reference implementation (tests/fixtures/osp, made by
benchmarks/osp_fixture.py), the published checkpoints' key layout, each part of the model showing in its output, and
loading from the published folder layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler
from safetensors.torch import load_file

from mora_agents.models.open_sora_plan import OpenSoraInpaintTransformer3D
from mora_agents.models.open_sora_vae import OpenSoraCausalVAE
from mora_agents.pipelines.open_sora_plan import (
    OpenSoraPlanPipeline,
    load_open_sora_plan_pipeline,
    tiny_open_sora_plan_pipeline,
)

FIXTURES = Path(__file__).parent / "fixtures" / "osp"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def meta(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def io(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / f"{name}.io.safetensors")


def redrawn_weights(name: str) -> dict[str, torch.Tensor]:
    """The fixture model's weights, redrawn as the generator drew them (each checked against its recorded sum)."""
    fixture = meta(name)
    generator = torch.Generator().manual_seed(fixture["seed"])
    weights = {}
    for key, shape, mean, std, total in fixture["keys"]:
        weights[key] = mean + std * torch.randn(shape, generator=generator)
        assert float(weights[key].double().sum()) == pytest.approx(total, rel=1e-6, abs=1e-6), key
    return weights


def build(cls, name: str, config: dict | None = None):
    model = cls.from_config(config or meta(name)["config"]).eval()
    model.load_state_dict(redrawn_weights(name), strict=True)
    return model


@pytest.fixture(scope="module")
def transformer() -> OpenSoraInpaintTransformer3D:
    return build(OpenSoraInpaintTransformer3D, "transformer")


@pytest.fixture(scope="module")
def vae() -> OpenSoraCausalVAE:
    return build(OpenSoraCausalVAE, "vae")


def denoise(model: OpenSoraInpaintTransformer3D, data: dict[str, torch.Tensor], **changes) -> torch.Tensor:
    inputs = dict(hidden_states=data["hidden_states"], timestep=data["timestep"],
                  encoder_hidden_states=data["encoder_hidden_states"],
                  encoder_attention_mask=data["encoder_attention_mask"], attention_mask=data["attention_mask"])
    with torch.no_grad():
        return model(**{**inputs, **changes}).sample


def test_transformer_matches_the_reference_with_and_without_a_masked_video(transformer):
    data = io("transformer")
    unmasked = denoise(transformer, data, attention_mask=torch.ones_like(data["attention_mask"]))
    masked = denoise(transformer, data)
    assert unmasked.shape == data["output"].shape == (2, 4, 3, 8, 12)
    assert (unmasked - data["output"]).abs().max() < 1e-4
    assert (masked - data["output_masked"]).abs().max() < 1e-4
    assert (data["output"] - data["output_masked"]).abs().max() > 1e-2  # the mask matters, and is matched
    assert torch.equal(denoise(transformer, data, attention_mask=None), unmasked)  # no mask: all attended to


@pytest.mark.parametrize("part", ["video self-attention (3D, RoPE)", "text cross-attention", "masked-video channels",
                                  "mask channels", "frame order", "text padding mask"])
def test_each_part_of_the_transformer_shows_in_its_output(transformer, part):
    """Zeroing (or disturbing) one part moves the output well beyond the conformance tolerance: each is checked."""
    data = io("transformer")
    base = denoise(transformer, data)
    changes, zeroed = {}, []
    if part == "video self-attention (3D, RoPE)":
        zeroed = [block.attn1.to_out[0] for block in transformer.transformer_blocks]
    elif part == "text cross-attention":
        zeroed = [block.attn2.to_out[0] for block in transformer.transformer_blocks]
    elif part == "masked-video channels":
        zeroed = [transformer.pos_embed_masked_video[1]]
    elif part == "mask channels":
        zeroed = [transformer.pos_embed_mask[1]]
    elif part == "frame order":  # the RoPE's time axis: the same frames in another order are other tokens
        changes = {"hidden_states": data["hidden_states"].flip(2), "attention_mask": data["attention_mask"].flip(1)}
    else:
        changes = {"encoder_attention_mask": torch.ones_like(data["encoder_attention_mask"])}
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in zeroed]
    try:
        for module in zeroed:
            for param in module.parameters():
                param.data.zero_()
        moved = denoise(transformer, data, **changes)
    finally:
        for module, state in zip(zeroed, saved):
            module.load_state_dict(state)
    if part == "frame order":
        moved = moved.flip(2)
    assert (moved - base).abs().max() > 1e-2


def test_vae_encodes_and_decodes_as_the_reference_with_and_without_tiles():
    model, data, tiling = build(OpenSoraCausalVAE, "vae"), io("vae"), meta("vae")["tiling"]
    video = data["video"].float()
    with torch.no_grad():
        moments = model.encode(video).latent_dist.parameters
        decoded = model.decode(data["latent"]).sample
        model.enable_tiling(**tiling)
        moments_tiled = model.encode(video).latent_dist.parameters
        decoded_tiled = model.decode(data["latent"]).sample
    assert decoded.shape == (1, 3, 9, 24, 24) and moments.shape == (1, 8, 3, 3, 3)
    for ours, name in ((moments, "moments"), (decoded, "decoded"), (moments_tiled, "moments_tiled"),
                       (decoded_tiled, "decoded_tiled")):
        assert (ours - data[name]).abs().max() < 1e-4, name
    assert (data["decoded"] - data["decoded_tiled"]).abs().max() > 1e-2  # the tiles were used, and matched


def test_pipeline_matches_the_reference_sampler(vae):
    """First and last frame given, PNDM, guidance 7.5: the same denoised latents (to float rounding: with random
    weights they grow to about 140) and the same frames (up to a unit where truncation to uint8 tips)."""
    fixture, data = meta("pipeline"), io("pipeline")
    transformer = build(OpenSoraInpaintTransformer3D, "transformer", fixture["transformer"])
    pipe = OpenSoraPlanPipeline(None, None, vae, transformer, PNDMScheduler.from_config(fixture["scheduler"]))
    pipe.set_progress_bar_config(disable=True)
    common = dict(num_frames=fixture["num_frames"], height=fixture["height"], width=fixture["width"],
                  num_inference_steps=fixture["num_inference_steps"], guidance_scale=fixture["guidance_scale"],
                  latents=data["latents"], prompt_embeds=(data["prompt_embeds"], data["prompt_attention_mask"]),
                  negative_prompt_embeds=(data["negative_prompt_embeds"], data["negative_prompt_attention_mask"]))
    images = torch.stack([data["first"], data["last"]])
    outputs = {kind: pipe(images, generator=torch.Generator().manual_seed(fixture["posterior_seed"]),
                          output_type=kind, **common).frames for kind in ("latent", "np")}
    scale = data["denoised"].abs().max()
    assert (outputs["latent"] - data["denoised"]).abs().max() < 1e-5 * scale
    difference = np.abs(outputs["np"].astype(int) - data["images"].numpy().astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_full_size_models_have_the_published_keys_and_shapes():
    """The published `93x480p_i2v` DiT and v1.2 VAE (configs shipped for the benchmark) have the reference's keys,
    in its order, with its shapes: what `load_state_dict(strict=True)` of the real checkpoints needs."""
    from mora_agents.bench.build import config

    reference = json.loads((FIXTURES / "full_keys.json").read_text())
    for cls, name, shipped in ((OpenSoraInpaintTransformer3D, "transformer", "open_sora_plan_transformer"),
                               (OpenSoraCausalVAE, "vae", "open_sora_plan_vae")):
        assert config(shipped) == reference[name]["config"]
        with torch.device("meta"):
            model = cls.from_config(reference[name]["config"])
        assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == reference[name]["keys"]
        assert sum(p.numel() for p in model.parameters()) == reference[name]["parameters"]


def test_bf16_forward_stays_close_to_fp32(transformer):
    data = io("transformer")
    model = build(OpenSoraInpaintTransformer3D, "transformer").to(torch.bfloat16)
    out = denoise(model, data)
    assert out.dtype == torch.bfloat16 and (out.float() - data["output_masked"]).abs().max() < 0.1


def test_published_folders_load_strictly(tmp_path):
    """The DiT from a diffusers folder with the reference's config.json; the VAE from a training checkpoint
    (`*.ckpt` with EMA weights and the discriminator's `loss.*` keys) next to its config.json."""
    osp = tmp_path / "osp"
    transformer = build(OpenSoraInpaintTransformer3D, "transformer")
    transformer.save_pretrained(osp / "93x480p_i2v")
    config = json.loads((osp / "93x480p_i2v" / "config.json").read_text())
    config["_class_name"] = "OpenSoraInpaint"  # as the published file names the reference's class
    (osp / "93x480p_i2v" / "config.json").write_text(json.dumps(config))
    (osp / "vae").mkdir()
    (osp / "vae" / "config.json").write_text(json.dumps({"_class_name": "CausalVAEModel", **meta("vae")["config"]}))
    ema = {f"module.{k}": v for k, v in redrawn_weights("vae").items()}
    torch.save({"ema_state_dict": ema, "state_dict": {"loss.discriminator.weight": torch.zeros(1)}},
               osp / "vae" / "checkpoint.ckpt")
    loaded = OpenSoraInpaintTransformer3D.from_pretrained(osp, subfolder="93x480p_i2v")
    assert torch.equal(denoise(loaded, io("transformer")), denoise(transformer, io("transformer")))
    vae = OpenSoraCausalVAE.from_reference_folder(osp / "vae")
    with torch.no_grad():
        assert (vae.decode(io("vae")["latent"]).sample - io("vae")["decoded"]).abs().max() < 1e-4
    with pytest.raises(FileNotFoundError, match=r"mT5 text encoder 'nowhere/mt5'"):
        load_open_sora_plan_pipeline(str(osp), "nowhere/mt5")
    (osp / "vae" / "checkpoint.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks vae/\*\.ckpt or .*hf download LanguageBind/Open-Sora-Plan"):
        load_open_sora_plan_pipeline(str(osp), "nowhere/mt5")


def test_the_full_loader_reads_the_published_layouts(tmp_path):
    """`load_open_sora_plan_pipeline` (what `--preset full` runs) on the tiny pipeline's weights saved as the
    published repositories lay them out: the same frames as the pipeline they came from."""
    tiny = tiny_open_sora_plan_pipeline()
    osp, mt5 = tmp_path / "Open-Sora-Plan-v1.2.0", tmp_path / "mt5-xxl"
    tiny.transformer.save_pretrained(osp / "93x480p_i2v")
    (osp / "vae").mkdir()
    (osp / "vae" / "config.json").write_text(json.dumps(dict(tiny.vae.config)))
    torch.save({"state_dict": tiny.vae.state_dict()}, osp / "vae" / "checkpoint.ckpt")
    tiny.text_encoder.save_pretrained(mt5)
    tiny.tokenizer.save_pretrained(mt5)
    loaded = load_open_sora_plan_pipeline(str(osp), str(mt5), device="cpu")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae.use_tiling and isinstance(loaded.scheduler, PNDMScheduler)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    frames = [pipe(image, prompt="a red fox", num_frames=5, height=64, width=64, num_inference_steps=4,
                   generator=torch.Generator().manual_seed(1), output_type="np").frames for pipe in (tiny, loaded)]
    assert frames[0].shape == (5, 64, 64, 3) and np.array_equal(*frames)


@pytest.mark.parametrize(("change", "message"), [
    ({"norm_type": "layer_norm"}, "norm_type='layer_norm': only 'ada_norm_single'"),
    ({"use_rope": False}, "use_rope=False: only True"),
    ({"attention_head_dim": 16, "cross_attention_dim": 32}, "multiple of 6"),
    ({"cross_attention_dim": 40}, "cross_attention_dim=40"),
])
def test_configs_outside_the_v1_2_models_are_refused(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        OpenSoraInpaintTransformer3D.from_config({**meta("transformer")["config"], **change})


def test_vae_configs_outside_v1_2_are_refused():
    config = meta("vae")["config"]
    with pytest.raises(ValueError, match="encoder_temporal_downsample='TimeDownsampleRes2x': not implemented"):
        OpenSoraCausalVAE.from_config({**config, "encoder_temporal_downsample": ["", "TimeDownsampleRes2x", "", ""]})
