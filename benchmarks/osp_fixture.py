"""Make the Open-Sora-Plan conformance fixtures (tests/fixtures/osp/) by running the reference implementation.

The reference is PKU-YuanGroup/Open-Sora-Plan at commit 294993ca (2024-08-22: the v1.2.0 image-to-video release, the
last commit before v1.3). It runs outside this project, in a throwaway environment with the library versions its
pyproject pins; nothing of it is imported by, or copied into, the project:

    git clone https://github.com/PKU-YuanGroup/Open-Sora-Plan /tmp/osp-ref-src
    git -C /tmp/osp-ref-src checkout 294993ca
    python -m venv /tmp/osp-ref && /tmp/osp-ref/bin/pip install torch diffusers==0.28.0 transformers==4.40.1 \
        einops==0.7.0 huggingface_hub==0.23.4 "numpy<2"
    /tmp/osp-ref/bin/python benchmarks/osp_fixture.py --reference /tmp/osp-ref-src --out tests/fixtures/osp

(The fixtures in the repository were made so, on the CPU in float32, with torch 2.13.) Modules the reference imports
only for training, evaluation or NPUs (decord, torchvision, lightning, cv2, ...) are replaced by empty stand-ins.

Weights are not stored: every tensor of a model's state dict, zero-initialised ones included (the linear layers after
the mask and masked-video embeddings, ...), is drawn in state-dict order from one generator seeded with `seed`, as
`mean + std * randn(shape)` with the per-tensor `mean` and `std` written next to its key and shape, and the sum of
each drawn tensor is written too, so that a reader can check it redrew the same weights. Written:

- `transformer.json`: the tiny `OpenSoraInpaint` config, its keys as `[name, shape, mean, std, sum]`, the seed.
- `transformer.io.safetensors`: `hidden_states` [2, 12, 3, 8, 12] (latent 4 | masked-video latent 4 | mask 4 channels),
  `timestep` [2], `encoder_hidden_states` [2, 1, 7, 16], `encoder_attention_mask` [2, 1, 7] (padding in one),
  `attention_mask` [2, 3, 8, 12] (part of one video masked out), and the outputs `output` (all of the video
  attended to: the reference pipeline's mask of ones) and `output_masked` (with `attention_mask`).
- `vae.json`, `vae.io.safetensors`: a tiny CausalVideoVAE with the v1.2 structure; `video` [1, 3, 9, 24, 24] and its
  `moments` (encoder output: mean and log-variance), `latent` and its `decoded` video, and with tiling on (the
  `tiling` entry of vae.json) `moments_tiled` and `decoded_tiled`.
- `pipeline.json`, `pipeline.io.safetensors`: the reference `OpenSoraInpaintPipeline` with those two models (the
  transformer with the RoPE scales of the published models, 1, and the same weights) and
  diffusers' default `PNDMScheduler`, 5 steps, guidance 7.5, a first and a last frame given, 9 frames at 32x32, from
  given `latents`, `prompt_embeds` and `negative_prompt_embeds` (with their masks), the VAE posterior drawn after
  `torch.manual_seed(seed)`; its `images` (uint8) and, with `output_type="latent"`, its final `denoised` latents.
- `full_keys.json`: every key and shape of the full-size models, the published `93x480p_i2v` transformer (the
  `OpenSoraInpaint-ROPE-L/122` config of the reference's training script, 480x640, 93 frames) and the v1.2 VAE
  (config of the published `vae/config.json`), and their parameter counts.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

SEED = 20240822
STUBBED = {"cv2", "decord", "pytorchvideo", "pytorch_lightning", "torchvision", "lpips", "skvideo", "wandb",
           "omegaconf", "albumentations", "av", "torchdiffeq", "timm", "h5py", "moviepy", "imageio", "scipy",
           "sklearn", "pandas", "test_tube", "ftfy", "bs4", "torch_npu", "deepspeed", "gradio"}

FULL_TRANSFORMER = dict(
    num_layers=32, attention_head_dim=96, num_attention_heads=24, patch_size_t=1, patch_size=2,
    norm_type="ada_norm_single", caption_channels=4096, cross_attention_dim=2304, in_channels=4, out_channels=4,
    sample_size=[60, 80], sample_size_t=24, activation_fn="gelu-approximate", attention_bias=True,
    norm_elementwise_affine=False, norm_eps=1e-6, use_rope=True, interpolation_scale_t=1.0,
    interpolation_scale_h=1.0, interpolation_scale_w=1.0, attention_mode="xformers", num_embeds_ada_norm=1000,
)
"""OpenSoraInpaint-ROPE-L/122 with the arguments of the reference's `train_inpaint.sh` (93x480x640, RoPE)."""
TINY_TRANSFORMER = {**FULL_TRANSFORMER, "num_layers": 2, "attention_head_dim": 24, "num_attention_heads": 2,
                    "caption_channels": 16, "cross_attention_dim": 48, "sample_size": [8, 8], "sample_size_t": 3,
                    "interpolation_scale_t": 2.0, "interpolation_scale_h": 1.5, "attention_mode": "math"}
"""Two blocks of 2 heads of 24 channels; RoPE interpolation scales other than 1 so that each axis's shows. (The
reference caches each axis's RoPE table by its length alone, so axes of equal length would share the first one's
scale: the inputs have 3 x 4 x 6 patches. The published models set all three scales to 1.)"""
PIPELINE_TRANSFORMER = {**TINY_TRANSFORMER, "interpolation_scale_t": 1.0, "interpolation_scale_h": 1.0}
"""For the pipeline's 3 x 2 x 2 patches, the published models' RoPE scales (see above)."""
FULL_VAE = dict(
    hidden_size=128, z_channels=4, hidden_size_mult=[1, 2, 4, 4], attn_resolutions=[], dropout=0.0, resolution=256,
    double_z=True, embed_dim=4, num_res_blocks=2, q_conv="CausalConv3d", encoder_conv_in="Conv2d",
    encoder_conv_out="CausalConv3d", encoder_attention="AttnBlock3DFix",
    encoder_resnet_blocks=["ResnetBlock2D", "ResnetBlock2D", "ResnetBlock3D", "ResnetBlock3D"],
    encoder_spatial_downsample=["Downsample", "Spatial2xTime2x3DDownsample", "Spatial2xTime2x3DDownsample", ""],
    encoder_temporal_downsample=["", "", "", ""], encoder_mid_resnet="ResnetBlock3D", decoder_conv_in="CausalConv3d",
    decoder_conv_out="CausalConv3d", decoder_attention="AttnBlock3DFix",
    decoder_resnet_blocks=["ResnetBlock3D"] * 4,
    decoder_spatial_upsample=["", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample", "Spatial2xTime2x3DUpsample"],
    decoder_temporal_upsample=["", "", "", ""], decoder_mid_resnet="ResnetBlock3D", use_quant_layer=True,
)
"""CausalVAEModel_D4_4x8x8, the v1.2 VAE: 8x spatial and 4x temporal compression to 4 channels."""
TINY_VAE = {**FULL_VAE, "hidden_size": 32, "hidden_size_mult": [1, 1, 1, 1], "num_res_blocks": 1}
"""The v1.2 structure at 32 channels (the reference's GroupNorms have 32 groups) with one ResNet per level."""
TILING = dict(tile_sample_min_size=16, tile_latent_min_size=2, tile_sample_min_size_t=5, tile_latent_min_size_t=2,
              tile_overlap_factor=0.5)
"""Tiles small enough that the tiny video is cut in space and time and the overlaps are blended."""


class _Stub(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *args, **kwargs: None})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty stand-ins for the modules the reference imports only for training, evaluation and NPUs."""

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED or fullname == "torch.utils.tensorboard":
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def randomize(model: torch.nn.Module, seed: int) -> list[list]:
    """Draw every tensor of the state dict (see the module docstring); returns its `[name, shape, mean, std, sum]`."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    keys = []
    for name, tensor in state.items():
        if tensor.ndim > 1:
            mean, std = 0.0, 1.0 / float(np.sqrt(np.prod(tensor.shape[1:])))
        elif name.endswith("bias"):
            mean, std = 0.0, 0.1
        else:  # norm scales, one-number parameters
            mean, std = 1.0, 0.1
        drawn = mean + std * torch.randn(tensor.shape, generator=generator)
        state[name] = drawn
        keys.append([name, list(tensor.shape), mean, std, float(drawn.double().sum())])
    model.load_state_dict(state, strict=True)
    return keys


def key_shapes(model: torch.nn.Module) -> list[list]:
    return [[name, list(tensor.shape)] for name, tensor in model.state_dict().items()]


def save(out: Path, name: str, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / f"{name}.io.safetensors")


def transformer_fixture(out: Path, OpenSoraInpaint) -> None:
    model = OpenSoraInpaint(**TINY_TRANSFORMER).eval()
    keys = randomize(model, SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    hidden_states = torch.randn(2, 12, 3, 8, 12, generator=g)
    hidden_states[:, 8:] = (hidden_states[:, 8:] > 0).float()  # the mask channels are 0 or 1
    text = torch.randn(2, 1, 7, 16, generator=g)
    text_mask = torch.ones(2, 1, 7)
    text_mask[1, :, 4:] = 0
    video_mask = torch.ones(2, 3, 8, 12)
    video_mask[1, 2] = 0  # the second video's last frame is padding
    video_mask[1, 1, :, 6:] = 0  # and the right half of its middle frame
    timestep = torch.tensor([37, 911])
    with torch.no_grad():
        common = dict(hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=text,
                      encoder_attention_mask=text_mask, return_dict=False)
        output = model(attention_mask=torch.ones_like(video_mask), **common)[0]
        output_masked = model(attention_mask=video_mask, **common)[0]
    save(out, "transformer", {"config": TINY_TRANSFORMER, "seed": SEED, "keys": keys},
         dict(hidden_states=hidden_states, timestep=timestep, encoder_hidden_states=text,
              encoder_attention_mask=text_mask, attention_mask=video_mask, output=output,
              output_masked=output_masked))


def vae_fixture(out: Path, CausalVAEModel) -> torch.nn.Module:
    model = CausalVAEModel(**TINY_VAE).eval()
    keys = randomize(model, SEED + 2)
    g = torch.Generator().manual_seed(SEED + 3)
    video = (torch.rand(1, 3, 9, 24, 24, generator=g) * 2 - 1).half().float()  # stored in fp16, exactly
    latent = torch.randn(1, 4, 3, 3, 3, generator=g)
    with torch.no_grad():
        moments = model.encode(video).parameters
        decoded = model.decode(latent)
        model.enable_tiling()
        for name, value in TILING.items():
            setattr(model, name, value)
        moments_tiled = model.encode(video).parameters
        decoded_tiled = model.decode(latent)
        model.disable_tiling()
    save(out, "vae", {"config": TINY_VAE, "seed": SEED + 2, "keys": keys, "tiling": TILING},
         dict(video=video.half(), moments=moments, latent=latent, decoded=decoded, moments_tiled=moments_tiled,
              decoded_tiled=decoded_tiled))
    return model


def pipeline_fixture(out: Path, OpenSoraInpaint, vae: torch.nn.Module, modules: dict) -> None:
    from diffusers import PNDMScheduler

    transformer = OpenSoraInpaint(**PIPELINE_TRANSFORMER).eval()
    randomize(transformer, SEED)  # the same weights as transformer.json's

    wrapper = modules["CausalVAEModelWrapper"].__new__(modules["CausalVAEModelWrapper"])
    torch.nn.Module.__init__(wrapper)
    wrapper.vae = vae
    wrapper.vae_scale_factor = [4, 8, 8]
    wrapper.device = torch.device("cpu")  # what the pipeline asks its components for (the wrapper has none)
    pipe = modules["OpenSoraInpaintPipeline"](vae=wrapper, text_encoder=None, tokenizer=None,
                                              scheduler=PNDMScheduler(), transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(SEED + 4)
    first, last = (torch.rand(3, 32, 32, generator=g) for _ in range(2))  # in [0, 1]; the sampler's 2x - 1 below
    latents = torch.randn(1, 4, 3, 4, 4, generator=g)
    prompt_embeds, negative_prompt_embeds = torch.randn(1, 7, 16, generator=g), torch.randn(1, 7, 16, generator=g)
    prompt_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    negative_mask = torch.tensor([[1, 1, 0, 0, 0, 0, 0]])
    results = {}
    for output_type in ("latent", "pil"):
        torch.manual_seed(SEED + 5)  # the reference samples the masked video's posterior from the global generator
        results[output_type] = pipe(
            conditional_images=[first * 2 - 1, last * 2 - 1], conditional_images_indices=[0, -1], num_frames=9,
            height=32, width=32,
            num_inference_steps=5, guidance_scale=7.5, latents=latents.clone(), negative_prompt=None,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_mask, negative_prompt_embeds=negative_prompt_embeds,
            negative_prompt_attention_mask=negative_mask, output_type=output_type, device="cpu",
            max_sequence_length=7, clean_caption=False).images
    meta = {"transformer": PIPELINE_TRANSFORMER, "num_frames": 9, "height": 32, "width": 32, "num_inference_steps": 5,
            "guidance_scale": 7.5,
            "positions": [0, -1], "posterior_seed": SEED + 5,
            "scheduler": {k: v for k, v in PNDMScheduler().config.items() if not k.startswith("_")}}
    save(out, "pipeline", meta, dict(
        first=first, last=last, latents=latents, prompt_embeds=prompt_embeds, prompt_attention_mask=prompt_mask,
        negative_prompt_embeds=negative_prompt_embeds, negative_prompt_attention_mask=negative_mask,
        denoised=results["latent"], images=results["pil"][0]))


def full_keys(out: Path, OpenSoraInpaint, CausalVAEModel) -> None:
    with torch.device("meta"):
        transformer, vae = OpenSoraInpaint(**FULL_TRANSFORMER), CausalVAEModel(**FULL_VAE)
    (out / "full_keys.json").write_text(json.dumps({
        "transformer": {"config": FULL_TRANSFORMER, "parameters": sum(p.numel() for p in transformer.parameters()),
                        "keys": key_shapes(transformer)},
        "vae": {"config": FULL_VAE, "parameters": sum(p.numel() for p in vae.parameters()), "keys": key_shapes(vae)},
    }) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="the Open-Sora-Plan checkout (at 294993ca)")
    parser.add_argument("--out", type=Path, required=True, help="the fixture folder to write")
    args = parser.parse_args()
    import diffusers  # noqa: F401  (imported before the stand-ins: it probes torchvision)
    import transformers  # noqa: F401

    sys.meta_path.insert(0, _StubFinder())
    sys.path.insert(0, str(args.reference.resolve()))
    torch.manual_seed(0)
    from opensora.models.causalvideovae.model import CausalVAEModel, CausalVAEModelWrapper
    from opensora.models.diffusion.opensora.modeling_inpaint import OpenSoraInpaint
    from opensora.sample.pipeline_inpaint import OpenSoraInpaintPipeline

    args.out.mkdir(parents=True, exist_ok=True)
    transformer_fixture(args.out, OpenSoraInpaint)
    vae = vae_fixture(args.out, CausalVAEModel)
    pipeline_fixture(args.out, OpenSoraInpaint, vae, {"CausalVAEModelWrapper": CausalVAEModelWrapper,
                                                  "OpenSoraInpaintPipeline": OpenSoraInpaintPipeline})
    full_keys(args.out, OpenSoraInpaint, CausalVAEModel)
    for path in sorted(args.out.iterdir()):
        print(f"{path}: {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
