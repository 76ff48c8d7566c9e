"""Measurements: stage wall time and peak memory, denoiser time and FLOPs, PSNR, and the GPUs' dense peaks.

Wall times are taken between device synchronisations; denoiser calls are timed with CUDA events (or the CPU
clock) from forward hooks, so a stage's denoiser share needs no extra synchronisation. FLOPs come from
`torch.utils.flop_counter.FlopCounterMode` over one denoiser call per stage (every call of a stage has the
same shapes), run eagerly; it counts matmuls, convolutions and CUDA attention kernels, not CPU attention.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DENSE_BF16_TFLOPS: tuple[tuple[frozenset[str], float], ...] = (
    (frozenset({"h100", "pcie"}), 756.0),
    (frozenset({"h100", "nvl"}), 835.0),
    (frozenset({"h100"}), 989.4),
    (frozenset({"h200", "nvl"}), 835.0),
    (frozenset({"h200"}), 989.4),
    (frozenset({"a100"}), 312.0),
    (frozenset({"l4"}), 121.0),
    (frozenset({"4090"}), 165.2),
)
"""Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by words of the device name,
first match first: H100 SXM, H100 PCIe, H100 NVL, H200 (SXM, NVL), A100, L4, RTX 4090 (FP32 accumulate)."""


def dense_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named as `torch.cuda.get_device_name` names it, or None if not in the table."""
    words = set(re.split(r"[\s\-_]+", device_name.lower()))
    return next((peak for needed, peak in DENSE_BF16_TFLOPS if needed <= words), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of frames in [0, 1] against the reference frames (inf when identical)."""
    if output.shape != reference.shape:
        raise ValueError(
            f"cannot compare outputs of shapes {output.shape} and {reference.shape}"
        )
    mse = float(
        np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2)
    )
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@dataclass(frozen=True)
class StageSample:
    """One stage of one run. Memory peaks are bytes (None off CUDA)."""

    name: str
    seconds: float
    denoiser_seconds: float
    denoiser_calls: int
    peak_allocated: int | None
    peak_reserved: int | None


class _DenoiserProbe:
    """Forward hooks timing every call of a denoiser; the first call can also be FLOP-counted."""

    def __init__(self, denoiser: nn.Module, cuda: bool, count_flops: bool) -> None:
        self.cuda, self.count_flops = cuda, count_flops
        self.starts: list[Any] = []
        self.ends: list[Any] = []
        self.flops: int | None = None
        self._counting: ExitStack | None = None
        self._counter: FlopCounterMode | None = None
        self._handles = [
            denoiser.register_forward_pre_hook(self._before, with_kwargs=True),
            denoiser.register_forward_hook(self._after, with_kwargs=True),
        ]

    def _mark(self) -> Any:
        """A CUDA event recorded on the current stream, or the CPU clock."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.count_flops and not self.starts:
            # Eagerly: under the counter (a dispatch mode) dynamo would not compile a block, and would then run it
            # eagerly for good; this way a compiled block compiles on its next call.
            self._counting = ExitStack()
            self._counting.enter_context(torch.compiler.set_stance("force_eager"))
            self._counter = self._counting.enter_context(FlopCounterMode(display=False))
        self.starts.append(self._mark())

    def _after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.ends.append(self._mark())
        self._stop_counting()

    def _stop_counting(self) -> None:
        if self._counting is not None and self._counter is not None:
            self._counting.close()
            self.flops, self._counting = self._counter.get_total_flops(), None

    def close(self) -> float:
        """Remove the hooks; the seconds spent in the denoiser (call after a device synchronisation)."""
        self._stop_counting()
        for handle in self._handles:
            handle.remove()
        pairs = zip(self.starts, self.ends)
        if self.cuda:
            return sum(start.elapsed_time(end) for start, end in pairs) / 1000
        return sum(end - start for start, end in pairs)


class Recorder:
    """Records the stages of one run. With `flops` given, the first denoiser call of a stage missing from it
    is FLOP-counted into it (counting slows that call: do it in a warm-up run)."""

    def __init__(
        self, device: torch.device, flops: dict[str, int] | None = None
    ) -> None:
        self.device, self.flops = device, flops
        self.cuda = device.type == "cuda"
        self.samples: list[StageSample] = []

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str, denoiser: nn.Module | None = None) -> Iterator[None]:
        """Time the enclosed work as stage `name`, and the calls of `denoiser` inside it."""
        self._sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        count = self.flops is not None and name not in self.flops
        probe = (
            _DenoiserProbe(denoiser, self.cuda, count) if denoiser is not None else None
        )
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            seconds = time.perf_counter() - start
            denoiser_seconds = probe.close() if probe else 0.0
        if probe and probe.flops is not None and self.flops is not None:
            self.flops[name] = probe.flops
        allocated, reserved = (
            (
                torch.cuda.max_memory_allocated(self.device),
                torch.cuda.max_memory_reserved(self.device),
            )
            if self.cuda
            else (None, None)
        )
        calls = len(probe.starts) if probe else 0
        self.samples.append(
            StageSample(name, seconds, denoiser_seconds, calls, allocated, reserved)
        )
