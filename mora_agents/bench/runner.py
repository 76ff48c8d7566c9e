"""Run the workloads in each configuration, in one process: warm-up runs, then timed runs, then the rows.

Per workload, `ours` runs first and its output is the exact one that every other configuration's output
(same seed, same weights) is compared with. Its first warm-up run also counts the denoiser FLOPs; the other
configurations make the same denoiser calls (same shapes) and reuse them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
import transformers

from mora_agents.bench.configurations import (
    MEMORY_PROFILES,
    OURS,
    REFERENCE,
    Configuration,
    MemoryProfile,
    Pipelines,
    Settings,
    approximate,
    candidate,
    merge,
    speed_configuration,
    unavailable,
    unsupported,
)
from mora_agents.bench.measure import (
    Recorder,
    StageSample,
    dense_bf16_peak,
    device_name,
    psnr,
)
from mora_agents.bench.report import Report, Row, Skipped
from mora_agents.bench.workloads import Workload, settings_for
from mora_agents.pipelines.loading import full_dtype
from mora_agents.settings import ProgressHook, Speed


@dataclass(frozen=True)
class Plan:
    size: str
    device: torch.device
    workloads: tuple[Workload, ...]
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    approximate: bool = True
    """Also run each workload's approximate speed-up, as its own row."""
    memory_profile: str | None = None
    reference: bool = True
    """Also run `reference` (the paper's code)."""
    candidates: tuple[str, ...] = ()
    """Exact speed-up candidates (names in `configurations.CANDIDATES`) to run as their own rows."""
    speeds: tuple[tuple[str, Speed], ...] = ()
    """Speed settings (`--speed`) to run as their own rows, by row name."""


def configurations(
    plan: Plan,
    workload: Workload,
    settings: Settings,
    profile: MemoryProfile | None,
    candidates: list[str],
) -> list[Configuration]:
    """The configurations a workload runs in, `ours` (the exact output) first."""
    chosen = [OURS]
    if plan.reference and workload.paper:
        chosen.append(REFERENCE)
    if plan.approximate and workload.approximation is not None:
        chosen.append(approximate(*workload.approximation(settings)))
    chosen += [candidate(name) for name in candidates]
    chosen += [speed_configuration(name, speed) for name, speed in plan.speeds]
    if profile is not None and workload.name in profile.workloads:
        chosen.append(profile.configuration)
    return chosen


def _run_once(
    plan: Plan,
    workload: Workload,
    configuration: Configuration,
    pipes: Pipelines,
    settings: Settings,
    recorder: Recorder,
) -> np.ndarray:
    try:
        if configuration.per_task:
            with recorder.stage("build"):
                pipes.build(workload.models)
        with torch.inference_mode():
            return workload.run(pipes, settings, recorder, plan.seed)
    finally:
        if configuration.per_task:
            pipes.close()


def _measure(
    plan: Plan,
    workload: Workload,
    configuration: Configuration,
    settings: Settings,
    flops: dict[str, int],
    peak_tflops: float | None,
    progress: ProgressHook,
) -> tuple[Row, np.ndarray]:
    """A configuration's row and output; the first warm-up run counts the FLOPs of stages missing from `flops`."""
    settings = merge(settings, configuration.overrides)
    runs: list[list[StageSample]] = []
    first_run_s = 0.0
    shared = (
        None
        if configuration.per_task
        else Pipelines(configuration, plan.size, plan.device)
    )
    setup_s = None
    try:
        if shared is not None:
            setup = Recorder(plan.device)
            with setup.stage("setup"):
                shared.build(workload.models)
            setup_s = setup.samples[0].seconds
        for i in range(plan.warmup + plan.repeats):
            recorder = Recorder(plan.device, flops if i == 0 else None)
            pipes = shared or Pipelines(configuration, plan.size, plan.device)
            output = _run_once(plan, workload, configuration, pipes, settings, recorder)
            if i == 0:
                first_run_s = sum(sample.seconds for sample in recorder.samples)
            if i >= plan.warmup:
                runs.append(recorder.samples)
            progress.advance()
    finally:
        if shared is not None:
            shared.close()
    overrides = {tool: dict(params) for tool, params in configuration.overrides.items()}
    row = Row.from_runs(
        workload.name, configuration.name, overrides, setup_s, first_run_s, runs, flops, peak_tflops
    )
    row.speed = configuration.speed.record() if configuration.speed else None
    return row, output


def _compare(row: Row, ours: Row, output: np.ndarray, exact: np.ndarray) -> None:
    value = psnr(output, exact)
    row.psnr_db_vs_ours = value if math.isfinite(value) else None
    row.max_abs_diff_vs_ours = float(np.max(np.abs(output.astype(np.float64) - exact)))
    row.time_vs_ours = row.total_s / ours.total_s


def run_benchmark(plan: Plan, progress: ProgressHook) -> Report:
    """Measure every workload of the plan in each of its configurations; one progress bar per workload."""
    settings = settings_for(plan.size)
    profile = MEMORY_PROFILES[plan.memory_profile] if plan.memory_profile else None
    name = device_name(plan.device)
    peak_tflops = dense_bf16_peak(name) if plan.device.type == "cuda" else None
    report = Report(
        device=str(plan.device),
        device_name=name,
        size=plan.size,
        dtype=str(full_dtype(plan.device)).removeprefix("torch."),
        repeats=plan.repeats,
        warmup=plan.warmup,
        seed=plan.seed,
        dense_bf16_peak_tflops=peak_tflops,
        timings_meaningful=plan.size == "full" and plan.device.type == "cuda",
        memory_profile=plan.memory_profile,
        memory_budget_gib=profile.budget_gib if profile else None,
        versions={
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        settings=settings,
        candidates=list(plan.candidates),
    )
    reasons = {name: unavailable(name, plan.device) for name in plan.candidates}
    for workload in plan.workloads:
        runnable = []
        for name in plan.candidates:
            reason = reasons[name] or unsupported(name, workload.models)
            if reason:
                report.skipped.append(Skipped(workload.name, f"ours+{name}", reason))
            else:
                runnable.append(name)
        exact_configuration, *others = configurations(
            plan, workload, settings, profile, runnable
        )
        progress.start(workload.name, (1 + len(others)) * (plan.warmup + plan.repeats))
        flops: dict[str, int] = {}
        try:
            ours, exact = _measure(
                plan, workload, exact_configuration, settings, flops, peak_tflops, progress
            )
            ours.time_vs_ours = 1.0
            report.rows.append(ours)
            for configuration in others:
                row, output = _measure(
                    plan, workload, configuration, settings, flops, peak_tflops, progress
                )
                _compare(row, ours, output, exact)
                if (
                    profile
                    and configuration is profile.configuration
                    and row.peak_reserved_gib is not None
                ):
                    row.within_budget = row.peak_reserved_gib <= profile.budget_gib
                report.rows.append(row)
        finally:
            progress.stop()
    return report
