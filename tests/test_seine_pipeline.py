"""SEINEPipeline on the tiny random-weight preset: sampling paths, conditioning, outputs, weight lookup."""

from __future__ import annotations

from contextlib import contextmanager

import huggingface_hub.constants
import numpy as np
import PIL.Image
import pytest
import torch

from mora_agents.models.seine_unet import SEINEUNet3D
from mora_agents.pipelines import (
    SEINEPipeline,
    load_seine_pipeline,
    seine_scheduler,
    tiny_seine_pipeline,
)

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe() -> SEINEPipeline:
    return tiny_seine_pipeline()


def image(seed: int) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def as_unit_tensor(img: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


@contextmanager
def recorded_unet_calls(pipe: SEINEPipeline):
    """Record (sample, timestep, encoder_hidden_states) of every UNet call."""
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0].clone(), args[1], kwargs["encoder_hidden_states"].clone()))

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def generate(pipe: SEINEPipeline, images, seed: int = 0, **kwargs):
    kwargs = {"height": SIZE, "width": SIZE, "sampler": "ddim", "num_inference_steps": 2, **kwargs}
    return pipe(images, generator=torch.Generator().manual_seed(seed), **kwargs).frames


def test_reference_schedule_and_respacing():
    scheduler = seine_scheduler()
    assert torch.allclose(scheduler.betas, torch.linspace(1e-4, 0.02, 1000))
    scheduler.set_timesteps(250)
    # The reference keeps round(i * 999 / 249) for i in 0..249 (space_timesteps(1000, "250")).
    assert scheduler.timesteps.tolist() == [round(i * 999 / 249) for i in range(249, -1, -1)]


def test_ddpm_step_is_the_reference_respaced_posterior():
    scheduler = seine_scheduler()
    scheduler.set_timesteps(250)
    t, prev = scheduler.timesteps[10].item(), scheduler.timesteps[11].item()
    x, eps = torch.randn(2, 1, 4, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = scheduler.step(eps.float(), t, x.float(), generator=torch.Generator().manual_seed(1)).prev_sample

    alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    a_t, a_prev = alphas_cumprod[t], alphas_cumprod[prev]
    beta = 1 - a_t / a_prev  # the respaced beta, also the "fixed large" variance
    x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
    mean = beta * np.sqrt(a_prev) / (1 - a_t) * x0 + (1 - a_prev) * np.sqrt(1 - beta) / (1 - a_t) * x
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out.double(), mean + np.sqrt(beta) * noise.double(), atol=1e-4)


@pytest.fixture
def vae_at_mean(pipe, monkeypatch):
    """Make the VAE posterior sample its mean, so that the expected masked-video latents are exact."""
    encode = pipe.vae.encode

    def encode_at_mean(x):
        out = encode(x)
        out.latent_dist.std = torch.zeros_like(out.latent_dist.std)
        return out

    monkeypatch.setattr(pipe.vae, "encode", encode_at_mean)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_transition_conditioning_reaches_the_unet(pipe, vae_at_mean, as_tensor):
    first, last = image(1), image(2)
    known = torch.stack([as_unit_tensor(first), as_unit_tensor(last)])
    with recorded_unet_calls(pipe) as calls:
        frames = generate(pipe, known if as_tensor else [first, last])

    video = torch.zeros(16, 3, SIZE, SIZE)
    video[0], video[15] = known[0] * 2 - 1, known[1] * 2 - 1
    with torch.no_grad():
        expected = pipe.vae.encode(video).latent_dist.sample() * pipe.vae.config.scaling_factor
    expected = expected.transpose(0, 1)  # [4, F, h, w]
    assert len(frames) == 16 and len(calls) == 2
    for sample, _, text in calls:
        assert sample.shape == (2, 9, 16, SIZE // 8, SIZE // 8) and text.shape[0] == 2
        mask = sample[:, 4]
        assert (mask[:, [0, 15]] == 0).all() and (mask[:, 1:15] == 1).all()
        for half in sample[:, 5:]:
            assert torch.allclose(half, expected, atol=1e-5)
        assert not torch.allclose(expected[:, 0], expected[:, 1])  # the known frame is not the grey filler


def test_first1_conditions_only_the_first_frame(pipe, vae_at_mean):
    with recorded_unet_calls(pipe) as calls:
        frames = generate(pipe, [image(3)], mask_type="first1", num_frames=8, width=96)
    sample = calls[0][0]
    assert sample.shape == (2, 9, 8, SIZE // 8, 96 // 8)
    assert (sample[:, 4, 0] == 0).all() and (sample[:, 4, 1:] == 1).all()
    latents = sample[:, 5:]
    assert torch.allclose(latents[:, :, 1:], latents[:, :, 1:2].expand_as(latents[:, :, 1:]))  # the grey filler
    assert not torch.allclose(latents[:, :, 0], latents[:, :, 1])
    assert len(frames) == 8 and frames[0].size == (96, SIZE)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("guidance_scale", [8.0, 1.0])
def test_samplers_with_and_without_guidance(pipe, sampler, guidance_scale):
    steps = []
    with recorded_unet_calls(pipe) as calls:
        frames = generate(
            pipe,
            [image(1), image(2)],
            sampler=sampler,
            num_inference_steps=3,
            guidance_scale=guidance_scale,
            output_type="np",
            callback=lambda step, total: steps.append((step, total)),
        )
    assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.shape == (16, SIZE, SIZE, 3)
    assert steps == [(1, 3), (2, 3), (3, 3)]
    batch = 2 if guidance_scale > 1 else 1
    assert [sample.shape[0] for sample, _, _ in calls] == [batch] * 3
    expected_timesteps = {"ddpm": [999, 500, 0], "ddim": [999, 666, 332]}[sampler]
    assert [int(t) for _, t, _ in calls] == expected_timesteps


def test_guidance_batches_unconditional_then_conditional(pipe, monkeypatch):
    unet_outputs, guided = [], []
    step = pipe.scheduler.step

    def recording_step(noise_pred, *args, **kwargs):
        guided.append(noise_pred.clone())
        return step(noise_pred, *args, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", recording_step)
    handle = pipe.unet.register_forward_hook(lambda module, args, output: unet_outputs.append(output.sample.clone()))
    try:
        with recorded_unet_calls(pipe) as calls:
            prompts = {"prompt": "a red car", "negative_prompt": "blurry"}
            generate(pipe, [image(1), image(2)], sampler="ddpm", num_inference_steps=1, guidance_scale=5.0, **prompts)
    finally:
        handle.remove()
    text = calls[0][2]
    with torch.no_grad():
        assert torch.allclose(text[0], pipe.encode_prompt("blurry", torch.device("cpu"))[0])
        assert torch.allclose(text[1], pipe.encode_prompt("a red car", torch.device("cpu"))[0])
    uncond, cond = unet_outputs[0].chunk(2)
    assert torch.allclose(guided[0], uncond + 5.0 * (cond - uncond), atol=1e-5)


def test_seeded_runs_repeat_and_known_frames_matter(pipe):
    a = generate(pipe, [image(1), image(2)], output_type="np")
    again = generate(pipe, [image(1), image(2)], output_type="np")
    other_first = generate(pipe, [image(5), image(2)], output_type="np")
    other_seed = generate(pipe, [image(1), image(2)], seed=1, output_type="np")
    assert np.array_equal(a, again)
    assert not np.array_equal(a, other_first)
    assert not np.array_equal(a, other_seed)


def test_bad_arguments_are_rejected(pipe):
    with pytest.raises(ValueError, match="needs 2 known frame"):
        generate(pipe, [image(1)])
    with pytest.raises(ValueError, match="mask_type"):
        generate(pipe, [image(1)], mask_type="last1")
    with pytest.raises(ValueError, match="sampler"):
        generate(pipe, [image(1), image(2)], sampler="euler")
    with pytest.raises(ValueError, match="multiples of 8"):
        generate(pipe, [image(1), image(2)], height=60)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_load_seine_pipeline_without_checkpoint_fails_fast(empty_hf_cache, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Vchitect/SEINE.*seine\.pt"):
        load_seine_pipeline()
    with pytest.raises(FileNotFoundError, match="hf download Vchitect/SEINE seine.pt"):
        load_seine_pipeline(str(tmp_path / "missing" / "seine.pt"))


def test_load_seine_pipeline_without_sd_fails_before_building_models(empty_hf_cache, tmp_path, monkeypatch):
    (tmp_path / "seine.pt").write_bytes(b"")
    monkeypatch.setattr(SEINEUNet3D, "from_seine_checkpoint", pytest.fail)
    with pytest.raises(FileNotFoundError, match="CompVis/stable-diffusion-v1-4"):
        load_seine_pipeline(str(tmp_path / "seine.pt"))
    partial = tmp_path / "sd"
    (partial / "vae").mkdir(parents=True)
    (partial / "vae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="vae/diffusion_pytorch_model.safetensors.*text_encoder/config.json"):
        load_seine_pipeline(str(tmp_path), sd_model=str(partial))
