"""Count the FLOPs of every model call of the workloads, at full size, on a machine without a GPU.

The models are built on the meta device: shapes and dtypes, no data. The pipelines themselves run on the CPU as
`mora bench` runs them (same workload code, schedulers, image processing), but every call of one of their
models moves its inputs to meta, runs there under torch's flop counter, and hands the pipeline zeros shaped as
the output. A call whose inputs have the shapes of an earlier one costs what that one did and is not run again
(the 250 SEINE steps run one UNet forward). What the pipelines compute on the CPU outside their models (SVD's
antialiasing blur, say) is counted as `pipeline`.

From the counts come lower bounds: the seconds each call would take at a GPU's dense bf16 peak. They say how far
a goal is from what the hardware allows, and where the time must go, before anything is timed.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from unittest import mock
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import masking_utils

from mora_agents.bench.build import META
from mora_agents.bench.configurations import Configuration, Pipelines
from mora_agents.bench.report import _line
from mora_agents.bench.workloads import Workload, settings_for
from mora_agents.settings import ProgressHook

MODEL_METHODS = ("forward", "encode", "decode")
"""The methods of a pipeline's models that pipelines call (a VAE's `encode` and `decode` are not its forward)."""
PIPELINE_BUFFERS = {"latents_mean": 0.0, "latents_std": 1.0}
"""Model buffers that pipelines read outside their models' calls (LTX-Video's VAE statistics), with the plain value
they get on the CPU, where the pipelines' own arithmetic runs (their values do not change any FLOP count)."""
CPU = torch.device("cpu")


@dataclass
class ModelCalls:
    """The calls of one model method in one stage of a workload."""

    workload: str
    stage: str
    model: str
    """`<model key>.<component>[.<method>]`, e.g. `svd.unet`, `svd.vae.decode`; `pipeline` for the rest."""
    dtype: str
    calls: int = 0
    flops: int = 0
    attention_flops: int = 0
    """The part in batched matmuls: attention's QK^T and AV (on meta, scaled dot-product attention is counted as
    those two); the rest is the linear layers' matmuls and the convolutions."""


ATTENTION_OPS = {"bmm", "baddbmm", "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention"}
"""The counter's ops that attention runs as: batched matmuls on meta, fused kernels on CUDA."""
GOAL_FRACTION = 0.45
"""The issue's goal for the SVD denoiser: 45 % of the GPU's dense bf16 peak; the table shows every call at it."""
COLUMNS = (
    "workload", "stage", "model call", "dtype", "calls", "TFLOP", "attention", "of workload", "s at peak", "s at 45 %"
)


@dataclass
class FlopCount:
    size: str
    gpu: str
    peak_tflops: float
    """The dense bf16 peak that the ideal times divide by."""
    settings: dict[str, dict[str, Any]]
    rows: list[ModelCalls] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def seconds(self, flops: int, fraction: float = 1.0) -> float:
        return flops / (self.peak_tflops * 1e12 * fraction)

    def to_markdown(self) -> str:
        lines = [
            "# mora bench --count-flops",
            "",
            f"FLOPs of every model call of one run, counted on the meta device (size `{self.size}`, the `full` "
            f"preset's CUDA dtypes), and the seconds they would take at the {self.gpu}'s dense bf16 peak of "
            f"{self.peak_tflops:g} TFLOP/s and at {GOAL_FRACTION:.0%} of it: lower bounds, not measurements. "
            "float32 rows are held to the same peak (a TF32 one is half of it).",
            "",
            _line(*COLUMNS),
            "|---|---|---|---|" + "--:|" * (len(COLUMNS) - 4),
        ]
        for workload in dict.fromkeys(row.workload for row in self.rows):
            rows = [row for row in self.rows if row.workload == workload]
            total = sum(row.flops for row in rows)
            for row in rows:
                lines.append(_line(
                    workload, row.stage, row.model, row.dtype, str(row.calls), f"{row.flops / 1e12:.2f}",
                    f"{row.attention_flops / row.flops:.0%}" if row.flops else "", f"{row.flops / total:.1%}",
                    f"{self.seconds(row.flops):.3f}",
                    f"{self.seconds(row.flops, GOAL_FRACTION):.3f}",
                ))
            attention = sum(row.attention_flops for row in rows)
            lines.append(_line(
                f"**{workload}**", "**total**", "", "", str(sum(row.calls for row in rows)), f"**{total / 1e12:.2f}**",
                f"{attention / total:.0%}", "100%", f"**{self.seconds(total):.2f}**",
                f"**{self.seconds(total, GOAL_FRACTION):.2f}**",
            ))
        return "\n".join(lines) + "\n"


def _signature(value: Any) -> Any:
    """What decides a call's cost: tensors by shape and dtype, numbers by type (timesteps change, cost does not)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if isinstance(value, (list, tuple)):
        return tuple(_signature(item) for item in value)
    if isinstance(value, dict):
        return tuple((key, _signature(item)) for key, item in value.items())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return type(value).__name__
    return repr(value)


def _to(value: Any, device: torch.device) -> Any:
    """Tensors (also inside lists, tuples and dicts) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to(item, device) for key, item in value.items()}
    return value


def _zeros_like(value: Any) -> Any:
    """A copy of a model's output with every meta tensor replaced by CPU zeros of its shape and dtype: tensors,
    lists, tuples, model outputs (dicts that are dataclasses) and plain objects (a VAE's latent distribution)."""
    if isinstance(value, torch.Tensor):
        return torch.zeros(value.shape, dtype=value.dtype, device=CPU)
    if isinstance(value, (list, tuple)):
        return type(value)(_zeros_like(item) for item in value)
    if isinstance(value, dict):
        return type(value)(**{key: _zeros_like(item) for key, item in value.items()})
    if hasattr(value, "__dict__"):
        clone = copy.copy(value)
        for name, item in vars(value).items():
            setattr(clone, name, _zeros_like(item))
        return clone
    return value


def _dtype(module: nn.Module) -> str:
    param = next(module.parameters(), None)
    return str(param.dtype).removeprefix("torch.") if param is not None else "-"


class _Tally:
    """Stands in for the bench's Recorder (`stage`) and runs the wrapped model calls on meta, counting them."""

    def __init__(self, workload: str, counter: FlopCounterMode) -> None:
        self.workload, self.counter = workload, counter
        self.current = ""
        self.rows: dict[tuple[str, str, str], ModelCalls] = {}
        self.done: dict[Any, tuple[int, int, Any]] = {}
        """Per call signature: its FLOPs, their part in attention, and the output handed back (CPU zeros)."""
        self.model_flops = 0
        """The counter's FLOPs that were inside model calls (the rest are the pipelines' own)."""
        self.depth = 0
        self.wrapped: set[int] = set()
        """The ids of the models already wrapped (the refiner shares two of the base's)."""

    @contextmanager
    def stage(self, name: str, denoiser: nn.Module | None = None) -> Iterator[None]:
        self.current = name
        yield

    def _row(self, model: str, dtype: str) -> ModelCalls:
        key = (self.current, model, dtype)
        if key not in self.rows:
            self.rows[key] = ModelCalls(self.workload, self.current, model, dtype)
        return self.rows[key]

    def _attention_and_total(self) -> tuple[int, int]:
        by_op = self.counter.get_flop_counts().get("Global", {})
        attention = sum(flops for op, flops in by_op.items() if ATTENTION_OPS & set(str(op).split(".")))
        return attention, self.counter.get_total_flops()

    def prepare(self, key: str, pipe: DiffusionPipeline, device: torch.device) -> DiffusionPipeline:
        """A freshly built meta pipeline, made to count: each model it does not share with one before wrapped."""
        pipe.set_progress_bar_config(disable=True)
        _on_cpu(pipe)
        for name, component in pipe.components.items():
            for buffer, value in PIPELINE_BUFFERS.items():
                if isinstance(component, nn.Module) and isinstance(getattr(component, buffer, None), torch.Tensor):
                    setattr(component, buffer, torch.full(getattr(component, buffer).shape, value))
            if isinstance(component, nn.Module) and id(component) not in self.wrapped:
                self.wrapped.add(id(component))
                for method in (method for method in MODEL_METHODS if hasattr(component, method)):
                    label = f"{key}.{name}" if method == "forward" else f"{key}.{name}.{method}"
                    self._wrap(label, component, method)
        return pipe

    def _wrap(self, name: str, module: nn.Module, method: str) -> None:
        original: Callable[..., Any] = getattr(module, method)

        @functools.wraps(original)  # pipelines read the signature (SVD passes `num_frames` if `forward` takes it)
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.depth:  # inside another model call: already on meta and counted there
                return original(*args, **kwargs)
            dtype = _dtype(module)
            key = (name, dtype, _signature(args), _signature(kwargs))
            if key not in self.done:
                before = self._attention_and_total()
                self.depth += 1
                try:
                    output = original(*_to(args, META), **_to(kwargs, META))
                finally:
                    self.depth -= 1
                attention, flops = (after - first for after, first in zip(self._attention_and_total(), before))
                self.model_flops += flops
                self.done[key] = (flops, attention, _zeros_like(output))
            flops, attention, output = self.done[key]
            row = self._row(name, dtype)
            row.calls += 1
            row.flops += flops
            row.attention_flops += attention
            return output

        setattr(module, method, call)

    def finish(self) -> list[ModelCalls]:
        """The rows, and the pipelines' own FLOPs (outside their models) as one `pipeline` row if there are any."""
        rows = list(self.rows.values())
        own = self.counter.get_total_flops() - self.model_flops
        if own:
            rows.append(ModelCalls(self.workload, "(all)", "pipeline", "-", 1, own))
        return rows


def _on_cpu(pipe: DiffusionPipeline) -> None:
    """Make the pipeline put its own tensors on the CPU although its models are on meta."""
    cls = type(pipe)
    pipe.__class__ = type(cls.__name__, (cls,), {"_execution_device": property(lambda self: CPU)})


def count_workload(workload: Workload, size: str, seed: int = 0) -> list[ModelCalls]:
    """Every model call of one run of the workload, with its FLOPs, by stage."""
    # Text encoders always build their attention mask here: whether a padding mask may be skipped is read off its
    # values, which a meta tensor has not (SDPA's FLOPs are the same with a mask and without).
    with FlopCounterMode(display=False) as counter, mock.patch.object(
            masking_utils, "_ignore_bidirectional_mask_sdpa", return_value=False):
        tally = _Tally(workload.name, counter)
        pipes = Pipelines(Configuration("count", tally.prepare), size, META)
        with torch.inference_mode():
            workload.run(pipes, settings_for(size), tally, seed)
    return tally.finish()


def count_flops(
    workloads: tuple[Workload, ...], size: str, gpu: str, peak_tflops: float, progress: ProgressHook
) -> FlopCount:
    """Count every workload; `progress` advances once per workload."""
    count = FlopCount(size=size, gpu=gpu, peak_tflops=peak_tflops, settings=settings_for(size))
    progress.start("counting FLOPs", len(workloads))
    try:
        with _quiet():
            for workload in workloads:
                count.rows += count_workload(workload, size)
                progress.advance()
    finally:
        progress.stop()
    return count


@contextmanager
def _quiet() -> Iterator[None]:
    """Without diffusers' notes on the fp32 VAE casts that its pipelines make (they are the pipelines' own)."""
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
