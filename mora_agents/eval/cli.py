"""``mora eval``: score videos or run directories with the paper's metrics."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mora_agents.console import make_console

if TYPE_CHECKING:
    from mora_agents.eval.prompts import PromptEntry
    from mora_agents.eval.result import VideoEvaluation
    from mora_agents.eval.targets import Target

SUITES = ("t2v",)
VideoMaker = Callable[[list[str], Path, str, "str | None"], list[Path]]
"""`mora eval --generate`: (prompts, folder, preset, ray) -> a run directory per prompt with its video."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"mora eval: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _targets(paths: list[Path], prompt: str | None, entries: list[PromptEntry] | None, suite: bool) -> list[Target]:
    """Targets for the given paths; prompt entries apply by order, or by prompt text in a suite."""
    from mora_agents.eval.targets import load_target
    from mora_agents.eval.video import BadInputError

    if suite:
        paths = paths or [e.video for e in entries or [] if e.video]
    targets = [load_target(p) for p in paths]
    if not targets:
        raise BadInputError("no input: give PATH... (videos or run directories)")
    if entries is not None and not suite:
        if len(entries) != len(targets):
            raise BadInputError(f"--prompts has {len(entries)} prompts for {len(targets)} inputs")
        for target, entry in zip(targets, entries):
            target.prompt = entry.prompt
            target.input_caption = entry.input_caption or target.input_caption
            target.output_caption = entry.output_caption or target.output_caption
    if prompt is not None:
        for target in targets:
            target.prompt = prompt
    return targets


def _suite_groups(evaluations: list[VideoEvaluation], entries: list[PromptEntry]) -> dict[str, list[VideoEvaluation]]:
    types = {e.prompt: e.type for e in entries}
    by_video = {str(e.video): e.type for e in entries if e.video}
    groups: dict[str, list[VideoEvaluation]] = defaultdict(list)
    for evaluation in evaluations:
        kind = by_video.get(evaluation.video) or types.get(evaluation.prompt or "")
        groups[f"Type {kind}" if kind else "untyped"].append(evaluation)
    ordered = {name: groups[name] for name in sorted(groups)}
    return {**ordered, "overall": evaluations}


def eval_command(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(help="Video files or run directories.")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt for every PATH.")] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompt file: text lines, or JSON/JSONL entries.")
    ] = None,
    metrics: Annotated[
        str | None, typer.Option("--metrics", help="Comma-separated metric names (default: all).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", envvar="VBENCH_CACHE_DIR",  # eval.weights.ENV_VAR (no eval module imported here)
         help="VBench-layout weights directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (stdout) instead of the tables.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="Also write the results as JSON to this file.")] = None,
    chart: Annotated[Path | None, typer.Option("--chart", help="Write a PNG bar chart (for runs with chained segments, also their drift curves: NAME-drift.png).")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="Prompt-suite protocol: t2v.")] = None,
    report: Annotated[Path, typer.Option("--report", help="Markdown report path for --suite.")] = Path(
        "mora-eval-report.md"
    ),
    download: Annotated[bool, typer.Option("--download", help="Download missing reference weights.")] = False,
    generate: Annotated[
        Path | None,
        typer.Option("--generate", help="With --suite: first make the suite's videos, as runs in DIR (resumable)."),
    ] = None,
    preset: Annotated[str, typer.Option(help="Models for --generate: full, or tiny (noise, for tests).")] = "full",
    ray: Annotated[str | None, typer.Option(help="--generate on Ray: local, auto or ADDRESS (see mora batch).")] = None,
) -> None:
    """Score videos with VBench dimensions and the Mora paper's metrics: tables on stdout (JSON with --json), what was
    written on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from mora_agents.console import DescriptionColumn
    from mora_agents.errors import InputError, MoraError
    from mora_agents.eval._deps import MissingDependencyError
    from mora_agents.eval.api import Evaluator, resolve_metrics
    from mora_agents.eval.chart import write_chart, write_drift_chart
    from mora_agents.eval.prompts import load_prompts
    from mora_agents.eval.report import (
        drift_table,
        paper_table,
        results_json,
        results_table,
        story_tables,
        suite_markdown,
        write_json,
    )
    from mora_agents.eval.video import BadInputError
    from mora_agents.inputs import check_output_file

    console = make_console(soft_wrap=False)
    notes = make_console(stderr=True)
    if prompt is not None and prompts is not None:
        raise _fail("use either --prompt or --prompts, not both")
    if suite is not None and (suite not in SUITES or prompts is None):
        raise _fail(f"--suite takes one of {', '.join(SUITES)} and needs --prompts FILE")
    if generate is not None and (suite is None or paths):
        raise _fail("--generate makes the videos of a --suite: give no PATH")
    try:
        for path, flag in ((json_out, "--json-out"), (chart, "--chart"), (report if suite else None, "--report")):
            if path is not None:
                check_output_file(path, flag)
    except InputError as exc:
        raise _fail(str(exc)) from None
    try:
        names = resolve_metrics([m.strip() for m in metrics.split(",") if m.strip()] if metrics else None)
        entries = load_prompts(prompts) if prompts is not None else None
        if generate is not None:  # the command line gives the maker (ctx.obj), which runs them as a batch
            make_videos: VideoMaker = ctx.obj
            paths = make_videos([e.prompt for e in entries or []], generate, preset, ray)
        targets = _targets(list(paths or []), prompt, entries, suite is not None)
        evaluator = Evaluator(names, weights, download)
        evaluations = []
        with Progress(
            DescriptionColumn(),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=make_console(stderr=True),
            transient=True,
        ) as progress:
            task = progress.add_task("evaluating", total=len(targets) * len(names))
            for target in targets:
                progress.update(task, description=escape(Path(target.source).name))
                evaluations.append(evaluator.evaluate(target, lambda _name: progress.advance(task)))
    except (BadInputError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except (MissingDependencyError, MoraError) as exc:
        raise _fail(str(exc), code=1) from None

    if as_json:
        sys.stdout.write(results_json(evaluations))
    else:
        for evaluation in evaluations:
            console.print(results_table(evaluation))
            if (table := paper_table(evaluation)) is not None:
                console.print(table)
            for step, rows in evaluation.drift.items():
                console.print(drift_table(step, rows))
            for table in story_tables(evaluation.story) if evaluation.story else []:
                console.print(table)
    if json_out is not None:
        write_json(evaluations, json_out)
        notes.print(f"JSON written to {escape(str(json_out))}")
    if suite is not None:
        unavailable = {n: r.reason for e in evaluations for n, r in e.results.items() if r.value is None}
        report.write_text(
            suite_markdown(suite, _suite_groups(evaluations, entries or []), unavailable), encoding="utf-8"
        )
        notes.print(f"Markdown report written to {escape(str(report))}")
    if chart is not None:
        try:
            shown = write_chart(evaluations, chart)
        except MissingDependencyError as exc:
            raise _fail(str(exc), code=1) from None
        except ValueError as exc:
            raise _fail(f"--chart {chart}: {exc}") from None
        note = f"with paper rows: {', '.join(shown)}" if shown else "no paper rows for this task"
        notes.print(f"Chart written to {escape(str(chart))} ({note})")
        if any(e.drift for e in evaluations):
            drift_chart = chart.with_name(f"{chart.stem}-drift{chart.suffix}")
            write_drift_chart(evaluations, drift_chart)
            notes.print(f"Drift chart written to {escape(str(drift_chart))}")
