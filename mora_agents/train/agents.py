"""The trainable agents: each one's denoiser, its training objective, its modulation token, and how it takes part
in a chain of agents.

Each agent learns from the accepted samples with its own model's training objective. Mora (SVD):

- text-to-image (SDXL base): the first frame from the enhanced prompt; epsilon prediction on DDPM noise;
- image-to-image (InstructPix2Pix): the edited frame from the source frame and the instruction; epsilon prediction;
- image-to-video (SVD-XT): the clip from its start frame; EDM: log-normal sigmas, v (F-) prediction.

Mora (Open-Sora-Plan):

- text-to-image (Stable Diffusion 3): the first frame from the enhanced prompt; rectified flow (velocity prediction)
  at logit-normal noise levels through the scheduler's shift;
- image-to-video (Open-Sora-Plan v1.2): the clip around its known frames (frame-level inpainting, the start frame
  first); epsilon prediction on DDPM noise as its reference trains it (noise offset, text dropout, a mix of masks).

Two objectives use them (`trainer.py`). `per-agent`: each agent's loss on the sample's recorded intermediates
(teacher forcing). `chain` (the paper's L_total = L(O_n, V_target)): the upstream agents generate (`generate`, with
gradients through their last K sampling steps) and the downstream agent's loss against the accepted clip is
computed from what they made (`sample_loss(rows, inputs)`), so it reaches the upstream weights and tokens.

An agent names the sample field it makes (`output`) and the one it starts from (`input_field`); the chain of a
sample follows those files (`chain`). A new agent subclasses `TrainableAgent`: `uses`, `input_field`,
`encode_sample`, `token_embedding`, `sample_loss` (with `inputs`: images in [-1, 1] replacing its recorded input)
and, for an upstream agent, `generate`; `AGENT_CLASSES` lists each system's agents upstream first.

The conditioning comes from the pipelines' own helpers (`encode_prompt`, `_encode_prompt`, `prepare_image_latents`,
`_get_add_time_ids`, `encode_masked_video`) or their differentiable equivalents (SVD's image tokens), so training
sees what inference feeds the denoiser. Everything that does not change during training (text embeddings, target
latents) is encoded once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_snr
from PIL import Image, ImageDraw
from torch import nn

from mora_agents.errors import InputError
from mora_agents.media import fit_image, load_image, read_video, resize_frames
from mora_agents.models.open_sora_vae import SCALING_FACTOR as OSP_SCALING_FACTOR
from mora_agents.pipelines.adapters import Modulation, denoiser_name
from mora_agents.pipelines.seine import SEINEPipeline
from mora_agents.tools.backends import BACKENDS, SYSTEMS
from mora_agents.tools.defaults import backend_defaults
from mora_agents.train.dataset import Sample

if TYPE_CHECKING:
    from mora_agents.train.trainer import TrainConfig

MOD_TOKEN = "[Mod]"
SVD_P_MEAN, SVD_P_STD = 0.7, 1.6
"""SVD's training noise distribution: log sigma ~ N(0.7, 1.6^2) (its image-to-video fine-tuning)."""
VAE_CHUNK = 8
"""Frames per VAE call when encoding a clip."""
CLIP_SIZE = 224
"""SVD's image encoder input (what its pipeline resizes to)."""
SD3_LOGIT_MEAN, SD3_LOGIT_STD = 0.0, 1.0
"""SD3's training noise levels: t = sigmoid(n), n ~ N(0, 1) (Esser et al. 2024, "rf/lognorm(0.00, 1.00)"), then
the scheduler's shift (3.0 for SD3 Medium)."""
SD3_TOKENS = BACKENDS["text_to_image"]["sd3"].text.tokens
"""T5 tokens of SD3's prompts (the tools' budget, 256)."""
OSP_TOKENS = BACKENDS["image_to_video"]["open-sora-plan"].text.tokens
"""mT5 tokens of Open-Sora-Plan's prompts (512, as its sampler and training read them)."""
OSP_NOISE_OFFSET = 0.02
"""Open-Sora-Plan's training noise offset: a per-channel constant N(0, 0.02^2) added to the noise."""
OSP_TEXT_DROPOUT = 0.1
"""Open-Sora-Plan's training text dropout (its `--cfg 0.1`): the prompt replaced by the empty one."""
OSP_MASKS = (0.4, 0.4, 0.1)
"""Open-Sora-Plan's mix of known frames in per-agent training (its `--i2v_ratio`, `--transition_ratio`,
`--v2v_ratio`): the first frame; the first and the last; the first k (k uniform in 1..T); the rest of the draws
(0.1) a random subset of the frames."""

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

    The weight is min(SNR, gamma) on the squared x0-error; an epsilon-error's square is SNR times it, a v-error's
    SNR + 1 times, a rectified flow's velocity error's 1 / sigma^2 = (1 + sqrt(SNR))^2 times (x = (1 - sigma) x0 +
    sigma n, SNR = ((1 - sigma) / sigma)^2, x0 = x - sigma v). So the weight on an epsilon loss is
    min(SNR, gamma) / SNR, on a v loss min(SNR, gamma) / (SNR + 1), on a flow loss min(SNR, gamma) / (1 + sqrt(SNR))^2.
    """
    clipped = snr.clamp(max=gamma)
    if prediction == "epsilon":
        return clipped / snr
    return clipped / (1 + snr.sqrt()) ** 2 if prediction == "flow" else clipped / (snr + 1)


def tool_defaults(config: TrainConfig, tool: str) -> dict[str, Any]:
    """The parameter defaults of the backend that the training's system runs for a tool, under its preset."""
    return backend_defaults(config.preset, tool, SYSTEMS[config.system][tool])


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).flatten(1).mean(1)


def _fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An image [3, H, W] at `size` (height, width), resized (differentiably) only if it is not already."""
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


class TrainableAgent(nn.Module):
    """One agent's denoiser (UNet or DiT: the only trained part, with its modulation token) and its training
    objective.

    `encode` caches the fixed inputs of the samples the agent learns from. `forward(indices)` is the mean loss over
    the batch's samples it learns from (with `inputs`: from images its upstream agent made); with `sampling`, it
    generates instead (`generate`). A call with none of its samples gives a zero loss that still runs the UNet, so
    that every process of a distributed run takes part in each step (DDP needs every rank's backward).
    """

    name: ClassVar[str]
    model: ClassVar[str]
    output: ClassVar[str]
    """The sample field holding what the agent makes (`first_frame`, `edited_frame`, `file_name`)."""

    def __init__(self, pipe, device: torch.device, config: TrainConfig) -> None:
        super().__init__()
        self.pipe = pipe
        self.component = denoiser_name(pipe)
        """The pipeline's denoiser component, `unet` or `transformer` (its LoRA keys' prefix)."""
        self.denoiser = getattr(pipe, self.component)
        self.device = device
        """Where the agent computes (its denoiser may wait on the CPU between uses under the 24gb memory profile)."""
        self.config = config
        self.snr_gamma = config.snr_gamma
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

    @classmethod
    def cached_values(cls, pipe, width: int, height: int, frames: int) -> int:
        """About how many numbers `encode_sample` keeps on the device per sample (for the memory check)."""
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
        """Give the agent a trainable modulation token z, appended to every denoiser call's conditioning."""
        self.modulation = Modulation(z.float().to(self.device), trainable=True)
        self.modulation.attach(self.denoiser)

    def ddpm_draw(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample's draw for `ddpm_loss`: its noise and a uniform number that picks its timestep."""
        return self.randn(shape), torch.rand((), generator=self.generator, device=self.device)

    def ddpm_loss(self, scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, uniform: torch.Tensor,
                  predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The per-sample min-SNR-weighted loss of a DDPM-trained model (epsilon or v prediction, as its scheduler
        config says) at uniform timesteps: `predict(noisy, timesteps)` is the model's output."""
        steps = scheduler.config.num_train_timesteps
        timesteps = (uniform * steps).long().clamp(max=steps - 1)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = scheduler.config.prediction_type
        target = noise if prediction == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
        weight = min_snr_weight(compute_snr(scheduler, timesteps), self.snr_gamma, prediction)
        return weight * _per_sample_mse(predict(noisy, timesteps), target)

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


def chain(sample: Sample, names: Sequence[str], system: str) -> list[str]:
    """The agents among `names` (of `system`) that the sample's clip passes through, upstream first: the agent that
    made the clip, the one that made its input (the same file), and so on. Empty when the clip's agent is not among
    `names`."""
    classes = AGENT_CLASSES[system]
    makers = {getattr(sample, classes[n].output): n for n in names if classes[n].uses(sample)}
    path: list[str] = []
    agent = makers.get(sample.file_name)
    while agent is not None and agent not in path:
        path.insert(0, agent)
        field = classes[agent].input_field(sample)
        agent = makers.get(getattr(sample, field)) if field else None
    return path


def _mean_token(embeds: torch.Tensor, tokenizer, text: str = MOD_TOKEN) -> torch.Tensor:
    """The mean of a prompt embedding over the tokens of `text` (without start, end and padding tokens: CLIP starts
    with a start token, T5 and mT5 do not; both end with an end token)."""
    content = len(tokenizer(text, add_special_tokens=False).input_ids)
    start = len(tokenizer(text).input_ids) - content - 1
    return embeds[0, start:start + content].float().mean(0)


def _pixels(image: Image.Image, processor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return processor.preprocess(image).to(device, dtype)


def _latent_values(pipe, width: int, height: int) -> int:
    """The numbers of one image's latents: the VAE's channels at an eighth of each side."""
    return pipe.vae.config.latent_channels * (height // 8) * (width // 8)


class _ImageAgent(TrainableAgent):
    """An image agent (it makes a frame): in a chain it generates with its own sampler (`sampler`) and
    classifier-free guidance at its tool's defaults (`guided`), then decodes with its VAE."""

    def sampler(self):
        """A fresh scheduler for one generation (its `step` keeps state)."""
        raise NotImplementedError

    def guided(self, latents: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        """The guided model output of one sampling step (`condition`: from `generation_condition`)."""
        raise NotImplementedError

    def generation_condition(self, rows: list[int], inputs: Inputs | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _latents(self, image: Image.Image) -> torch.Tensor:
        """The VAE's latents of an image (its mode), shifted and scaled as the denoiser reads them."""
        vae = self.pipe.vae
        pixels = _pixels(image, self.pipe.image_processor, vae.device, vae.dtype)
        latents = vae.encode(pixels).latent_dist.mode()
        return (latents - (vae.config.get("shift_factor") or 0)) * vae.config.scaling_factor

    def generate(self, rows: list[int], inputs: Inputs | None, sampling: Sampling) -> torch.Tensor:
        scheduler = self.sampler()
        scheduler.set_timesteps(sampling.steps, device=self.device)
        (latents,) = self.per_sample(len(rows), lambda: (self.randn(self.cache["latents"].shape[1:]),))
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching starts at unit noise
        condition = self.generation_condition(rows, inputs)
        tracking, first_tracked = torch.is_grad_enabled(), len(scheduler.timesteps) - sampling.backprop
        for i, t in enumerate(scheduler.timesteps):
            with torch.set_grad_enabled(tracking and i >= first_tracked):
                latents = scheduler.step(self.guided(latents, t, condition), t, latents).prev_sample
        vae = self.pipe.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.get("shift_factor") or 0)
        image = vae.decode(latents).sample
        # clamped as inference clamps it, but a saturated pixel still passes its gradient (straight-through)
        return image + (image.clamp(-1, 1) - image).detach()


class _NoisePredictionAgent(_ImageAgent):
    """An epsilon-prediction image agent trained on its scheduler config's DDPM noise schedule, timesteps uniform;
    in a chain it generates with DDIM from the same config.

    The DDIM steps are "trailing": they start at the full noise level and the last one ends at the model's clean
    estimate (alpha 1), so that it, the step K = 1 backpropagates through, depends on the prediction; latents
    unclipped."""

    def __init__(self, pipe, device: torch.device, config: TrainConfig) -> None:
        super().__init__(pipe, device, config)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, rows: list[int]) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def cached_values(cls, pipe, width: int, height: int, frames: int) -> int:
        return 2 * _latent_values(pipe, width, height) + 4 * 77 * pipe.unet.config.cross_attention_dim

    def sample_loss(self, rows: list[int], inputs: Inputs | None = None) -> torch.Tensor:
        latents = self.cache["latents"][rows]
        noise, uniform = self.per_sample(len(rows), lambda: self.ddpm_draw(latents.shape[1:]))
        return self.ddpm_loss(self.noise_scheduler, latents, noise, uniform,
                              lambda noisy, timesteps: self.predict(noisy, timesteps, rows))

    def sampler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.pipe.scheduler.config, timestep_spacing="trailing",
                                         set_alpha_to_one=True, clip_sample=False)


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
        return self.denoiser(noisy, timesteps, encoder_hidden_states=self.cache["embeds"][rows],
                             added_cond_kwargs=added).sample

    def generation_condition(self, rows: list[int], inputs: Inputs | None) -> dict[str, torch.Tensor]:
        c = self.cache
        return {"embeds": torch.cat([c["negative"][rows], c["embeds"][rows]]),
                "pooled": torch.cat([c["negative_pooled"][rows], c["pooled"][rows]]),
                "time_ids": c["time_ids"][rows].repeat(2, 1)}

    def guided(self, latents: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        guidance = tool_defaults(self.config, "text_to_image")["guidance_scale"]
        added = {"text_embeds": condition["pooled"], "time_ids": condition["time_ids"]}
        uncond, text = self.denoiser(torch.cat([latents, latents]), t, encoder_hidden_states=condition["embeds"],
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
        return self.denoiser(model_input, timesteps, encoder_hidden_states=self.cache["embeds"][rows]).sample

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
        tool = tool_defaults(self.config, "edit_image")
        model_input = torch.cat([torch.cat([latents] * 3), condition["source"].to(latents.dtype)], dim=1)
        text, image, uncond = self.denoiser(model_input, t, encoder_hidden_states=condition["embeds"]).sample.chunk(3)
        return uncond + tool["guidance_scale"] * (text - image) + tool["image_guidance_scale"] * (image - uncond)


class StableDiffusion3Agent(_ImageAgent):
    """Stable Diffusion 3 (the OSP system's text-to-image agent): the first frame from the enhanced prompt.

    Rectified flow, as SD3 is trained: x = (1 - sigma) x0 + sigma n at sigma = shift u / (1 + (shift - 1) u) with
    u = sigmoid(N(0, 1)) (logit-normal, then the scheduler's shift), the transformer at timestep 1000 sigma predicts
    the velocity n - x0, and the loss carries min-SNR's flow weight at SNR = ((1 - sigma) / sigma)^2. In a chain it
    generates with the scheduler it runs with (flow-matching Euler), whose last step ends at its clean estimate.
    Its conditioning is the pipeline's: CLIP-L and OpenCLIP-bigG states beside T5's (the joint sequence) and their
    pooled embeddings; z is one more token of that sequence, at its (T5's) width.
    """

    name, model, output = "text_to_image", "sd3", "first_frame"

    @staticmethod
    def uses(sample: Sample) -> bool:
        return sample.first_frame is not None

    @classmethod
    def cached_values(cls, pipe, width: int, height: int, frames: int) -> int:
        tokens = pipe.tokenizer.model_max_length + SD3_TOKENS
        return _latent_values(pipe, width, height) + 2 * tokens * pipe.transformer.config.joint_attention_dim

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        image = fit_image(load_image(data_dir / sample.first_frame), *size)
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            sample.enhanced_prompt, None, None, device=self.device, do_classifier_free_guidance=True,
            max_sequence_length=SD3_TOKENS)
        return {"latents": self._latents(image), "embeds": embeds, "pooled": pooled, "negative": negative,
                "negative_pooled": negative_pooled}

    def token_embedding(self) -> torch.Tensor:
        """The mean of T5's states over the tokens of "[Mod]": the one encoder whose states fill the joint width
        (CLIP's are zero-padded to it)."""
        embeds = self.pipe._get_t5_prompt_embeds(MOD_TOKEN, max_sequence_length=SD3_TOKENS, device=self.device)
        return _mean_token(embeds, self.pipe.tokenizer_3)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor
                ) -> torch.Tensor:
        return self.denoiser(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=embeds,
                             pooled_projections=pooled).sample

    def sample_loss(self, rows: list[int], inputs: Inputs | None = None) -> torch.Tensor:
        latents = self.cache["latents"][rows]
        noise, normal = self.per_sample(len(rows), lambda: (self.randn(latents.shape[1:]), self.randn(())))
        u = torch.sigmoid(normal * SD3_LOGIT_STD + SD3_LOGIT_MEAN)
        shift = self.pipe.scheduler.config.shift
        sigma = shift * u / (1 + (shift - 1) * u)
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * latents + s * noise
        steps = self.pipe.scheduler.config.num_train_timesteps
        velocity = self.predict(noisy, sigma * steps, self.cache["embeds"][rows], self.cache["pooled"][rows])
        weight = min_snr_weight(((1 - sigma) / sigma) ** 2, self.snr_gamma, "flow")
        return weight * _per_sample_mse(velocity, noise - latents)

    def sampler(self) -> FlowMatchEulerDiscreteScheduler:
        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def generation_condition(self, rows: list[int], inputs: Inputs | None) -> dict[str, torch.Tensor]:
        c = self.cache
        return {"embeds": torch.cat([c["negative"][rows], c["embeds"][rows]]),
                "pooled": torch.cat([c["negative_pooled"][rows], c["pooled"][rows]])}

    def guided(self, latents: torch.Tensor, t: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        guidance = tool_defaults(self.config, "text_to_image")["guidance_scale"]
        both = torch.cat([latents, latents])
        uncond, text = self.predict(both, t.expand(len(both)), condition["embeds"], condition["pooled"]).chunk(2)
        return uncond + guidance * (text - uncond)


def mod_token_image(size: int) -> Image.Image:
    """The modulation token shown as an image: "[Mod]" in black on white, for SVD's image-only encoder."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), MOD_TOKEN)
    draw.text(((size - box[2]) / 2, (size - box[3]) / 2), MOD_TOKEN, fill="black")
    return image


class _VideoAgent(TrainableAgent):
    """An image-to-video agent: it makes the clip (the end of every chain) from its start frame, learning the
    clip's first `frames` frames (`--frames`, else its backend's default clip)."""

    output = "file_name"

    def __init__(self, pipe, device: torch.device, config: TrainConfig) -> None:
        super().__init__(pipe, device, config)
        self.frames = config.frames or tool_defaults(config, "image_to_video")["frames"]

    @staticmethod
    def uses(sample: Sample) -> bool:
        return True

    @staticmethod
    def input_field(sample: Sample) -> str | None:
        return "start_frame" if sample.start_frame else "edited_frame" if sample.edited_frame else "first_frame"

    def start_frames(self, rows: list[int], inputs: Inputs | None) -> torch.Tensor:
        """The start frames of `rows`, [B, 3, H, W] in [-1, 1]: the recorded ones, or those an upstream agent made."""
        start = self.cache["start"][rows]
        if inputs is None:
            return start
        return torch.stack([_fit(image, self.size) if image is not None else s for image, s in zip(inputs, start)])


class ImageToVideoAgent(_VideoAgent):
    """SVD-XT: the clip from its start frame, with the sample's fps, motion bucket and noise augmentation.

    SVD is an EDM model (sigma_data 1): the UNet sees c_in * x at c_noise = log(sigma) / 4 and its output F gives the
    denoised latents D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * F (the scheduler's v-prediction). The loss
    is on F against its target (noise - sigma * x0) / sqrt(sigma^2 + 1), with the min-SNR weight of a v loss at
    SNR = 1 / sigma^2. Its conditioning (the start frame's CLIP token and VAE latents) is computed differentiably,
    so in a chain the loss reaches the agent that made the start frame.
    """

    name, model = "image_to_video", "svd"

    def __init__(self, pipe, device: torch.device, config: TrainConfig) -> None:
        super().__init__(pipe, device, config)
        scheduler = pipe.scheduler.config
        self.sigma_range = (scheduler.sigma_min, scheduler.sigma_max)

    @classmethod
    def cached_values(cls, pipe, width: int, height: int, frames: int) -> int:
        return _latent_values(pipe, width, height) * frames + 3 * height * width

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
        latents, start = self.cache["latents"][rows], self.start_frames(rows, inputs)
        # start frames an upstream agent made: the conditioning follows them
        embeds = self.cache["embeds"][rows] if inputs is None else self.image_tokens(start)
        normal, noise, start_noise = self.per_sample(len(rows), lambda: (
            self.randn(()), self.randn(latents.shape[1:]), self.randn(start.shape[1:])))
        sigma = (normal * SVD_P_STD + SVD_P_MEAN).exp().clamp(*self.sigma_range)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = latents + s * noise
        augmented = start + self.cache["noise_aug"][rows].view(-1, 1, 1, 1) * start_noise
        condition = self.pipe._encode_vae_image(augmented, self.device, 1, False)
        condition = condition.unsqueeze(1).repeat(1, latents.shape[1], 1, 1, 1).to(noisy.dtype)
        model_input = torch.cat([noisy / (s**2 + 1).sqrt(), condition], dim=2)
        output = self.denoiser(model_input, 0.25 * sigma.log(), encoder_hidden_states=embeds,
                               added_time_ids=self.cache["time_ids"][rows]).sample
        target = (noise - s * latents) / (s**2 + 1).sqrt()
        return min_snr_weight(sigma**-2, self.snr_gamma, "v_prediction") * _per_sample_mse(output, target)


class OpenSoraPlanAgent(_VideoAgent):
    """Open-Sora-Plan v1.2 (the OSP system's image-to-video agent): the clip around its known frames, its start
    frame first, as the reference trains its inpainting model.

    The DiT reads [noisy latent | masked video's latent | mask] (`encode_masked_video`, the pipeline's own) and the
    mT5 text (its attention mask too), predicts the noise at DDPM timesteps (uniform; the noise with a 0.02 offset
    per channel), min-SNR's epsilon weight. The prompt is dropped (empty) one time in ten. Known frames: with the
    chain objective the start frame alone (image-to-video, what a run asks of it; the frame the upstream agent
    generated, so that the loss reaches it through the VAE encoder); per agent, the reference's mix (`OSP_MASKS`),
    which keeps the first-and-last-frame task the OSP system's connection agent runs on the same model. The known
    frames are the clip's, the first replaced by the start frame. z is one more mT5 token (a kept position in the
    text mask), before the DiT's caption projection.
    """

    name, model = "image_to_video", "open_sora_plan"

    def __init__(self, pipe, device: torch.device, config: TrainConfig) -> None:
        super().__init__(pipe, device, config)
        self.mixed = config.objective == "per-agent"
        """The reference's mix of known frames (else the first frame only)."""
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.empty: tuple[torch.Tensor, torch.Tensor] | None = None
        """The empty prompt's mT5 states and mask (text dropout)."""

    @classmethod
    def cached_values(cls, pipe, width: int, height: int, frames: int) -> int:
        factor, spatial = pipe.vae.temporal_compression, pipe.vae.spatial_compression
        latent = pipe.vae.config.z_channels * ((frames - 1) // factor + 1) * (height // spatial) * (width // spatial)
        return latent + 3 * height * width + OSP_TOKENS * (pipe.text_encoder.config.d_model + 1)

    def encode(self, samples: list[Sample], data_dir: Path, size: tuple[int, int]) -> None:
        with torch.no_grad():
            self.empty = self.pipe.encode_prompt("", OSP_TOKENS, self.device)
        super().encode(samples, data_dir, size)

    def encode_sample(self, sample: Sample, data_dir: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        width, height = size
        clip, _ = read_video(data_dir / sample.file_name)
        factor = self.pipe.vae.temporal_compression
        count = (min(len(clip), self.frames) - 1) // factor * factor + 1
        if count < factor + 1:
            raise InputError(f"dataset {data_dir}: sample {sample.id}'s clip {sample.file_name} has {len(clip)} "
                             f"frame(s); the open-sora-plan agent learns {factor}k+1 frames, at least {factor + 1}")
        frames = torch.from_numpy(resize_frames(clip[:count], width, height)).permute(3, 0, 1, 2)[None]
        vae = self.pipe.vae
        video = frames.to(vae.device, vae.dtype) / 127.5 - 1
        start = fit_image(load_image(data_dir / sample.clip_start), width, height)
        text, mask = self.pipe.encode_prompt(sample.video_prompt or sample.enhanced_prompt or sample.prompt,
                                             OSP_TOKENS, self.device)
        return {"latents": vae.encode(video).latent_dist.mode() * OSP_SCALING_FACTOR,
                "start": SEINEPipeline.preprocess([start], height, width).to(self.device), "text": text,
                "text_mask": mask, **({"clip": frames} if self.mixed else {})}  # uint8 on the CPU

    def collate(self, encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Clips shorter than `frames` shorten every clip to the shortest (the VAE is causal in time)."""
        latent_frames = min(e["latents"].shape[2] for e in encoded)
        frames = (latent_frames - 1) * self.pipe.vae.temporal_compression + 1
        return super().collate([{**e, "latents": e["latents"][:, :, :latent_frames],
                                 **({"clip": e["clip"][:, :, :frames]} if "clip" in e else {})} for e in encoded])

    def token_embedding(self) -> torch.Tensor:
        text, _ = self.pipe.encode_prompt(MOD_TOKEN, OSP_TOKENS, self.device)
        return _mean_token(text, self.pipe.tokenizer, MOD_TOKEN.lower())  # the pipeline lower-cases its prompts

    def known_frames(self, frames: int) -> torch.Tensor:
        """One sample's draw of its known frames, [frames] booleans (tensor operations only, so that `mora bench`
        counts on the meta device)."""
        index = torch.arange(frames, device=self.device)
        first = index == 0
        if not self.mixed:
            return first
        u = torch.rand((), generator=self.generator, device=self.device)
        length = torch.randint(1, frames + 1, (), generator=self.generator, device=self.device)
        size = torch.randint(0, frames, (), generator=self.generator, device=self.device)
        ranks = torch.rand(frames, generator=self.generator, device=self.device).argsort().argsort()
        i2v, transition, continuation = (u < sum(OSP_MASKS[:k + 1]) for k in range(3))
        return torch.where(i2v, first, torch.where(transition, first | (index == frames - 1),
                                                   torch.where(continuation, index < length, ranks < size)))

    def sample_loss(self, rows: list[int], inputs: Inputs | None = None) -> torch.Tensor:
        c = self.cache
        latents, start = c["latents"][rows], self.start_frames(rows, inputs)  # made upstream: the known first frame
        frames = (latents.shape[2] - 1) * self.pipe.vae.temporal_compression + 1

        def draw() -> tuple[torch.Tensor, ...]:
            noise, uniform = self.ddpm_draw(latents.shape[1:])
            noise = noise + OSP_NOISE_OFFSET * self.randn((latents.shape[1], 1, 1, 1))
            dropped = torch.rand((), generator=self.generator, device=self.device) < OSP_TEXT_DROPOUT
            return noise, uniform, self.known_frames(frames), self.randn(latents.shape[1:]), dropped

        noise, uniform, known, posterior_noise, dropped = self.per_sample(len(rows), draw)
        conditions = []
        for b, row in enumerate(rows):
            video = self._video(row, start[b], frames)
            posterior, mask = self.pipe.encode_masked_video(video, known[b])
            masked = (posterior.mean + posterior.std * posterior_noise[b:b + 1]).float() * OSP_SCALING_FACTOR
            conditions.append(torch.cat([masked, mask.to(masked.dtype)], dim=1))
        condition = torch.cat(conditions)
        text = torch.where(dropped.view(-1, 1, 1), self.empty[0], c["text"][rows])
        text_mask = torch.where(dropped.view(-1, 1), self.empty[1], c["text_mask"][rows])

        def predict(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return self.denoiser(torch.cat([noisy, condition.to(noisy.dtype)], dim=1), timesteps,
                                 encoder_hidden_states=text[:, None], encoder_attention_mask=text_mask[:, None]).sample

        return self.ddpm_loss(self.noise_scheduler, latents, noise, uniform, predict)

    def _video(self, row: int, start: torch.Tensor, frames: int) -> torch.Tensor:
        """The video [1, 3, frames, H, W] in [-1, 1] whose known frames the condition keeps: the start frame, then
        the clip's frames (grey where only the first is ever known)."""
        vae = self.pipe.vae
        start = start.to(vae.device, vae.dtype)[:, None]
        if "clip" in self.cache:
            rest = self.cache["clip"][row, :, 1:frames].to(vae.device, vae.dtype) / 127.5 - 1
        else:
            rest = start.new_zeros(3, frames - 1, *start.shape[-2:])
        return torch.cat([start, rest], dim=1)[None]


AGENT_CLASSES: dict[str, dict[str, type[TrainableAgent]]] = {
    "svd": {cls.name: cls for cls in (TextToImageAgent, ImageToImageAgent, ImageToVideoAgent)},
    "osp": {cls.name: cls for cls in (StableDiffusion3Agent, OpenSoraPlanAgent)},
}
"""Per system, the trainable agents, upstream first (the order a chain runs them in; `AGENT_MODELS`' order)."""
