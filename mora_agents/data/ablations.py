"""`mora train ablations`: the paper's Table 5 configurations trained from the same data and evaluated alike.

    DIR/
        ablations.json                 the settings and held-out prompts: a rerun must match them
        data/                          one round of candidates and its selection (judges, then people): the data
        data-judges/                   the samples the judges accepted without a person (what w/o human trains on)
        full/, no_human/, no_modulation/, random_modulation/     each a `mora train` output
        eval/<configuration>/seed-k/   the held-out runs at seed offset k and their scores.json
        table.json, table.md, table.png    mean +- std over the seeds per configuration and metric, the paper's beside

Every configuration is evaluated on the same held-out prompts at the same seeds, so only the weights differ.
Resumable as the loop: the same command continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mora_agents.judges import JudgeSpec
from mora_agents.data.loop import HeldOut, LoopUI, make_candidates, select_all, split_seeds, train_once
from mora_agents.data.make import MakeConfig, check_inputs, check_settings
from mora_agents.data.seeds import Seed
from mora_agents.data.select import Reviewer
from mora_agents.errors import InputError
from mora_agents.eval import resolve_metrics
from mora_agents.eval._deps import MissingDependencyError, require
from mora_agents.eval.metrics.summary import VIDEO_QUALITY
from mora_agents.media import atomic_path
from mora_agents.runs.runner import RunOptions
from mora_agents.train import TrainConfig, read_dataset
from mora_agents.train.dataset import copy_samples
from mora_agents.train.trainer import check_device

SETTINGS, TABLE = "ablations.json", "table"
MAX_SEEDS = 100
COLUMNS = {"video_quality": "Video Quality", "subject_consistency": "Obj. Cons.",
           "background_consistency": "Bg. Cons.", "motion_smoothness": "Motion Smooth.",
           "aesthetic_quality": "Aesthetic", "dynamic_degree": "Dynamic Deg.", "imaging_quality": "Imaging Q.",
           "temporal_style": "Temporal Style"}
"""Table 5's columns, in its order, by our metric names."""


@dataclass(frozen=True)
class Configuration:
    name: str
    label: str
    """As Table 5 names the row."""
    train: dict[str, Any] | None
    """TrainConfig changes from the given one; None: not trained."""
    judges_only: bool = False
    """Trained on the samples the judges accepted without a person."""
    paper: tuple[float, ...] = ()
    """Table 5's row for Mora (Open-Sora-Plan), in COLUMNS' order."""


CONFIGURATIONS = (
    Configuration("full", "Mora", {}, paper=(0.800, 0.98, 0.97, 0.99, 0.66, 0.50, 0.70, 0.31)),
    Configuration("untrained", "Mora (untrained)", None, paper=(0.767, 0.94, 0.95, 0.99, 0.61, 0.43, 0.68, 0.26)),
    Configuration("no_human", "Mora w/o Human-in-the-loop", {}, judges_only=True,
                  paper=(0.785, 0.98, 0.96, 0.95, 0.63, 0.50, 0.69, 0.31)),
    Configuration("no_modulation", "Mora w/o Self-modulated", {"modulation": False},
                  paper=(0.776, 0.96, 0.95, 0.95, 0.62, 0.51, 0.67, 0.27)),
    Configuration("random_modulation", "Mora with RI-modulated", {"modulation_init": "random"},
                  paper=(0.797, 0.98, 0.96, 0.99, 0.66, 0.50, 0.69, 0.29)),
)
"""The paper's Table 5 rows (arXiv 2403.13248v3, appendix B; Mora (Open-Sora-Plan), fine-tuned as its
self-modulated multi-agent training), as our configurations."""
PAPER_SOURCE = "Yuan et al., Mora, arXiv:2403.13248v3, Table 5 (Mora (Open-Sora-Plan) ablations)"
SYSTEM_LABELS = {"svd": "Mora (SVD)", "osp": "Mora (Open-Sora-Plan)"}


@dataclass
class AblationConfig:
    make: MakeConfig = field(default_factory=MakeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: int = 3
    """K evaluation seeds: each held-out prompt runs K times per configuration (mean +- std over them)."""
    frames: int = 4
    """Frames per candidate shown to the judges."""
    eval_share: float = 0.25
    eval_metrics: list[str] = field(default_factory=lambda: [VIDEO_QUALITY, "temporal_style"])
    processes: int = 1


@dataclass
class AblationResult:
    out: Path
    table: dict[str, Any]
    report: dict[str, Path]


def run_ablations(seeds: list[Seed], out: Path, config: AblationConfig, options: RunOptions, *,
                  eval_seeds: list[Seed] | None = None, judges: list[JudgeSpec] | None = None,
                  reviewer: Reviewer | None = None, ray: str | None = None, ui: LoopUI | None = None) -> AblationResult:
    """Make one round of data from `seeds`, select it, train the four trained configurations of Table 5 from it and
    evaluate all five on the held-out prompts (`eval_seeds`, else `config.eval_share` of `seeds`) at `config.seeds`
    seeds; writes DIR/table.json, .md and .png. Bad input raises InputError before anything is written."""
    out, ui = Path(out).resolve(), ui or LoopUI()
    if not 1 <= config.seeds <= MAX_SEEDS:
        raise InputError(f"--seeds {config.seeds}: from 1 to {MAX_SEEDS}")
    try:
        config = replace(config, eval_metrics=resolve_metrics(config.eval_metrics))
    except ValueError as e:
        raise InputError(f"--eval-metrics: {e}") from None
    train_seeds, heldout = (list(seeds), list(eval_seeds)) if eval_seeds is not None else split_seeds(
        seeds, config.eval_share, config.make.seed)
    if not heldout:
        raise InputError("ablations: the configurations are compared on held-out prompts; give --eval-prompts or "
                         "an --eval-share above 0")
    options = replace(options, system=options.system or config.train.system)  # the runs' system trains
    train = TrainConfig.parse(**{**config.train.model_dump(), "preset": options.preset, "device": options.device,
                                 "memory_profile": options.memory_profile, "system": options.system})
    check_device(train.device)
    make = replace(config.make, iteration=1)
    checked = check_inputs([*train_seeds, *heldout], make, replace(options, out=out))
    record = {"seeds": [s.text for s in train_seeds], "heldout": [s.text for s in heldout],
              "make": {k: v for k, v in asdict(make).items() if k != "iteration"},
              "train": train.model_dump(mode="json", exclude={"device", "memory_profile", "report_to"}),
              "seeds_per_prompt": config.seeds, "frames": config.frames, "eval_metrics": config.eval_metrics,
              "preset": options.preset}
    check_settings(out / SETTINGS, record, "`mora train ablations`")
    if not (out / SETTINGS).is_file():
        with atomic_path(out / SETTINGS) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    data = out / "data"
    make_candidates(train_seeds, data, make, options, ray, [s.text for s in heldout], ui,
                    f"ablations: candidates ({make.count} prompts x {make.candidates}), untrained")
    ui.stage("ablations: selection (judges, then people)")
    accepted = select_all(data, judges, reviewer, False, config.frames, make.seed)
    datasets = {False: data / "dataset" if accepted else None, True: _judges_only(data)}
    held = HeldOut(heldout, make, checked, options, config.eval_metrics, ray)
    rows = []
    for configuration in CONFIGURATIONS:
        dataset = datasets[configuration.judges_only] if configuration.train is not None else None
        adapters = None
        if dataset is not None:
            adapters = out / configuration.name
            if not (adapters / "card.json").is_file():
                train_once(adapters, dataset, train.model_copy(update=configuration.train), config.processes, ui,
                           f"ablations: training {configuration.label}")
        scores = [held.scores(out / "eval" / configuration.name / f"seed-{k}", adapters, ui,
                              f"{configuration.label}, seed {k + 1}/{config.seeds}", offset=k)
                  for k in range(config.seeds)]
        rows.append(_row(configuration, dataset, adapters, scores))
    table = {"source": PAPER_SOURCE, "columns": COLUMNS, "seeds": config.seeds, "heldout": len(heldout),
             "preset": options.preset, "system": options.system, "configurations": rows}
    return AblationResult(out, table, write_table(out, table))


def _judges_only(data: Path) -> Path | None:
    """The accepted samples the judges agreed on (no person), as their own dataset (written once, atomically)."""
    folder = data.parent / "data-judges"
    if (folder / "metadata.jsonl").is_file():
        return folder
    if not (data / "dataset" / "metadata.jsonl").is_file():
        return None
    chosen = [s for s in read_dataset(data / "dataset") if (s.decision or {}).get("by") == "judges"]
    if not chosen:
        return None
    temporary = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    copy_samples(data / "dataset", chosen, temporary)
    temporary.rename(folder)
    return folder


def _row(configuration: Configuration, dataset: Path | None, adapters: Path | None,
         scores: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's metrics: per metric the mean over the held-out prompts at each seed, and the mean and
    standard deviation (ddof 1; 0 with one seed) of those over the seeds."""
    metrics = {}
    for name in sorted({m for seed in scores for m in seed}):
        values = [seed[name]["mean"] for seed in scores if name in seed]
        metrics[name] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                         "seeds": values, "backend": "/".join(sorted({seed[name]["backend"] for seed in scores
                                                                      if name in seed}))}
    return {"name": configuration.name, "label": configuration.label, "adapters": str(adapters) if adapters else None,
            "samples": len(read_dataset(dataset)) if dataset is not None else 0,
            "paper": dict(zip(COLUMNS, configuration.paper)), "metrics": metrics}


def write_table(out: Path, table: dict[str, Any]) -> dict[str, Path]:
    """DIR/table.json, table.md and (with matplotlib) table.png: ours beside the paper's Table 5."""
    paths = {"json": out / f"{TABLE}.json", "markdown": out / f"{TABLE}.md"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    header = "| configuration | samples | " + " | ".join(COLUMNS.values()) + " |"
    rule = "|---|--:|" + "--:|" * len(COLUMNS)
    ours = [f"| {row['label']} | {row['samples'] if row['adapters'] else 'untrained'} | " + " | ".join(
        f"{row['metrics'][m]['mean']:.3f} ± {row['metrics'][m]['std']:.3f}" + (
            "*" if row["metrics"][m]["backend"] != "reference" else "") if m in row["metrics"] else "-"
        for m in COLUMNS) + " |" for row in table["configurations"]]
    paper = [f"| {row['label']} | | " + " | ".join(f"{row['paper'][m]:.3f}" if m == VIDEO_QUALITY else f"{row['paper'][m]:.2f}"
                                                     for m in COLUMNS) + " |" for row in table["configurations"]]
    system = table.get("system", "svd")
    lines = ["# Ablations (the paper's Table 5)", "",
             f"## Ours: preset `{table['preset']}`, {SYSTEM_LABELS[system]} agents, {table['heldout']} held-out "
             f"prompt(s) x {table['seeds']} seed(s)", "",
             "Mean ± standard deviation over the seeds of the mean over the held-out prompts. `*`: a weight-free "
             "fallback backend, not the paper's metric; `-`: not available here. `samples`: the training set's size.",
             "", header, rule, *ours, "",
             f"## The paper: Mora (Open-Sora-Plan), {table['source']}", "",
             "Reported numbers, for comparison only: " + (
                 "the same system, other data and weights." if system == "osp" else
                 "another system (SD3 + Open-Sora-Plan), other data and weights."),
             "", header, rule, *paper]
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        _chart(out / f"{TABLE}.png", table)
        paths["png"] = out / f"{TABLE}.png"
    except MissingDependencyError:  # matplotlib: the `eval` extra
        pass
    return paths


def _chart(path: Path, table: dict[str, Any]) -> None:
    """Two panels laid out as Table 5 (a group of bars per column, a bar per configuration): ours with the seeds'
    standard deviation as error bars (hatched: fallback backend), and the paper's reported numbers."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")
    rows, columns = table["configurations"], list(COLUMNS)
    fig, axes = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    width = 0.8 / len(rows)
    for ax, source in zip(axes, ("ours", "paper")):
        for i, row in enumerate(rows):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
            if source == "paper":
                ax.bar(xs, [row["paper"][m] for m in columns], width, color=f"C{i}", label=row["label"])
                continue
            present = [(x, row["metrics"][m]) for x, m in zip(xs, columns) if m in row["metrics"]]
            bars = ax.bar([x for x, _ in present], [v["mean"] for _, v in present], width, color=f"C{i}",
                          yerr=[v["std"] for _, v in present], capsize=2, label=row["label"])
            for bar, (_, value) in zip(bars, present):
                bar.set_hatch("" if value["backend"] == "reference" else "//")
        ax.set_ylim(0, 1.25)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_ylabel("score")
        ax.legend(fontsize="small", ncol=len(rows), loc="upper center")
    axes[0].set_title(f"Ours: {SYSTEM_LABELS[table.get('system', 'svd')]} agents, preset {table['preset']}, "
                      f"{table['heldout']} held-out prompt(s) x {table['seeds']} seed(s); error bars: std over seeds; "
                      "hatched: fallback backend")
    axes[1].set_title(f"Paper (reported, not ours): {table['source']}")
    axes[1].set_xticks(range(len(columns)), [COLUMNS[m] for m in columns])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
