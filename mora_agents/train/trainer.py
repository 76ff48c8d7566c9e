"""Self-modulated multi-agent fine-tuning (the paper's Algorithm 1) with accelerate.

    OUT/
        train.json                    what to train (dataset, its sha256, the config): `resume` reads it
        checkpoints/step-000004/      the last `keep_checkpoints` checkpoints (accelerate state: trainable weights,
                                      optimizer, EMA, RNG of every process, step and losses)
        logs/                         the trackers' files (`report_to`: TensorBoard's event files)
        text_to_image/pytorch_lora_weights.safetensors, text_to_image/modulation.safetensors, ...   (EMA weights)
        card.json, card.md            written last: a folder with a card is finished

One step, `chain` objective (the paper's L_total = L(O_n, V_target)): each sample's upstream agents generate its
start frame (gradients through their last K sampling steps), the video agent's loss against the accepted clip is
computed from it and backpropagated through the whole chain. `per-agent` objective: every agent's loss on the
batch, teacher-forced on the recorded intermediates, summed into L_final (each backpropagated right after its
forward: the agents share no parameter). Then one AdamW step over every agent's trainable weights and modulation
token z_i, the EMA update, and the self-modulation: agent i's learning rate becomes lr * alpha_i with
alpha_i = ||z_i||_2 / n (n: the agents that have samples); z_i keeps its own rate.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from torch import nn

from mora_agents.errors import InputError, MoraError, validation_summary
from mora_agents.media import atomic_path
from mora_agents.pipelines.adapters import (
    AGENT_MODELS,
    AdapterCard,
    LoraSpec,
    add_lora,
    card_sha256,
    check_adapters,
    denoiser_name,
    load_weights,
)
from mora_agents.pipelines.loading import MEMORY_PROFILES, build_pipeline, resolve_device
from mora_agents.pipelines.sources import check_available
from mora_agents.settings import use_settings
from mora_agents.inputs import MAX_WORK_SIDE
from mora_agents.tools.backends import BACKENDS, SYSTEMS
from mora_agents.tools.params import Frames, Seed, Steps
from mora_agents.train.agents import AGENT_CLASSES, Sampling, TrainableAgent, chain, tool_defaults
from mora_agents.train.card import write_card
from mora_agents.train.dataset import Sample, dataset_sha256, read_dataset

TRAIN_JSON = "train.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
LORA_TARGETS = {"svd": ["to_q", "to_k", "to_v", "to_out.0"],
                "osp": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]}
"""Per system, LoRA on every attention projection of the denoisers: self-, cross- (which reads z) and, in SVD,
temporal attention; SD3's joint attention in both streams (`add_*`: the text stream, where z is; the targets of
diffusers' SD3 LoRA script), Open-Sora-Plan's 3D self-attention and text cross-attention (its own LoRA script's)."""
MAX_TRAIN_STEPS = 100_000
MAX_LORA_RANK = 1024
"""Above the width of every attention projection of the denoisers trained here (at most 1280 x 2048 in SDXL)."""
MAX_BATCH = 1024
SAMPLING_STEPS = {"full": 20, "tiny": 2}
"""chain: an upstream agent's sampling steps by preset: 20, DDIM's usual count (half of SDXL's 40 Euler steps at
inference, for the cost of a training step; SD3 runs 28); 2 on the tiny models, whose pictures are noise anyway."""
BYTES_PER_TRAINED = 20
"""fp32 weight, gradient, AdamW's two moments and the EMA copy."""

StepCallback = Callable[[int, int, dict[str, float]], None]
"""on_step(step, total, losses): losses by agent name, and `total` (L_total or L_final); main process only."""
Rate = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
"""A learning rate: finite, above 0, at most 1."""
TrainSide = Annotated[int, Field(ge=8, le=MAX_WORK_SIDE, multiple_of=8)]
"""A training width or height: the tools' upper bound; any multiple of 8 (the VAEs' factor) from 8, since training
fits its images itself (tests train the tiny models at 32x32)."""


def _finite(low: float, high: float, **bounds) -> object:
    return Annotated[float, Field(ge=low, le=high, allow_inf_nan=False, **bounds)]


class TrainConfig(BaseModel):
    """How to fine-tune. Defaults: the paper's appendix A.9 where it says, our choices (docs/training.md) where not.
    Every number is bounded (the tools' parameter types where they apply): a bad value raises before any work."""

    model_config = ConfigDict(extra="forbid")
    system: Literal["svd", "osp"] = "svd"
    """The paper's system whose agents train: svd (SDXL, InstructPix2Pix, SVD-XT) or osp (SD3, Open-Sora-Plan)."""
    preset: Literal["full", "tiny"] = "full"
    device: str = "auto"
    """auto, cpu or cuda (one GPU per process; several through `accelerate launch` or `--num-processes`)."""
    agents: list[str] | None = None
    """The agents to train (of the system's); None: every one (`agent_names`)."""
    objective: Literal["chain", "per-agent"] = "chain"
    """chain: the video loss trains every agent of the chain (the paper's L_total); per-agent: teacher forcing."""
    sampling_steps: Steps | None = None
    """chain: DDIM steps of an upstream agent's generation (the preset's SAMPLING_STEPS when not set)."""
    backprop_steps: Steps = 1
    """chain: K, the last sampling steps of an upstream agent that gradients pass through (truncated backprop)."""
    full: bool = False
    """Fine-tune every denoiser weight (UNet or DiT) instead of LoRA adapters."""
    lora_rank: int = Field(16, ge=1, le=MAX_LORA_RANK)
    modulation: bool = True
    """The self-modulation token z_i and alpha_i; off: plain joint fine-tuning (the paper's ablation)."""
    modulation_init: Literal["text", "random"] = "text"
    steps: int = Field(12, ge=1, le=MAX_TRAIN_STEPS)
    batch_size: int = Field(4, ge=1, le=MAX_BATCH)
    """Samples per optimiser step over all processes (each process takes an equal share)."""
    lr: Rate = 1e-5
    lr_modulation: Rate = 1e-4
    weight_decay: _finite(0, 1) = 1e-2
    max_grad_norm: _finite(0, 1e6, gt=0) = 1.0
    snr_gamma: _finite(0, 1e6, gt=0) = 5.0
    ema_decay: _finite(0, 1) = 0.999
    checkpoint_every: int = Field(4, ge=1, le=MAX_TRAIN_STEPS)
    keep_checkpoints: int = Field(2, ge=0, le=100)
    """The last N checkpoints stay (the final step's included); 0: removed when training ends."""
    gradient_checkpointing: bool = True
    frames: Frames | None = None
    """Clip frames the image-to-video agent learns (its backend's default clip when not set: SVD-XT 25,
    Open-Sora-Plan 93)."""
    resolution: tuple[TrainSide, TrainSide] | None = None
    """(width, height) every agent trains at; each agent's inference size when not set (svd: 1024x576; osp: SD3
    1024x768, Open-Sora-Plan 640x480)."""
    memory_profile: str = "resident"
    """resident, or 24gb: each agent's denoiser is on the GPU only for its own forward and backward (per-agent)."""
    report_to: Literal["none", "tensorboard", "wandb"] = "none"
    """accelerate's tracker for the losses, rates and token norms (files in OUT/logs)."""
    seed: Seed = 0
    iteration: int = Field(0, ge=0, le=MAX_TRAIN_STEPS)
    """Recorded in the card: the data-free loop's iteration that made the dataset."""
    init_adapters: Path | None = None
    """Start from a previous `mora train` output (the loop's previous iteration) instead of the base weights."""
    models: dict[str, str] = Field(default_factory=dict)
    """Model id or folder overrides by model key (as `ToolSettings.models`)."""

    @field_validator("memory_profile")
    @classmethod
    def _known_profile(cls, profile: str) -> str:
        if profile not in MEMORY_PROFILES:
            raise ValueError(f"unknown memory profile (choose from {', '.join(MEMORY_PROFILES)})")
        return profile

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.agents is not None:
            self.agents = self.agent_names()
        video = BACKENDS["image_to_video"][SYSTEMS[self.system]["image_to_video"]]
        if self.frames is not None and (self.frames - 1) % video.frames_step:
            raise ValueError(f"--frames {self.frames}: the {self.system} system's image-to-video agent ({video.label}) "
                             f"learns {video.frames_step}k+1 frames")
        side = max(BACKENDS["text_to_image"][SYSTEMS[self.system]["text_to_image"]].side, video.side)
        if self.resolution is not None and any(value % side for value in self.resolution):
            raise ValueError(f"--resolution {self.resolution[0]}x{self.resolution[1]}: the {self.system} system's "
                             f"agents take multiples of {side}")
        if self.backprop_steps > self.sampling().steps:
            raise ValueError(f"--backprop-steps {self.backprop_steps}: at most --sampling-steps "
                             f"({self.sampling().steps})")
        if self.objective == "chain" and self.memory_profile == "24gb":
            raise ValueError("--memory-profile 24gb: the chain objective keeps every agent of a chain on the device; "
                             "use the resident profile, or --objective per-agent")
        return self

    @classmethod
    def parse(cls, **values) -> TrainConfig:
        """Validate options; a bad one raises InputError naming it as its command-line option (`--lr: ...`)."""
        try:
            return cls(**values)
        except ValidationError as e:
            problems = dict.fromkeys(
                (f"--{str(error['loc'][0]).replace('_', '-')}: " if error["loc"] else "")
                + error["msg"].removeprefix("Value error, ") for error in e.errors())
            raise InputError("; ".join(problems)) from None

    def settings(self) -> AbstractContextManager:
        """The tool settings the models are built under."""
        return use_settings(preset=self.preset, models=self.models, adapters=None)

    def agent_names(self) -> list[str]:
        """The agents to train, upstream first: `agents` (each one of the system's; ValueError otherwise), or every
        agent of the system."""
        known = AGENT_MODELS[self.system]
        if self.agents is None:
            return list(known)
        unknown = [a for a in self.agents if a not in known]
        if unknown or not self.agents:
            raise ValueError(f"--agents: unknown agent {unknown[0] if unknown else '(none given)'} for the "
                             f"{self.system} system (its agents: {', '.join(known)})")
        return [a for a in known if a in self.agents]

    def sampling(self) -> Sampling:
        return Sampling(self.sampling_steps or SAMPLING_STEPS[self.preset], self.backprop_steps)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    losses: list[dict[str, float]]
    """One entry per step: {"step": n, agent: loss, ..., "total": L_total or L_final}."""
    adapters_sha256: str
    card: AdapterCard
    notes: list[str] = field(default_factory=list)
    """What the user should know (a damaged checkpoint skipped on resume)."""


class Diverged(MoraError):
    """A loss or a weight became NaN or infinite: training stops at that step, nothing of it is saved."""


# -- the public functions ---------------------------------------------------------------------------------------


def train(dataset_dir: Path, out_dir: Path, config: TrainConfig | None = None,
          on_step: StepCallback | None = None) -> TrainResult:
    """Fine-tune the agents on a dataset folder; writes adapters, modulation tokens and a card into `out_dir`.

    Bad input (dataset, options, an `out_dir` that holds something else, a configuration that would not fit in
    memory) raises InputError before anything is written. Checkpoints are kept every `checkpoint_every` steps; a
    killed run continues with `resume(out_dir)`. Run under `accelerate launch`, every process calls this and they
    train as one (DDP).
    """
    config = config or TrainConfig()
    dataset_dir, out_dir = Path(dataset_dir).resolve(), Path(out_dir).resolve()
    samples = read_dataset(dataset_dir)
    check_out_dir(out_dir)
    check_inputs(config, samples, dataset_dir)
    sha = dataset_sha256(dataset_dir, samples)
    return _Training(dataset_dir, out_dir, config, samples, sha, on_step).run(resume=False)


def check_out_dir(out_dir: Path) -> None:
    """A new training's `--out`: absent or empty (InputError otherwise, saying what it holds)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if (out_dir / "card.json").is_file():
            raise InputError(f"--out {out_dir}: holds finished training (card.json); choose a new folder")
        if (out_dir / TRAIN_JSON).is_file():
            raise InputError(f"--out {out_dir}: holds an unfinished training; continue it with "
                             f"`mora train --resume {out_dir}` or choose a new folder")
        raise InputError(f"--out {out_dir}: not empty; choose a new folder")


def read_record(out_dir: Path) -> tuple[Path, TrainConfig, str]:
    """An unfinished training's dataset folder, configuration and the dataset's sha256 then (its `train.json`);
    InputError if it is not one or the file is damaged."""
    out_dir = Path(out_dir).resolve()
    if (out_dir / "card.json").is_file():
        raise InputError(f"--resume {out_dir}: training finished already (card.json)")
    if not (out_dir / TRAIN_JSON).is_file():
        raise InputError(f"--resume {out_dir}: no {TRAIN_JSON} (not a `mora train` output folder)")
    try:
        record = json.loads((out_dir / TRAIN_JSON).read_text(encoding="utf-8"))
        return Path(record["dataset"]), TrainConfig.model_validate(record["config"]), str(record["dataset_sha256"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        reason = validation_summary(e) if isinstance(e, ValidationError) else (
            f"no {e}" if isinstance(e, KeyError) else str(e).splitlines()[0])
        raise InputError(f"--resume {out_dir}: {TRAIN_JSON} is damaged ({reason}); the training cannot continue: "
                         f"start it again with a new --out") from None


def resume(out_dir: Path, on_step: StepCallback | None = None) -> TrainResult:
    """Continue a training run from its last intact checkpoint (from the start if it made none): the same final
    weights as an uninterrupted run, up to the determinism of the device."""
    out_dir = Path(out_dir).resolve()
    dataset_dir, config, recorded = read_record(out_dir)
    samples = read_dataset(dataset_dir)
    sha = dataset_sha256(dataset_dir, samples)
    if sha != recorded:
        raise InputError(f"--resume {out_dir}: the dataset {dataset_dir} changed since training started")
    return _Training(dataset_dir, out_dir, config, samples, sha, on_step).run(resume=True)


def validation_loss(dataset_dir: Path, config: TrainConfig, adapters: Path | None = None, seed: int = 0,
                    repeats: int = 1) -> dict[str, float]:
    """The training loss on a dataset at fixed noise and timesteps (seeded), with the base weights or with
    `adapters` (a `mora train` output: the agents it trained use its weights and modulation tokens, the others
    their base weights): comparable between iterations, e.g. on a held-out dataset. `config` gives the objective,
    agents, preset, device, resolution and frames.

    Per-agent objective: each agent's loss and `total` (their sum); chain: `total` (L_total). `repeats`: draws of
    noise and timesteps per sample, averaged.
    """
    dataset_dir = Path(dataset_dir).resolve()
    samples = read_dataset(dataset_dir)
    device = resolve_device(config.device)
    with config.settings():
        card = check_adapters(adapters) if adapters is not None else None
    if card is not None and card.system != config.system:
        raise InputError(f"adapters {adapters}: trained the {card.system} system's agents, not the {config.system} "
                         f"system's")
    agents = build_agents(config, samples, dataset_dir, device,
                          torch.float32 if device.type == "cpu" else torch.bfloat16, frozen=(adapters, card))
    losses: dict[str, float] = {}
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type != "cpu"):
        for number, agent in enumerate(agents):
            agent.generator.manual_seed(seed + number)
        if config.objective == "chain":
            chains = sample_chains(samples, [a.name for a in agents], config.system)
            indices = list(chains)
            batches = [indices[i:i + config.batch_size] for i in range(0, len(indices), config.batch_size)]
            total = sum(chain_loss(agents, agents, chains, batch, config.sampling()).item() * len(batch)
                        for _ in range(repeats) for batch in batches)
            return {"total": total / (repeats * len(indices))}
        for agent in agents:
            rows = list(agent.rows.values())
            losses[agent.name] = sum(agent.sample_loss(rows).mean().item() for _ in range(repeats)) / repeats
    return {**losses, "total": sum(losses.values())}


# -- building the agents ----------------------------------------------------------------------------------------


def _lora_spec(config: TrainConfig) -> LoraSpec:
    return LoraSpec(rank=config.lora_rank, alpha=config.lora_rank, target_modules=LORA_TARGETS[config.system])


def resolution(config: TrainConfig, agent: str) -> tuple[int, int]:
    """(width, height) an agent trains at: the configured one, else the size its system's backend of its inference
    tool makes by default (the edit agent's: that of the frames it edits)."""
    tool = tool_defaults(config, "image_to_video" if agent == "image_to_video" else "text_to_image")
    return config.resolution or (tool["width"], tool["height"])


def sample_chains(samples: list[Sample], names: list[str], system: str) -> dict[int, list[str]]:
    """Dataset index -> the agents (of `names`, of `system`) its clip passes through, upstream first
    (`agents.chain`); only the samples whose clip's agent is among `names`."""
    return {i: path for i, sample in enumerate(samples) if (path := chain(sample, names, system))}


def trained_agents(config: TrainConfig, samples: list[Sample]) -> list[str]:
    """The agents of `config.agent_names()` that have samples under the objective (per-agent: any sample they learn
    from; chain: a sample whose clip passes through them). n in alpha_i = ||z_i|| / n counts these."""
    names = config.agent_names()
    if config.objective == "chain":
        paths = sample_chains(samples, names, config.system).values()
        return [a for a in names if any(a in path for path in paths)]
    return [a for a in names if any(AGENT_CLASSES[config.system][a].uses(sample) for sample in samples)]


def build_agents(config: TrainConfig, samples: list[Sample], dataset_dir: Path, device: torch.device,
                 weight_dtype: torch.dtype, frozen: tuple[Path | None, AdapterCard | None] | None = None
                 ) -> list[TrainableAgent]:
    """The agents that have samples to learn from, their fixed inputs encoded (then their text encoders parked on
    the CPU). For training: their denoisers prepared (LoRA or full, from `config.init_adapters` if set), their
    modulation tokens initialised; InputError first if that would not fit in the device's memory. `frozen` (an
    adapter folder and its card, or (None, None)): frozen agents as inference runs them, with the folder's weights
    and tokens for the agents it trained."""
    with config.settings():
        names, init = check_inputs(config, samples, dataset_dir)
        pipes = {name: build_pipeline(AGENT_MODELS[config.system][name], device, weight_dtype) for name in names}
        if frozen is None:
            check_memory(config, pipes, samples, device)
        agents = []
        for name, pipe in pipes.items():
            agent = make_agent(name, pipe, config, device, init) if frozen is None else frozen_agent(
                name, pipe, config, device, *frozen)
            encode(agent, samples, dataset_dir)
            agents.append(agent)
        return agents


TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
"""Pipeline components needed only to encode the dataset (and z's start): on the CPU once it is encoded."""


def encode(agent: TrainableAgent, samples: list[Sample], dataset_dir: Path) -> None:
    """Encode the agent's samples at its training resolution, then move its text encoders off the GPU (T5-XXL and
    mT5-XXL's encoder alone are 9.5 and 11 GB in bf16)."""
    agent.encode(samples, dataset_dir, resolution(agent.config, agent.name))
    for name in TEXT_ENCODERS if agent.device.type == "cuda" else ():
        if getattr(agent.pipe, name, None) is not None:
            getattr(agent.pipe, name).to("cpu")


def check_inputs(config: TrainConfig, samples: list[Sample], dataset_dir: Path) -> tuple[list[str], AdapterCard | None]:
    """Everything about a training that can be checked before work (InputError): the agents that have samples,
    their models on this machine, `init_adapters` fitting this training, the tracker's package. Returns those
    agents and that card."""
    try:
        names = config.agent_names()
    except ValueError as e:
        raise InputError(str(e)) from None
    if config.objective == "chain" and "image_to_video" not in names:
        raise InputError("--objective chain: the loss is the image-to-video agent's on the accepted clip; train it "
                         "too (--agents ...,image_to_video) or use --objective per-agent")
    agents = trained_agents(config, samples)
    if not agents:
        raise InputError(f"dataset {dataset_dir}: no sample for the agents {', '.join(names)}")
    check_tracker(config.report_to)
    with config.settings():
        check_available([AGENT_MODELS[config.system][a] for a in agents] if config.preset == "full" else [])
        init = check_adapters(config.init_adapters) if config.init_adapters else None
    if init is not None and init.system != config.system:
        raise InputError(f"--init-adapters {config.init_adapters}: trained the {init.system} system's agents, this "
                         f"training is of the {config.system} system's")
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


def check_tracker(report_to: str) -> None:
    """`--report-to`: the tracker's package is installed (InputError otherwise)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"none": True, "tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    if not available[report_to]:
        raise InputError(f"--report-to {report_to}: needs the {report_to} package (pip install {report_to})")


def _trained_parameters(denoiser: nn.Module, config: TrainConfig) -> int:
    """How many parameters training adds to or makes trainable in a denoiser (before any is allocated)."""
    if config.full:
        return sum(p.numel() for p in denoiser.parameters())
    targets = LORA_TARGETS[config.system]
    return sum(config.lora_rank * (module.in_features + module.out_features)
               for name, module in denoiser.named_modules()
               if isinstance(module, nn.Linear) and any(name.endswith(f".{target}") for target in targets))


def _free_bytes(device: torch.device) -> int | None:
    """Memory free on the device (CUDA), or available to this process (CPU, from /proc/meminfo); None: unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(config: TrainConfig, pipes: dict, samples: list[Sample], device: torch.device) -> None:
    """InputError if what training is about to allocate beyond the built models does not fit: the trained
    parameters with their gradients, AdamW state and EMA (fp32), and the encoded dataset (latents, start frames
    and text embeddings). Activations are not counted."""
    trained = sum(_trained_parameters(getattr(pipe, denoiser_name(pipe)), config) for pipe in pipes.values())
    cached = 0
    for name, pipe in pipes.items():
        cls = AGENT_CLASSES[config.system][name]
        frames = config.frames or tool_defaults(config, "image_to_video")["frames"]
        per_sample = cls.cached_values(pipe, *resolution(config, name), frames)
        cached += 4 * per_sample * sum(cls.uses(sample) for sample in samples)
    need, free = BYTES_PER_TRAINED * trained + cached, _free_bytes(device)
    if free is not None and need > free:
        what = "every UNet weight" if config.full else f"LoRA rank {config.lora_rank}"
        raise InputError(f"training needs about {need / 2**30:.1f} GiB on {device} beyond the models ({trained / 1e6:.1f} M "
                         f"trained parameters, {what}, with gradients, AdamW and EMA; the encoded dataset "
                         f"{cached / 2**30:.1f} GiB), more than the {free / 2**30:.1f} GiB free: lower --lora-rank, "
                         f"--frames or --resolution, or train fewer --agents")


def _agent(name: str, pipe, config: TrainConfig, device: torch.device) -> TrainableAgent:
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.float()  # frozen, small, and exact: SDXL's VAE overflows in 16 bits
    getattr(pipe, denoiser_name(pipe)).requires_grad_(False)
    return AGENT_CLASSES[config.system][name](pipe, device, config)


def make_agent(name: str, pipe, config: TrainConfig, device: torch.device, init: AdapterCard | None = None
               ) -> TrainableAgent:
    """A trainable agent over a built pipeline: LoRA injected (or every denoiser weight trainable with `full`), or
    the weights of `init` (`config.init_adapters`' card) loaded; its modulation token; trainable weights in fp32,
    the frozen ones left in the pipeline's dtype, the VAE in fp32."""
    agent = _agent(name, pipe, config, device)
    denoiser, modulation = agent.denoiser, None
    if init is not None:  # fitting this training: see `check_inputs`
        modulation = load_weights(denoiser, agent.component, config.init_adapters, init, name)
    elif not config.full:
        add_lora(denoiser, _lora_spec(config))
    if config.modulation:
        agent.add_modulation(modulation.z.detach() if modulation is not None else _initial_token(agent, config))
    for param_name, param in denoiser.named_parameters():
        param.requires_grad_(config.full or "lora_" in param_name)
    for param in (p for p in denoiser.parameters() if p.requires_grad):
        param.data = param.data.float()
    if config.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
        if config.objective == "chain":  # the chain backpropagates through the frozen VAEs at full resolution
            pipe.vae.enable_gradient_checkpointing()
    denoiser.train()
    return agent


def frozen_agent(name: str, pipe, config: TrainConfig, device: torch.device, adapters: Path | None,
                 card: AdapterCard | None) -> TrainableAgent:
    """An agent as inference runs it: the base model, or the adapter folder's weights and token if it trained it."""
    agent = _agent(name, pipe, config, device)
    agent.denoiser.eval()
    if card is not None and name in card.agents:
        modulation = load_weights(agent.denoiser, agent.component, adapters, card, name)
        if modulation is not None:
            agent.add_modulation(modulation.z.detach())
            agent.modulation.requires_grad_(False)
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
        weights = [p for p in agent.denoiser.parameters() if p.requires_grad]
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


def chain_loss(agents: list[TrainableAgent], models: list[nn.Module], chains: dict[int, list[str]],
               indices: list[int], sampling: Sampling) -> torch.Tensor:
    """L_total on a batch (dataset indices): `agents` upstream first (AGENT_MODELS' order, which `build_agents`
    keeps), each agent generates what the next one in a sample's chain starts from, and the last one's (the clip's)
    mean loss is computed from it. Each agent's model (`models`: the agents, or their DDP wrappers) is called exactly
    once; one with nothing to do adds a zero loss through its denoiser, so that every process's backward covers
    every agent."""
    made: dict[str, dict[int, torch.Tensor]] = {}
    loss = torch.zeros(())
    for agent, model in zip(agents, models):
        mine = [i for i in indices if agent.name in chains.get(i, ())]
        inputs = {}
        for i in mine:
            position = chains[i].index(agent.name)
            if position:
                inputs[i] = made[chains[i][position - 1]][i]
        if agent.output == "file_name":  # the clip's agent: the end of every chain
            loss = loss.to(agent.device) + model(mine, inputs)
        elif mine:
            made[agent.name] = dict(zip(mine, model(mine, inputs, sampling)))
        else:
            loss = loss.to(agent.device) + model([])
    return loss


# -- the training run -------------------------------------------------------------------------------------------


class Stepper:
    """Optimisation steps of the agents, shared by `train` and `mora bench --training`.

    A step: the objective's forward and backward on the batch, gradient clipping, one AdamW step over every agent's
    trainable weights and modulation token, the EMA update, and the self-modulated rates. A non-finite loss (before
    the update) or weight (after it) raises Diverged naming the step and the agent. Under the 24gb memory profile
    (one process, per-agent) each denoiser is on the GPU only for its own forward and backward, one sample at a time
    (the same gradient: the batch mean is the sum of the per-sample losses over the batch size), and SVD's image
    encoder, needed only to encode the dataset then, stays on the CPU (the text encoders are there already).
    """

    def __init__(self, accelerator, agents: list[TrainableAgent], config: TrainConfig,
                 chains: dict[int, list[str]] | None = None) -> None:
        from diffusers.training_utils import EMAModel

        self.accelerator, self.agents, self.config = accelerator, agents, config
        self.chains = chains if config.objective == "chain" else None
        self.offload = config.memory_profile == "24gb"  # on the CPU the moves are no-ops, the micro-batches not
        if self.offload:
            for agent in agents:
                if getattr(agent.pipe, "image_encoder", None) is not None:
                    agent.pipe.image_encoder.to("cpu")
                agent.denoiser.to("cpu")
        optimizer = torch.optim.AdamW(param_groups(agents, config), lr=config.lr, weight_decay=config.weight_decay)
        *self.models, self.optimizer = accelerator.prepare(
            *agents, optimizer, device_placement=[not self.offload] * len(agents) + [True])
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.ema = EMAModel(self.trainable, decay=config.ema_decay)
        accelerator.register_for_checkpointing(self.ema)

    def step(self, indices: list[int], step: int) -> dict[str, float]:
        """One optimisation step on a batch (dataset indices; `step` counts from 0); the losses (mean over
        processes) by agent and `total`."""
        for agent in self.agents:  # (seed, step, process, agent): a resumed run draws what an uninterrupted one would
            key = (self.config.seed, step, self.accelerator.process_index,
                   list(AGENT_MODELS[self.config.system]).index(agent.name))
            agent.generator.manual_seed(hash(key) % 2**63)  # hashes of int tuples do not vary between processes
        losses = self._chain_backward(indices) if self.chains is not None else self._backward(indices)
        if bad := next((name for name, value in losses.items() if not math.isfinite(value)), None):
            raise Diverged(f"step {step + 1}: the loss ({bad}) is {losses[bad]} (not finite); stopped before the "
                           f"update; a lower --lr may help")
        self.accelerator.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for agent in self.agents:
            if not all(torch.isfinite(p).all() for p in agent.parameters() if p.requires_grad):
                raise Diverged(f"step {step + 1}: the weights of {agent.name} are no longer finite after the update "
                               f"(NaN or infinity); stopped before saving them; a lower --lr may help")
        self.ema.step(self.trainable)
        set_modulated_rates(self.optimizer, self.agents, self.config.lr)
        return losses

    def _reduce(self, loss: float, count: int) -> float | None:
        """The mean of a loss over the processes' samples (None: no process had one)."""
        total, count = self.accelerator.reduce(torch.tensor([loss * count, count], device=self.accelerator.device),
                                               reduction="sum").tolist()
        return total / count if count else None

    def _chain_backward(self, indices: list[int]) -> dict[str, float]:
        loss = chain_loss(self.agents, self.models, self.chains, indices, self.config.sampling())
        self.accelerator.backward(loss)
        return {"total": self._reduce(loss.item(), len(indices))}

    def _backward(self, indices: list[int]) -> dict[str, float]:
        """Every agent's forward and backward (the gradients of L_final, the sum of their losses)."""
        accelerator, losses = self.accelerator, {}
        for agent, model in zip(self.agents, self.models):
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
            if (mean := self._reduce(loss.item(), len(used))) is not None:
                losses[agent.name] = mean
        losses["total"] = sum(losses.values())
        return losses


def check_device(device: str) -> None:
    """Training's `--device`: auto, cpu or cuda (one GPU per process); raises InputError."""
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device}: training takes auto, cpu or cuda (choose GPUs with "
                         f"CUDA_VISIBLE_DEVICES, several with --num-processes)")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device here")


def per_process_batch(batch_size: int, processes: int) -> int:
    """Each process's share of the global batch; InputError unless the processes divide it."""
    share, rest = divmod(batch_size, processes)
    if rest or not share:
        raise InputError(f"--batch-size {batch_size}: the global batch is shared equally by the {processes} "
                         f"processes; give a multiple of {processes}")
    return share


_DAMAGED = (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)
"""What reading a truncated or foreign checkpoint raises (safetensors' and torch.load's errors among them)."""


class _Training:
    def __init__(self, dataset_dir: Path, out_dir: Path, config: TrainConfig, samples: list[Sample], dataset_sha: str,
                 on_step: StepCallback | None) -> None:
        self.dataset_dir, self.out_dir, self.config, self.samples = dataset_dir, out_dir, config, samples
        self.dataset_sha = dataset_sha
        self.on_step = on_step
        self.losses: list[dict[str, float]] = []
        self.notes: list[str] = []

    def _accelerator(self):
        from accelerate import Accelerator, DataLoaderConfiguration

        check_device(self.config.device)
        cpu = self.config.device == "cpu" or not torch.cuda.is_available()
        accelerator = Accelerator(
            cpu=cpu, mixed_precision="no" if cpu else "bf16",
            log_with=None if self.config.report_to == "none" else self.config.report_to,
            project_dir=str(self.out_dir / LOGS),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=self.config.seed))
        if self.config.memory_profile == "24gb" and accelerator.num_processes > 1:
            raise InputError("--memory-profile 24gb: for one process; several GPUs train with the resident profile")
        return accelerator

    def run(self, resume: bool) -> TrainResult:
        from accelerate.utils import set_seed

        config = self.config
        accelerator = self._accelerator()
        main = accelerator.is_main_process
        batch = per_process_batch(config.batch_size, accelerator.num_processes)
        set_seed(config.seed, device_specific=True)
        weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        agents = build_agents(config, self.samples, self.dataset_dir, accelerator.device, weight_dtype)
        accelerator.wait_for_everyone()  # every process checked its input before anything is written
        if not resume and main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.out_dir / TRAIN_JSON, {
                "dataset": str(self.dataset_dir), "dataset_sha256": self.dataset_sha,
                "config": config.model_dump(mode="json"), "created": datetime.now().isoformat()})
        chains = sample_chains(self.samples, [a.name for a in agents], config.system)
        stepper = Stepper(accelerator, agents, config, chains)
        indices = list(chains) if config.objective == "chain" else list(range(len(self.samples)))
        loader = accelerator.prepare(torch.utils.data.DataLoader(indices, batch_size=batch, shuffle=True,
                                                                 collate_fn=list))
        self._register_hooks(accelerator, agents)
        step = self._load_checkpoint(accelerator) if resume else 0
        accelerator.wait_for_everyone()
        accelerator.init_trackers("mora-train", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                        for k, v in config.model_dump(mode="json").items()})
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
                accelerator.log({**{f"loss/{k}": v for k, v in losses.items()},
                                 **{f"alpha/{a.name}": alpha(a, len(agents)) for a in agents}}, step=step)
                if (step % config.checkpoint_every == 0 and step < config.steps) or (
                        step == config.steps and config.keep_checkpoints):
                    self._save_checkpoint(accelerator, step)
                if self.on_step and main:
                    self.on_step(step, config.steps, self.losses[-1])
                if step >= config.steps:
                    break
        stepper.ema.copy_to(stepper.trainable)
        accelerator.wait_for_everyone()
        if main:
            self._write_card(accelerator, agents, step)
            if not config.keep_checkpoints:
                shutil.rmtree(self.out_dir / CHECKPOINTS, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.end_training()  # last: under several processes it also ends their process group
        card = AdapterCard.model_validate_json((self.out_dir / "card.json").read_bytes())
        return TrainResult(self.out_dir, step, self.losses, card_sha256(self.out_dir), card, self.notes)

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
        """Checkpoints hold only the trainable weights (LoRA or denoiser, and z), not the frozen base models."""
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
                            if state[name].shape != p.shape or not torch.isfinite(state[name]).all():
                                raise ValueError(f"{agent.name}.safetensors: {name} does not fit or is not finite")
                            p.copy_(state[name])
            models.clear()

        accelerator.register_save_state_pre_hook(save)
        accelerator.register_load_state_pre_hook(load)

    def _save_checkpoint(self, accelerator, step: int) -> None:
        """Write the state beside its final name, then rename: a killed save leaves the previous checkpoints. The
        last `keep_checkpoints` (at least one while training) are kept."""
        folder = self.out_dir / CHECKPOINTS
        temporary, final = folder / f".step-{step:06d}.tmp", folder / f"step-{step:06d}"
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            _write_json(temporary / "progress.json", {"step": step, "losses": self.losses})
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)  # one of this step that a resume skipped as damaged
            temporary.rename(final)
            kept = sorted(folder.glob("step-*"))[-max(self.config.keep_checkpoints, 1):]
            for old in folder.iterdir():
                if old not in kept:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def _load_checkpoint(self, accelerator) -> int:
        """Load the latest intact checkpoint (a damaged one is skipped, with a note); its step (0 without any).
        InputError if every checkpoint is damaged."""
        damaged = []
        for checkpoint in sorted((self.out_dir / CHECKPOINTS).glob("step-*"), reverse=True):
            try:
                progress = json.loads((checkpoint / "progress.json").read_text(encoding="utf-8"))
                step, losses = int(progress["step"]), list(progress["losses"])
                accelerator.load_state(str(checkpoint))
            except _DAMAGED as e:
                damaged.append(f"{checkpoint.name} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
                continue
            if damaged:
                self.notes.append(f"damaged checkpoint {'; '.join(damaged)}: resumed from {checkpoint.name} instead")
            self.losses = losses
            return step
        if damaged:
            raise InputError(f"--resume {self.out_dir}: every checkpoint is damaged ({'; '.join(damaged)}); remove "
                             f"{self.out_dir / CHECKPOINTS} to start again from step 0")
        return 0


@contextmanager
def _on_device(agent: TrainableAgent) -> Iterator[None]:
    """The agent's denoiser on its device for the block, then back on the CPU (the 24gb memory profile)."""
    agent.denoiser.to(agent.device)
    try:
        yield
    finally:
        agent.denoiser.to("cpu")


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
