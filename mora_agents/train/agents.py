"""The trainable agents: each one's UNet, its diffusion objective, its modulation token, and how it takes part in a
chain of agents.

Each agent learns from the accepted samples with its own model's training objective:

- text-to-image (SDXL base): the first frame from the enhanced prompt; epsilon prediction on DDPM noise;
- image-to-image (InstructPix2Pix): the edited frame from the source frame and the instruction; epsilon prediction;
- image-to-video (SVD-XT): the clip from its start frame; EDM: log-normal sigmas, v (F-) prediction.

Two objectives use them (`trainer.py`). `per-agent`: each agent's loss on the sample's recorded intermediates
(teacher forcing). `chain` (the paper's L_total = L(O_n, V_target)): the upstream agents generate (`generate`, with
gradients through their last K sampling steps) and the downstream agent's loss against the accepted clip is
computed from what they made (`sample_loss(rows, inputs)`), so it reaches the upstream weights and tokens.

An agent names the sample field it makes (`output`) and the one it starts from (`input_field`); the chain of a
sample follows those files (`chain`). A new agent (say SD3 feeding Open-Sora-Plan) subclasses `TrainableAgent`:
`uses`, `input_field`, `encode_sample`, `token_embedding`, `sample_loss` (with `inputs`: images in [-1, 1] replacing
its recorded input) and, for an upstream agent, `generate`; `AGENT_CLASSES` lists agents upstream first.

The conditioning comes from the pipelines' own helpers (`encode_prompt`, `_encode_prompt`, `prepare_image_latents`,
`_get_add_time_ids`) or their differentiable equivalents (SVD's image tokens), so training sees what inference
feeds the UNet. Everything that does not change during training (text embeddings, target latents) is encoded once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.training_utils import compute_snr
from PIL import Image, ImageDraw
from torch import nn

from mora_agents.media import fit_image, load_image, read_video, resize_frames
from mora_agents.pipelines.adapters import Modulation
from mora_agents.tools.defaults import DEFAULTS
from mora_agents.train.dataset import Sample

MOD_TOKEN = "[Mod]"
SVD_P_MEAN, SVD_P_STD = 0.7, 1.6
"""SVD's training noise distribution: log sigma ~ N(0.7, 1.6^2) (its image-to-video fine-tuning)."""
VAE_CHUNK = 8
"""Frames per VAE call when encoding a clip."""
CLIP_SIZE = 224
"""SVD's image encoder input (what its pipeline resizes to)."""

Inputs = Sequence[torch.Tensor | None]
"""Per cache row of a call: an image [3, H, W] in [-1, 1] replacing the agent's recorded input, or None (kept)."""


@dataclass(frozen=True)
class Sampling:
    """How an upstream agent generates in the chain objective: DDIM (eta 0) with `steps` steps, of which the last
    `backprop` carry gradients (truncated backpropagation)."""

    steps: int
    backprop: int


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma (Hang et al. 2023) as a weight on the loss of the model's own output.

    The weight is min(SNR, gamma) on the x0-error; an epsilon-error equals the x0-error times SNR, a v-error
    times SNR + 1, so the weight on an epsilon loss is min(SNR, gamma) / SNR and on a v loss min(SNR, gamma) / (SNR + 1).
    """
    clipped = snr.clamp(max=gamma)
    return clipped / snr if prediction == "epsilon" else clipped / (snr + 1)


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).flatten(1).mean(1)


def _fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An image [3, H, W] at `size` (height, width), resized (differentiably) only if it is not already."""
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


class TrainableAgent(nn.Module):
    """One agent's UNet (the only trained part, with its modulation token) and its training objective.

    `encode` caches the fixed inputs of the samples the agent learns from. `forward(indices)` is the mean loss over
    the batch's samples it learns from (with `inputs`: from images its upstream agent made); with `sampling`, it
    generates instead (`generate`). A call with none of its samples gives a zero loss that still runs the UNet, so
    that every process of a distributed run takes part in each step (DDP needs every rank's backward).
    """

    name: ClassVar[str]
    model: ClassVar[str]
    output: ClassVar[str]
    """The sample field holding what the agent makes (`first_frame`, `edited_frame`, `file_name`)."""

    def __init__(self, pipe, device: torch.device, snr_gamma: float, preset: str) -> None:
        super().__init__()
        self.pipe = pipe
        self.unet = pipe.unet
        self.device = device
        """Where the agent computes (its UNet may wait on the CPU between uses under the 24gb memory profile)."""
        self.snr_gamma = snr_gamma
        self.preset = preset
        self.modulation: Modulation | None = None
        self.generator = torch.Generator(device) if device.type != "meta" else None
        """The source of noise, timesteps and sigmas (the trainer seeds it at every step; none on meta, where
        `mora bench` counts FLOPs)."""
        self.rows: dict[int, int] = {}
        """Dataset index -> row of the cache, for the samples this agent learns from."""
        self.cache: dict[str, torch.Tensor] = {}
        self.size: tuple[int, int] = (0, 0)
        """(height, width) of the images the agent works on."""

    @staticmethod
    def uses(sample: Sample) -> bool:
        """Whether the agent learns from this sample."""
        raise NotImplementedError

    @staticmethod
    def input_field(sample: Sample) -> str | None:
        """The sample field holding the image the agent starts from (None: it starts from text only)."""
        return None

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The fixed tensors of one sample, each with a leading batch dimension of 1."""
        raise NotImplementedError

    def token_embedding(self) -> torch.Tensor:
        """E_i("[Mod]"): the agent's encoder's embedding of the modulation token, a [width] vector."""
        raise NotImplementedError

    def sample_loss(self, rows: list[int], inputs: Inputs | None = None) -> torch.Tensor:
        """The weighted loss of each of `rows` (cache rows), [len(rows)]; `inputs` replace recorded inputs."""
        raise NotImplementedError

    def generate(self, rows: list[int], inputs: Inputs | None, sampling: Sampling) -> torch.Tensor:
        """What the agent makes for `rows`, [len(rows), 3, H, W] in [-1, 1], with gradients through the last
        `sampling.backprop` steps (and through `inputs`)."""
        raise NotImplementedError(f"the {self.name} agent makes the clip; nothing is downstream of it")

    @torch.no_grad()
    def encode(self, samples: list[Sample], data_dir: Path, size: tuple[int, int]) -> None:
        self.size = (size[1], size[0])
        encoded = []
        for index, sample in enumerate(samples):
            if self.uses(sample):
                self.rows[index] = len(encoded)
                encoded.append(self.encode_sample(sample, data_dir, size))
        self.cache = self.collate(encoded) if encoded else {}

    def collate(self, encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {key: torch.cat([e[key] for e in encoded]) for key in encoded[0]}

    def randn(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)

    def per_sample(self, count: int, draw: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """`draw()` once per sample, in order, each result stacked over the samples: a batch gets the random numbers
        its samples would get one at a time (so micro-batches compute the same step)."""
        return tuple(torch.stack(parts) for parts in zip(*(draw() for _ in range(count))))

    def add_modulation(self, z: torch.Tensor) -> None:
        """Give the agent a trainable modulation token z, appended to every UNet call's conditioning."""
        self.modulation = Modulation(z.float().to(self.device), trainable=True)
        self.modulation.attach(self.unet)

    def forward(self, indices: list[int], inputs: dict[int, torch.Tensor] | None = None,
                sampling: Sampling | None = None) -> torch.Tensor:
        """The mean loss over the agent's samples among `indices` (dataset indices), or with `sampling` what it
        generates for them; `inputs`: images by dataset index replacing recorded inputs."""
        used = [i for i in indices if i in self.rows]
        if not used:
            return self.sample_loss([0]).sum() * 0.0
        rows = [self.rows[i] for i in used]
        given = [(inputs or {}).get(i) for i in used]
        given = given if any(image is not None for image in given) else None
        if sampling is not None:
            return self.generate(rows, given, sampling)
        return self.sample_loss(rows, given).mean()


def chain(sample: Sample, names: Sequence[str]) -> list[str]:
    """The agents among `names` that the sample's clip passes through, upstream first: the agent that made the clip,
    the one that made its input (the same file), and so on. Empty when the clip's agent is not among `names`."""
    makers = {getattr(sample, AGENT_CLASSES[n].output): n for n in names if AGENT_CLASSES[n].uses(sample)}
    path: list[str] = []
    agent = makers.get(sample.file_name)
    while agent is not None and agent not in path:
        path.insert(0, agent)
        field = AGENT_CLASSES[agent].input_field(sample)
        agent = makers.get(getattr(sample, field)) if field else None
    return path


def _mean_token(embeds: torch.Tensor, tokenizer) -> torch.Tensor:
    """The mean of a prompt embedding over the tokens of MOD_TOKEN (without start, end and padding tokens)."""
    count = len(tokenizer(MOD_TOKEN).input_ids) - 2
    return embeds[0, 1:1 + count].float().mean(0)


def _pixels(image: Image.Image, processor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return processor.preprocess(image).to(device, dtype)


class _NoisePredictionAgent(TrainableAgent):
    """An epsilon-prediction image agent trained on its scheduler config's DDPM noise schedule, timesteps uniform;
    in a chain it generates with DDIM from the same config and classifier-free guidance at its tool's defaults."""

    def __init__(self, pipe, device: torch.device, snr_gamma: float, preset: str) -> None:
        super().__init__(pipe, device, snr_gamma, preset)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def guided(self, latents: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        """The guided noise prediction of one sampling step (`condition`: from `generation_condition`)."""
        raise NotImplementedError

    def generation_condition(self, rows: list[int], inputs: Inputs | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _latents(self, image: Image.Image) -> torch.Tensor:
        vae = self.pipe.vae
        pixels = _pixels(image, self.pipe.image_processor, vae.device, vae.dtype)
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor

    def sample_loss(self, rows: list[int], inputs: Inputs | None = None) -> torch.Tensor:
        latents = self.cache["latents"][rows]
        steps = self.noise_scheduler.config.num_train_timesteps
        noise, uniform = self.per_sample(len(rows), lambda: (
            self.randn(latents.shape[1:]), torch.rand((), generator=self.generator, device=self.device)))
        timesteps = (uniform * steps).long().clamp(max=steps - 1)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.noise_scheduler.config.prediction_type
        target = noise if prediction == "epsilon" else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        weight = min_snr_weight(compute_snr(self.noise_scheduler, timesteps), self.snr_gamma, prediction)
        return weight * _per_sample_mse(self.predict(noisy, timesteps, rows), target)

    def generate(self, rows: list[int], inputs: Inputs | None, sampling: Sampling) -> torch.Tensor:
        # "trailing" steps start at the full noise level and the last one ends at the model's clean estimate
        # (alpha 1), so that it, the step K = 1 backpropagates through, depends on the prediction; latents unclipped
        scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config, timestep_spacing="trailing",
                                              set_alpha_to_one=True, clip_sample=False)
        scheduler.set_timesteps(sampling.steps, device=self.device)
        (latents,) = self.per_sample(len(rows), lambda: (self.randn(self.cache["latents"].shape[1:]),))
        latents = latents * scheduler.init_noise_sigma
        condition = self.generation_condition(rows, inputs)
        tracking, first_tracked = torch.is_grad_enabled(), len(scheduler.timesteps) - sampling.backprop
        for i, t in enumerate(scheduler.timesteps):
            with torch.set_grad_enabled(tracking and i >= first_tracked):
                latents = scheduler.step(self.guided(latents, t, condition), t, latents).prev_sample
        vae = self.pipe.vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        # clamped as inference clamps it, but a saturated pixel still passes its gradient (straight-through)
        return image + (image.clamp(-1, 1) - image).detach()


class TextToImageAgent(_NoisePredictionAgent):
    """SDXL base: the first frame from the enhanced prompt (the refiner is not trained)."""

    name, model, output = "text_to_image", "sdxl_base", "first_frame"

    @staticmethod
    def uses(sample: Sample) -> bool:
        return sample.first_frame is not None

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        image = fit_image(load_image(data_dir / sample.first_frame), *size)
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            sample.enhanced_prompt, device=self.device, do_classifier_free_guidance=True)
        time_ids = self.pipe._get_add_time_ids(size[::-1], (0, 0), size[::-1], dtype=embeds.dtype,
                                               text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim)
        return {"latents": self._latents(image), "embeds": embeds, "pooled": pooled, "time_ids": time_ids.to(self.device),
                "negative": negative, "negative_pooled": negative_pooled}

    def token_embedding(self) -> torch.Tensor:
        embeds = self.pipe.encode_prompt(MOD_TOKEN, device=self.device, do_classifier_free_guidance=False)[0]
        return _mean_token(embeds, self.pipe.tokenizer)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        added = {"text_embeds": self.cache["pooled"][rows], "time_ids": self.cache["time_ids"][rows]}
        return self.unet(noisy, timesteps, encoder_hidden_states=self.cache["embeds"][rows],
                         added_cond_kwargs=added).sample

    def generation_condition(self, rows: list[int], inputs: Inputs | None) -> dict[str, torch.Tensor]:
        c = self.cache
        return {"embeds": torch.cat([c["negative"][rows], c["embeds"][rows]]),
                "pooled": torch.cat([c["negative_pooled"][rows], c["pooled"][rows]]),
                "time_ids": c["time_ids"][rows].repeat(2, 1)}

    def guided(self, latents: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        guidance = DEFAULTS[self.preset]["text_to_image"]["guidance_scale"]
        added = {"text_embeds": condition["pooled"], "time_ids": condition["time_ids"]}
        uncond, text = self.unet(torch.cat([latents, latents]), t, encoder_hidden_states=condition["embeds"],
                                 added_cond_kwargs=added).sample.chunk(2)
        return uncond + guidance * (text - uncond)


class ImageToImageAgent(_NoisePredictionAgent):
    """InstructPix2Pix: the edited frame from the source frame and the instruction."""

    name, model, output = "image_to_image", "instruct_pix2pix", "edited_frame"

    @staticmethod
    def uses(sample: Sample) -> bool:
        return sample.edited_frame is not None

    @staticmethod
    def input_field(sample: Sample) -> str | None:
        return "source_frame"

    def _source_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """InstructPix2Pix's image conditioning: the VAE's mode, unscaled (as `prepare_image_latents`)."""
        vae = self.pipe.vae
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        source = fit_image(load_image(data_dir / sample.source_frame), *size)
        edited = fit_image(load_image(data_dir / sample.edited_frame), *size)
        vae = self.pipe.vae
        source_latents = self.pipe.prepare_image_latents(
            _pixels(source, self.pipe.image_processor, vae.device, vae.dtype), 1, 1, vae.dtype, vae.device, False)
        embeds, negative, _ = self.pipe._encode_prompt(sample.instruction, self.device, 1, True).chunk(3)
        return {"latents": self._latents(edited), "source": source_latents, "embeds": embeds, "negative": negative}

    def token_embedding(self) -> torch.Tensor:
        return _mean_token(self.pipe._encode_prompt(MOD_TOKEN, self.device, 1, False), self.pipe.tokenizer)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        model_input = torch.cat([noisy, self.cache["source"][rows].to(noisy.dtype)], dim=1)
        return self.unet(model_input, timesteps, encoder_hidden_states=self.cache["embeds"][rows]).sample

    def generation_condition(self, rows: list[int], inputs: Inputs | None) -> dict[str, torch.Tensor]:
        c = self.cache
        source = c["source"][rows]
        if inputs is not None:
            source = torch.stack([self._source_latents(_fit(image, self.size)[None])[0] if image is not None else s
                                  for image, s in zip(inputs, source)])
        return {"embeds": torch.cat([c["embeds"][rows], c["negative"][rows], c["negative"][rows]]),
                "source": torch.cat([source, source, torch.zeros_like(source)])}

    def guided(self, latents: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        """InstructPix2Pix's guidance: text and image scales over (text + image, image, neither)."""
        tool = DEFAULTS[self.preset]["edit_image"]
        model_input = torch.cat([torch.cat([latents] * 3), condition["source"].to(latents.dtype)], dim=1)
        text, image, uncond = self.unet(model_input, t, encoder_hidden_states=condition["embeds"]).sample.chunk(3)
        return uncond + tool["guidance_scale"] * (text - image) + tool["image_guidance_scale"] * (image - uncond)


def mod_token_image(size: int) -> Image.Image:
    """The modulation token shown as an image: "[Mod]" in black on white, for SVD's image-only encoder."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), MOD_TOKEN)
    draw.text(((size - box[2]) / 2, (size - box[3]) / 2), MOD_TOKEN, fill="black")
    return image


class ImageToVideoAgent(TrainableAgent):
    """SVD-XT: the clip from its start frame, with the sample's fps, motion bucket and noise augmentation.

    SVD is an EDM model (sigma_data 1): the UNet sees c_in * x at c_noise = log(sigma) / 4 and its output F gives the
    denoised latents D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * F (the scheduler's v-prediction). The loss
    is on F against its target (noise - sigma * x0) / sqrt(sigma^2 + 1), with the min-SNR weight of a v loss at
    SNR = 1 / sigma^2. Its conditioning (the start frame's CLIP token and VAE latents) is computed differentiably,
    so in a chain the loss reaches the agent that made the start frame.
    """

    name, model, output = "image_to_video", "svd", "file_name"

    def __init__(self, pipe, device: torch.device, snr_gamma: float, preset: str, frames: int) -> None:
        super().__init__(pipe, device, snr_gamma, preset)
        self.frames = frames
        config = pipe.scheduler.config
        self.sigma_range = (config.sigma_min, config.sigma_max)

    @staticmethod
    def uses(sample: Sample) -> bool:
        return True

    @staticmethod
    def input_field(sample: Sample) -> str | None:
        return "start_frame" if sample.start_frame else "edited_frame" if sample.edited_frame else "first_frame"

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """SVD's conditioning token of images [B, 3, H, W] in [-1, 1], [B, 1, width]: `_encode_image`'s steps
        (antialiased resize to 224, CLIP normalisation, the image encoder) in torch, so gradients pass."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

        extractor, encoder = self.pipe.feature_extractor, self.pipe.image_encoder
        pixels = (_resize_with_antialiasing(images.float(), (CLIP_SIZE, CLIP_SIZE)) + 1) / 2
        mean = torch.tensor(extractor.image_mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(extractor.image_std, device=pixels.device).view(1, 3, 1, 1)
        return encoder(((pixels - mean) / std).to(encoder.device, encoder.dtype)).image_embeds.unsqueeze(1)

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        width, height = size
        start = fit_image(load_image(data_dir / sample.clip_start), width, height)
        clip, clip_fps = read_video(data_dir / sample.file_name)
        frames = resize_frames(clip[:self.frames], width, height)
        vae = self.pipe.vae
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).to(vae.device, vae.dtype) / 127.5 - 1
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(VAE_CHUNK)])
        start_pixels = self.pipe.video_processor.preprocess(start, height=height, width=width).to(vae.device)
        embeds = self.image_tokens(start_pixels)
        time_ids = self.pipe._get_add_time_ids(round(sample.fps or clip_fps) - 1, sample.motion_bucket_id,
                                               sample.noise_aug_strength, embeds.dtype, 1, 1, False)
        return {"latents": (latents * vae.config.scaling_factor)[None], "embeds": embeds, "start": start_pixels,
                "time_ids": time_ids.to(self.device),
                "noise_aug": torch.tensor([sample.noise_aug_strength], device=self.device)}

    def collate(self, encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Clips shorter than `frames` shorten every clip to the shortest (a batch's clips have one length)."""
        frames = min(e["latents"].shape[1] for e in encoded)
        return super().collate([{**e, "latents": e["latents"][:, :frames]} for e in encoded])

    def token_embedding(self) -> torch.Tensor:
        pixels = self.pipe.video_processor.preprocess(mod_token_image(CLIP_SIZE), height=CLIP_SIZE, width=CLIP_SIZE)
        return self.image_tokens(pixels.to(self.device))[0, 0].float()

    def sample_loss(self, rows: list[int], inputs: Inputs | None = None) -> torch.Tensor:
        latents, start, embeds = self.cache["latents"][rows], self.cache["start"][rows], self.cache["embeds"][rows]
        if inputs is not None:  # start frames an upstream agent made: the conditioning follows them
            start = torch.stack([_fit(image, self.size) if image is not None else s for image, s in zip(inputs, start)])
            embeds = self.image_tokens(start)
        normal, noise, start_noise = self.per_sample(len(rows), lambda: (
            self.randn(()), self.randn(latents.shape[1:]), self.randn(start.shape[1:])))
        sigma = (normal * SVD_P_STD + SVD_P_MEAN).exp().clamp(*self.sigma_range)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = latents + s * noise
        augmented = start + self.cache["noise_aug"][rows].view(-1, 1, 1, 1) * start_noise
        condition = self.pipe._encode_vae_image(augmented, self.device, 1, False)
        condition = condition.unsqueeze(1).repeat(1, latents.shape[1], 1, 1, 1).to(noisy.dtype)
        model_input = torch.cat([noisy / (s**2 + 1).sqrt(), condition], dim=2)
        output = self.unet(model_input, 0.25 * sigma.log(), encoder_hidden_states=embeds,
                           added_time_ids=self.cache["time_ids"][rows]).sample
        target = (noise - s * latents) / (s**2 + 1).sqrt()
        return min_snr_weight(sigma**-2, self.snr_gamma, "v_prediction") * _per_sample_mse(output, target)


AGENT_CLASSES: dict[str, type[TrainableAgent]] = {
    cls.name: cls for cls in (TextToImageAgent, ImageToImageAgent, ImageToVideoAgent)}
"""The trainable agents, upstream first (the order a chain runs them in)."""
