"""Self-modulated multi-agent fine-tuning (the paper's Algorithm 1) with accelerate.

    OUT/
        train.json                    what to train (dataset, its sha256, the config): `resume` reads it
        checkpoints/step-000004/      the latest checkpoint (accelerate state: trainable weights, optimizer, EMA,
                                      RNG of every process, step and losses); removed when training ends
        text_to_image/lora.safetensors, text_to_image/modulation.safetensors, ...   the result (EMA weights)
        card.json, card.md            written last: a folder with a card is finished

One step: every agent's loss on the batch (teacher-forced on the samples it learns from), summed into L_final;
the agents share no parameter, so each agent's loss is backpropagated right after its forward (the gradients of
L_final, with one agent's activations in memory at a time). Then one AdamW step over every agent's trainable
weights and modulation token z_i, the EMA update, and the self-modulation: agent i's learning rate becomes
lr * alpha_i with alpha_i = ||z_i||_2 / n (n agents); z_i keeps its own rate.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mora_agents.errors import InputError, MoraError, validation_summary
from mora_agents.media import atomic_path
from mora_agents.pipelines.adapters import (
    AGENT_MODELS,
    AdapterCard,
    LoraSpec,
    add_lora,
    card_sha256,
    check_adapters,
    load_weights,
    read_card,
)
from mora_agents.pipelines.loading import MEMORY_PROFILES, build_pipeline, check_available, resolve_device
from mora_agents.settings import use_settings
from mora_agents.tools.defaults import DEFAULTS
from mora_agents.train.agents import AGENT_CLASSES, ImageToVideoAgent, TrainableAgent
from mora_agents.train.card import write_card
from mora_agents.train.dataset import Sample, dataset_sha256, read_dataset

TRAIN_JSON = "train.json"
CHECKPOINTS = "checkpoints"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
"""LoRA on every attention projection of the UNet: self-, cross- (which reads z) and, in SVD, temporal attention."""

StepCallback = Callable[[int, int, dict[str, float]], None]
"""on_step(step, total, losses): losses by agent name, and `total` (L_final); main process only."""


class TrainConfig(BaseModel):
    """How to fine-tune. Defaults: the paper's appendix A.9 where it says, our choices (docs/training.md) where not."""

    model_config = ConfigDict(extra="forbid")
    preset: Literal["full", "tiny"] = "full"
    device: str = "auto"
    """auto, cpu or cuda (one GPU per process; several through `accelerate launch`)."""
    agents: list[str] = Field(default_factory=lambda: list(AGENT_MODELS))
    full: bool = False
    """Fine-tune every UNet weight instead of LoRA adapters."""
    lora_rank: int = Field(16, ge=1)
    modulation: bool = True
    """The self-modulation token z_i and alpha_i; off: plain joint fine-tuning (the paper's ablation)."""
    modulation_init: Literal["text", "random"] = "text"
    steps: int = Field(12, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-5, gt=0)
    lr_modulation: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    snr_gamma: float = Field(5.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, le=1)
    checkpoint_every: int = Field(4, ge=1)
    gradient_checkpointing: bool = True
    frames: int | None = Field(None, ge=2)
    """Clip frames the image-to-video agent learns (the preset's segment length, 25, when not set)."""
    resolution: tuple[int, int] | None = None
    """(width, height) every agent trains at; the preset's inference size when not set (full: 1024x576)."""
    memory_profile: str = "resident"
    """resident, or 24gb: each agent's UNet is on the GPU only for its own forward and backward."""
    seed: int = 0
    iteration: int = 0
    """Recorded in the card: the data-free loop's iteration that made the dataset."""
    init_adapters: Path | None = None
    """Start from a previous `mora train` output (the loop's previous iteration) instead of the base weights."""
    models: dict[str, str] = Field(default_factory=dict)
    """Model id or folder overrides by model key (as `ToolSettings.models`)."""

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, agents: list[str]) -> list[str]:
        unknown = [a for a in agents if a not in AGENT_MODELS]
        if unknown or not agents:
            raise ValueError(f"unknown agent {unknown[0] if unknown else '(none given)'} (agents: {', '.join(AGENT_MODELS)})")
        return [a for a in AGENT_MODELS if a in agents]

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, resolution: tuple[int, int] | None) -> tuple[int, int] | None:
        if resolution is not None and any(side < 8 or side % 8 for side in resolution):
            raise ValueError("width and height must be multiples of 8")
        return resolution

    @field_validator("memory_profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        if profile not in MEMORY_PROFILES:
            raise ValueError(f"unknown memory profile (choose from {', '.join(MEMORY_PROFILES)})")
        return profile

    @classmethod
    def parse(cls, **values) -> TrainConfig:
        """Validate options; a bad one raises InputError naming it."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise InputError(f"training options: {validation_summary(e).replace('Value error, ', '')}") from None

    def settings(self) -> AbstractContextManager:
        """The tool settings the models are built under."""
        return use_settings(preset=self.preset, models=self.models, adapters=None)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    losses: list[dict[str, float]]
    """One entry per step: {"step": n, agent: loss, ..., "total": L_final}."""
    adapters_sha256: str
    card: AdapterCard


# -- the public functions ---------------------------------------------------------------------------------------


def train(dataset_dir: Path, out_dir: Path, config: TrainConfig | None = None,
          on_step: StepCallback | None = None) -> TrainResult:
    """Fine-tune the agents on a dataset folder; writes adapters, modulation tokens and a card into `out_dir`.

    Bad input (dataset, options, an `out_dir` that holds something else) raises InputError before anything is
    written. Checkpoints are kept every `checkpoint_every` steps; a killed run continues with `resume(out_dir)`.
    Run under `accelerate launch`, every process calls this and they train as one (DDP).
    """
    config = config or TrainConfig()
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    samples = read_dataset(dataset_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if (out_dir / "card.json").is_file():
            raise InputError(f"--out {out_dir}: holds finished training (card.json); choose a new folder")
        if (out_dir / TRAIN_JSON).is_file():
            raise InputError(f"--out {out_dir}: holds an unfinished training; continue it with "
                             f"`mora train --resume {out_dir}` or choose a new folder")
        raise InputError(f"--out {out_dir}: not empty; choose a new folder")
    check_inputs(config, samples, dataset_dir)
    sha = dataset_sha256(dataset_dir, samples)
    return _Training(dataset_dir, out_dir, config, samples, sha, on_step).run(resume=False)


def resume(out_dir: Path, on_step: StepCallback | None = None) -> TrainResult:
    """Continue a training run from its last checkpoint (from the start if it made none): the same final weights as
    an uninterrupted run, up to the determinism of the device."""
    out_dir = Path(out_dir).resolve()
    if (out_dir / "card.json").is_file():
        raise InputError(f"--resume {out_dir}: training finished already (card.json)")
    if not (out_dir / TRAIN_JSON).is_file():
        raise InputError(f"--resume {out_dir}: no {TRAIN_JSON} (not a `mora train` output folder)")
    record = json.loads((out_dir / TRAIN_JSON).read_text(encoding="utf-8"))
    dataset_dir = Path(record["dataset"])
    samples = read_dataset(dataset_dir)
    sha = dataset_sha256(dataset_dir, samples)
    if sha != record["dataset_sha256"]:
        raise InputError(f"--resume {out_dir}: the dataset {dataset_dir} changed since training started")
    config = TrainConfig.model_validate(record["config"])
    return _Training(dataset_dir, out_dir, config, samples, sha, on_step).run(resume=True)


def validation_loss(dataset_dir: Path, config: TrainConfig, adapters: Path | None = None, seed: int = 0,
                    repeats: int = 1) -> dict[str, float]:
    """Each agent's training loss on a dataset at fixed noise and timesteps (seeded), with the base weights or with
    `adapters` (a `mora train` output, whose agents, mode and modulation then apply): comparable between iterations,
    e.g. on a held-out dataset. `config` gives the preset, device, resolution and frames.

    `repeats`: draws of noise and timesteps per sample, averaged.
    """
    dataset_dir = Path(dataset_dir).resolve()
    samples = read_dataset(dataset_dir)
    device = resolve_device(config.device)
    if adapters is not None:
        trained = read_card(adapters).model_extra["hyperparameters"]
        config = config.model_copy(update={"init_adapters": adapters, **{
            key: trained[key] for key in ("agents", "full", "lora_rank", "modulation")}})
    agents = build_agents(config, samples, dataset_dir, device,
                          torch.float32 if device.type == "cpu" else torch.bfloat16, trainable=False)
    losses = {}
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type != "cpu"):
        for agent in agents:
            agent.generator.manual_seed(seed)
            rows = list(agent.rows.values())
            if rows:
                losses[agent.name] = sum(agent.sample_loss(rows).mean().item() for _ in range(repeats)) / repeats
    return losses


# -- building the agents ----------------------------------------------------------------------------------------


def _lora_spec(config: TrainConfig) -> LoraSpec:
    return LoraSpec(rank=config.lora_rank, alpha=config.lora_rank, target_modules=LORA_TARGETS)


def resolution(config: TrainConfig, agent: str) -> tuple[int, int]:
    """(width, height) an agent trains at: the configured one, else the preset's size of its inference tool."""
    tool = DEFAULTS[config.preset]["image_to_video" if agent == "image_to_video" else "text_to_image"]
    return config.resolution or (tool["width"], tool["height"])


def build_agents(config: TrainConfig, samples: list[Sample], dataset_dir: Path, device: torch.device,
                  weight_dtype: torch.dtype, trainable: bool = True) -> list[TrainableAgent]:
    """The agents that have samples to learn from, their UNets prepared for training (LoRA or full), their modulation
    tokens initialised, their fixed inputs encoded."""
    with config.settings():
        return _build_agents(config, samples, dataset_dir, device, weight_dtype, trainable)


def check_inputs(config: TrainConfig, samples: list[Sample], dataset_dir: Path) -> tuple[list[str], AdapterCard | None]:
    """Everything about a training that can be checked before work (InputError): the agents that have samples,
    their models on this machine, `init_adapters` fitting this training. Returns those agents and that card."""
    agents = [a for a in config.agents if any(AGENT_CLASSES[a].uses(sample) for sample in samples)]
    if not agents:
        raise InputError(f"dataset {dataset_dir}: no sample for the agents {', '.join(config.agents)}")
    with config.settings():
        check_available([AGENT_MODELS[a] for a in agents] if config.preset == "full" else [])
        init = check_adapters(config.init_adapters) if config.init_adapters else None
    for name in agents if init is not None else []:
        saved = init.agents.get(name)
        if saved is None:
            raise InputError(f"--init-adapters {config.init_adapters}: has no weights for agent '{name}'")
        if (saved.mode == "full") != config.full or (init.lora and init.lora.rank != config.lora_rank):
            raise InputError(f"--init-adapters {config.init_adapters}: '{name}' was trained with other settings "
                             f"({saved.mode}{f', rank {init.lora.rank}' if init.lora else ''})")
        if (saved.modulation is not None) != config.modulation:
            raise InputError(f"--init-adapters {config.init_adapters}: '{name}' was trained "
                             f"{'with' if saved.modulation else 'without'} modulation, this training is not")
    return agents, init


def _build_agents(config: TrainConfig, samples: list[Sample], dataset_dir: Path, device: torch.device,
                  weight_dtype: torch.dtype, trainable: bool) -> list[TrainableAgent]:
    names, init = check_inputs(config, samples, dataset_dir)
    agents = []
    for name in names:
        agent = make_agent(name, build_pipeline(AGENT_MODELS[name], device, weight_dtype), config, device, init,
                           trainable)
        agent.encode(samples, dataset_dir, resolution(config, name))
        agents.append(agent)
    return agents


def make_agent(name: str, pipe, config: TrainConfig, device: torch.device, init: AdapterCard | None = None,
               trainable: bool = True) -> TrainableAgent:
    """An agent over a built pipeline: LoRA injected (or every UNet weight trainable with `full`), or the weights
    of `init` (`config.init_adapters`' card) loaded; its modulation token; trainable weights in fp32, the frozen
    ones left in the pipeline's dtype, the VAE in fp32."""
    cls = AGENT_CLASSES[name]
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.float()  # frozen, small, and exact: SDXL's VAE overflows in 16 bits
    unet = pipe.unet.requires_grad_(False)
    frames = config.frames or DEFAULTS[config.preset]["image_to_video"]["frames"]
    agent = cls(pipe, config.snr_gamma, device, frames) if cls is ImageToVideoAgent else cls(pipe, config.snr_gamma, device)
    modulation = None
    if init is not None:  # fitting this training: see `check_inputs`
        modulation = load_weights(unet, config.init_adapters, init, name)
    elif not config.full:
        add_lora(unet, _lora_spec(config))
    if config.modulation:
        agent.add_modulation(modulation.z.detach() if modulation is not None else _initial_token(agent, config))
    if not trainable:
        unet.eval()
        if agent.modulation is not None:
            agent.modulation.requires_grad_(False)
        return agent
    for param_name, param in unet.named_parameters():
        param.requires_grad_(config.full or "lora_" in param_name)
    for param in (p for p in unet.parameters() if p.requires_grad):
        param.data = param.data.float()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return agent


@torch.no_grad()
def _initial_token(agent: TrainableAgent, config: TrainConfig) -> torch.Tensor:
    """z_i at the start: E_i("[Mod]"), or (`random`) a random direction with that embedding's norm."""
    z = agent.token_embedding()
    if config.modulation_init == "random":
        agent.generator.manual_seed(config.seed)
        direction = agent.randn(z.shape)
        z = direction / direction.norm() * z.norm()
    return z


def alpha(agent: TrainableAgent, n: int) -> float:
    """The self-modulation factor alpha_i = ||z_i||_2 / n (1 without modulation)."""
    return agent.modulation.z.detach().norm().item() / n if agent.modulation is not None else 1.0


def param_groups(agents: list[TrainableAgent], config: TrainConfig) -> list[dict]:
    """One AdamW group per agent's weights (lr * alpha_i) and one per modulation token (its own rate, no decay)."""
    groups = []
    for agent in agents:
        weights = [p for p in agent.unet.parameters() if p.requires_grad]
        groups.append({"params": weights, "agent": agent.name, "lr": config.lr * alpha(agent, len(agents))})
        if agent.modulation is not None:
            groups.append({"params": [agent.modulation.z], "agent": agent.name + ".z", "lr": config.lr_modulation,
                           "weight_decay": 0.0})
    return groups


def set_modulated_rates(optimizer: torch.optim.Optimizer, agents: list[TrainableAgent], lr: float) -> None:
    """After a step: agent i's weights learn at lr * alpha_i, with alpha_i from the updated z_i."""
    factors = {agent.name: alpha(agent, len(agents)) for agent in agents}
    for group in optimizer.param_groups:
        if group["agent"] in factors:
            group["lr"] = lr * factors[group["agent"]]


# -- the training run -------------------------------------------------------------------------------------------


class Stepper:
    """Optimisation steps of the agents, shared by `train` and `mora bench --training`.

    A step: every agent's forward and backward on the batch, gradient clipping, one AdamW step over every agent's
    trainable weights and modulation token, the EMA update, and the self-modulated rates. Under the 24gb memory
    profile (one process) each UNet is on the GPU only for its own forward and backward, one sample at a time
    (the same gradient: the batch mean is the sum of the per-sample losses over the batch size), and the text and
    image encoders, needed only to encode the dataset, stay on the CPU.
    """

    def __init__(self, accelerator, agents: list[TrainableAgent], config: TrainConfig) -> None:
        from diffusers.training_utils import EMAModel

        self.accelerator, self.agents, self.config = accelerator, agents, config
        self.offload = config.memory_profile == "24gb"  # on the CPU the moves are no-ops, the micro-batches not
        if self.offload:
            for agent in agents:
                for name in ("text_encoder", "text_encoder_2", "image_encoder"):
                    if getattr(agent.pipe, name, None) is not None:
                        getattr(agent.pipe, name).to("cpu")
                agent.unet.to("cpu")
        optimizer = torch.optim.AdamW(param_groups(agents, config), lr=config.lr, weight_decay=config.weight_decay)
        *self.models, self.optimizer = accelerator.prepare(
            *agents, optimizer, device_placement=[not self.offload] * len(agents) + [True])
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.ema = EMAModel(self.trainable, decay=config.ema_decay)
        accelerator.register_for_checkpointing(self.ema)

    def step(self, indices: list[int], step: int) -> dict[str, float]:
        """One optimisation step on a batch (dataset indices); the agents' losses (mean over processes), `total`."""
        losses = self._backward(indices, step)
        self.accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.trainable)
        set_modulated_rates(self.optimizer, self.agents, self.config.lr)
        return losses

    def _backward(self, indices: list[int], step: int) -> dict[str, float]:
        """Every agent's forward and backward (the gradients of L_final, the sum of their losses).

        The noise comes from each agent's generator seeded by (seed, step, process): a resumed run draws what an
        uninterrupted one would, whatever else used the global RNG (the data loader, library code) meanwhile.
        """
        accelerator, losses = self.accelerator, {}
        for agent, model in zip(self.agents, self.models):
            key = (self.config.seed, step, accelerator.process_index, list(AGENT_MODELS).index(agent.name))
            agent.generator.manual_seed(hash(key) % 2**63)  # hashes of int tuples do not vary between processes
            used = [i for i in indices if i in agent.rows]
            if self.offload:
                loss = torch.zeros((), device=accelerator.device)
                with _on_device(agent):
                    for index in used:
                        part = model([index]) / len(used)
                        accelerator.backward(part)
                        loss += part.detach()
            else:
                loss = model(indices)
                accelerator.backward(loss)
            total, count = accelerator.reduce(torch.tensor([loss.item() * len(used), len(used)],
                                                           device=accelerator.device), reduction="sum").tolist()
            if count:
                losses[agent.name] = total / count
        losses["total"] = sum(losses.values())
        return losses


def check_device(device: str) -> None:
    """Training's `--device`: auto, cpu or cuda (one GPU per process); raises InputError."""
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device}: training takes auto, cpu or cuda (choose GPUs with "
                         f"CUDA_VISIBLE_DEVICES, several with `accelerate launch`)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device here")


class _Training:
    def __init__(self, dataset_dir: Path, out_dir: Path, config: TrainConfig, samples: list[Sample], dataset_sha: str,
                 on_step: StepCallback | None) -> None:
        self.dataset_dir, self.out_dir, self.config, self.samples = dataset_dir, out_dir, config, samples
        self.dataset_sha = dataset_sha
        self.on_step = on_step
        self.losses: list[dict[str, float]] = []

    def _accelerator(self):
        from accelerate import Accelerator, DataLoaderConfiguration

        check_device(self.config.device)
        cpu = self.config.device == "cpu" or not torch.cuda.is_available()
        accelerator = Accelerator(
            cpu=cpu, mixed_precision="no" if cpu else "bf16",
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=self.config.seed))
        if self.config.memory_profile == "24gb" and accelerator.num_processes > 1:
            raise InputError("--memory-profile 24gb: for one process; several GPUs train with the resident profile")
        return accelerator

    def run(self, resume: bool) -> TrainResult:
        from accelerate.utils import set_seed

        config = self.config
        accelerator = self._accelerator()
        main = accelerator.is_main_process
        accelerator.wait_for_everyone()  # every process checked its input before anything is written
        if not resume and main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.out_dir / TRAIN_JSON, {
                "dataset": str(self.dataset_dir), "dataset_sha256": self.dataset_sha,
                "config": config.model_dump(mode="json"), "created": datetime.now().isoformat()})
        set_seed(config.seed, device_specific=True)
        weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        agents = build_agents(config, self.samples, self.dataset_dir, accelerator.device, weight_dtype)
        stepper = Stepper(accelerator, agents, config)
        loader = torch.utils.data.DataLoader(list(range(len(self.samples))), batch_size=config.batch_size,
                                             shuffle=True, collate_fn=list)
        loader = accelerator.prepare(loader)
        self._register_hooks(accelerator, agents)
        step = self._load_checkpoint(accelerator) if resume else 0
        accelerator.wait_for_everyone()
        if self.on_step and main:
            self.on_step(step, config.steps, self.losses[-1] if self.losses else {})
        per_epoch = len(loader)
        while step < config.steps:
            epoch, done = divmod(step, per_epoch)
            loader.set_epoch(epoch)
            for indices in accelerator.skip_first_batches(loader, done) if done else loader:
                try:
                    losses = stepper.step(indices, step)
                except torch.OutOfMemoryError:
                    raise MoraError(f"out of GPU memory in step {step + 1}; try --memory-profile 24gb, a smaller "
                                    f"--batch-size or LoRA instead of --full, then `mora train --resume {self.out_dir}`"
                                    ) from None
                step += 1
                self.losses.append({"step": step, **losses})
                if step % config.checkpoint_every == 0 and step < config.steps:
                    self._save_checkpoint(accelerator, step)
                if self.on_step and main:
                    self.on_step(step, config.steps, self.losses[-1])
                if step >= config.steps:
                    break
        stepper.ema.copy_to(stepper.trainable)
        accelerator.wait_for_everyone()
        if main:
            self._write_card(accelerator, agents, step)
            shutil.rmtree(self.out_dir / CHECKPOINTS, ignore_errors=True)
        accelerator.wait_for_everyone()
        card = AdapterCard.model_validate_json((self.out_dir / "card.json").read_bytes())
        return TrainResult(self.out_dir, step, self.losses, card_sha256(self.out_dir), card)

    def _write_card(self, accelerator, agents: list[TrainableAgent], steps: int) -> None:
        config, n = self.config, len(agents)
        tokens = {a.name: {"init": "init_adapters" if config.init_adapters else config.modulation_init,
                           "norm": a.modulation.z.norm().item(), "alpha": alpha(a, n)}
                  for a in agents if a.modulation is not None}
        write_card(self.out_dir, agents, config, None if config.full else _lora_spec(config), {
            "steps": steps, "losses": self.losses, "modulation": tokens,
            "dataset": {"path": str(self.dataset_dir), "sha256": self.dataset_sha, "samples": len(self.samples),
                        "per_agent": {a.name: len(a.rows) for a in agents}},
            "environment": {"device": str(accelerator.device), "processes": accelerator.num_processes,
                            "mixed_precision": accelerator.mixed_precision}})

    # -- checkpoints --

    def _register_hooks(self, accelerator, agents: list[TrainableAgent]) -> None:
        """Checkpoints hold only the trainable weights (LoRA or UNet, and z), not the frozen base models."""
        from safetensors.torch import load_file, save_file

        def save(models: list, weights: list, output_dir: str) -> None:
            if accelerator.is_main_process:
                for agent in agents:
                    save_file({name: p.detach().float().cpu().contiguous() for name, p in agent.named_parameters()
                               if p.requires_grad}, Path(output_dir) / f"{agent.name}.safetensors")
            weights.clear()

        def load(models: list, input_dir: str) -> None:
            for agent in agents:
                state = load_file(Path(input_dir) / f"{agent.name}.safetensors")
                with torch.no_grad():
                    for name, p in agent.named_parameters():
                        if p.requires_grad:
                            p.copy_(state[name])
            models.clear()

        accelerator.register_save_state_pre_hook(save)
        accelerator.register_load_state_pre_hook(load)

    def _save_checkpoint(self, accelerator, step: int) -> None:
        """Write the state beside its final name, then rename: a killed save leaves the previous checkpoint."""
        folder = self.out_dir / CHECKPOINTS
        temporary, final = folder / f".step-{step:06d}.tmp", folder / f"step-{step:06d}"
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            _write_json(temporary / "progress.json", {"step": step, "losses": self.losses})
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            temporary.rename(final)
            for old in folder.iterdir():
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def _load_checkpoint(self, accelerator) -> int:
        """Load the latest finished checkpoint; its step (0 without one)."""
        finished = sorted((self.out_dir / CHECKPOINTS).glob("step-*"))
        if not finished:
            return 0
        accelerator.load_state(str(finished[-1]))
        progress = json.loads((finished[-1] / "progress.json").read_text(encoding="utf-8"))
        self.losses = progress["losses"]
        return progress["step"]


@contextmanager
def _on_device(agent: TrainableAgent) -> Iterator[None]:
    """The agent's UNet on its device for the block, then back on the CPU (the 24gb memory profile)."""
    agent.unet.to(agent.device)
    try:
        yield
    finally:
        agent.unet.to("cpu")


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
