"""The loop's evaluation report: held-out metrics and the validation loss per iteration as JSON, a Markdown table
and a PNG plot (the paper's Figures 3 and 4 plot such curves over self-training iterations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mora_agents.eval._deps import MissingDependencyError, require
from mora_agents.media import atomic_path

REPORT = "metrics"


def summarise(scores: dict[str, Any]) -> dict[str, Any]:
    """One iteration's `mora eval` JSON (its held-out videos) as metric -> mean, backend and count."""
    values: dict[str, list[float]] = {}
    backends: dict[str, set[str]] = {}
    for video in scores["videos"]:
        for name, result in video["metrics"].items():
            if result["value"] is not None:
                values.setdefault(name, []).append(result["value"])
                backends.setdefault(name, set()).add(result["backend"] or "")
    return {name: {"mean": float(np.mean(v)), "backend": "/".join(sorted(backends[name])), "videos": len(v)}
            for name, v in values.items()}


def write_report(out: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """DIR/metrics.json, .md and .png from `rows` ({"iteration", "adapters", "accepted", "metrics": summarise(...),
    "validation_loss": {name: loss} or None}).

    The plot needs matplotlib (the `eval` extra); without it the JSON and Markdown are still written."""
    metrics = sorted({name for row in rows for name in row["metrics"]})
    losses = sorted({name for row in rows for name in row.get("validation_loss") or {}}, key=lambda n: n == "total")
    paths = {"json": out / f"{REPORT}.json", "markdown": out / f"{REPORT}.md"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps({"metrics": metrics, "validation": losses, "iterations": rows}, indent=1) + "\n",
                       encoding="utf-8")
    lines = ["# Held-out metrics and validation loss per iteration", "",
             ("Iteration 0 is the untrained agents; iteration n generates with the adapters trained in iterations 1 to "
              "n. Metric cells: mean over the held-out prompts [backend]; `fallback:*` values are weight-free "
              "approximations. Validation loss: the training objective on the held-out accepted samples at fixed "
              "noise and timesteps (lower is better)."),
             "", "| iteration | accepted samples | " + " | ".join([*metrics, *(f"validation {n}" for n in losses)]) + " |",
             "|---|---|" + "---|" * (len(metrics) + len(losses))]
    for row in rows:
        cells = [f"{row['metrics'][m]['mean']:.4f} [{row['metrics'][m]['backend']}]" if m in row["metrics"] else "-"
                 for m in metrics]
        cells += [f"{(row.get('validation_loss') or {})[n]:.5g}" if n in (row.get("validation_loss") or {}) else "-"
                  for n in losses]
        accepted = "-" if row["accepted"] is None else str(row["accepted"])
        lines.append(f"| {row['iteration']} | {accepted} | " + " | ".join(cells) + " |")
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plotted = [m for m in metrics if all(0 <= row["metrics"][m]["mean"] <= 1 for row in rows if m in row["metrics"])]
    try:
        if plotted or losses:
            _plot(out / f"{REPORT}.png", rows, plotted, losses)
            paths["png"] = out / f"{REPORT}.png"
    except MissingDependencyError:  # matplotlib: the `eval` extra
        pass
    return paths


def _plot(path: Path, rows: list[dict[str, Any]], metrics: list[str], losses: list[str]) -> None:
    """Held-out metrics (left) and the validation loss (right) against the iteration."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")
    panels = [p for p, shown in (("metrics", metrics), ("losses", losses)) if shown]
    fig, axes = plt.subplots(1, len(panels), figsize=(7.0 * len(panels), 4.2), squeeze=False)
    iterations = sorted({row["iteration"] for row in rows})
    for ax, panel in zip(axes[0], panels):
        if panel == "metrics":
            for i, metric in enumerate(metrics):
                points = [(row["iteration"], row["metrics"][metric]) for row in rows if metric in row["metrics"]]
                fallback = any(m["backend"] != "reference" for _, m in points)
                ax.plot([n for n, _ in points], [m["mean"] for _, m in points], marker="o", color=f"C{i}",
                        linestyle="--" if fallback else "-", label=metric + (" (fallback)" if fallback else ""))
            ax.set_ylabel("mean over held-out prompts")
            ax.set_ylim(0, 1.05)
            ax.set_title("Held-out metrics per iteration (dashed: fallback backend)")
        else:
            for i, name in enumerate(losses):
                points = [(row["iteration"], row["validation_loss"][name]) for row in rows
                          if name in (row.get("validation_loss") or {})]
                ax.plot([n for n, _ in points], [v for _, v in points], marker="s", color=f"C{i}",
                        linewidth=2.5 if name == "total" else 1.2, label=name)
            ax.set_ylabel("loss at fixed noise (lower is better)")
            ax.set_title("Validation loss on held-out accepted samples")
        ax.set_xticks(iterations)
        ax.set_xlabel("self-training iteration (0: untrained)")
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
