"""Folders of the training data stage for the page's tests, made in seconds: a data folder whose selection left a
set undecided (the judges disagree), and a loop folder with its metrics and an iteration's real tiny adapters."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_image, make_video

from mora_agents.data.select import Decision, Draw, SelectionLog, SetRecord
from mora_agents.data.sets import Candidate, CandidateSet, Made, write_sets
from mora_agents.judges import Vote
from mora_agents.train import TrainConfig, train, write_sample

PROMPTS = {"p001": "a paper boat drifting down a rainy street", "p002": "a lighthouse in a storm at night"}


def make_data_folder(folder: Path) -> Path:
    """Sets p001 (3 candidates; an MLLM judge shown them as 3, 1, 2 ranks candidate 3 first, the metric judge
    candidate 1: undecided) and p002 (2 candidates, both judges rank candidate 2 first: accepted)."""
    sets = []
    for s, (set_id, prompt) in enumerate(PROMPTS.items()):
        candidates = []
        for n in range(1, 4 - s):
            run = Path("runs") / f"{set_id}-{n}"
            (folder / run / "artifacts").mkdir(parents=True)
            video = make_video(folder / run / "result.mp4", frames=10, size=(64, 64), seed=10 * s + n)
            make_image(folder / run / "artifacts" / "image.png", (64, 64), (40 * n, 90, 160))
            candidates.append(Candidate(number=n, seed=100 + n, run_dir=str(run), status="finished",
                                        video=str(video.relative_to(folder)),
                                        intermediates=Made(clip=str(video.relative_to(folder)), enhanced_prompt=prompt,
                                                           first_frame=str(run / "artifacts" / "image.png"), fps=7)))
        sets.append(CandidateSet(id=set_id, prompt=prompt, task="text_to_video", candidates=candidates))
    write_sets(folder, sets)
    (folder / "make.json").write_text(json.dumps({"seed": 3, "iteration": 1}), encoding="utf-8")
    log = SelectionLog(judges=[{"label": "qwen", "kind": "mllm"}, {"label": "metric:clip_score", "kind": "metric"}])
    log.sets["p001"] = SetRecord(
        id="p001", candidates=[1, 2, 3], frames=4,
        draw=Draw(seed=1, criteria={"qwen": 2, "metric:clip_score": 1}, orders={"qwen": [3, 1, 2]}),
        votes=[Vote(judge="qwen", kind="mllm", criterion=2, ranking=[3, 1, 2], shown=[3, 1, 2],
                    reason="Candidate 1 keeps the boat in frame; candidate 3 flickers."),
               Vote(judge="metric:clip_score", kind="metric", criterion=1, ranking=[1, 3, 2],
                    scores={"1": 0.31, "2": 0.22, "3": 0.27})])
    log.sets["p002"] = SetRecord(
        id="p002", candidates=[1, 2], frames=4, draw=Draw(seed=2, criteria={"qwen": 5}), status="accepted",
        votes=[Vote(judge="qwen", kind="mllm", criterion=5, ranking=[2, 1]),
               Vote(judge="metric:clip_score", kind="metric", criterion=1, ranking=[2, 1])],
        decision=Decision(status="accepted", by="judges", candidate=2, why="all 2 voting judges ranked candidate 2 first"))
    (folder / "selection.json").write_text(log.model_dump_json(indent=1), encoding="utf-8")
    return folder


def make_loop_folder(folder: Path, data: Path) -> Path:
    """A loop folder (`mora train --iterations`) of one iteration: `data` copied in as iter-1, its adapters trained
    for real (2 tiny steps on two samples), and metrics.json with iterations 0 and 1."""
    dataset = folder / "iter-1" / "dataset"
    for n in (1, 2):
        run = data / "runs" / f"p001-{n}"
        write_sample(dataset, clip=run / "result.mp4", task="text_to_video", prompt=PROMPTS["p001"], seed=n,
                     enhanced_prompt=PROMPTS["p001"], first_frame=run / "artifacts" / "image.png")
    train(dataset, folder / "iter-1" / "adapters", TrainConfig(preset="tiny", device="cpu", frames=4, batch_size=2,
                                                               resolution=(32, 32), steps=2, checkpoint_every=2))
    (folder / "loop.json").write_text(json.dumps({"preset": "tiny"}), encoding="utf-8")
    rows = [{"iteration": n, "adapters": None if n == 0 else str(folder / "iter-1" / "adapters"),
             "accepted": None if n == 0 else 2,
             "metrics": {"subject_consistency": {"mean": 0.81 + 0.05 * n, "backend": "fallback:frames", "videos": 2},
                         "motion_smoothness": {"mean": 0.90 + 0.02 * n, "backend": "reference", "videos": 2}},
             "validation_loss": {"image_to_video": 0.52 - 0.07 * n, "total": 0.61 - 0.09 * n}} for n in (0, 1)]
    (folder / "metrics.json").write_text(json.dumps({"metrics": ["motion_smoothness", "subject_consistency"],
                                                     "validation": ["image_to_video", "total"], "iterations": rows}),
                                         encoding="utf-8")
    return folder
