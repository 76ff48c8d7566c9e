"""The configurations a workload runs in, and the pipelines each one builds.

`reference` is what the paper's code does: fp16 pipelines built by every task, resident on the GPU except
SVD, which runs with `enable_model_cpu_offload`; default attention; no compilation. `ours` is the `full`
preset: the same weights and dtype, built once per process and prepared by `loading.finish_pipeline`.
Approximate speed-ups are `ours` with changed settings; a memory profile is `ours` placed to fit a budget.
Candidates are `ours` with exact speed-ups (bf16, channels-last, fused QKV, regional torch.compile) applied to
its pipelines, each alone or all together: what `finish_pipeline` would do if the benchmark shows it pays.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch
from diffusers import DiffusionPipeline
from torch import nn

from mora_agents.bench.build import DEPENDS, build_pipeline
from mora_agents.pipelines.loading import finish_pipeline
from mora_agents.pipelines.speed import REPEATED_BLOCKS
from mora_agents.settings import Speed

Settings = Mapping[str, Mapping[str, Any]]
"""Tool parameters by tool name, as in `tools.defaults.DEFAULTS[preset]`."""
Prepare = Callable[[str, DiffusionPipeline, torch.device], DiffusionPipeline]


def merge(settings: Settings, overrides: Settings) -> dict[str, dict[str, Any]]:
    """`settings` with the parameters of `overrides` replaced."""
    return {
        tool: {**params, **overrides.get(tool, {})} for tool, params in settings.items()
    }


@dataclass(frozen=True)
class Configuration:
    name: str
    prepare: Prepare
    """Turns a freshly built pipeline (by model key) into the one this configuration runs."""
    per_task: bool = False
    """Pipelines built inside every run, as a timed `build` stage; otherwise once, before the runs."""
    overrides: Settings = field(default_factory=dict)
    """Settings changed from the preset's: only approximate speed-ups have any."""
    speed: Speed | None = None
    """The speed settings of a `--speed` row (`mora_agents.pipelines.speed`)."""


def _reference(
    key: str, pipe: DiffusionPipeline, device: torch.device
) -> DiffusionPipeline:
    pipe.set_progress_bar_config(disable=True)
    if key == "svd":
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    return pipe.to(device)


def _ours(key: str, pipe: DiffusionPipeline, device: torch.device) -> DiffusionPipeline:
    return finish_pipeline(key, pipe, device)


def _offloaded(key: str, pipe: DiffusionPipeline, device: torch.device) -> DiffusionPipeline:
    """The preset's pipeline under the `24gb` memory profile, as `mora run --memory-profile 24gb` runs it."""
    return finish_pipeline(key, pipe, device, "24gb")


REFERENCE = Configuration("reference", _reference, per_task=True)
OURS = Configuration("ours", _ours)


def speed_configuration(name: str, speed: Speed) -> Configuration:
    """`ours` run with speed settings (`mora run --speed`): its own row, with PSNR against the exact output."""

    def prepare(key: str, pipe: DiffusionPipeline, device: torch.device) -> DiffusionPipeline:
        torch._dynamo.reset()  # as for the compile candidate: each row pays its own compiling
        return finish_pipeline(key, pipe, device, speed=speed)

    return Configuration(f"ours+{name}", prepare, speed=speed)


def approximate(name: str, overrides: Settings) -> Configuration:
    """`ours` with an approximate speed-up: its own row, never a default."""
    return Configuration(f"ours+{name}", _ours, overrides=overrides)


def _bf16(key: str, pipe: DiffusionPipeline) -> None:
    """Every module in bf16, the VAE too: bf16 has fp32's range, so the fp16 overflow for which diffusers decodes
    SDXL's and SVD's latents in fp32 (`force_upcast`) cannot happen, and the pipelines expect one dtype."""
    for component in pipe.components.values():
        if isinstance(component, nn.Module):  # not `pipe.to`: diffusers warns on every cast, needed or not
            nn.Module.to(component, dtype=torch.bfloat16)


def _channels_last(key: str, pipe: DiffusionPipeline) -> None:
    """Every 2D convolution of the denoiser and the VAE in channels-last layout (SEINE's per-frame ones too);
    SVD's 3D (temporal) convolutions keep theirs, as channels-last is a 4D layout."""
    for model in (pipe.unet, pipe.vae):
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)


def _fused_qkv(key: str, pipe: DiffusionPipeline) -> None:
    pipe.fuse_qkv_projections()


FUSED_QKV_MODELS = frozenset({"sdxl_base", "sdxl_refiner", "instruct_pix2pix"})
"""The models whose pipelines have `fuse_qkv_projections` (the denoiser's and the VAE's attention)."""


def _compile(key: str, pipe: DiffusionPipeline) -> None:
    """Regional compilation: `torch.compile` of each transformer block of the denoiser (on its first call). Dynamo's
    caches are reset first: a row's first run pays all its compiling, and only its graphs count towards dynamo's
    recompile limit (beyond it, dynamo runs a block eagerly)."""
    torch._dynamo.reset()
    if key in REPEATED_BLOCKS:
        pipe.unet._repeated_blocks = REPEATED_BLOCKS[key]
    pipe.unet.compile_repeated_blocks()


@cache
def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` on this machine, or None: a tiny function is compiled (inductor
    needs a C++ compiler for CPU code, Triton and a C compiler for CUDA code)."""
    try:
        torch.compile(lambda x: x.sin() + 1)(torch.zeros(8, device=device))
    except Exception as exc:  # any failure means that compilation cannot run here
        first_line = next(iter(str(exc).strip().splitlines()), "")
        return f"torch.compile cannot run on {device} here ({type(exc).__name__}: {first_line[:200]})"
    return None


def _available(device: torch.device) -> str | None:
    return None


@dataclass(frozen=True)
class Change:
    """An exact speed-up: a change to `ours`' pipeline of each model it applies to."""

    name: str
    apply: Callable[[str, DiffusionPipeline], None]
    models: frozenset[str] | None = None
    """The model keys it applies to (None: all)."""
    unavailable: Callable[[torch.device], str | None] = _available
    """Why it cannot run on a device on this machine, or None."""

    def applies(self, key: str) -> bool:
        return self.models is None or key in self.models


PAPER_MODELS = frozenset({"sdxl_base", "sdxl_refiner", "instruct_pix2pix", "svd", "seine"})
"""The paper's models, whose UNets the candidates change (the newer backends' transformers run in bf16 already)."""
CHANGES = (
    Change("bf16", _bf16, PAPER_MODELS),
    Change("channels_last", _channels_last, PAPER_MODELS),
    Change("fused_qkv", _fused_qkv, FUSED_QKV_MODELS),
    Change("compile", _compile, PAPER_MODELS, unavailable=compile_unavailable),
)
"""In the order `ours+combined` applies them: compilation last, of the final weights and layout."""
CANDIDATES: dict[str, tuple[Change, ...]] = {change.name: (change,) for change in CHANGES} | {"combined": CHANGES}
"""Candidate name -> its changes: each change alone, and all of them `combined`."""


def candidate(name: str) -> Configuration:
    """`ours` with the changes of a candidate, each on the models it applies to: its own row, never a default."""
    changes = CANDIDATES[name]

    def prepare(key: str, pipe: DiffusionPipeline, device: torch.device) -> DiffusionPipeline:
        pipe = finish_pipeline(key, pipe, device)
        for change in changes:
            if change.applies(key):
                change.apply(key, pipe)
        return pipe

    return Configuration(f"ours+{name}", prepare)


def unavailable(name: str, device: torch.device) -> str | None:
    """Why a candidate cannot run on `device` on this machine, or None."""
    return next((reason for change in CANDIDATES[name] if (reason := change.unavailable(device))), None)


def unsupported(name: str, models: tuple[str, ...]) -> str | None:
    """Why a candidate changes none of these models, or None."""
    changes = CANDIDATES[name]
    if any(change.applies(key) for change in changes for key in models):
        return None
    only = sorted({key for change in changes for key in change.models or ()})
    return f"{name} applies only to {', '.join(only)}"


@dataclass(frozen=True)
class MemoryProfile:
    configuration: Configuration
    budget_gib: float
    """The peak (reserved) memory the profile must stay under."""
    workloads: tuple[str, ...]


MEMORY_PROFILES = {
    "24gb": MemoryProfile(
        Configuration("ours-24gb", _offloaded),
        budget_gib=22.0,
        workloads=("text_to_video_12s", "seine_transition", "flux_schnell_image", "flux_kontext_edit",
                   "wan_ti2v_segment", "ltx_segment", "wan_flf2v_transition", "sd3_image", "osp_segment",
                   "osp_transition"),
    ),
}


class Pipelines:
    """A configuration's pipelines, built on `device` and prepared on first use, freed by `close`."""

    def __init__(
        self, configuration: Configuration, size: str, device: torch.device
    ) -> None:
        self.configuration, self.size, self.device = configuration, size, device
        self._built: dict[str, DiffusionPipeline] = {}

    def __getitem__(self, key: str) -> DiffusionPipeline:
        if key not in self._built:
            depends = [self[other] for other in DEPENDS.get(key, ())]
            pipe = build_pipeline(key, self.size, self.device, *depends)
            self._built[key] = self.configuration.prepare(key, pipe, self.device)
        return self._built[key]

    def build(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self[key]

    def close(self) -> None:
        self._built.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
