"""The benchmark's results: per-stage statistics over the timed runs, rows, and their JSON and Markdown forms."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from mora_agents.bench.measure import StageSample

GIB = 2**30
SPEED_COLUMNS = ("cache", "attention", "compile", "quantize")
"""The speed settings of `--speed` rows (`mora_agents.pipelines.speed`), each a column."""
COLUMNS = (
    "workload",
    "configuration",
    "stage",
    "time (s)",
    "peak alloc (GiB)",
    "peak reserved (GiB)",
    "denoiser share",
    "denoiser TFLOP/s",
    "of bf16 peak",
    "PSNR vs ours (dB)",
    "time vs ours",
    *SPEED_COLUMNS,
    "notes",
)


def _gib(values: list[int | None]) -> float | None:
    known = [value for value in values if value is not None]
    return max(known) / GIB if known else None


@dataclass
class StageStats:
    """A stage over the timed runs: medians of time, peak memory over the runs (GiB, CUDA only)."""

    name: str
    time_s: float
    times_s: list[float]
    denoiser_s: float
    denoiser_share: float
    denoiser_calls: int
    denoiser_flops: int | None
    """FLOPs of the stage's denoiser calls: one call counted, times the number of calls."""
    denoiser_tflops: float | None
    """Achieved TFLOP/s of the denoiser: its FLOPs over its time."""
    peak_fraction: float | None
    """`denoiser_tflops` over the GPU's dense bf16 peak."""
    peak_allocated_gib: float | None
    peak_reserved_gib: float | None

    @classmethod
    def from_samples(
        cls,
        samples: list[StageSample],
        flops_per_call: int | None,
        peak_tflops: float | None,
    ) -> StageStats:
        time_s = statistics.median(s.seconds for s in samples)
        denoiser_s = statistics.median(s.denoiser_seconds for s in samples)
        calls = samples[0].denoiser_calls
        flops = flops_per_call * calls if flops_per_call is not None else None
        tflops = flops / denoiser_s / 1e12 if flops and denoiser_s > 0 else None
        return cls(
            name=samples[0].name,
            time_s=time_s,
            times_s=[s.seconds for s in samples],
            denoiser_s=denoiser_s,
            denoiser_share=denoiser_s / time_s if time_s > 0 else 0.0,
            denoiser_calls=calls,
            denoiser_flops=flops,
            denoiser_tflops=tflops,
            peak_fraction=tflops / peak_tflops
            if tflops is not None and peak_tflops
            else None,
            peak_allocated_gib=_gib([s.peak_allocated for s in samples]),
            peak_reserved_gib=_gib([s.peak_reserved for s in samples]),
        )


@dataclass
class Row:
    """One workload in one configuration."""

    workload: str
    configuration: str
    approximate: bool
    overrides: dict[str, dict[str, Any]]
    """Settings changed from the preset's (approximate rows)."""
    setup_s: float | None
    """Building the pipelines once before the runs (configurations that build per task time a `build` stage)."""
    first_run_s: float
    """The first warm-up run, not in the total; with torch.compile, it includes the compilation (on first call)."""
    total_s: float
    """Median over the timed runs of the sum of their stages."""
    totals_s: list[float]
    peak_allocated_gib: float | None
    peak_reserved_gib: float | None
    stages: list[StageStats]
    time_vs_ours: float | None = None
    psnr_db_vs_ours: float | None = None
    """PSNR of the decoded frames against `ours` on the same seed; None when identical (or for `ours`)."""
    max_abs_diff_vs_ours: float | None = None
    within_budget: bool | None = None
    """For memory-profile rows on CUDA: whether the peak reserved memory stayed within the profile's budget."""
    speed: dict[str, Any] | None = None
    """The speed settings of a `--speed` row (`Speed.record()`)."""

    @classmethod
    def from_runs(
        cls,
        workload: str,
        configuration: str,
        overrides: dict[str, dict[str, Any]],
        setup_s: float | None,
        first_run_s: float,
        runs: list[list[StageSample]],
        flops: dict[str, int],
        peak_tflops: float | None,
    ) -> Row:
        names = [sample.name for sample in runs[0]]
        stages = [
            StageStats.from_samples(
                [run[i] for run in runs], flops.get(name), peak_tflops
            )
            for i, name in enumerate(names)
        ]
        totals = [sum(sample.seconds for sample in run) for run in runs]
        return cls(
            workload=workload,
            configuration=configuration,
            approximate=bool(overrides),
            overrides=overrides,
            setup_s=setup_s,
            first_run_s=first_run_s,
            total_s=statistics.median(totals),
            totals_s=totals,
            peak_allocated_gib=_gib([s.peak_allocated for run in runs for s in run]),
            peak_reserved_gib=_gib([s.peak_reserved for run in runs for s in run]),
            stages=stages,
        )


@dataclass
class Skipped:
    """A configuration that did not run for a workload, and why."""

    workload: str
    configuration: str
    reason: str


@dataclass
class Report:
    device: str
    device_name: str
    size: str
    dtype: str
    repeats: int
    warmup: int
    seed: int
    dense_bf16_peak_tflops: float | None
    timings_meaningful: bool
    """False on tiny models or off CUDA: such a run checks the code path, its timings mean nothing."""
    memory_profile: str | None
    memory_budget_gib: float | None
    versions: dict[str, str]
    settings: dict[str, dict[str, Any]]
    """The preset's tool settings every exact row ran with."""
    candidates: list[str] = field(default_factory=list)
    """The exact speed-up candidates asked for (`ours+<name>` rows)."""
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False)

    def to_markdown(self) -> str:
        peak = (
            f"{self.dense_bf16_peak_tflops:g} TFLOP/s"
            if self.dense_bf16_peak_tflops
            else "unknown"
        )
        lines = [
            "# mora bench",
            "",
            f"{self.device_name} ({self.device}), size `{self.size}`, {self.dtype}, median of {self.repeats} "
            f"run(s) after {self.warmup} warm-up(s), seed {self.seed}; dense bf16 peak {peak}; "
            + ", ".join(f"{name} {version}" for name, version in self.versions.items())
            + ".",
            "",
        ]
        if not self.timings_meaningful:
            lines += [
                "**Timings of tiny models or CPU runs are meaningless: this run checks the code path.**",
                "",
            ]
        lines += [
            _line(*COLUMNS),
            "|---|---|---|" + "--:|" * (len(COLUMNS) - 4) + "---|",
        ]
        for row in self.rows:
            name = (row.workload, row.configuration)
            untimed = (("setup (once)", row.setup_s), ("first run (warm-up)", row.first_run_s))
            lines += [
                _line(*name, label, f"{seconds:.3f}", *[""] * (len(COLUMNS) - 5), "not in the total")
                for label, seconds in untimed
                if seconds is not None
            ]
            lines += [
                _line(
                    *name,
                    stage.name,
                    f"{stage.time_s:.3f}",
                    _fmt(stage.peak_allocated_gib, ".2f"),
                    _fmt(stage.peak_reserved_gib, ".2f"),
                    f"{stage.denoiser_share:.0%}",
                    _fmt(stage.denoiser_tflops, ".1f"),
                    _fmt(stage.peak_fraction, ".0%"),
                    *[""] * (len(COLUMNS) - 9),
                )
                for stage in row.stages
            ]
            lines.append(
                _line(
                    *name,
                    "**total**",
                    f"**{row.total_s:.3f}**",
                    _fmt(row.peak_allocated_gib, ".2f"),
                    _fmt(row.peak_reserved_gib, ".2f"),
                    "",
                    "",
                    "",
                    _fmt(row.psnr_db_vs_ours, ".1f"),
                    _fmt(row.time_vs_ours, ".2f", "x"),
                    *(str(row.speed[column]) if row.speed else "" for column in SPEED_COLUMNS),
                    self._notes(row),
                )
            )
        if self.skipped:
            lines += ["", "Not run:", ""]
            lines += [f"- {s.workload} `{s.configuration}`: {s.reason}" for s in self.skipped]
        return "\n".join(lines) + "\n"

    def _notes(self, row: Row) -> str:
        notes = list(row.speed["notes"]) if row.speed else []
        if row.max_abs_diff_vs_ours == 0:
            notes.append("output identical to ours")
        if row.within_budget is not None:
            state = "within" if row.within_budget else "OVER"
            notes.append(f"{state} the {self.memory_budget_gib:g} GiB budget")
        return "; ".join(notes)


def _line(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else format(value, spec) + suffix
