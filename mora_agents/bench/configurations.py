"""The configurations a workload runs in, and the pipelines each one builds.

`reference` is what the paper's code does: fp16 pipelines built by every task, resident on the GPU except
SVD, which runs with `enable_model_cpu_offload`; default attention; no compilation. `ours` is the `full`
preset: the same weights and dtype, built once per process and prepared by `loading.finish_pipeline`.
Approximate speed-ups are `ours` with changed settings; a memory profile is `ours` placed to fit a budget.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline

from mora_agents.bench.build import DEPENDS, build_pipeline
from mora_agents.models.loading import finish_pipeline

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


def approximate(name: str, overrides: Settings) -> Configuration:
    """`ours` with an approximate speed-up: its own row, never a default."""
    return Configuration(f"ours+{name}", _ours, overrides=overrides)


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
        workloads=("text_to_video_12s", "seine_transition"),
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
