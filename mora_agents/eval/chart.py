"""PNG bar chart of runs' metric values next to the paper's reported rows for the same task (and system)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from mora_agents.eval._deps import require
from mora_agents.eval.metrics.summary import VIDEO_LENGTH
from mora_agents.eval.result import VideoEvaluation


@cache
def _paper() -> dict:
    return json.loads(resources.files("mora_agents.eval").joinpath("paper_rows.json").read_text(encoding="utf-8"))


def paper_rows(task: str | None, system: str | None = None) -> dict[str, dict[str, float]]:
    """The paper's reported values for ``task`` (matched by alias), or an empty dict. For runs of a ``system``
    (`mora run --system`): that system's rows where the paper has them for the task (the OSP system's replace the
    task's own Mora row, the SVD system's come before it), with Sora's."""
    if not task:
        return {}
    key = task.strip().lower().replace(" ", "_")
    for name, entry in _paper()["tasks"].items():
        if key in entry["aliases"]:
            own = _paper()["systems"].get(system or "", {}).get(name)
            if not own:
                return entry["rows"]
            if system == "osp":
                return {**own, "Sora (paper)": entry["rows"]["Sora (paper)"]}
            return {**own, **entry["rows"]}
    return {}


def chart_series(evaluations: list[VideoEvaluation]) -> tuple[dict[str, dict[str, tuple[float, bool]]], list[str]]:
    """The chart's bars, per label (each video's name, marked when a tiny run's noise; then the paper's rows for the
    same task): metric -> (value, from the reference backend); and the paper rows shown."""
    series: dict[str, dict[str, tuple[float, bool]]] = {}
    for evaluation in evaluations:
        noise = " (noise: tiny preset)" if evaluation.noise else ""
        series[(Path(evaluation.source).name or evaluation.source) + noise] = {
            name: (r.value, r.is_reference)
            for name, r in evaluation.results.items()
            if r.value is not None and name != VIDEO_LENGTH and 0.0 <= r.value <= 1.0
        }
    tasks, systems = {e.task for e in evaluations}, {e.system for e in evaluations}
    shown = paper_rows(tasks.pop(), systems.pop() if len(systems) == 1 else None) if len(tasks) == 1 else {}
    for label, values in shown.items():
        series[label] = {name: (value, True) for name, value in values.items()}
    return series, list(shown)


def write_chart(evaluations: list[VideoEvaluation], path: Path) -> list[str]:
    """Grouped bars per [0, 1] score (`chart_series`); fallback values are hatched. Returns the paper rows shown."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")

    series, shown = chart_series(evaluations)
    metrics = sorted({m for values in series.values() for m in values})
    if not metrics:
        raise ValueError("no metric in [0, 1] to chart")

    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(metrics)), 4.0))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        present = [m for m in metrics if m in values]
        bars = ax.bar(
            [metrics.index(m) + i * width for m in present],
            [values[m][0] for m in present],
            width,
            color=f"C{i}",
            label=label,
        )
        for bar, metric in zip(bars, present):
            bar.set_hatch("" if values[metric][1] else "//")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    noise = "; random-weight runs score noise, not the method" if any(e.noise for e in evaluations) else ""
    ax.set_title(f"mora eval (hatched: fallback backend{noise})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return shown


def write_drift_chart(evaluations: list[VideoEvaluation], path: Path) -> None:
    """Each chain's drift over time: the colour shift from the first keyframe (delta E, left axis) and the
    sharpness as a share of its (right axis), at each segment's start."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")

    fig, colour_ax = plt.subplots(figsize=(7.0, 4.0))
    sharp_ax = colour_ax.twinx()
    for i, evaluation in enumerate(evaluations):
        for step, rows in evaluation.drift.items():
            label = f"{Path(evaluation.source).name} {step}"
            times = [row["start"] for row in rows]
            colour_ax.plot(times, [row["to_first"]["color"] for row in rows], f"C{i}-o", label=f"{label}: colour")
            sharp_ax.plot(times, [row["to_first"]["sharpness"] for row in rows], f"C{i}--s",
                          label=f"{label}: sharpness")
    colour_ax.set_xlabel("segment start (s)")
    colour_ax.set_ylabel("colour shift from the first keyframe (delta E)")
    sharp_ax.set_ylabel("sharpness / first keyframe's")
    sharp_ax.set_ylim(0, max(1.1, sharp_ax.get_ylim()[1]))
    colour_ax.set_ylim(0, max(5.0, colour_ax.get_ylim()[1]))
    lines = colour_ax.get_legend_handles_labels(), sharp_ax.get_legend_handles_labels()
    colour_ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize="small")
    colour_ax.set_title("mora eval: drift over time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
