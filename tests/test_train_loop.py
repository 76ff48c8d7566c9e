"""Training inside the data-free loop and the paper's Table 5 ablations (tiny preset, CPU): the loop's training stage
on two processes with its validation loss, and `mora train ablations` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.data.select import read_log
from mora_agents.train import read_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEEDS = "a red fox running through snow\na lighthouse in a storm\na paper boat on a pond\n"
FAST = ["--preset", "tiny", "--device", "cpu", "--set", "image_to_video.frames=4", "--set", "image_to_video.steps=1",
        "--set", "text_to_image.steps=1", "--candidates", "2", "--steps", "2", "--batch-size", "2", "--frames", "4",
        "--resolution", "32x32"]
"""Candidates of 4 frames in one denoising step, 2 per prompt; 2 training steps on 4 frames at 32x32."""


def test_the_loop_trains_on_two_processes_and_plots_the_validation_loss(tmp_path: Path):
    """`mora train --iterations 1 --num-processes 2 --report-to tensorboard`: of the iteration's 2 accepted samples
    one is held out for validation, the other trains on two CPU processes (DDP, global batch 2); the untrained and
    the trained agents each get a validation loss at fixed noise, in metrics.json, .md, .png and TensorBoard."""
    (tmp_path / "seeds.txt").write_text(SEEDS)
    out = tmp_path / "loop"
    result = CliRunner().invoke(app, ["train", "--iterations", "1", "--prompts", str(tmp_path / "seeds.txt"), "--out",
                                      str(out), "--count", "2", "--num-processes", "2", "--report-to", "tensorboard",
                                      "--eval-metrics", "imaging_quality", *FAST], input="1\n1\n",
                                env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output
    validation, trained_on = read_dataset(out / "validation"), read_dataset(out / "iter-1" / "train")
    accepted = read_dataset(out / "iter-1" / "dataset")
    assert (len(validation), len(trained_on), len(accepted)) == (1, 1, 2)
    assert {s.prompt for s in validation} | {s.prompt for s in trained_on} == {s.prompt for s in accepted}
    card = json.loads((out / "iter-1" / "adapters" / "card.json").read_text())
    assert card["environment"]["processes"] == 2 and card["hyperparameters"]["batch_size"] == 2
    assert card["dataset"]["path"] == str(out / "iter-1" / "train")
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [row["validation_loss"]["total"] for row in metrics["iterations"]]
    assert [row["iteration"] for row in metrics["iterations"]] == [0, 1] and all(np.isfinite(losses))
    assert losses[0] != losses[1]  # other weights, the same noise and samples
    assert metrics["validation"] == ["total"] and "validation total" in (out / "metrics.md").read_text()
    assert Image.open(out / "metrics.png").size[0] > 1000  # two panels: held-out metrics, validation loss
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "mora-loop")).Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("validation/total")] == [
        (n, round(loss, 6)) for n, loss in enumerate(losses)]
    assert [e.step for e in events.Scalars("heldout/imaging_quality")] == [0, 1]
    assert next((out / "iter-1" / "adapters" / "logs" / "mora-train").glob("events.out.tfevents.*"))


def test_the_ablations_train_from_the_same_data_and_table_mean_and_std_beside_the_paper(tmp_path: Path):
    """`mora train ablations PROMPTS --out DIR --seeds 2`: one round of data; full, w/o self-modulation and
    RI-modulated train on all its accepted samples, w/o human on those the judges agreed on; all five (untrained
    too) run the held-out prompt at the same two seeds; the table gives mean and std over the seeds beside Table 5's
    numbers. The same command again redoes nothing."""
    (tmp_path / "seeds.txt").write_text(SEEDS)
    out = tmp_path / "ablations"
    command = ["train", "ablations", str(tmp_path / "seeds.txt"), "--out", str(out), "--count", "1", "--seeds", "2",
               "--eval-metrics", "imaging_quality,subject_consistency", *FAST]
    result = CliRunner().invoke(app, command, input="1\n")
    assert result.exit_code == 0, result.output
    table = json.loads((out / "table.json").read_text())
    rows = {row["name"]: row for row in table["configurations"]}
    assert list(rows) == ["full", "untrained", "no_human", "no_modulation", "random_modulation"]
    cards = {name: json.loads((out / name / "card.json").read_text()) for name in rows if (out / name).is_dir()}
    assert {cards[n]["dataset"]["sha256"] for n in ("full", "no_modulation", "random_modulation")} == {
        cards["full"]["dataset"]["sha256"]}
    assert cards["no_modulation"]["modulation"] == {} and cards["full"]["modulation"]["image_to_video"]["init"] == "text"
    assert cards["random_modulation"]["modulation"]["image_to_video"]["init"] == "random"
    by_judges = sum(r.decision.by == "judges" for r in read_log(out / "data").sets.values() if r.decision)
    assert rows["no_human"]["samples"] == by_judges and (rows["no_human"]["adapters"] is None) == (by_judges == 0)
    assert rows["untrained"]["adapters"] is None and rows["full"]["samples"] == 1
    for row in rows.values():
        for name, metric in row["metrics"].items():
            assert len(metric["seeds"]) == 2
            assert metric["mean"] == pytest.approx(np.mean(metric["seeds"]))
            assert metric["std"] == pytest.approx(np.std(metric["seeds"], ddof=1))
        assert set(row["paper"]) == {"video_quality", "subject_consistency", "background_consistency",
                                     "motion_smoothness", "aesthetic_quality", "dynamic_degree", "imaging_quality",
                                     "temporal_style"}
    assert rows["full"]["paper"]["video_quality"] == 0.800 and rows["untrained"]["paper"]["video_quality"] == 0.767
    seeds = [json.loads(line)["seed"] for name in ("full", "untrained") for k in (0, 1)
             for line in (out / "eval" / name / f"seed-{k}" / "summary.jsonl").read_text().splitlines()]
    assert seeds[:2] == seeds[2:] and seeds[0] != seeds[1]  # the same seeds for every configuration
    markdown = (out / "table.md").read_text()
    assert "## Ours" in markdown and "## The paper" in markdown and "| Mora w/o Self-modulated |" in markdown
    assert Image.open(out / "table.png").format == "PNG"
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in ("card.json", "scores.json", "run.json")}
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
