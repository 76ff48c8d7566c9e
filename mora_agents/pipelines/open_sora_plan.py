"""Open-Sora-Plan v1.2 image-to-video (PKU-YuanGroup, the `93x480p_i2v` model) as a diffusers pipeline: one image
animated, or a clip between a first and a last frame.

Frame-level inpainting, as the reference's sampler does it: the known frames are placed in a grey video (zeros in
[-1, 1]) that the CausalVideoVAE encodes, the mask (0 on known frames, 1 elsewhere) is brought to the latent grid with
the first frame repeated 4 times and the frames folded into 4 channels, and the DiT sees [noisy latent 4 | masked-video
latent 4 | mask 4] channels. Text: mT5-XXL, 512 tokens, lower-cased. Sampler: diffusers' PNDM with its default
configuration (the reference's `--sample_method PNDM`), 100 steps, classifier-free guidance 7.5; 93 frames at 480x640
(24 fps), the VAE in the reference sampler's tiles. Latents stay in float32 between steps.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, PNDMScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoTokenizer, MT5EncoderModel, PreTrainedModel, PreTrainedTokenizerBase

from mora_agents.models.open_sora_plan import OpenSoraInpaintTransformer3D
from mora_agents.models.open_sora_vae import SCALING_FACTOR, OpenSoraCausalVAE
from mora_agents.pipelines.seine import SEINEPipeline

OSP_REPO_ID = "LanguageBind/Open-Sora-Plan-v1.2.0"
OSP_SUBFOLDER = "93x480p_i2v"
"""The image-to-video model of the v1.2.0 release (2024-08-13); the VAE is the repository's `vae/`."""
MT5_REPO_ID = "google/mt5-xxl"
FIRST_FRAME, FIRST_AND_LAST = [0], [0, -1]


@dataclass
class OpenSoraPlanPipelineOutput(BaseOutput):
    """`frames`: RGB PIL images or a uint8 array [frames, height, width, 3]; latents [1, 4, t, h, w] for `latent`."""

    frames: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class OpenSoraPlanPipeline(DiffusionPipeline):
    """Open-Sora-Plan v1.2 video generation around known frames (the first; or the first and the last).

    Components: an mT5 text encoder and its tokenizer, an `OpenSoraCausalVAE`, an `OpenSoraInpaintTransformer3D` and
    a scheduler (the reference samples with `PNDMScheduler()`).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["tokenizer", "text_encoder"]  # prompts may come as embeddings

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel, vae: OpenSoraCausalVAE,
                 transformer: OpenSoraInpaintTransformer3D, scheduler: PNDMScheduler):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                              scheduler=scheduler)

    def encode_prompt(self, prompt: str, max_sequence_length: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The text encoder's states [1, max_sequence_length, dim] and the attention mask [1, max_sequence_length]
        of the lower-cased prompt, padded to `max_sequence_length` tokens (the reference's caption cleaning reduces
        to lower-casing without its optional dependencies)."""
        tokens = self.tokenizer([prompt.lower().strip()], padding="max_length", max_length=max_sequence_length,
                                truncation=True, add_special_tokens=True, return_tensors="pt")
        mask = tokens.attention_mask.to(device)
        return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0], mask

    def prepare_condition(self, images: torch.Tensor, positions: Sequence[int], num_frames: int,
                          generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked video's latent [1, 4, t, h, w] (the known frames `images` [N, 3, H, W] in [-1, 1] at
        `positions`, zeros elsewhere, encoded and sampled) and the mask on the latent grid [1, 4, t, h, w]."""
        device, dtype = self._execution_device, self.vae.dtype
        height, width = images.shape[-2:]
        video = torch.zeros(1, 3, num_frames, height, width, device=device, dtype=dtype)
        video[:, :, list(positions)] = images.to(device, dtype).transpose(0, 1)[None]
        known = torch.zeros(num_frames, dtype=torch.bool, device=device)
        known[list(positions)] = True
        posterior, mask = self.encode_masked_video(video, known)
        return posterior.sample(generator).float() * SCALING_FACTOR, mask

    def encode_masked_video(self, video: torch.Tensor, known: torch.Tensor
                            ) -> tuple[DiagonalGaussianDistribution, torch.Tensor]:
        """The VAE posterior of a video [1, 3, T, H, W] in [-1, 1] with the frames not `known` ([T] booleans) set to
        grey, and the mask (1 on those frames) on the latent grid [1, 4, t, h, w]: the first frame repeated
        `temporal_compression` times, the frames folded into the channels. Differentiable in `video`."""
        height, width = video.shape[-2:]
        posterior = self.vae.encode(video * known.view(1, 1, -1, 1, 1)).latent_dist
        factor, spatial = self.vae.temporal_compression, self.vae.spatial_compression
        mask = (~known).float().view(-1, 1, 1, 1).expand(-1, 1, height, width)
        mask = F.interpolate(mask, size=(height // spatial, width // spatial), mode="bilinear")
        mask = torch.cat([mask[:1].expand(factor - 1, -1, -1, -1), mask])  # the first frame counts `factor` times
        return posterior, mask.reshape(1, factor, -1, *mask.shape[-2:])

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[PIL.Image.Image] | torch.Tensor,
        prompt: str = "",
        negative_prompt: str = "",
        positions: Sequence[int] | None = None,
        num_frames: int = 93,
        height: int = 480,
        width: int = 640,
        num_inference_steps: int = 100,
        guidance_scale: float = 7.5,
        max_sequence_length: int = 512,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
        negative_prompt_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
        output_type: Literal["pil", "np", "latent"] = "pil",
        callback: Callable[[int, int], None] | None = None,
        return_dict: bool = True,
    ) -> OpenSoraPlanPipelineOutput | tuple:
        """Generate `num_frames` frames that hold the known frames at `positions`.

        Args:
            images: the known frames, PIL images or a float tensor [N, 3, H, W] in [0, 1], resized to height x width.
            prompt / negative_prompt: text for the conditional / unconditional branch.
            positions: the frame index of each image; default [0] for one image (image-to-video), [0, -1] for two
                (a clip from the first to the last).
            num_frames: 4k + 1 frames, k >= 1 (the VAE compresses time 4x, keeping the first frame single).
            height / width: multiples of 16 (the VAE's 8 times the DiT's 2x2 patches).
            num_inference_steps / guidance_scale: the sampler's steps and the classifier-free guidance weight (off
                at 1 or less).
            generator: seeds the initial noise, then the VAE posterior sample of the masked video.
            latents: initial noise [1, 4, t, h, w] instead of drawing it.
            prompt_embeds / negative_prompt_embeds: (states [1, tokens, dim], mask [1, tokens]) instead of encoding
                the prompts.
            output_type: `pil`, `np` (uint8 [frames, height, width, 3]) or `latent` (the denoised latents).
            callback: called as `callback(step, total)` after each denoising step.
        """
        positions = list(positions) if positions is not None else (FIRST_FRAME if len(images) == 1 else FIRST_AND_LAST)
        factor = self.vae.temporal_compression
        side = self.vae.spatial_compression * self.transformer.config.patch_size
        if len(images) != len(positions):
            raise ValueError(f"{len(images)} image(s) for {len(positions)} position(s)")
        if num_frames < factor + 1 or (num_frames - 1) % factor:
            raise ValueError(f"num_frames must be {factor}k+1 with k >= 1, got {num_frames}")
        if any(not -num_frames <= p < num_frames for p in positions):
            raise ValueError(f"positions {positions} are outside the {num_frames} frames")
        if height % side or width % side:
            raise ValueError(f"height and width must be multiples of {side}, got {height}x{width}")
        if output_type not in ("pil", "np", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'latent', got {output_type!r}")
        device = self._execution_device
        do_guidance = guidance_scale > 1.0

        text, text_mask = prompt_embeds or self.encode_prompt(prompt, max_sequence_length, device)
        if do_guidance:
            uncond, uncond_mask = negative_prompt_embeds or self.encode_prompt(
                negative_prompt, text.shape[1], device)
            text, text_mask = torch.cat([uncond, text]), torch.cat([uncond_mask, text_mask])
        text, text_mask = text.to(device, self.transformer.dtype)[:, None], text_mask.to(device)[:, None]

        known = SEINEPipeline.preprocess(images, height, width)
        latent_shape = (1, self.transformer.config.in_channels, (num_frames - 1) // factor + 1,
                        height // self.vae.spatial_compression, width // self.vae.spatial_compression)
        if latents is None:
            latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device, torch.float32) * self.scheduler.init_noise_sigma
        masked_latent, mask = self.prepare_condition(known, positions, num_frames, generator)
        condition = torch.cat([masked_latent, mask.to(masked_latent.dtype)], dim=1)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents, condition], dim=1)
                model_input = self.scheduler.scale_model_input(torch.cat([model_input] * (1 + do_guidance)), t)
                noise = self.transformer(
                    model_input.to(self.transformer.dtype), t.expand(model_input.shape[0]),
                    encoder_hidden_states=text, encoder_attention_mask=text_mask).sample.float()
                if do_guidance:
                    noise_uncond, noise_text = noise.chunk(2)
                    noise = noise_uncond + guidance_scale * (noise_text - noise_uncond)
                latents = self.scheduler.step(noise, t, latents).prev_sample
                progress_bar.update()
                if callback is not None:
                    callback(i + 1, len(timesteps))

        if output_type == "latent":
            frames = latents
        else:
            video = self.vae.decode((latents / SCALING_FACTOR).to(self.vae.dtype)).sample[0]
            video = ((video.float() / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)  # truncated, as the reference
            frames = video[:, :num_frames, :height, :width].permute(1, 2, 3, 0).cpu().numpy()
            if output_type == "pil":
                frames = [PIL.Image.fromarray(frame) for frame in frames]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return OpenSoraPlanPipelineOutput(frames=frames)


def _local_folder(source: str, what: str, how: str) -> Path:
    """`source` as a local folder, or the Hugging Face cache snapshot of a repo id; FileNotFoundError naming how to
    get it otherwise."""
    root = Path(source).expanduser()
    if root.is_dir():
        return root
    try:
        return Path(snapshot_download(source, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as error:
        raise FileNotFoundError(f"{what} {source!r} is neither a local folder nor in the Hugging Face cache. "
                                f"Get it with `{how}`.") from error


def _require(root: Path, patterns: Sequence[Sequence[str]], what: str, how: str) -> None:
    """Each entry of `patterns`: alternatives (globs under `root`), one of which must exist."""
    missing = [" or ".join(options) for options in patterns
               if not any(glob.glob(str(root / option)) for option in options)]
    if missing:
        raise FileNotFoundError(f"{what} at {root} lacks {', '.join(missing)}. Get it with `{how}`.")


OSP_DOWNLOAD = f"hf download {OSP_REPO_ID} --include '{OSP_SUBFOLDER}/*' 'vae/*'"
MT5_DOWNLOAD = f"hf download {MT5_REPO_ID} --include '*.json' --include spiece.model --include pytorch_model.bin"
_WEIGHTS = ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")


def load_open_sora_plan_pipeline(osp_model: str = OSP_REPO_ID, text_model: str = MT5_REPO_ID,
                                 device: str | torch.device | None = None, dtype: torch.dtype | None = None
                                 ) -> OpenSoraPlanPipeline:
    """The full pipeline from the published weights, all from local files (no download): the `93x480p_i2v` DiT and
    the `vae/` of `osp_model` (a folder or a cached repo id), mT5-XXL's encoder and tokenizer from `text_model`.

    `device` defaults to CUDA when available, `dtype` to bf16 there (as the reference samples) and fp32 on the CPU.
    The VAE encodes and decodes in the reference sampler's tiles. Raises FileNotFoundError, naming what is missing
    and how to download it, before any model is built.
    """
    root = _local_folder(osp_model, "Open-Sora-Plan model", OSP_DOWNLOAD)
    _require(root, [[f"{OSP_SUBFOLDER}/config.json"], [f"{OSP_SUBFOLDER}/{w}" for w in _WEIGHTS], ["vae/config.json"],
                    ["vae/*.ckpt", *(f"vae/{w}" for w in _WEIGHTS)]], "Open-Sora-Plan model", OSP_DOWNLOAD)
    text_root = _local_folder(text_model, "mT5 text encoder", MT5_DOWNLOAD)
    _require(text_root, [["config.json"], ["spiece.model", "tokenizer.json"],
                         ["pytorch_model*.bin", "model*.safetensors"]], "mT5 text encoder", MT5_DOWNLOAD)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    vae = OpenSoraCausalVAE.from_reference_folder(root / "vae", dtype)
    vae.enable_tiling()
    pipe = OpenSoraPlanPipeline(
        tokenizer=AutoTokenizer.from_pretrained(text_root),
        text_encoder=MT5EncoderModel.from_pretrained(text_root, dtype=dtype),
        vae=vae,
        transformer=OpenSoraInpaintTransformer3D.from_pretrained(root, subfolder=OSP_SUBFOLDER, torch_dtype=dtype,
                                                                 local_files_only=True),
        scheduler=PNDMScheduler(),
    )
    return pipe.to(device)


TINY_TRANSFORMER = dict(
    num_layers=2, attention_head_dim=12, num_attention_heads=2, patch_size_t=1, patch_size=2,
    norm_type="ada_norm_single", caption_channels=32, cross_attention_dim=24, in_channels=4, out_channels=4,
    sample_size=[8, 8], sample_size_t=3, activation_fn="gelu-approximate", attention_bias=True,
    norm_elementwise_affine=False, norm_eps=1e-6, use_rope=True, interpolation_scale_t=1.0, interpolation_scale_h=1.0,
    interpolation_scale_w=1.0,
)
"""The published model's structure at 2 blocks of 2 heads of 12 channels, reading 32-wide text states."""
TINY_VAE = dict(
    hidden_size=32, hidden_size_mult=[1, 1, 1, 1], num_res_blocks=0, encoder_conv_in="Conv2d",
    encoder_attention="AttnBlock3DFix", decoder_attention="AttnBlock3DFix",
    encoder_resnet_blocks=["ResnetBlock2D", "ResnetBlock2D", "ResnetBlock3D", "ResnetBlock3D"],
    encoder_spatial_downsample=["Downsample", "Spatial2xTime2x3DDownsample", "Spatial2xTime2x3DDownsample", ""],
    encoder_temporal_downsample=["", "", "", ""],
    decoder_spatial_upsample=["", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample", "Spatial2xTime2x3DUpsample"],
    decoder_temporal_upsample=["", "", "", ""],
)
"""The v1.2 VAE's structure (8x spatial, 4x temporal) at 32 channels (its GroupNorms have 32 groups), with the fewest
ResNets (one per decoder level) so that a 64x64 clip decodes quickly."""


def tiny_open_sora_plan_pipeline(seed: int = 15) -> OpenSoraPlanPipeline:
    """An Open-Sora-Plan pipeline with small random components (seeded) for tests and the `tiny` preset: the same
    classes and code as the full one, an mT5 encoder of two layers over the in-memory character-level tokenizer."""
    from mora_agents.models.tiny_backends import tiny_mt5_encoder
    from mora_agents.models.tokenizer import tiny_t5_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = tiny_mt5_encoder()
        vae = OpenSoraCausalVAE.from_config(TINY_VAE)
        transformer = OpenSoraInpaintTransformer3D.from_config(TINY_TRANSFORMER)
    vae.enable_tiling()
    pipe = OpenSoraPlanPipeline(tiny_t5_tokenizer(), text_encoder, vae.eval(), transformer.eval(),
                                PNDMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe
