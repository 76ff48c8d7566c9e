"""The trainable agents: each one's UNet, its teacher-forced diffusion objective and its modulation token.

Each agent learns from the accepted samples with its own model's training objective, fed the sample's recorded
intermediates (teacher forcing), never its own new outputs:

- text-to-image (SDXL base): the first frame from the enhanced prompt; epsilon prediction on DDPM noise;
- image-to-image (InstructPix2Pix): the edited frame from the source frame and the instruction; epsilon prediction;
- image-to-video (SVD-XT): the clip from its start frame; EDM: log-normal sigmas, v (F-) prediction.

The conditioning comes from the pipelines' own helpers (`encode_prompt`, `_encode_prompt`, `prepare_image_latents`,
`_encode_image`, `_encode_vae_image`, `_get_add_time_ids`), so training sees exactly what inference feeds the UNet.
Everything that does not change during training (text and image embeddings, target latents) is encoded once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from PIL import Image, ImageDraw
from torch import nn

from mora_agents.media import fit_image, load_image, read_video, resize_frames
from mora_agents.pipelines.adapters import Modulation
from mora_agents.train.dataset import Sample

MOD_TOKEN = "[Mod]"
SVD_P_MEAN, SVD_P_STD = 0.7, 1.6
"""SVD's training noise distribution: log sigma ~ N(0.7, 1.6^2) (its image-to-video fine-tuning)."""
VAE_CHUNK = 8
"""Frames per VAE call when encoding a clip."""


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma (Hang et al. 2023) as a weight on the loss of the model's own output.

    The weight is min(SNR, gamma) on the x0-error; an epsilon-error equals the x0-error times SNR, a v-error
    times SNR + 1, so the weight on an epsilon loss is min(SNR, gamma) / SNR and on a v loss min(SNR, gamma) / (SNR + 1).
    """
    clipped = snr.clamp(max=gamma)
    return clipped / snr if prediction == "epsilon" else clipped / (snr + 1)


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).flatten(1).mean(1)


class TrainableAgent(nn.Module):
    """One agent's UNet (the only trained part, with its modulation token) and its training objective.

    `encode` caches the fixed inputs of the samples the agent learns from; `forward(indices)` is the mean loss over
    the batch's samples it learns from. A batch with none of them gives a zero loss that still runs the UNet, so
    that every process of a distributed run takes part in each step (DDP needs every rank's backward).
    """

    name: ClassVar[str]
    model: ClassVar[str]

    def __init__(self, pipe, snr_gamma: float, device: torch.device) -> None:
        super().__init__()
        self.pipe = pipe
        self.unet = pipe.unet
        self.device = device
        """Where the agent computes (its UNet may wait on the CPU between uses under the 24gb memory profile)."""
        self.snr_gamma = snr_gamma
        self.modulation: Modulation | None = None
        self.generator = torch.Generator(device) if device.type != "meta" else None
        """The source of noise, timesteps and sigmas (the trainer seeds it at every step; none on meta, where
        `mora bench` counts FLOPs)."""
        self.rows: dict[int, int] = {}
        """Dataset index -> row of the cache, for the samples this agent learns from."""
        self.cache: dict[str, torch.Tensor] = {}

    @staticmethod
    def uses(sample: Sample) -> bool:
        """Whether the agent learns from this sample."""
        raise NotImplementedError

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The fixed tensors of one sample, each with a leading batch dimension of 1."""
        raise NotImplementedError

    def token_embedding(self) -> torch.Tensor:
        """E_i("[Mod]"): the agent's encoder's embedding of the modulation token, a [width] vector."""
        raise NotImplementedError

    def sample_loss(self, rows: list[int]) -> torch.Tensor:
        """The weighted loss of each of `rows` (cache rows), [len(rows)]."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, samples: list[Sample], data_dir: Path, size: tuple[int, int]) -> None:
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

    def forward(self, indices: list[int]) -> torch.Tensor:
        rows = [self.rows[i] for i in indices if i in self.rows]
        if not rows:
            return self.sample_loss([0]).sum() * 0.0
        return self.sample_loss(rows).mean()


def _mean_token(embeds: torch.Tensor, tokenizer) -> torch.Tensor:
    """The mean of a prompt embedding over the tokens of MOD_TOKEN (without start, end and padding tokens)."""
    count = len(tokenizer(MOD_TOKEN).input_ids) - 2
    return embeds[0, 1:1 + count].float().mean(0)


def _pixels(image: Image.Image, processor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return processor.preprocess(image).to(device, dtype)


class _NoisePredictionAgent(TrainableAgent):
    """An epsilon-prediction agent trained on its scheduler config's DDPM noise schedule, timesteps uniform."""

    def __init__(self, pipe, snr_gamma: float, device: torch.device) -> None:
        super().__init__(pipe, snr_gamma, device)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def _latents(self, image: Image.Image) -> torch.Tensor:
        vae = self.pipe.vae
        pixels = _pixels(image, self.pipe.image_processor, vae.device, vae.dtype)
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor

    def sample_loss(self, rows: list[int]) -> torch.Tensor:
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


class TextToImageAgent(_NoisePredictionAgent):
    """SDXL base: the first frame from the enhanced prompt (the refiner is not trained)."""

    name, model = "text_to_image", "sdxl_base"

    @staticmethod
    def uses(sample: Sample) -> bool:
        return sample.first_frame is not None

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        image = fit_image(load_image(data_dir / sample.first_frame), *size)
        embeds, _, pooled, _ = self.pipe.encode_prompt(sample.enhanced_prompt, device=self.device,
                                                       do_classifier_free_guidance=False)
        time_ids = self.pipe._get_add_time_ids(size[::-1], (0, 0), size[::-1], dtype=embeds.dtype,
                                               text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim)
        return {"latents": self._latents(image), "embeds": embeds, "pooled": pooled, "time_ids": time_ids.to(self.device)}

    def token_embedding(self) -> torch.Tensor:
        embeds = self.pipe.encode_prompt(MOD_TOKEN, device=self.device, do_classifier_free_guidance=False)[0]
        return _mean_token(embeds, self.pipe.tokenizer)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        added = {"text_embeds": self.cache["pooled"][rows], "time_ids": self.cache["time_ids"][rows]}
        return self.unet(noisy, timesteps, encoder_hidden_states=self.cache["embeds"][rows],
                         added_cond_kwargs=added).sample


class ImageToImageAgent(_NoisePredictionAgent):
    """InstructPix2Pix: the edited frame from the source frame and the instruction."""

    name, model = "image_to_image", "instruct_pix2pix"

    @staticmethod
    def uses(sample: Sample) -> bool:
        return sample.edited_frame is not None

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        source = fit_image(load_image(data_dir / sample.source_frame), *size)
        edited = fit_image(load_image(data_dir / sample.edited_frame), *size)
        vae = self.pipe.vae
        source_latents = self.pipe.prepare_image_latents(
            _pixels(source, self.pipe.image_processor, vae.device, vae.dtype), 1, 1, vae.dtype, vae.device, False)
        embeds = self.pipe._encode_prompt(sample.instruction, self.device, 1, False)
        return {"latents": self._latents(edited), "source": source_latents, "embeds": embeds}

    def token_embedding(self) -> torch.Tensor:
        return _mean_token(self.pipe._encode_prompt(MOD_TOKEN, self.device, 1, False), self.pipe.tokenizer)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        model_input = torch.cat([noisy, self.cache["source"][rows].to(noisy.dtype)], dim=1)
        return self.unet(model_input, timesteps, encoder_hidden_states=self.cache["embeds"][rows]).sample


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
    SNR = 1 / sigma^2.
    """

    name, model = "image_to_video", "svd"

    def __init__(self, pipe, snr_gamma: float, device: torch.device, frames: int) -> None:
        super().__init__(pipe, snr_gamma, device)
        self.frames = frames
        config = pipe.scheduler.config
        self.sigma_range = (config.sigma_min, config.sigma_max)

    @staticmethod
    def uses(sample: Sample) -> bool:
        return True

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        width, height = size
        start = fit_image(load_image(data_dir / sample.clip_start), width, height)
        clip, clip_fps = read_video(data_dir / sample.file_name)
        frames = resize_frames(clip[:self.frames], width, height)
        vae = self.pipe.vae
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).to(vae.device, vae.dtype) / 127.5 - 1
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in pixels.split(VAE_CHUNK)])
        embeds = self.pipe._encode_image(start, self.device, 1, False)
        time_ids = self.pipe._get_add_time_ids(round(sample.fps or clip_fps) - 1, sample.motion_bucket_id,
                                               sample.noise_aug_strength, embeds.dtype, 1, 1, False)
        return {"latents": (latents * vae.config.scaling_factor)[None], "embeds": embeds,
                "start": self.pipe.video_processor.preprocess(start, height=height, width=width).to(vae.device),
                "time_ids": time_ids.to(self.device),
                "noise_aug": torch.tensor([sample.noise_aug_strength], device=self.device)}

    def collate(self, encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Clips shorter than `frames` shorten every clip to the shortest (a batch's clips have one length)."""
        frames = min(e["latents"].shape[1] for e in encoded)
        return super().collate([{**e, "latents": e["latents"][:, :frames]} for e in encoded])

    def token_embedding(self) -> torch.Tensor:
        size = self.pipe.feature_extractor.crop_size["height"]
        return self.pipe._encode_image(mod_token_image(size), self.device, 1, False)[0, 0].float()

    def sample_loss(self, rows: list[int]) -> torch.Tensor:
        latents, start = self.cache["latents"][rows], self.cache["start"][rows]
        normal, noise, start_noise = self.per_sample(len(rows), lambda: (
            self.randn(()), self.randn(latents.shape[1:]), self.randn(start.shape[1:])))
        sigma = (normal * SVD_P_STD + SVD_P_MEAN).exp().clamp(*self.sigma_range)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = latents + s * noise
        augmented = start + self.cache["noise_aug"][rows].view(-1, 1, 1, 1) * start_noise
        with torch.no_grad():
            condition = self.pipe._encode_vae_image(augmented, self.device, 1, False)
        condition = condition.unsqueeze(1).repeat(1, latents.shape[1], 1, 1, 1).to(noisy.dtype)
        model_input = torch.cat([noisy / (s**2 + 1).sqrt(), condition], dim=2)
        output = self.unet(model_input, 0.25 * sigma.log(), encoder_hidden_states=self.cache["embeds"][rows],
                           added_time_ids=self.cache["time_ids"][rows]).sample
        target = (noise - s * latents) / (s**2 + 1).sqrt()
        return min_snr_weight(sigma**-2, self.snr_gamma, "v_prediction") * _per_sample_mse(output, target)


AGENT_CLASSES: dict[str, type[TrainableAgent]] = {
    cls.name: cls for cls in (TextToImageAgent, ImageToImageAgent, ImageToVideoAgent)}
