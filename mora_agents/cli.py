"""The `mora` command line: run requests, inspect SOPs and transcripts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mora_agents.errors import InputError, MoraError
from mora_agents.eval.cli import eval_command

app = typer.Typer(help="Mora: generalist video generation by cooperating AI agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
sops_app = typer.Typer(help="List, show and validate SOP files.", no_args_is_help=True)
app.add_typer(sops_app, name="sops")
app.command("eval", help="Score videos or run directories with the paper's metrics (VBench dimensions).")(eval_command)
console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    console.print(f"[red]mora: error:[/] {escape(message)}")
    return typer.Exit(code)


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """`tool.param=value` items as {tool: {param: value}}; values are read as YAML scalars (12, 0.5, true)."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        tool, dot, param = key.partition(".")
        if not sep or not dot or not tool or not param:
            raise InputError(f"--set {item}: expected TOOL.PARAM=VALUE, e.g. image_to_video.motion_bucket_id=127")
        overrides.setdefault(tool, {})[param] = yaml.safe_load(raw) if raw else ""
    return overrides


class RichProgress:
    """The tools' progress hook, drawn as a rich progress bar (one bar per denoising loop)."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.task = progress, None

    def start(self, label: str, total: int) -> None:
        self.stop()
        self.task = self.progress.add_task(label, total=total)

    def advance(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


@app.command()
def run(
    request: Annotated[str, typer.Argument(help="What you want, in words.")],
    task: Annotated[Optional[str], typer.Option(help="Force a task (an SOP name) instead of the planner's choice.")] = None,
    image: Annotated[list[Path], typer.Option(help="Attach an image (repeatable).")] = [],
    video: Annotated[list[Path], typer.Option(help="Attach a video (repeatable; order matters for connect).")] = [],
    duration: Annotated[Optional[float], typer.Option(help="Length in seconds (the SOP's default otherwise).")] = None,
    preset: Annotated[str, typer.Option(help="full: real weights; tiny: random small models (noise, for tests).")] = "full",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    sops: Annotated[Optional[Path], typer.Option(help="A folder of your own SOP files.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Base folder of run directories.")] = Path("runs"),
    seed: Annotated[Optional[int], typer.Option(help="Base seed (random if not given; always recorded).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a tool parameter: TOOL.PARAM=VALUE.")] = [],
) -> None:
    """Run a request through the agents; writes runs/<time>-<slug>/ with result.mp4 and transcript.jsonl."""
    from mora_agents.runs.render import describe
    from mora_agents.runs.runner import RunOptions, run_request
    from mora_agents.settings import configure

    try:
        options = RunOptions(preset=preset, device=device, out=out_dir, sops_dir=sops, seed=seed,
                             overrides=parse_sets(set_))
        if preset not in ("full", "tiny"):
            raise InputError(f"--preset {preset}: unknown (choose full or tiny)")
        if preset == "tiny":
            console.print("[yellow]preset tiny: random-weight models, the video will be noise (this checks the "
                          "code paths, not the quality)[/]")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            configure(progress=RichProgress(progress))
            outcome = asyncio.run(run_request(
                request, images=image, videos=video, task=task, duration=duration, options=options,
                on_record=lambda r: progress.console.print(f"[bold cyan]{r.source}[/] {escape(describe(r))}")))
    except InputError as e:
        raise fail(str(e), 2) from None
    except MoraError as e:
        raise fail(str(e), 1) from None
    except KeyboardInterrupt:
        raise fail("interrupted; the run directory keeps what was finished", 130) from None
    note = " [yellow](noise: tiny preset)[/]" if outcome.noise else ""
    console.print(f"[green]done:[/] {outcome.result}{note}")
    out.print(str(outcome.result))


@app.command()
def transcript(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its transcript.jsonl).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON records.")] = False,
) -> None:
    """Print a run's conversation: every message, tool call and tool result."""
    from mora_agents.runs.render import describe
    from mora_agents.runs.transcript import read_transcript

    path = run_dir / "transcript.jsonl" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise fail(f"{run_dir}: no transcript.jsonl (not a run directory)", 2)
    for record in read_transcript(path):
        if as_json:
            sys.stdout.write(record.model_dump_json() + "\n")
        else:
            out.print(f"[dim]{record.seq:>3} +{record.elapsed:7.2f}s[/] [bold cyan]{record.source}[/] "
                      f"{escape(describe(record))}")


@sops_app.command("list")
def sops_list(sops: Annotated[Optional[Path], typer.Option(help="Also a folder of your own SOP files.")] = None) -> None:
    """List the SOPs (tasks) that `mora run` can follow."""
    from mora_agents.sop.loader import find_sops

    try:
        found = find_sops(sops)
    except InputError as e:
        raise fail(str(e), 2) from None
    table = Table("task", "inputs", "steps", "file")
    for name, (sop, path) in sorted(found.items()):
        inputs = ", ".join(f"{k}{'' if v.required else '?'}:{v.type}" for k, v in sop.inputs.items())
        table.add_row(name, inputs, " > ".join(s.id for s in sop.steps), str(path))
    out.print(table)


@sops_app.command("show")
def sops_show(name: str, sops: Annotated[Optional[Path], typer.Option(help="Also a folder of your own SOP files.")] = None) -> None:
    """Print an SOP file."""
    from mora_agents.sop.loader import find_sops

    try:
        found = find_sops(sops)
    except InputError as e:
        raise fail(str(e), 2) from None
    if name not in found:
        raise fail(f"SOP '{name}': unknown (SOPs: {', '.join(sorted(found))})", 2)
    out.print(f"[dim]# {found[name][1]}[/]")
    out.print(escape(found[name][1].read_text(encoding="utf-8")))


@sops_app.command("validate")
def sops_validate(files: Annotated[Optional[list[Path]], typer.Argument(help="SOP files (default: all found).")] = None,
                  sops: Annotated[Optional[Path], typer.Option(help="Also a folder of your own SOP files.")] = None) -> None:
    """Validate SOP files; errors name the file, the step and the field."""
    from mora_agents.sop.loader import load_sop, sop_dirs

    paths = files or [p for d in sop_dirs(sops) for p in sorted(d.glob("*.y*ml"))]
    failed = 0
    for path in paths:
        try:
            sop = load_sop(path)
            out.print(f"[green]ok[/] {path} ({sop.name}, {len(sop.steps)} steps)")
        except InputError as e:
            failed += 1
            console.print(f"[red]invalid[/] {escape(str(e))}")
    if failed:
        raise typer.Exit(2)


def main() -> None:
    app()
