"""SEINE generation (Chen et al., ICLR 2024) as a diffusers pipeline: transitions and image-to-video.

The UNet sees [noisy latent 4 | mask 1 | masked-video latent 4] channels. The mask is 0 on known frames
and 1 on frames to generate; the masked video holds the known frames and zeros (mid-grey) elsewhere and
is VAE-encoded, as in the reference (so unknown frames carry the latent of a grey frame).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from mora_agents.models.seine_unet import SEINE_FILENAME, SEINE_REPO_ID, SEINEUNet3D
from mora_agents.models.tokenizer import tiny_clip_tokenizer

SD_MODEL_ID = "CompVis/stable-diffusion-v1-4"
KNOWN_POSITIONS = {"onelast1": [0, -1], "first1": [0]}  # mask type -> positions of the known frames
DEFAULT_STEPS = {"ddpm": 250, "ddim": 50}


@dataclass
class SEINEPipelineOutput(BaseOutput):
    """`frames`: the generated video, a list of RGB PIL images or a uint8 array [frames, height, width, 3]."""

    frames: list[PIL.Image.Image] | np.ndarray


def seine_scheduler() -> DDPMScheduler:
    """The reference's diffusion: 1000 linear betas from 1e-4 to 0.02, epsilon prediction, "fixed large"
    variance, no clipping; `set_timesteps(n)` respaces evenly over [0, 999] as the reference does."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        variance_type="fixed_large",
        clip_sample=False,
        prediction_type="epsilon",
        timestep_spacing="linspace",
    )


class SEINEPipeline(DiffusionPipeline):
    """SEINE video generation around known frames: a transition between two frames, or one frame animated.

    Components: an SD v1.4 `AutoencoderKL`, a CLIP text encoder and tokenizer, a `SEINEUNet3D`, and a
    `DDPMScheduler` holding the noise schedule (see `seine_scheduler`).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: SEINEUNet3D,
        scheduler: DDPMScheduler,
    ):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode_prompt(self, prompt: str, device: torch.device) -> torch.Tensor:
        """CLIP's last hidden state [1, max_length, dim] for `prompt`, padded to the tokenizer's max length."""
        tokens = self.tokenizer(
            [prompt],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(device))[0]

    @staticmethod
    def preprocess(images: Sequence[PIL.Image.Image] | torch.Tensor, height: int, width: int) -> torch.Tensor:
        """PIL images, or a float tensor [N, 3, H, W] in [0, 1], to [N, 3, height, width] in [-1, 1] (bilinear)."""
        if isinstance(images, torch.Tensor):
            frames = list(images.float().cpu())
        else:
            frames = [
                torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255 for image in images
            ]
        resized = [
            F.interpolate(frame[None], size=(height, width), mode="bilinear", align_corners=False) for frame in frames
        ]
        return torch.cat(resized) * 2 - 1

    def _sampler(self, sampler: str) -> DDPMScheduler | DDIMScheduler:
        """The registered DDPM scheduler, or a DDIM one (eta 0) on the same betas with evenly spaced timesteps."""
        if sampler == "ddpm":
            return self.scheduler
        if sampler == "ddim":
            return DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")

    @torch.no_grad()
    def __call__(
        self,
        images: Sequence[PIL.Image.Image] | torch.Tensor,
        prompt: str = "smooth transition",
        negative_prompt: str = "",
        mask_type: Literal["onelast1", "first1"] = "onelast1",
        num_frames: int = 16,
        height: int = 512,
        width: int = 512,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        num_inference_steps: int | None = None,
        guidance_scale: float = 8.0,
        generator: torch.Generator | None = None,
        output_type: Literal["pil", "np"] = "pil",
        callback: Callable[[int, int], None] | None = None,
        return_dict: bool = True,
    ) -> SEINEPipelineOutput | tuple:
        """Generate a `num_frames` video that holds the known frames at its start (and end).

        Args:
            images: the known frames: [first] for `first1` (image-to-video), [first, last] for `onelast1`
                (transition). PIL images, or a float tensor [N, 3, H, W] in [0, 1]; resized to height x width.
            prompt / negative_prompt: text for the conditional / unconditional branch.
            mask_type: `onelast1` keeps the first and last frames, `first1` the first frame.
            height / width: output size, multiples of 8 (512x512 and 320x512 are SEINE's sizes).
            sampler: `ddpm` (the reference sampler, 250 steps by default) or `ddim` (50 steps by default).
            num_inference_steps: respaced steps; defaults per sampler as above.
            guidance_scale: classifier-free guidance weight; guidance is off when <= 1.
            generator: seeds the initial noise, the VAE posterior sample and the DDPM noise.
            output_type: `pil` for a list of PIL images, `np` for a uint8 array [frames, height, width, 3].
            callback: called as `callback(step, total)` after each denoising step.

        Returns:
            `SEINEPipelineOutput` (or a 1-tuple) whose `frames` holds all `num_frames` frames, known positions
            included (there the VAE's reconstruction of the given frame).
        """
        positions = KNOWN_POSITIONS.get(mask_type)
        if positions is None:
            raise ValueError(f"mask_type must be one of {list(KNOWN_POSITIONS)}, got {mask_type!r}")
        if len(images) != len(positions):
            raise ValueError(f"mask_type {mask_type!r} needs {len(positions)} known frame(s), got {len(images)}")
        if num_frames <= len(positions):
            raise ValueError(f"num_frames must exceed the {len(positions)} known frame(s), got {num_frames}")
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        scheduler = self._sampler(sampler)
        device = self._execution_device
        unet_dtype = self.unet.dtype

        # Text: [unconditional, conditional] in one batch when guiding.
        do_guidance = guidance_scale > 1.0
        text = self.encode_prompt(prompt, device)
        if do_guidance:
            text = torch.cat([self.encode_prompt(negative_prompt, device), text])
        text = text.to(unet_dtype)

        # Known frames in place, zeros elsewhere; mask 0 on known frames, 1 on frames to generate.
        known_frames = self.preprocess(images, height, width)
        video = torch.zeros(num_frames, 3, height, width)
        mask = torch.ones(num_frames)
        video[positions] = known_frames
        mask[positions] = 0
        posterior = self.vae.encode(video.to(device, self.vae.dtype)).latent_dist
        masked_latents = posterior.sample(generator) * self.vae.config.scaling_factor
        masked_latents = masked_latents.transpose(0, 1)[None]  # [1, 4, F, h, w]
        mask = mask.to(device).view(1, 1, num_frames, 1, 1).expand(1, 1, *masked_latents.shape[2:])
        condition = torch.cat([mask, masked_latents.float()], dim=1).to(unet_dtype)

        latent_shape = (1, self.unet.config.out_channels, num_frames, *masked_latents.shape[3:])
        latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents * scheduler.init_noise_sigma

        scheduler.set_timesteps(num_inference_steps or DEFAULT_STEPS[sampler], device=device)
        timesteps = scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([latents.to(unet_dtype), condition], dim=1)
                if do_guidance:
                    model_input = torch.cat([model_input] * 2)
                noise_pred = self.unet(model_input, t, encoder_hidden_states=text).sample.float()
                if do_guidance:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
                latents = scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
                progress_bar.update()
                if callback is not None:
                    callback(i + 1, len(timesteps))

        latents = latents[0].transpose(0, 1) / self.vae.config.scaling_factor  # [F, 4, h, w]
        frames = self.vae.decode(latents.to(self.vae.dtype)).sample
        frames = ((frames.float() * 0.5 + 0.5) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        frames = frames.permute(0, 2, 3, 1).cpu().numpy()
        self.maybe_free_model_hooks()
        if output_type == "pil":
            frames = [PIL.Image.fromarray(frame) for frame in frames]
        if not return_dict:
            return (frames,)
        return SEINEPipelineOutput(frames=frames)


def _seine_checkpoint_path(seine_checkpoint: str) -> Path:
    """A local `seine.pt` (or a folder holding it), else the file from the Hugging Face cache of a repo id."""
    path = Path(seine_checkpoint).expanduser()
    if path.is_dir():
        path = path / SEINE_FILENAME
    if path.is_file():
        return path
    try:
        return Path(hf_hub_download(seine_checkpoint, SEINE_FILENAME, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"SEINE checkpoint {seine_checkpoint!r} is neither a local file nor in the Hugging Face cache. "
            f"Get it from the Hugging Face repo {SEINE_REPO_ID} (file {SEINE_FILENAME}): "
            f"`hf download {SEINE_REPO_ID} {SEINE_FILENAME}`, or pass the path of a downloaded {SEINE_FILENAME}."
        ) from error


_SD_FILES = (  # each entry: alternatives, one of which must exist
    ("vae/config.json",),
    ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
    ("text_encoder/config.json",),
    ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
    ("tokenizer/vocab.json",),
    ("tokenizer/merges.txt",),
)


def _sd_model_path(sd_model: str) -> Path:
    """The local folder of the SD v1.4 components: `sd_model` itself or its Hugging Face cache snapshot."""
    how = f"`hf download {sd_model} --include 'vae/*' 'text_encoder/*' 'tokenizer/*'`"
    root = Path(sd_model).expanduser()
    if not root.is_dir():
        try:
            root = Path(snapshot_download(sd_model, local_files_only=True))
        except (LocalEntryNotFoundError, ValueError) as error:
            raise FileNotFoundError(
                f"Stable Diffusion model {sd_model!r} (VAE, text encoder, tokenizer) is neither a local folder nor "
                f"in the Hugging Face cache. Get it with {how}."
            ) from error
    missing = [" or ".join(options) for options in _SD_FILES if not any((root / o).is_file() for o in options)]
    if missing:
        raise FileNotFoundError(f"{sd_model!r} at {root} lacks {', '.join(missing)}. Get them with {how}.")
    return root


def load_seine_pipeline(
    seine_checkpoint: str = SEINE_REPO_ID,
    sd_model: str = SD_MODEL_ID,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> SEINEPipeline:
    """The full SEINE pipeline from the published weights, all from local files (no download).

    Args:
        seine_checkpoint: a path to `seine.pt` (or its folder), or a Hugging Face repo id whose cached
            `seine.pt` to use.
        sd_model: a local folder or a cached Hugging Face repo id with SD v1.4's vae, text_encoder, tokenizer.
        device: defaults to CUDA when available, else the CPU.
        dtype: defaults to fp16 on CUDA and fp32 on the CPU.

    Raises:
        FileNotFoundError: naming what is missing and how to download it, before any model is built.
    """
    checkpoint = _seine_checkpoint_path(seine_checkpoint)
    sd_root = _sd_model_path(sd_model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    pipe = SEINEPipeline(
        vae=AutoencoderKL.from_pretrained(sd_root, subfolder="vae"),
        text_encoder=CLIPTextModel.from_pretrained(sd_root, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(sd_root, subfolder="tokenizer"),
        unet=SEINEUNet3D.from_seine_checkpoint(checkpoint),
        scheduler=seine_scheduler(),
    )
    return pipe.to(device, dtype)


TINY_UNET_CONFIG = {
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "layers_per_block": 1,
    "attention_head_dim": [1, 2],
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "in_channels": 9,
    "out_channels": 4,
}


def tiny_seine_pipeline(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> SEINEPipeline:
    """A SEINE pipeline with small random components (seeded by `seed`) for tests and the `tiny` preset.

    It runs the same code as the full pipeline; a 16-frame 64x64 DDIM transition takes seconds on a CPU.
    """
    tokenizer = tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=(16, 16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TINY_UNET_CONFIG["cross_attention_dim"],
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = SEINEUNet3D.from_config(TINY_UNET_CONFIG)
    pipe = SEINEPipeline(vae, text_encoder, tokenizer, unet, seine_scheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if dtype != torch.float32:  # diffusers warns on every dtype cast, so skip the no-op one
        pipe.to(dtype=dtype)
    return pipe
