"""``mora bench``: time the paper's workloads on real-size random-weight models, `reference` vs `ours`.

torch and diffusers are imported when the command runs, so that registering it keeps `mora` quick to start.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

WORKLOAD_HELP = (
    "text_to_image, image_edit, svd_segment, text_to_video_12s, seine_transition"
)
CANDIDATE_HELP = "bf16, channels_last, fused_qkv, compile, combined"


def _fail(message: str) -> typer.Exit:
    print(f"mora bench: error: {message}", file=sys.stderr)
    return typer.Exit(2)


def _names(option: str, value: str, choices: list[str]) -> list[str]:
    """The comma-separated names of an option, each once, all among `choices` (else a one-line error)."""
    names = list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    unknown = [name for name in names if name not in choices]
    if unknown or not names:
        raise _fail(
            f"{option} {value}: unknown {', '.join(unknown) or 'none given'} (choose from {', '.join(choices)})"
        )
    return names


class _Bars:
    """The runner's progress hook: one rich bar per workload, advanced once per run."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def start(self, label: str, total: int) -> None:
        self.task = self.progress.add_task(label, total=total)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        self.task = None


def bench_command(
    device: Annotated[str, typer.Option(help="auto, cuda, cuda:1, cpu.")] = "auto",
    size: Annotated[
        str,
        typer.Option(
            help="full: the published model sizes (CUDA only); tiny: tiny models (a smoke test)."
        ),
    ] = "full",
    workloads: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated workloads (default: all): {WORKLOAD_HELP}."
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option(min=1, help="Timed runs per configuration; medians are reported."),
    ] = 3,
    warmup: Annotated[
        int,
        typer.Option(
            min=1,
            help="Untimed runs before them; ours' first also counts the denoiser FLOPs.",
        ),
    ] = 1,
    approximate: Annotated[
        bool,
        typer.Option(
            help="Also run the approximate speed-ups (own rows, PSNR against the exact output)."
        ),
    ] = True,
    candidates: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated exact speed-up candidates, own rows with PSNR against ours: {CANDIDATE_HELP} "
            "(combined: the four changes in one row; all: every candidate)."
        ),
    ] = None,
    reference: Annotated[
        bool, typer.Option(help="Also run reference (the paper's code).")
    ] = True,
    memory_profile: Annotated[
        str | None,
        typer.Option(
            help="24gb: also run text-to-video and SEINE offloaded to fit 22 GiB, timed against ours."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of every run (the same for all configurations).")
    ] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results as JSON.")
    ] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Write the Markdown table.")
    ] = None,
) -> None:
    """Benchmark the paper's workloads on real-size random-weight models: `reference` (the paper's code) vs
    `ours` (the `full` preset), per stage: time, peak memory, denoiser share and TFLOP/s."""
    import torch

    from mora_agents.bench.build import SIZES
    from mora_agents.bench.configurations import CANDIDATES, MEMORY_PROFILES, unavailable
    from mora_agents.bench.runner import Plan, run_benchmark
    from mora_agents.bench.workloads import WORKLOADS
    from mora_agents.models.loading import resolve_device

    names = _names("--workloads", workloads, list(WORKLOADS)) if workloads else list(WORKLOADS)
    chosen = _names("--candidates", candidates, [*CANDIDATES, "all"]) if candidates else []
    if "all" in chosen:
        chosen = list(CANDIDATES)
    if size not in SIZES:
        raise _fail(f"--size {size}: unknown (choose from {', '.join(SIZES)})")
    if memory_profile is not None and memory_profile not in MEMORY_PROFILES:
        raise _fail(
            f"--memory-profile {memory_profile}: unknown (choose from {', '.join(MEMORY_PROFILES)})"
        )
    try:
        resolved = resolve_device(device)
    except RuntimeError as exc:
        raise _fail(f"--device {device}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise _fail(f"--device {device}: CUDA is not available on this machine")
    if size == "full" and resolved.type != "cuda":
        raise _fail(
            f"--size full needs a CUDA device (got {resolved}); use --size tiny for a CPU smoke test"
        )

    console = Console(stderr=True, highlight=False)
    if size == "tiny":
        console.print(
            "[yellow]size tiny: tiny random models, the timings are meaningless (this checks the code path)[/]"
        )
    for name in chosen:
        if reason := unavailable(name, resolved):
            print(f"mora bench: ours+{name} skipped: {reason}", file=sys.stderr)
    plan = Plan(
        size=size,
        device=resolved,
        workloads=tuple(WORKLOADS[name] for name in names),
        repeats=repeats,
        warmup=warmup,
        seed=seed,
        approximate=approximate,
        memory_profile=memory_profile,
        reference=reference,
        candidates=tuple(chosen),
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        report = run_benchmark(plan, _Bars(progress))
    markdown = report.to_markdown()
    print(markdown)
    if json_out is not None:
        json_out.write_text(report.to_json() + "\n", encoding="utf-8")
        console.print(f"JSON written to {json_out}")
    if markdown_out is not None:
        markdown_out.write_text(markdown, encoding="utf-8")
        console.print(f"Markdown written to {markdown_out}")
