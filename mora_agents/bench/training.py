"""`mora bench --training`: fine-tuning steps of the agents on full-size random-weight models.

Each row trains one agent, or all of a system's together (`all`, `osp`), as `mora train --objective per-agent` does:
the same agents, `Stepper` (AdamW, EMA, min-SNR, modulation token, gradient checkpointing, bf16 autocast with fp32
trainable weights) and batch (4, the paper's), on four synthetic samples encoded by the agents' own encoders at
their default training shapes: Mora (SVD)'s SDXL base and InstructPix2Pix at 1024x576, SVD-XT on 25 frames at
1024x576; Mora (Open-Sora-Plan)'s SD3 Medium at 1024x768 (`sd3`) and Open-Sora-Plan v1.2 on 93 frames at 640x480
(`open_sora_plan`); LoRA (rank 16) and `--full`, under the resident profile and, with `--memory-profile 24gb`, under
24gb (one denoiser on the GPU at a time, one sample at a time).

On CUDA a row times `--repeats` steps after `--warmup` (median) and takes the peak allocated and reserved memory.
Everywhere, without a GPU too (`--count-flops`, or a CPU device), the models are built on the meta device and each
row reports parameters, trainable parameters, the memory of weights (frozen in bf16, trained in fp32, VAEs in fp32),
gradients, AdamW state and EMA, and the FLOPs of one step (forward, backward and checkpointing's recomputation).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mora_agents.bench.build import META, build_pipeline
from mora_agents.bench.report import GIB, _line
from mora_agents.media import save_image, write_video
from mora_agents.pipelines.adapters import AGENT_MODELS
from mora_agents.settings import ProgressHook
from mora_agents.train.agents import TrainableAgent
from mora_agents.train.dataset import read_dataset, write_sample
from mora_agents.train.trainer import Stepper, TrainConfig, encode, make_agent

SAMPLES = 4
"""Synthetic samples, one batch: the paper's batch size."""
TRAINING_WORKLOADS: dict[str, tuple[str, list[str] | None]] = {
    **{name: ("svd", [name]) for name in AGENT_MODELS["svd"]}, "all": ("svd", None),
    "sd3": ("osp", ["text_to_image"]), "open_sora_plan": ("osp", ["image_to_video"]), "osp": ("osp", None)}
"""Workload -> the system and the agents it trains (None: all of the system's)."""
MODES = ("lora", "full")
SIZE_SETTINGS = {"full": {"preset": "full"}, "tiny": {"preset": "tiny", "frames": 5, "resolution": (32, 32)}}
"""The training shapes per size: full, each agent's defaults (its inference size; SVD-XT 25 frames, Open-Sora-Plan
93); tiny, a smoke test (5 frames: Open-Sora-Plan's are 4k+1)."""
DATASET_FRAMES = {"full": 93, "tiny": 5}
"""Frames of the synthetic clips: the longest clip an agent learns (Open-Sora-Plan's 93; SVD-XT reads the first 25)."""
BUDGET_GIB = 22.0
"""What the 24gb profile must stay under (as for inference), leaving room for the CUDA context."""
COLUMNS = ("agents", "mode", "profile", "parameters", "trainable", "weights", "gradients", "AdamW", "EMA",
           "TFLOP/step", "step (s)", "peak alloc (GiB)", "peak reserved (GiB)", "notes")


@dataclass
class TrainingRow:
    agents: str
    mode: str
    profile: str
    parameters: int = 0
    """Of the UNets being trained, with the modulation tokens (the encoders and VAEs are in `weights_gib`)."""
    trainable: int = 0
    weights_gib: float = 0.0
    """Every module of the agents' pipelines as training holds them: frozen weights bf16, trained fp32, VAE fp32."""
    gradients_gib: float = 0.0
    optimizer_gib: float = 0.0
    ema_gib: float = 0.0
    tflop_per_step: float | None = None
    step_s: float | None = None
    steps_s: list[float] = field(default_factory=list)
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    note: str = ""


@dataclass
class TrainingReport:
    size: str
    device: str
    settings: dict
    rows: list[TrainingRow] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def to_markdown(self) -> str:
        shapes = ("SDXL base and InstructPix2Pix at 1024x576, SVD-XT 25 frames at 1024x576; SD3 Medium at 1024x768, "
                  "Open-Sora-Plan v1.2 93 frames at 640x480" if self.size == "full" else "tiny models (a smoke test)")
        lines = ["# mora bench --training", "",
                 f"One optimisation step of batch {SAMPLES} ({shapes}), on {self.device}. Memory columns in GiB: "
                 "weights (frozen bf16, trained fp32, VAEs fp32), gradients, AdamW state and EMA of the trained "
                 "weights; TFLOP/step counted on the meta device (forward, backward, checkpointing's recomputation).",
                 "", _line(*COLUMNS), "|---|---|---|" + "--:|" * (len(COLUMNS) - 4) + "---|"]
        for r in self.rows:
            lines.append(_line(
                r.agents, r.mode, r.profile, f"{r.parameters / 1e9:.3f} B", f"{r.trainable / 1e6:.1f} M",
                f"{r.weights_gib:.1f}", f"{r.gradients_gib:.1f}", f"{r.optimizer_gib:.1f}", f"{r.ema_gib:.1f}",
                _fmt(r.tflop_per_step, ".1f"), _fmt(r.step_s, ".2f"), _fmt(r.peak_allocated_gib, ".1f"),
                _fmt(r.peak_reserved_gib, ".1f"), r.note))
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def training_rows(workloads: tuple[str, ...], profiles: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    for profile in profiles:
        for mode in MODES:
            for workload in workloads:
                yield workload, mode, profile


def config_for(size: str, workload: str, mode: str, profile: str) -> TrainConfig:
    system, agents = TRAINING_WORKLOADS[workload]
    return TrainConfig(**SIZE_SETTINGS[size], system=system, device="auto", agents=agents, objective="per-agent",
                       full=mode == "full", memory_profile=profile, batch_size=SAMPLES)


def synthetic_dataset(folder: Path, size: str) -> Path:
    """SAMPLES samples of every agent (first frame, edit, clip) with smooth random pictures, at the training shapes."""
    width, height = SIZE_SETTINGS[size].get("resolution", (1024, 576))
    scratch = folder / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    for n in range(SAMPLES):
        phase = rng.uniform(0, 6, (3,))
        clip = np.stack([np.stack([127 + 120 * np.sin(5 * x + 3 * y + p + 0.3 * i) for p in phase], -1)
                         for i in range(DATASET_FRAMES[size])]).astype(np.uint8)
        write_video(clip, 7, scratch / f"clip{n}.mp4")
        save_image(Image.fromarray(clip[0]), scratch / f"first{n}.png")
        save_image(Image.fromarray(255 - clip[0]), scratch / f"edited{n}.png")
        write_sample(folder / "data", clip=scratch / f"clip{n}.mp4", task="text_to_video", prompt=f"sample {n}",
                     seed=n, enhanced_prompt=f"a detailed picture number {n}", first_frame=scratch / f"first{n}.png",
                     source_frame=scratch / f"first{n}.png", edited_frame=scratch / f"edited{n}.png",
                     instruction="invert the colours")
    return folder / "data"


def _agents(config: TrainConfig, size: str, device: torch.device, dataset: Path) -> list[TrainableAgent]:
    """The row's agents over bench-built random-weight pipelines: frozen modules in bf16 (fp32 on the CPU and meta,
    where dtypes do not matter), then prepared and their samples encoded exactly as `mora train` does."""
    samples = read_dataset(dataset)
    agents = []
    for name in config.agent_names():
        key = AGENT_MODELS[config.system][name]
        pipe = build_pipeline(key, size, device)
        for module in pipe.components.values():
            if isinstance(module, nn.Module):  # nn.Module's own `to`: diffusers' warns about every cast
                nn.Module.to(module, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        if device == META and key == "open_sora_plan":
            _shaped_text_states(pipe.text_encoder)
        agent = make_agent(name, pipe, config, device)
        encode(agent, samples, dataset)
        agents.append(agent)
    return agents


def _shaped_text_states(encoder: nn.Module) -> None:
    """mT5's encoder reads its attention mask's values (transformers skips an all-ones mask), which meta tensors do
    not have: on meta it returns states of the right shape only (encoding the dataset is no part of a step)."""
    encoder.forward = lambda input_ids, attention_mask=None: (
        torch.empty(*input_ids.shape, encoder.config.d_model, device=META, dtype=encoder.dtype),)


def _static(row: TrainingRow, agents: list[TrainableAgent], bf16: bool) -> None:
    """Parameter counts and the memory of weights, gradients, AdamW and EMA, from the agents' modules."""
    frozen_bytes = 2 if bf16 else 4
    for agent in agents:
        trained = [p for p in agent.parameters() if p.requires_grad]
        row.parameters += sum(p.numel() for p in agent.parameters())
        row.trainable += sum(p.numel() for p in trained)
        for name, module in agent.pipe.components.items():
            if isinstance(module, nn.Module) and name != agent.component:
                row.weights_gib += sum(p.numel() for p in module.parameters()) * (4 if name == "vae" else frozen_bytes) / GIB
    row.weights_gib += ((row.parameters - row.trainable) * frozen_bytes + row.trainable * 4) / GIB
    row.gradients_gib, row.optimizer_gib, row.ema_gib = (row.trainable * b / GIB for b in (4, 8, 4))


def count_row(size: str, workload: str, mode: str, profile: str, dataset: Path) -> TrainingRow:
    """A row on the meta device: counts, static memory and the FLOPs of one step (no data, no GPU)."""
    row = TrainingRow(workload, mode, profile)
    config = config_for(size, workload, mode, profile)
    agents = _agents(config, size, META, dataset)
    _static(row, agents, bf16=True)
    with FlopCounterMode(display=False) as counter:
        for agent in agents:
            agent(list(range(SAMPLES))).backward()
    row.tflop_per_step = counter.get_total_flops() / 1e12
    return row


def measure_row(size: str, workload: str, mode: str, profile: str, dataset: Path, device: torch.device,
                repeats: int, warmup: int, flops: float | None) -> TrainingRow:
    """A row trained on `device`: the median step time and the peak memory (CUDA), with the counts."""
    from accelerate import Accelerator

    row = TrainingRow(workload, mode, profile, tflop_per_step=flops)
    config = config_for(size, workload, mode, profile)
    cuda = device.type == "cuda"
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    try:
        agents = _agents(config, size, accelerator.device, dataset)
        _static(row, agents, bf16=cuda)
        stepper = Stepper(accelerator, agents, config)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for step in range(warmup + repeats):
            start = time.perf_counter()
            stepper.step(list(range(SAMPLES)), step)
            if cuda:
                torch.cuda.synchronize()
            if step >= warmup:
                row.steps_s.append(time.perf_counter() - start)
        row.step_s = statistics.median(row.steps_s)
    except torch.OutOfMemoryError:
        row.note = "out of memory"
    finally:
        if cuda:
            row.peak_allocated_gib = torch.cuda.max_memory_allocated() / GIB
            row.peak_reserved_gib = torch.cuda.max_memory_reserved() / GIB
        accelerator.free_memory()
        del accelerator
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    if cuda and profile == "24gb" and not row.note:
        row.note = f"{'within' if row.peak_reserved_gib <= BUDGET_GIB else 'over'} the {BUDGET_GIB:g} GiB budget"
    return row


def run_training_bench(size: str, device: torch.device, workloads: tuple[str, ...], profiles: tuple[str, ...],
                       repeats: int, warmup: int, scratch: Path, progress: ProgressHook) -> TrainingReport:
    """Every row counted on meta; on a CUDA device (or at size tiny, as a smoke test) also trained and timed, under
    each profile. Counted only, the profile changes nothing, so those rows are the resident ones."""
    dataset = synthetic_dataset(scratch, size)
    train_here = device.type == "cuda" or size == "tiny"
    rows = list(training_rows(workloads, profiles if train_here else ("resident",)))
    report = TrainingReport(size, str(device) if train_here else "meta (counted, not run)",
                            {"batch": SAMPLES, "repeats": repeats, "warmup": warmup, **SIZE_SETTINGS[size]})
    progress.start("training", len(rows))
    counted: dict[tuple[str, str], TrainingRow] = {}
    for workload, mode, profile in rows:
        if (workload, mode) not in counted:
            counted[workload, mode] = count_row(size, workload, mode, profile, dataset)
        flops = counted[workload, mode].tflop_per_step
        report.rows.append(measure_row(size, workload, mode, profile, dataset, device, repeats, warmup, flops)
                           if train_here else counted[workload, mode])
        progress.advance()
    progress.stop()
    return report
