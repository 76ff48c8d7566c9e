"""Rendering results: rich tables, JSON, and the Markdown report of a prompt suite."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from mora_agents.eval.chart import paper_rows
from mora_agents.eval.metrics.summary import QUALITY_DIMENSIONS
from mora_agents.eval.result import VideoEvaluation

SCHEMA_VERSION = 1


def results_table(evaluation: VideoEvaluation) -> Table:
    """One row per metric: value, backend, frames, fps and checkpoint (or why it is unavailable)."""
    noise = " (noise: tiny preset, random weights)" if evaluation.noise else ""
    table = Table(title=escape(evaluation.source) + noise, title_justify="left")
    for column in ("metric", "value", "backend", "frames", "fps"):
        table.add_column(column, no_wrap=True)
    table.add_column("checkpoint / note")
    for result in evaluation.results.values():
        if result.value is None:
            # The full reason (with the remedy) is in the JSON output.
            table.add_row(result.name, "-", "unavailable", "", "", f"[dim]{result.reason.split(' (')[0]}[/dim]")
            continue
        note = f"{Path(result.checkpoint).name} sha256:{result.sha256[:12]}" if result.checkpoint else ""
        if not result.is_reference and result.details.get("missing"):
            note = f"proxy; missing {', '.join(result.details['missing'])}"
        table.add_row(
            result.name,
            f"{result.value:.4f}",
            result.backend or "",
            str(len(result.frames_used)),
            f"{result.fps:g}" if result.fps else "",
            note,
        )
    return table


def paper_table(evaluation: VideoEvaluation) -> Table | None:
    """A run made with a system (`mora run --system`) next to the paper's rows for its task and system: the metrics
    both have. None when there are none."""
    rows = paper_rows(evaluation.task, evaluation.system) if evaluation.system else {}
    metrics = [name for name, result in evaluation.results.items()
               if result.value is not None and any(name in row for row in rows.values())]
    if not metrics:
        return None
    table = Table(title=f"{evaluation.source}: next to the paper's rows (system {evaluation.system}; *: a fallback "
                        "backend's value)", title_justify="left")
    table.add_column("", no_wrap=True)
    for name in metrics:
        table.add_column(name.replace("_", "\n"), justify="right", no_wrap=True, min_width=6)
    results = evaluation.results
    table.add_row("this run", *(f"{results[m].value:.3f}{'' if results[m].is_reference else '*'}" for m in metrics))
    for label, row in rows.items():
        table.add_row(label, *(f"{row[m]:.3f}" if m in row else "" for m in metrics))
    return table


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], low: float | None = None, high: float | None = None) -> str:
    """Values as a row of block characters, from `low` (default: their least) to `high` (their greatest)."""
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, max(0, round((v - low) / span * (len(SPARKS) - 1))))] for v in values)


def drift_table(step: str, rows: list[dict]) -> Table:
    """A chain's drift per segment (start time, against the first keyframe and the previous segment's end), and
    its curves over time."""
    to_first = [row["to_first"] for row in rows]
    colour, sharp = [d["color"] for d in to_first], [d["sharpness"] for d in to_first]
    caption = (f"{len(rows)} segments, the last from {rows[-1]['start']:g} s: colour shift {sparkline(colour, 0, max(5.0, *colour))} "
               f"({colour[0]:.1f} -> {colour[-1]:.1f}), sharpness {sparkline(sharp, 0, max(1.0, *sharp))} "
               f"({sharp[0]:.2f} -> {sharp[-1]:.2f})")
    table = Table(title=f"drift of {step} (delta E of the mean colour; sharpness as a share of the reference's)",
                  title_justify="left", caption=caption, caption_justify="left")
    for column in ("segment", "start s", "colour vs first", "sharpness vs first", "colour vs previous",
                   "sharpness vs previous"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        previous = row["to_previous"] or {}
        table.add_row(str(row["segment"]), f"{row['start']:g}", f"{row['to_first']['color']:.2f}",
                      f"{row['to_first']['sharpness']:.3f}", f"{previous['color']:.2f}" if previous else "",
                      f"{previous['sharpness']:.3f}" if previous else "")
    return table


def _value(measure: dict | None) -> str:
    """A measure `{"value", "backend"}` as `0.912 (fallback:ssim)`, or why it is missing."""
    if not measure:
        return ""
    if measure.get("value") is None:
        return f"unavailable ({' '.join(str(measure.get('reason', '')).split())[:60]})"
    backend = measure.get("backend")
    return f"{measure['value']:.3f}" + (f" ({backend})" if backend and backend != "reference" else "")


def story_tables(story: dict) -> list[Table]:
    """A story's measures: each shot's consistency and adherence, each character's and setting's consistency
    across the shots it is in, and every join's smoothness and seam."""
    shots = Table(title=f"story: each shot ({story['frames']})", title_justify="left")
    for column in ("shot", "subject consistency (DINO)", "background consistency (CLIP)", "adherence (ViCLIP)"):
        shots.add_column(column)
    adherence = {row["shot"]: row for row in story.get("adherence", [])}
    for row in story.get("within_shot", []):
        shots.add_row(str(row["shot"]), _value(row["subject_consistency"]), _value(row["background_consistency"]),
                      _value(adherence.get(row["shot"])))
    across = Table(title="story: across shots (mean similarity of the shots each is in)", title_justify="left")
    for column in ("character or setting", "shots", "DINO", "CLIP"):
        across.add_column(column)
    for name, row in story.get("across_shots", {}).items():
        across.add_row(f"{name} ({row['kind']})", ", ".join(map(str, row["shots"])),
                       *(_value({"value": row[k], "backend": row["backends"][k]}) for k in ("dino", "clip")))
    joins = Table(title="story: joins", title_justify="left")
    for column in ("after shot", "via", "frames", "smoothness", "seam (DINO)"):
        joins.add_column(column)
    for row in story.get("joins", []):
        joins.add_row(str(row["after_shot"]), row["via"], "-".join(map(str, row["frames"])),
                      _value(row["smoothness"]), _value(row["seam"]))
    return [shots, across, joins]


def results_json(evaluations: list[VideoEvaluation]) -> str:
    """The results as one JSON document (`mora eval --json`, `--json-out`)."""
    payload = {"schema_version": SCHEMA_VERSION, "videos": [e.to_dict() for e in evaluations]}
    return json.dumps(payload, indent=2, default=float) + "\n"


def write_json(evaluations: list[VideoEvaluation], path: Path) -> None:
    """The results as JSON in a file, written whole or not at all."""
    from mora_agents.media import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(results_json(evaluations), encoding="utf-8")


Aggregate = dict[str, dict[str, dict[str, tuple[float, int]]]]


def aggregate(groups: dict[str, list[VideoEvaluation]]) -> Aggregate:
    """group -> metric -> backend -> (mean, count); values of different backends are never mixed."""
    out: Aggregate = {}
    for group, evaluations in groups.items():
        values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for evaluation in evaluations:
            for result in evaluation.results.values():
                if result.value is not None:
                    values[result.name][result.backend or ""].append(result.value)
        out[group] = {
            metric: {backend: (float(np.mean(v)), len(v)) for backend, v in by_backend.items()}
            for metric, by_backend in values.items()
        }
    return out


def suite_markdown(suite: str, groups: dict[str, list[VideoEvaluation]], unavailable: dict[str, str]) -> str:
    """Markdown report: one table per metric family, a row per prompt type and overall."""
    table = aggregate(groups)
    metrics = [
        m
        for m in [*QUALITY_DIMENSIONS, "video_quality", "appearance_style", "temporal_style", "video_length"]
        if any(m in row for row in table.values())
    ]
    lines = [
        f"# `mora eval --suite {suite}`",
        "",
        "Cells: mean [backend] (n videos). Values from different backends are reported separately;",
        "`fallback:*` values are weight-free approximations, not comparable with the paper's numbers.",
        "",
        "| group | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for group, row in table.items():
        cells = [
            "<br>".join(f"{mean:.3f} [{backend}] ({n})" for backend, (mean, n) in row.get(m, {}).items()) or "-"
            for m in metrics
        ]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    if unavailable:
        lines += ["", "## Unavailable metrics", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in sorted(unavailable.items())]
    return "\n".join(lines) + "\n"
