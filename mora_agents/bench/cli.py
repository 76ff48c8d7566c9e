"""``mora bench``: time the paper's workloads on real-size random-weight models, `reference` vs `ours`.

torch and diffusers are imported when the command runs, so that registering it keeps `mora` quick to start.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TimeElapsedColumn,
)

from mora_agents.console import DescriptionColumn, make_console

if TYPE_CHECKING:
    import torch

    from mora_agents.bench.workloads import Workload
    from mora_agents.settings import Speed

WORKLOAD_HELP = (
    "text_to_image, image_edit, svd_segment, text_to_video_12s, seine_transition, flux_schnell_image, "
    "flux_kontext_edit, wan_ti2v_segment, ltx_segment, wan_flf2v_transition, sd3_image, osp_segment, osp_transition"
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


def _progress(console: Console) -> Progress:
    return Progress(
        DescriptionColumn(), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


def bench_command(
    device: Annotated[str, typer.Option(help="auto, cuda, cuda:1, cpu.")] = "auto",
    size: Annotated[
        str,
        typer.Option(
            "--preset", "--size",
            help="full: the published model sizes (CUDA only); tiny: tiny models (a smoke test). --size: its old name.",
        ),
    ] = "full",
    workloads: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated workloads (default: all): {WORKLOAD_HELP} (from flux_schnell_image on: the other "
            "backends and the OSP system's models, without reference)."
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON (stdout) instead of the Markdown table.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the results as JSON to this file.")
    ] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Write the Markdown table.")
    ] = None,
    count_flops: Annotated[
        bool,
        typer.Option(
            "--count-flops",
            help="Count the FLOPs of every model call on the meta device instead of timing (no GPU needed; "
            "--workloads, --preset, --gpu, --json, --json-out and --markdown apply), with the seconds they take at --gpu's peak.",
        ),
    ] = False,
    gpu: Annotated[
        str, typer.Option(help="With --count-flops: the GPU whose dense bf16 peak the ideal times use.")
    ] = "H100 SXM",
    speed: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated speed profiles to run as their own rows, with PSNR against ours: fast, fastest "
            "(exact: only with --speed-option); their settings are the table's cache, attention, compile and "
            "quantize columns.",
        ),
    ] = None,
    speed_option: Annotated[
        list[str],
        typer.Option("--speed-option", help="NAME=VALUE over each --speed profile (as `mora run --speed-option`)."),
    ] = [],
    training: Annotated[
        bool,
        typer.Option(
            "--training",
            help="Fine-tuning steps instead of inference (workloads: text_to_image, image_to_image, image_to_video, "
            "all; the OSP system's sd3, open_sora_plan, osp), LoRA and full: step time and peak memory on CUDA; "
            "parameters, memory and FLOPs per step anywhere.",
        ),
    ] = False,
) -> None:
    """Benchmark the paper's workloads on real-size random-weight models: `reference` (the paper's code) vs
    `ours` (the `full` preset), per stage: time, peak memory, denoiser share and TFLOP/s."""
    from mora_agents.errors import InputError
    from mora_agents.inputs import check_output_file

    try:
        for path, flag in ((json_out, "--json-out"), (markdown_out, "--markdown")):
            if path is not None:
                check_output_file(path, flag)
    except InputError as exc:
        raise _fail(str(exc)) from None
    import torch

    from mora_agents.bench.build import SIZES
    from mora_agents.bench.configurations import (
        CANDIDATES,
        MEMORY_PROFILES,
        unavailable,
    )
    from mora_agents.bench.runner import Plan, run_benchmark
    from mora_agents.bench.workloads import WORKLOADS
    from mora_agents.pipelines.loading import resolve_device

    outputs = _Outputs(as_json, json_out, markdown_out)
    if training:
        _train(device, size, workloads, memory_profile, repeats, warmup, outputs)
        return
    names = _names("--workloads", workloads, list(WORKLOADS)) if workloads else list(WORKLOADS)
    chosen = _names("--candidates", candidates, [*CANDIDATES, "all"]) if candidates else []
    if "all" in chosen:
        chosen = list(CANDIDATES)
    if size not in SIZES:
        raise _fail(f"--preset {size}: unknown (choose from {', '.join(SIZES)})")
    if count_flops:
        _count(tuple(WORKLOADS[name] for name in names), size, gpu, outputs)
        return
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
            f"--preset full needs a CUDA device (got {resolved}); use --preset tiny for a CPU smoke test"
        )

    console = make_console(stderr=True)
    if size == "tiny":
        console.print(
            "[yellow]preset tiny: tiny random models, the timings are meaningless (this checks the code path)[/]"
        )
    for name in chosen:
        if reason := unavailable(name, resolved):
            print(f"mora bench: ours+{name} skipped: {reason}", file=sys.stderr)
    speeds = _speeds(speed, speed_option, resolved)
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
        speeds=speeds,
    )
    with _progress(console) as progress:
        report = run_benchmark(plan, _Bars(progress))
    outputs.write(report.to_markdown(), report.to_json(), console)


def _speeds(profiles: str | None, options: list[str], device: torch.device) -> tuple[tuple[str, Speed], ...]:
    """The `--speed` rows: each profile with the options over it, resolved for the device, by row name."""
    from mora_agents.errors import InputError
    from mora_agents.pipelines.speed import PROFILES, parse_speed_options, resolve_speed

    if profiles is None:
        if options:
            raise _fail("--speed-option: give the --speed profiles it changes (e.g. --speed exact)")
        return ()
    try:
        parsed = parse_speed_options(options)
        suffix = "".join(f"+{name}={value}" for name, value in parsed.items())
        return tuple((f"{profile}{suffix}", resolve_speed(profile, parsed, device))
                     for profile in _names("--speed", profiles, list(PROFILES)))
    except InputError as exc:
        raise _fail(str(exc)) from None


def _count(workloads: tuple[Workload, ...], size: str, gpu: str, outputs: _Outputs) -> None:
    from mora_agents.bench.flops import count_flops
    from mora_agents.bench.measure import DENSE_BF16_TFLOPS, dense_bf16_peak

    peak = dense_bf16_peak(gpu)
    if peak is None:
        known = ", ".join(" ".join(sorted(words)) for words, _ in DENSE_BF16_TFLOPS)
        raise _fail(f"--gpu {gpu}: no dense bf16 peak known for it (known: {known})")
    console = make_console(stderr=True)
    with _progress(console) as progress:
        count = count_flops(workloads, size, gpu, peak, _Bars(progress))
    outputs.write(count.to_markdown(), count.to_json(), console)


def _train(device: str, size: str, workloads: str | None, memory_profile: str | None, repeats: int, warmup: int,
           outputs: _Outputs) -> None:
    import tempfile

    from mora_agents.bench.build import SIZES
    from mora_agents.bench.training import TRAINING_WORKLOADS, run_training_bench
    from mora_agents.pipelines.loading import MEMORY_PROFILES, resolve_device

    names = _names("--workloads", workloads, list(TRAINING_WORKLOADS)) if workloads else list(TRAINING_WORKLOADS)
    if size not in SIZES:
        raise _fail(f"--preset {size}: unknown (choose from {', '.join(SIZES)})")
    if memory_profile is not None and memory_profile not in MEMORY_PROFILES:
        raise _fail(f"--memory-profile {memory_profile}: unknown (choose from {', '.join(MEMORY_PROFILES)})")
    resolved = resolve_device(device)
    console = make_console(stderr=True)
    if resolved.type != "cuda" and size == "full":
        console.print("[yellow]no CUDA device: counting parameters, memory and FLOPs on the meta device, no timing[/]")
    profiles = tuple(dict.fromkeys(("resident", memory_profile or "resident")))
    with tempfile.TemporaryDirectory() as scratch, _progress(console) as progress:
        report = run_training_bench(size, resolved, tuple(names), profiles, repeats, warmup, Path(scratch),
                                    _Bars(progress))
    outputs.write(report.to_markdown(), report.to_json(), console)


@dataclass(frozen=True)
class _Outputs:
    as_json: bool
    """--json: the JSON on stdout instead of the Markdown table."""
    json_out: Path | None
    markdown_out: Path | None

    def write(self, markdown: str, json_text: str, console: Console) -> None:
        """Print the table (or the JSON); write the JSON and the Markdown files whole or not at all."""
        from mora_agents.media import atomic_path

        print(json_text if self.as_json else markdown)
        for path, text, what in ((self.json_out, json_text + "\n", "JSON"), (self.markdown_out, markdown, "Markdown")):
            if path is not None:
                with atomic_path(path) as tmp:
                    tmp.write_text(text, encoding="utf-8")
                console.print(f"{what} written to {escape(str(path))}")
