"""The `mora` command line: run, chat, resume and list runs; inspect SOPs and transcripts; evaluate."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from typer.core import TyperGroup

from mora_agents.bench.cli import bench_command
from mora_agents.console import make_console
from mora_agents.errors import InputError, MoraError
from mora_agents.eval.cli import eval_command
from mora_agents.jsonl import escape_separators
from mora_agents.settings import PRESETS, RUNS_DIR, user_sops_dir

if TYPE_CHECKING:
    from mora_agents.data.select import SelectionResult
    from mora_agents.runs.review import Reviewer
    from mora_agents.runs.runner import RunOutcome
    from mora_agents.ui.terminal import TerminalUI

class _OneLineErrors(TyperGroup):
    """Usage errors (`--duration abc`, a missing argument) as one line and exit code 2, like all bad input."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # click's exceptions: usage errors and the like
            if type(e).__name__ == "NoArgsIsHelpError":  # `mora` or `mora sops` alone: the help
                e.show()
            else:
                context = getattr(e, "ctx", None)
                hint = f" (see `{context.command_path} --help`)" if context is not None else ""
                console.print(f"[red]mora: error:[/] {escape(' '.join(e.format_message().split()))}{hint}")
            sys.exit(e.exit_code)
        except typer.Abort:
            console.print("[yellow]aborted[/]")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(help="Mora: generalist video generation by cooperating AI agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=_OneLineErrors)
sops_app = typer.Typer(help="List, show and validate SOP files.", no_args_is_help=True)
app.add_typer(sops_app, name="sops")
data_app = typer.Typer(help="Training data: candidates from seed prompts, selection by judges and people.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

SpeedProfile = Annotated[str, typer.Option(
    "--speed", help="How the denoisers run: exact (as without the speed stack), fast (caches, the best attention "
    "installed, regional torch.compile), fastest (and fp8 weights on GPUs that have them).")]
SpeedOptions = Annotated[list[str], typer.Option(
    "--speed-option", help="NAME=VALUE over the --speed profile (repeatable): cache=none|auto|first-block|taylorseer, "
    "cache_threshold=N, attention=default|auto|flash|sage|..., compile=none|regional|full, quantize=none|fp8|int8, "
    "distill=none|lightx2v, parallel=ulysses|ring.")]
Gpus = Annotated[int, typer.Option(
    "--gpus", help="GPUs one request's denoiser is split across (diffusers' context parallelism: Wan, FLUX.1, "
    "LTX-Video).")]


def speed_settings(speed: str, speed_option: list[str], gpus: int) -> dict[str, Any]:
    """The RunOptions fields of --speed, --speed-option and --gpus (checked with the other options)."""
    from mora_agents.pipelines.speed import parse_speed_options

    return {"speed": speed, "speed_options": parse_speed_options(speed_option), "gpus": gpus}
app.command("bench", help="Time the paper's workloads on real-size random-weight models: reference vs ours.")(bench_command)
console = make_console(stderr=True)
"""Messages, warnings and errors (stderr). Every text that is not the package's own is escaped here."""
out = make_console()
"""What a command prints as its result (stdout): a path, a table, a transcript."""


@app.callback()
def _setup() -> None:
    # a participant's exception is recorded in the transcript and reported in one line; autogen's runtime
    # would also log it with its traceback
    logging.getLogger("autogen_core").setLevel(logging.CRITICAL)


def fail(message: str, code: int) -> typer.Exit:
    console.print(f"[red]mora: error:[/] {escape(message)}")
    return typer.Exit(code)


def warn(message: str) -> None:
    console.print(f"[yellow]mora: warning:[/] {escape(message)}")


def print_table(table: Table) -> None:
    """A table on stdout; into a pipe or file at its natural width, so that no cell is cut."""
    if out.is_terminal:
        out.print(table)
    else:
        make_console(width=Measurement.get(out, out.options.update_width(100_000), table).maximum).print(table)


def print_path(path: Path) -> None:
    """A command's resulting file or folder on stdout, exactly as named (for scripts: `$(mora run ...)`)."""
    out.print(escape(str(path)))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")


OutOption = Annotated[Path, typer.Option("--out", help="Base folder of run directories.")]
SopsOption = Annotated[Optional[Path], typer.Option(
    help="Your SOP folder, read beside the shipped SOPs (default: $MORA_SOPS, else ~/.mora/sops).")]
VerboseOption = Annotated[int, typer.Option(
    "--verbose", "-v", count=True, help="-v: every message and tool call; -vv: the records as they are (JSON lines).")]
SystemOption = Annotated[Optional[str], typer.Option(
    help="The paper's system for every agent: svd (SDXL, InstructPix2Pix, SVD-XT, SEINE) or osp (SD3, SD3 "
         "image-to-image, Open-Sora-Plan v1.2); default: the SOPs' backends.")]


NOISE_WARNING = ("[yellow]preset tiny: random-weight models, the video will be noise (this checks the code paths, "
                 "not the quality)[/]")


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise InputError(f"--preset {preset}: unknown (choose {' or '.join(PRESETS)})")


def _noise_warning(preset: str) -> None:
    if preset == "tiny":
        console.print(NOISE_WARNING)


def _drive(start: Callable[[TerminalUI, Reviewer], Awaitable[RunOutcome]], review: bool, preset: str,
           verbosity: int) -> None:
    """Run a request or a resume with the terminal display; map errors to one line and an exit code.

    The tiny preset's warning shows when the run starts (bad input stays one line)."""
    from mora_agents.runs.review import TextReviewer, auto_accept
    from mora_agents.ui.terminal import TerminalUI

    ui = TerminalUI(console, notice=NOISE_WARNING if preset == "tiny" else None, verbosity=verbosity)
    ui.reviewing = review
    try:
        with ui.live():
            outcome = asyncio.run(start(ui, TextReviewer(ui.ask, "human") if review else auto_accept))
    except InputError as e:
        raise fail(str(e), 2) from None
    except MoraError as e:
        raise fail(str(e), 1) from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; {ui.resume_hint()} continues from the last finished step", 130) from None
    ui.done(outcome)
    print_path(outcome.result)


@app.command()
def run(
    request: Annotated[str, typer.Argument(help="What you want, in words.")],
    task: Annotated[Optional[str], typer.Option(help="Force a task (an SOP name) instead of the planner's choice.")] = None,
    image: Annotated[list[Path], typer.Option(help="Attach an image (repeatable).")] = [],
    video: Annotated[list[Path], typer.Option(help="Attach a video (repeatable; order matters for connect).")] = [],
    duration: Annotated[Optional[float], typer.Option(help="Length in seconds (the SOP's default otherwise).")] = None,
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    sops: SopsOption = None,
    out_dir: OutOption = RUNS_DIR,
    seed: Annotated[Optional[int], typer.Option(help="Base seed (random if not given; always recorded).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a tool parameter: TOOL.PARAM=VALUE.")] = [],
    review: Annotated[bool, typer.Option("--review", help="Ask me at the SOP's review points (next/repeat/edit/stop).")] = False,
    max_repeats: Annotated[int, typer.Option(min=0, help="Repeats (and edits) allowed per reviewed step.")] = 3,
    memory_profile: Annotated[str, typer.Option(help="resident: models stay on the GPU; 24gb: offloaded between uses to fit a 24 GB GPU.")] = "resident",
    adapters: Annotated[Optional[Path], typer.Option(help="A `mora train` output: run the agents it fine-tuned.")] = None,
    system: SystemOption = None,
    speed: SpeedProfile = "exact",
    speed_option: SpeedOptions = [],
    gpus: Gpus = 1,
    candidates: Annotated[int, typer.Option(help="Best of N: candidates of each keyframe and clip of the SOP's best_of steps (a story's), ranked by the judges (MORA_JUDGES, else metric judges).")] = 1,
    verbose: VerboseOption = 0,
) -> None:
    """Run a request through the agents; writes runs/<time>-<slug>/ with result.mp4 and transcript.jsonl."""
    from mora_agents.inputs import parse_sets
    from mora_agents.runs.runner import RunOptions, run_request

    try:
        check_preset(preset)
        options = RunOptions(preset=preset, device=device, out=out_dir, sops_dir=sops, seed=seed,
                             overrides=parse_sets(set_), max_repeats=max_repeats, memory_profile=memory_profile,
                             adapters=adapters, system=system, candidates=candidates,
                             **speed_settings(speed, speed_option, gpus))
    except InputError as e:
        raise fail(str(e), 2) from None
    _drive(lambda ui, reviewer: run_request(request, images=image, videos=video, task=task, duration=duration,
                                            options=options, on_record=ui.show, reviewer=reviewer), review, preset,
           verbose)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run directory of an interrupted, failed or waiting run.")],
    review: Annotated[bool, typer.Option("--review", help="Ask me at the remaining review points.")] = False,
    device: Annotated[Optional[str], typer.Option(help="Run on another device than the run was started on.")] = None,
    memory_profile: Annotated[Optional[str], typer.Option(help="Change the memory profile (e.g. 24gb after running out of GPU memory).")] = None,
    revise: Annotated[Optional[str], typer.Option(help="Edit the output of a text step that ran (e.g. storyboard) first; what the edit does not change is kept.")] = None,
    verbose: VerboseOption = 0,
) -> None:
    """Continue a run from its last finished step (checked by sha256); the transcript marks the interruption."""
    from mora_agents.runs.catalog import check_resumable, read_info

    try:
        info = read_info(run_dir)
        if info["status"] != "running":  # a finished run is refused at once, before the models' libraries load
            check_resumable(run_dir, info)  # (a running one only the runner can judge, holding its lock)
    except InputError as e:
        raise fail(str(e), 2) from None
    preset = info["preset"]
    from mora_agents.runs.runner import resume_run

    _drive(lambda ui, reviewer: resume_run(run_dir, device=device, memory_profile=memory_profile, on_record=ui.show,
                                           reviewer=reviewer, revise=revise), review or revise is not None, preset,
           verbose)


@app.command()
def batch(
    requests: Annotated[Path, typer.Argument(help="A JSONL file, one request per line: {\"text\": ..., \"seed\": ...}.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder of the batch's run directories and summary.jsonl.")] = RUNS_DIR,
    ray: Annotated[Optional[str], typer.Option(help="Run on Ray: local (start it here), auto (the running cluster) or the cluster's ADDRESS.")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per Ray worker (default: --gpus; one worker per CPU on a cluster without GPUs).")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="At most this many Ray workers (default: as many as fit).")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Times a run whose Ray worker died goes to another worker.")] = 2,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip bad lines (listed) instead of stopping.")] = False,
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    sops: SopsOption = None,
    memory_profile: Annotated[str, typer.Option(help="resident: models stay on the GPU; 24gb: offloaded between uses to fit a 24 GB GPU.")] = "resident",
    adapters: Annotated[Optional[Path], typer.Option(help="A `mora train` output: every run (but lines with their own) uses the agents it fine-tuned.")] = None,
    system: SystemOption = None,
    speed: SpeedProfile = "exact",
    speed_option: SpeedOptions = [],
    gpus: Gpus = 1,
) -> None:
    """Run many requests, each a normal run in OUT; again with the same file skips finished runs and resumes the rest."""
    from mora_agents.batch import check_requests, read_requests, run_batch
    from mora_agents.batch.display import BatchDisplay, results_table
    from mora_agents.runs.runner import RunOptions

    summary = out_dir / "summary.jsonl"
    try:
        check_preset(preset)
        options = RunOptions(preset=preset, device=device, out=out_dir, sops_dir=sops, memory_profile=memory_profile,
                             adapters=adapters, system=system, **speed_settings(speed, speed_option, gpus))
        found, errors = read_requests(requests)
        if errors and not skip_invalid:  # name every bad line at once, in the file's order
            errors += [f"{r.label}: {r.error}" for r in check_requests(found, options) if r.status == "invalid"]
            errors.sort(key=lambda error: int(error[len(f"{requests}:"):].partition(":")[0]))
            raise InputError("\n".join(errors))
        for error in errors:
            console.print(f"[yellow]skipped:[/] {escape(error)}")
        _noise_warning(preset)
        with BatchDisplay(console) as display:
            results = run_batch(found, options, ray=ray, gpus_per_worker=gpus_per_worker or float(gpus), workers=workers,
                                retries=retries, skip_invalid=skip_invalid, summary=summary, on_update=display.update)
    except InputError as e:
        for line in str(e).splitlines():
            console.print(f"[red]mora: error:[/] {escape(line)}")
        raise typer.Exit(2) from None
    except MoraError as e:  # a run directory that cannot be made (a full disk, say)
        raise fail(f"{e}; the same command continues the batch", 1) from None
    except OSError as e:  # summary.jsonl, on a full disk say
        raise fail(f"{out_dir}: cannot write ({e.strerror or e}); what the runs recorded is kept: make room, then "
                   "the same command continues the batch", 1) from None
    except KeyboardInterrupt:
        raise fail(f"interrupted; finished runs are kept ({summary}); the same command continues the batch", 130) from None
    print_table(results_table(results, out_dir))
    bad = [r for r in results if r.status not in ("finished", "invalid")]  # invalid ones: skipped as asked
    if bad:
        raise fail(f"{len(bad)} of {len(results)} requests did not finish (see {summary})", 1)
    console.print(f"[green]done:[/] {len(results)} requests; summary in {escape(str(summary))}")


def suite_videos(prompts: list[str], out_dir: Path, preset: str, ray: str | None) -> list[Path]:
    """`mora eval --suite ... --generate DIR`: a text_to_video run per prompt in DIR, made by `run_batch`."""
    from mora_agents.batch import BatchRequest, run_batch
    from mora_agents.batch.display import BatchDisplay
    from mora_agents.runs.runner import RunOptions

    check_preset(preset)
    _noise_warning(preset)
    requests = [BatchRequest(text, task="text_to_video", label=f"prompt {n}") for n, text in enumerate(prompts, 1)]
    summary = out_dir / "summary.jsonl"
    with BatchDisplay(console) as display:
        results = run_batch(requests, RunOptions(preset=preset, out=out_dir), ray=ray, summary=summary,
                            on_update=display.update)
    failed = [r for r in results if r.status != "finished"]
    if failed:
        raise MoraError(f"{len(failed)} of {len(results)} videos did not finish ({failed[0].label}: "
                        f"{failed[0].error}; see {summary})")
    return [r.run_dir for r in results]


app.command("eval", help="Score videos or run directories with the paper's metrics (VBench dimensions).",
            context_settings={"obj": suite_videos})(eval_command)  # eval/ cannot import the batch: given here


@app.command()
def runs(out_dir: OutOption = RUNS_DIR,
         as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of the runs (for scripts).")] = False,
         ) -> None:
    """List runs: task, status (finished / failed / stopped / interrupted / waiting for review / damaged), time, result."""
    from dataclasses import asdict

    from mora_agents.runs.catalog import list_runs

    try:
        summaries = list_runs(out_dir)
    except OSError as e:
        raise fail(f"{out_dir}: cannot list ({e.strerror})", 2) from None
    if as_json:
        print_json([{"run": s.path.name, **asdict(s)} for s in summaries])
        return
    table = Table("run", "task", "status", "seconds", "result", "request", caption=escape(
        f"in {out_dir}/; continue an interrupted or waiting run with `mora resume {out_dir}/RUN`"))
    table.columns[0].no_wrap = True
    colors = {"finished": "green", "failed": "red", "damaged": "red", "interrupted": "yellow",
              "waiting for review": "magenta"}
    for s in summaries:
        color = colors.get(s.status, "white")
        table.add_row(escape(s.path.name), escape(s.task or ""), f"[{color}]{s.status}[/]", f"{s.seconds:.1f}",
                      escape(s.result.name) if s.result else "", escape(s.problem or s.request[:60]))
    print_table(table)


@app.command()
def chat(
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    sops: SopsOption = None,
    out_dir: OutOption = RUNS_DIR,
    seed: Annotated[Optional[int], typer.Option(help="Base seed of every turn (random if not given).")] = None,
    review: Annotated[bool, typer.Option("--review", help="Start with human review on (/review toggles it).")] = False,
    max_repeats: Annotated[int, typer.Option(min=0, help="Repeats (and edits) allowed per reviewed step.")] = 3,
    memory_profile: Annotated[str, typer.Option(help="resident: models stay on the GPU; 24gb: offloaded between uses to fit a 24 GB GPU.")] = "resident",
    adapters: Annotated[Optional[Path], typer.Option(help="A `mora train` output: run the agents it fine-tuned.")] = None,
    system: SystemOption = None,
    speed: SpeedProfile = "exact",
    speed_option: SpeedOptions = [],
    gpus: Gpus = 1,
    candidates: Annotated[int, typer.Option(help="Best of N for every turn's best_of steps (a story's keyframes and clips).")] = 1,
    verbose: VerboseOption = 0,
) -> None:
    """Chat requests into the group chat; follow-ups refer to the last result. /help lists the commands."""
    from mora_agents.runs.runner import RunOptions, check_options
    from mora_agents.ui.chat import ChatSession, chat_loop, enable_line_editing
    from mora_agents.ui.terminal import TerminalUI

    try:
        options = RunOptions(preset=preset, device=device, out=out_dir, sops_dir=sops, seed=seed,
                             max_repeats=max_repeats, memory_profile=memory_profile, adapters=adapters, system=system,
                             candidates=candidates, **speed_settings(speed, speed_option, gpus))
        check_preset(preset)
        check_options(options)
    except InputError as e:
        raise fail(str(e), 2) from None
    _noise_warning(preset)
    enable_line_editing()
    ui = TerminalUI(console, verbosity=verbose)
    chat_loop(ChatSession(options, ui, ui.ask, review=review))


@app.command("train")
def train_command(
    data: Annotated[Optional[Path], typer.Argument(metavar="DATA", help="A dataset folder (metadata.jsonl and media; docs/training.md), or `ablations`.", show_default=False)] = None,
    ablation_prompts: Annotated[Optional[Path], typer.Argument(metavar="PROMPTS", help="`mora train ablations PROMPTS`: seed prompts of the Table 5 ablations.", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Where adapters, checkpoints and the card go (a new folder).")] = None,
    resume_dir: Annotated[Optional[Path], typer.Option("--resume", help="Continue an interrupted training in this folder.")] = None,
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (several processes: --num-processes).")] = "auto",
    num_processes: Annotated[int, typer.Option(help="Processes (GPUs; CPU processes with --device cpu) training as one; the global batch stays --batch-size.")] = 1,
    system: Annotated[str, typer.Option(help="The paper's system to train: svd (SDXL, InstructPix2Pix, SVD-XT) or osp (SD3, Open-Sora-Plan v1.2); with --iterations and ablations, its runs too.")] = "svd",
    agents: Annotated[Optional[str], typer.Option(help="Comma-separated agents to train (default: all of the system's: svd text_to_image,image_to_image,image_to_video; osp text_to_image,image_to_video).", show_default=False)] = None,
    objective: Annotated[str, typer.Option(help="chain: the video loss trains the whole chain (the paper's); per-agent: each agent on its own output.")] = "chain",
    sampling_steps: Annotated[Optional[int], typer.Option(help="chain: sampling steps of an upstream agent's generation (default: 20; tiny preset: 2).", show_default=False)] = None,
    backprop_steps: Annotated[int, typer.Option(help="chain: K, the last sampling steps gradients pass through.")] = 1,
    full: Annotated[bool, typer.Option("--full", help="Fine-tune every denoiser weight (UNet or DiT) instead of LoRA adapters.")] = False,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    no_modulation: Annotated[bool, typer.Option("--no-modulation", help="No modulation token, no alpha (ablation).")] = False,
    modulation_init: Annotated[str, typer.Option(help="text: the [Mod] token's embedding; random (ablation).")] = "text",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 12,
    batch_size: Annotated[int, typer.Option(help="Samples per step, over all processes.")] = 4,
    lr: Annotated[float, typer.Option(help="Learning rate of the weights (times alpha_i with modulation).")] = 1e-5,
    lr_modulation: Annotated[float, typer.Option(help="Learning rate of the modulation tokens.")] = 1e-4,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 4,
    keep_checkpoints: Annotated[int, typer.Option(help="Checkpoints kept (the last N, the final step's included); 0: removed at the end.")] = 2,
    frames: Annotated[Optional[int], typer.Option(help="Clip frames the image-to-video agent learns (default: its clip's, svd 25, osp 93).", show_default=False)] = None,
    resolution: Annotated[Optional[str], typer.Option(help="WIDTHxHEIGHT to train at (default: each agent's inference size; svd 1024x576).", show_default=False)] = None,
    memory_profile: Annotated[str, typer.Option(help="resident; 24gb: one denoiser on the GPU at a time (per-agent).")] = "resident",
    report_to: Annotated[str, typer.Option(help="none, tensorboard or wandb: losses and rates through accelerate's trackers (OUT/logs).")] = "none",
    init_adapters: Annotated[Optional[Path], typer.Option(help="Start from a previous `mora train` output.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise, timesteps and data order (with --iterations: of everything).")] = 0,
    iterations: Annotated[Optional[int], typer.Option(help="Run the data-free loop N times: make data, select, train (needs --prompts and --out).")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="--iterations: seed prompts (text, JSONL or CSV).")] = None,
    task: Annotated[str, typer.Option(help="--iterations: the task (SOP) of the candidates.")] = "text_to_video",
    count: Annotated[int, typer.Option(help="--iterations: prompts written per iteration.")] = 16,
    candidates: Annotated[int, typer.Option(help="--iterations: candidates per prompt.")] = 4,
    duration: Annotated[Optional[float], typer.Option(help="--iterations: seconds per candidate (default: one segment).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="--iterations: a tool parameter of every run: TOOL.PARAM=VALUE.")] = [],
    judge: Annotated[list[str], typer.Option(help="--iterations: a judge, metric:NAME or [NAME=]MODEL\\[@URL] (repeatable).")] = [],
    judges: Annotated[Optional[Path], typer.Option(help="--iterations: a JSON or YAML file of judges.")] = None,
    judge_frames: Annotated[int, typer.Option(help="--iterations: frames per candidate shown to the judges.")] = 4,
    no_human: Annotated[bool, typer.Option("--no-human", help="--iterations: discard the sets the judges disagree on.")] = False,
    reviewer_name: Annotated[str, typer.Option("--name", help="--iterations: your name in the selection log.")] = "human",
    eval_prompts: Annotated[Optional[Path], typer.Option(help="--iterations: held-out prompts scored after each iteration.")] = None,
    eval_share: Annotated[float, typer.Option(help="--iterations without --eval-prompts: share of the seeds held out (0: none).")] = 0.25,
    eval_metrics: Annotated[Optional[str], typer.Option(help="--iterations: metrics of the held-out videos (comma-separated; default video_quality, ablations: and temporal_style).", show_default=False)] = None,
    val_share: Annotated[float, typer.Option(help="--iterations: share of the first accepted samples held out for the validation loss (0: none).")] = 0.25,
    eval_seeds: Annotated[int, typer.Option("--seeds", help="ablations: seeds per held-out prompt (mean +- std over them).")] = 3,
    sops: Annotated[Optional[Path], typer.Option(help="--iterations: a folder of your own SOP files.")] = None,
    ray: Annotated[Optional[str], typer.Option(help="--iterations: runs on Ray: local, auto or ADDRESS (see mora batch).")] = None,
) -> None:
    """Fine-tune the agents on a dataset (self-modulated, the paper's Algorithm 1); `--resume DIR` continues one;
    `--iterations N --prompts SEEDS` runs the whole data-free loop; `ablations PROMPTS` the paper's Table 5."""
    from accelerate import PartialState

    from mora_agents.train import TrainConfig, run_training
    from mora_agents.train.progress import TrainProgress

    ablations = data == Path("ablations") and (ablation_prompts is not None or not data.is_dir())
    training = dict(
        system=system, preset=preset, objective=objective,
        agents=None if agents is None else [a.strip() for a in agents.split(",") if a.strip()],
        sampling_steps=sampling_steps, backprop_steps=backprop_steps, full=full, lora_rank=lora_rank,
        modulation=not no_modulation, modulation_init=modulation_init, steps=steps, batch_size=batch_size, lr=lr,
        lr_modulation=lr_modulation, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
        frames=frames, resolution=resolution and resolution.lower().split("x"), report_to=report_to, seed=seed)
    if iterations is not None or ablations:
        from mora_agents.data.make import MakeConfig

        try:
            if ablation_prompts is not None and not ablations:
                raise InputError(f"{ablation_prompts}: unexpected second argument (`mora train ablations PROMPTS`)")
            if ablations and (iterations is not None or prompts is not None):
                raise InputError("ablations: the seed prompts are its argument (`mora train ablations PROMPTS --out "
                                 "DIR`), and it makes one round of data: no --iterations or --prompts")
            if not ablations and (data is not None or resume_dir is not None):
                raise InputError("--iterations: takes no DATA or --resume (the loop makes its data and continues "
                                 "itself: run the same command again)")
            if init_adapters is not None:
                raise InputError("--init-adapters: for one training on a dataset; the loop and the ablations start "
                                 "from the base models")
            prompts = ablation_prompts if ablations else prompts
            if prompts is None or out_dir is None:
                raise InputError("--iterations needs --prompts SEEDS and --out DIR" if not ablations else
                                 "ablations needs PROMPTS (the seed prompts) and --out DIR")
            from mora_agents.inputs import parse_sets

            make = MakeConfig(task=task, count=count, candidates=candidates, duration=duration, seed=seed,
                              overrides=parse_sets(set_))
            config = TrainConfig.parse(**training)
            metrics = [m.strip() for m in eval_metrics.split(",") if m.strip()] if eval_metrics else None
        except InputError as e:
            raise fail(str(e), 2) from None
        stages = _Stages(prompts, out_dir, preset, device, memory_profile, sops, eval_prompts, judge, judges,
                         reviewer_name, ray, config.system)
        if ablations:
            _train_ablations(stages, make, config, eval_seeds, judge_frames, eval_share, metrics, num_processes)
        else:
            _train_loop(stages, iterations, make, config, no_human, judge_frames, eval_share, metrics, val_share,
                        num_processes)
        return
    try:
        if ablation_prompts is not None:
            raise InputError(f"{ablation_prompts}: unexpected second argument (`mora train ablations PROMPTS`)")
        if resume_dir is not None:
            if data is not None or out_dir is not None:
                raise InputError("--resume DIR: takes no DATA or --out (they are in DIR/train.json)")
            config = None
        elif data is None or out_dir is None:
            raise InputError("DATA and --out are required (or --resume DIR)")
        else:
            config = TrainConfig.parse(**training, device=device, memory_profile=memory_profile,
                                       init_adapters=init_adapters)
            _noise_warning(preset)
        console.print("[dim]loading the models and encoding the dataset...[/]")
        with TrainProgress(console) as progress:
            result = run_training(resume_dir or out_dir, data, config, num_processes, progress)
    except InputError as e:
        raise fail(str(e), 2) from None
    except MoraError as e:
        raise fail(str(e), 1) from None
    except KeyboardInterrupt:
        folder = resume_dir or out_dir
        raise fail(f"interrupted; `mora train --resume {folder}` continues from the last checkpoint", 130) from None
    if PartialState().is_main_process:
        for note in result.notes:
            warn(note)
        console.print(f"[green]done:[/] {result.steps} steps, adapters sha256 {result.adapters_sha256[:12]}")
        print_path(result.out_dir)


@contextmanager
def _errors(interrupted: str) -> Iterator[None]:
    """Bad input: one line, exit code 2; a failure during work: one line, exit code 1; Ctrl-C: `interrupted`, 130."""
    try:
        yield
    except InputError as e:
        raise fail(str(e), 2) from None
    except MoraError as e:
        raise fail(str(e), 1) from None
    except KeyboardInterrupt:
        raise fail(interrupted, 130) from None


@dataclass
class _Stages:
    """What the loop and the ablations share from the command line: seeds, folder, runs, judges, people."""

    prompts: Path
    out_dir: Path
    preset: str
    device: str
    memory_profile: str
    sops: Path | None
    eval_prompts: Path | None
    judge: list[str]
    judges: Path | None
    name: str
    ray: str | None
    system: str

    def inputs(self) -> dict[str, Any]:
        """The run options, seeds, held-out seeds, judges, reviewer and displays (InputError if one is bad)."""
        from mora_agents.data import judge_specs, read_seeds
        from mora_agents.runs.runner import RunOptions
        from mora_agents.ui.data import LoopDisplay, TerminalSetReview

        check_preset(self.preset)
        return dict(seeds=read_seeds(self.prompts), out=self.out_dir, options=RunOptions(
            preset=self.preset, device=self.device, sops_dir=self.sops, memory_profile=self.memory_profile,
            system=self.system),
            eval_seeds=read_seeds(self.eval_prompts) if self.eval_prompts else None,
            judges=judge_specs(self.judge, self.judges), reviewer=TerminalSetReview(console, self.name), ray=self.ray,
            ui=LoopDisplay(console))


def _train_loop(stages: _Stages, iterations: int, make, config, no_human: bool, frames: int, eval_share: float,
                metrics: list[str] | None, val_share: float, processes: int) -> None:
    """`mora train --iterations N`: the data-free loop with the terminal's progress and review."""
    from mora_agents.data.loop import LoopConfig, run_loop

    with _errors(f"interrupted; the same command continues the loop in {stages.out_dir}"):
        loop = LoopConfig(iterations=iterations, make=make, train=config, no_human=no_human, frames=frames,
                          eval_share=eval_share, val_share=val_share, processes=processes,
                          **({"eval_metrics": metrics} if metrics else {}))
        inputs = stages.inputs()
        _noise_warning(stages.preset)
        result = run_loop(inputs.pop("seeds"), inputs.pop("out"), loop, inputs.pop("options"), **inputs)
    report = result.report.get("markdown")
    console.print(f"[green]done:[/] {iterations} iteration(s) in {escape(str(result.out))}"
                  + (f"; held-out metrics and validation loss in {escape(str(report))}" if report else ""))
    print_path(result.out)


def _train_ablations(stages: _Stages, make, config, seeds: int, frames: int, eval_share: float,
                     metrics: list[str] | None, processes: int) -> None:
    """`mora train ablations PROMPTS --out DIR`: the paper's Table 5 configurations, trained and evaluated alike."""
    from mora_agents.data.ablations import AblationConfig, run_ablations

    with _errors(f"interrupted; the same command continues the ablations in {stages.out_dir}"):
        ablation = AblationConfig(make=make, train=config, seeds=seeds, frames=frames, eval_share=eval_share,
                                  processes=processes, **({"eval_metrics": metrics} if metrics else {}))
        inputs = stages.inputs()
        _noise_warning(stages.preset)
        result = run_ablations(inputs.pop("seeds"), inputs.pop("out"), ablation, inputs.pop("options"), **inputs)
    console.print(f"[green]done:[/] the five configurations in {escape(str(result.out))}; the table in "
                  f"{escape(str(result.report['markdown']))}")
    print_path(result.report["markdown"])


@data_app.command("make")
def data_make(
    prompts: Annotated[Path, typer.Option(help="Seed prompts: text (one per line), JSONL or CSV with a prompt column.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The data folder (new, or the one a stopped make left).")],
    task: Annotated[str, typer.Option(help="The task (SOP) every candidate runs, or a mix: text_to_video,edit_video.")] = "text_to_video",
    count: Annotated[int, typer.Option(help="Prompts the LLM writes from the seeds.")] = 16,
    candidates: Annotated[int, typer.Option(help="Candidate runs per prompt, each with its own seed.")] = 4,
    duration: Annotated[Optional[float], typer.Option(help="Seconds per candidate (default: one segment).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the writer's examples and of the candidates' seeds.")] = 0,
    set_: Annotated[list[str], typer.Option("--set", help="A tool parameter of every run: TOOL.PARAM=VALUE.")] = [],
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    memory_profile: Annotated[str, typer.Option(help="resident: models stay on the GPU; 24gb: offloaded between uses to fit a 24 GB GPU.")] = "resident",
    sops: SopsOption = None,
    adapters: Annotated[Optional[Path], typer.Option(help="A `mora train` output: generate with the agents it fine-tuned.")] = None,
    ray: Annotated[Optional[str], typer.Option(help="Run on Ray: local, auto or ADDRESS (see mora batch).")] = None,
    system: SystemOption = None,
) -> None:
    """Write new prompts from seed prompts and make candidate runs of each (one batch); again: continues."""
    from mora_agents.batch.display import BatchDisplay
    from mora_agents.data import MakeConfig, make_data, read_seeds
    from mora_agents.inputs import parse_sets
    from mora_agents.runs.runner import RunOptions

    with _errors(f"interrupted; the same command continues in {out_dir}"):
        check_preset(preset)
        config = MakeConfig(task=task, count=count, candidates=candidates, duration=duration, seed=seed,
                            overrides=parse_sets(set_))
        options = RunOptions(preset=preset, device=device, sops_dir=sops, memory_profile=memory_profile,
                             adapters=adapters, system=system)
        seeds = read_seeds(prompts)
        _noise_warning(preset)
        with BatchDisplay(console) as display:
            made = make_data(seeds, out_dir, config, options, ray=ray, on_update=display.update)
    if made.failed:
        raise fail(f"{len(made.failed)} of {len(made.results)} candidates did not finish (see "
                   f"{out_dir / 'runs' / 'summary.jsonl'}); the same command runs them again", 1)
    console.print(f"[green]done:[/] {len(made.sets)} prompts x {candidates} candidates in {escape(str(out_dir))}; "
                  f"next: `mora data select {escape(str(out_dir))}`")
    print_path(out_dir)


@data_app.command("select")
def data_select(
    data: Annotated[Path, typer.Argument(help="A data folder made by `mora data make`.")],
    judge: Annotated[list[str], typer.Option(help="A judge: metric:NAME or [NAME=]MODEL\\[@URL]\\[#KEY_VARIABLE] (repeatable; default: MORA_JUDGES, else two metric judges).")] = [],
    judges: Annotated[Optional[Path], typer.Option(help="A JSON or YAML file of judges.")] = None,
    judge_frames: Annotated[int, typer.Option(help="Frames per candidate shown to the judges.")] = 4,
    no_human: Annotated[bool, typer.Option("--no-human", help="Discard the sets the judges disagree on.")] = False,
    review: Annotated[bool, typer.Option("--review", help="Decide the sets the judges disagree on here and now.")] = False,
    name: Annotated[str, typer.Option(help="Your name in the selection log (with --review).")] = "human",
    seed: Annotated[Optional[int], typer.Option(help="Seed of the criteria drawn (default: the make's).")] = None,
) -> None:
    """Judges rank each candidate set; agreed sets are accepted into DATA/dataset, the others wait for a person."""
    from mora_agents.data import judge_specs, read_sets, select
    from mora_agents.ui.data import TerminalSetReview, selection_table

    with _errors(f"interrupted; the same command continues (judged sets are kept in {data})"):
        specs = judge_specs(judge, judges)
        result = select(data, specs, reviewer=TerminalSetReview(console, name) if review else None,
                        no_human=no_human, frames=judge_frames, seed=seed,
                        on_set=lambda r: console.print(f"[dim]{escape(r.id)}: {r.status}[/]"))
    _selection_done(data, result, selection_table(result.log, read_sets(data)))


def _selection_done(data: Path, result: SelectionResult, table: Table) -> None:
    out.print(table)
    counts = result.count()
    console.print(f"[green]{counts['accepted']} accepted[/], {counts['discarded']} discarded; "
                  f"dataset: {escape(str(result.dataset))}")
    if counts["undecided"]:
        console.print(f"[magenta]{counts['undecided']} set(s) wait for a person:[/] mora data review {escape(str(data))}")


@data_app.command("review")
def data_review(
    data: Annotated[Path, typer.Argument(help="A data folder whose selection left sets undecided.")],
    name: Annotated[str, typer.Option(help="Your name in the selection log.")] = "human",
) -> None:
    """Decide the sets the judges disagree on: each with its candidates' frames and the votes; pick one or discard."""
    from mora_agents.data import read_sets, review
    from mora_agents.ui.data import TerminalSetReview, selection_table

    with _errors("interrupted; the decisions made so far are kept"):
        result = review(data, TerminalSetReview(console, name))
    _selection_done(data, result, selection_table(result.log, read_sets(data)))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; any but a loopback one needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 7860,
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    out_dir: OutOption = RUNS_DIR,
    sops: Annotated[Optional[Path], typer.Option(help="Your SOP folder: runs use it, the SOP editor saves into it (default: $MORA_SOPS, else ~/.mora/sops).")] = None,
    token: Annotated[Optional[str], typer.Option(envvar="MORA_TOKEN", help="Bearer token every request must carry.")] = None,
    max_image_mb: Annotated[float, typer.Option(min=0, help="Size limit of an uploaded image, in MB.")] = 50,
    max_video_mb: Annotated[float, typer.Option(min=0, help="Size limit of an uploaded video, in MB.")] = 2048,
    memory_profile: Annotated[str, typer.Option(help="resident: models stay on the GPU; 24gb: offloaded between uses to fit a 24 GB GPU.")] = "resident",
    adapters: Annotated[Optional[Path], typer.Option(help="A `mora train` output: every run uses the agents it fine-tuned.")] = None,
    webhook: Annotated[Optional[str], typer.Option(help="POST video.completed / video.failed events here (signed; needs --webhook-secret).")] = None,
    webhook_secret: Annotated[Optional[str], typer.Option(envvar="MORA_WEBHOOK_SECRET", help="The webhooks' signing secret (whsec_ and base64, as Standard Webhooks).")] = None,
    system: SystemOption = None,
    speed: SpeedProfile = "exact",
    speed_option: SpeedOptions = [],
    gpus: Gpus = 1,
    data: Annotated[list[Path], typer.Option(help="A data folder (`mora data make`), a loop folder (`mora train --iterations`) or a `mora train` output for the page's data and training views (repeatable; folders directly under --out are found too).")] = [],
) -> None:
    """Serve the web page, the HTTP API (docs at /docs), OpenAI's Videos API (/v1) and MCP (/mcp); one run at a time."""
    from mora_agents.runs.runner import RunOptions

    try:
        from mora_agents.serve import ServeConfig, serve as run_server
        from mora_agents.serve.webhooks import Webhook
    except ImportError as e:
        raise fail(f"mora serve needs {e.name}: pip install 'mora-agents[serve]'", 2) from None
    try:
        check_preset(preset)
        options = RunOptions(preset=preset, device=device, out=out_dir, sops_dir=sops or user_sops_dir(),
                             memory_profile=memory_profile, adapters=adapters, system=system,
                             **speed_settings(speed, speed_option, gpus))
        config = ServeConfig(options, token=token, max_image_bytes=int(max_image_mb * 2**20),
                             max_video_bytes=int(max_video_mb * 2**20),
                             webhook=Webhook(webhook, webhook_secret or "") if webhook else None, data=data)
        run_server(config, host, port, on_start=lambda: _noise_warning(preset))
    except InputError as e:
        raise fail(str(e), 2) from None
    except MoraError as e:
        raise fail(str(e), 1) from None


@app.command()
def mcp(
    transport: Annotated[str, typer.Option(help="stdio (for a host that starts the server) or http (streamable HTTP at /mcp).")] = "stdio",
    host: Annotated[str, typer.Option(help="With --transport http: address to bind; any but a loopback one needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --transport http: port.")] = 7861,
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    out_dir: OutOption = RUNS_DIR,
    sops: SopsOption = None,
    token: Annotated[Optional[str], typer.Option(envvar="MORA_TOKEN", help="With --transport http: bearer token every request must carry.")] = None,
    memory_profile: Annotated[str, typer.Option(help="resident: models stay on the GPU; 24gb: offloaded between uses to fit a 24 GB GPU.")] = "resident",
    adapters: Annotated[Optional[Path], typer.Option(help="A `mora train` output: every run uses the agents it fine-tuned.")] = None,
    system: SystemOption = None,
) -> None:
    """Serve the tasks as MCP tools (generate, image_to_video, extend, edit, connect, status, result, cancel) and the
    SOPs and runs as resources, for an MCP host; one run at a time."""
    from mora_agents.runs.runner import RunOptions

    try:
        from mora_agents.mcp_server import serve_mcp
        from mora_agents.serve import ServeConfig
    except ImportError as e:
        raise fail(f"mora mcp needs {e.name}: pip install 'mora-agents[serve,mcp]'", 2) from None
    options = RunOptions(preset=preset, device=device, out=out_dir, sops_dir=sops, memory_profile=memory_profile,
                         adapters=adapters, system=system)
    try:
        check_preset(preset)
        if transport not in ("stdio", "http"):
            raise InputError(f"--transport {transport}: unknown (choose stdio or http)")
        serve_mcp(ServeConfig(options, token=token), transport, host, port)
    except InputError as e:
        raise fail(str(e), 2) from None


@app.command()
def transcript(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its transcript.jsonl).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON lines (one object a line).")] = False,
    html: Annotated[bool, typer.Option("--html", help="Write RUN/transcript.html: the conversation with media.")] = False,
) -> None:
    """Print a run's conversation: every message, tool call and tool result."""
    from mora_agents.media import atomic_path
    from mora_agents.runs.catalog import read_info
    from mora_agents.runs.html import transcript_html
    from mora_agents.runs.render import describe
    from mora_agents.runs.transcript import scan_transcript

    path = run_dir / "transcript.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise fail(f"{run_dir}: no transcript.jsonl (not a run directory)", 2)
    try:
        records, problems = scan_transcript(path)
    except OSError as e:
        raise fail(f"{path}: cannot read ({e.strerror})", 2) from None
    if problems:
        warn(f"{path}: skipped {len(problems)} damaged line(s) and kept the {len(records)} record(s) around them: "
             + "; ".join(problems))
    if html:
        try:
            read_info(path.parent)
        except InputError as e:
            warn(f"{e}; the page shows the records without the run's details")
        page = path.parent / "transcript.html"
        try:
            with atomic_path(page) as tmp:
                tmp.write_text(transcript_html(path.parent), encoding="utf-8")
        except OSError as e:
            raise fail(f"{page}: cannot write ({e.strerror})", 2) from None
        print_path(page)
        return
    for record in records:
        if as_json:
            sys.stdout.write(escape_separators(record.model_dump_json()) + "\n")
        else:
            out.print(f"[dim]{record.seq:>3} +{record.elapsed:7.2f}s[/] [bold cyan]{escape(record.source)}[/] "
                      f"{escape(describe(record, path.parent.resolve()))}")


@sops_app.command("list")
def sops_list(sops: SopsOption = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of the SOPs (for scripts).")] = False,
              ) -> None:
    """List the SOPs (tasks) that `mora run` can follow."""
    from mora_agents.sop.loader import find_sops

    try:
        found = sorted(find_sops(sops).items())
    except InputError as e:
        raise fail(str(e), 2) from None
    if as_json:
        print_json([{"task": name, "file": str(path), "description": sop.description,
                     "inputs": {k: v.model_dump(mode="json") for k, v in sop.inputs.items()},
                     "steps": [s.id for s in sop.steps]} for name, (sop, path) in found])
        return
    table = Table("task", "inputs", "steps", "file")
    table.columns[0].no_wrap = True
    for name, (sop, path) in found:
        inputs = ", ".join(f"{k}{'' if v.required else '?'}:{v.type}" for k, v in sop.inputs.items())
        table.add_row(escape(name), escape(inputs), escape(" > ".join(s.id for s in sop.steps)), escape(str(path)))
    print_table(table)


@sops_app.command("show")
def sops_show(name: str, sops: SopsOption = None) -> None:
    """Print an SOP file."""
    from mora_agents.sop.loader import find_sops

    try:
        found = find_sops(sops)
    except InputError as e:
        raise fail(str(e), 2) from None
    if name not in found:
        raise fail(f"SOP '{name}': unknown (SOPs: {', '.join(sorted(found))})", 2)
    out.print(f"[dim]# {escape(str(found[name][1]))}[/]")
    out.print(escape(found[name][1].read_text(encoding="utf-8")))


@sops_app.command("validate")
def sops_validate(files: Annotated[Optional[list[Path]], typer.Argument(help="SOP files (default: all found).")] = None,
                  sops: SopsOption = None) -> None:
    """Validate SOP files; errors (all of each file's) name the file, the step and the field."""
    from mora_agents.sop.loader import SOPError, load_sop, sop_dirs

    try:
        paths = files or [p for d in sop_dirs(sops) for p in sorted(d.glob("*.y*ml"))]
    except InputError as e:
        raise fail(str(e), 2) from None
    failed = 0
    for path in paths:
        try:
            sop = load_sop(path)
            steps = len(sop.steps)
            out.print(f"[green]ok[/] {escape(str(path))} ({escape(sop.name)}, {steps} step{'s' * (steps != 1)})")
        except SOPError as e:  # every problem of the file, a line each
            failed += 1
            for problem in e.problems:
                console.print(f"[red]invalid[/] {escape(problem)}")
    if failed:
        raise typer.Exit(2)


_IMPORTED_IN = os.getpid()


def main() -> None:
    """The `mora` command. Once torch is loaded, a command that ends (with no other thread left) skips the
    interpreter's teardown: freeing torch's and diffusers' thousands of modules one by one takes over a second, the
    system frees the process at once. Safe because nothing relies on it: every file the package writes is closed, and
    a run killed at any moment loses nothing it recorded. Not in a child forked after this module was imported: the
    exit handlers it inherited (a parent's temporary folders, say) are the parent's to run."""
    try:
        app()
    except SystemExit as e:
        if (os.getpid() == _IMPORTED_IN and "torch" in sys.modules
                and all(t.daemon or t is threading.main_thread() for t in threading.enumerate())):
            _exit_now(e.code)
        raise


def _exit_now(code: object) -> NoReturn:
    """Exit as `SystemExit(code)` would (exit handlers run, output flushed), without the interpreter's teardown."""
    import atexit

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # e.g. the chat's history, a Ray instance started here, logging's flush
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
