"""Candidate sets: the runs made for one written prompt, and what each agent needs of them for training.

`DATA/sets.json` lists every set (`p001`, `p002`, ...) with its candidates: run directory, seed, status, the final
video, and the intermediates read from the run's transcript (its `StepResult`s): the enhanced prompt and first
frame (text-to-image agent), the source, instruction and edited frame (image-to-image agent, where the SOP has an
edit step), the start frame and the first clip (image-to-video agent). Paths are relative to DATA.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, TypeAdapter

from mora_agents.errors import InputError, read_problem
from mora_agents.media import atomic_path, read_video
from mora_agents.runs.transcript import read_transcript
from mora_agents.sop.messages import StepResult
from mora_agents.tools.defaults import DEFAULTS
from mora_agents.train.dataset import Intermediates

SETS = "sets.json"


class Made(Intermediates):
    """What the trainable agents made in a candidate's run, paths relative to the data folder."""

    clip: str
    """The image-to-video agent's first clip (its first segment)."""
    made_by: list[dict[str, str]] = []
    """What made each of them: `{"field": "edited_frame", "step": "edit", "agent": "image_to_image_agent", "tool":
    "edit_image"}` (the clip's `field` is `clip`); a sample keeps it, so that training sees every agent's step."""


class Candidate(BaseModel):
    number: int
    """1, 2, ...: its label within the set (what judges and people answer with)."""
    seed: int
    run_dir: str
    status: str
    error: str | None = None
    video: str | None = None
    """The run's result.mp4, once finished: what judges and people see."""
    intermediates: Made | None = None

    @property
    def finished(self) -> bool:
        return self.status == "finished" and self.intermediates is not None


class CandidateSet(BaseModel):
    id: str
    prompt: str
    """The written prompt every candidate's run got."""
    task: str
    candidates: list[Candidate]

    def finished(self) -> list[Candidate]:
        return [c for c in self.candidates if c.finished]

    def enhanced_prompts(self) -> dict[int, str]:
        """Candidate number -> the prompt its text-to-image agent drew from (the enhanced prompt), if any."""
        return {c.number: c.intermediates.enhanced_prompt for c in self.finished()
                if c.intermediates and c.intermediates.enhanced_prompt}


def _relative(path: str, run_dir: Path) -> Path:
    """A run's file as recorded in a step (absolute, or relative to the run) as a path inside `run_dir`: its
    folder and name (`artifacts/image.png`, `inputs/1-cat.png`), so a moved data folder still resolves."""
    return run_dir / Path(*Path(path).parts[-2:])


def intermediates(run_dir: Path, data_dir: Path, preset: str) -> Made:
    """A finished run's intermediates from its transcript's step results (the last take of each step).

    Raises InputError when the run has no image-to-video step (nothing to train the agents on).
    """
    results: dict[str, StepResult] = {}
    for record in read_transcript(run_dir / "transcript.jsonl"):
        if record.type.endswith("[StepResult]"):
            result = StepResult.model_validate(record.message["content"])
            results[result.key] = result

    def made(tool: str) -> StepResult | None:
        return next((r for r in results.values() if r.tool == tool and r.iteration == 0), None)

    def output(result: StepResult) -> Path:
        assert not isinstance(result.output, str)
        return run_dir / result.output.path

    video, image, edit = made("image_to_video"), made("text_to_image"), made("edit_image")
    if video is None:
        raise InputError(f"{run_dir}: no image_to_video step, so no clip to train on")
    start = _relative(video.arguments["image"], run_dir)
    found: dict[str, object] = {}
    if image is not None:
        found.update(first_frame=output(image), enhanced_prompt=image.arguments["prompt"])
    if edit is not None:
        found.update(source_frame=_relative(edit.arguments["image"], run_dir), edited_frame=output(edit),
                     instruction=edit.arguments["instruction"])
    if start not in (found.get("edited_frame"), found.get("first_frame")):
        found["start_frame"] = start
    defaults = DEFAULTS[preset]["image_to_video"]
    paths = {name: str(Path(value).relative_to(data_dir)) if isinstance(value, Path) else value
             for name, value in found.items()}
    assert not isinstance(video.output, str)
    steps = {"first_frame": image, "edited_frame": edit, "clip": video}
    made_by = [{"field": name, "step": result.key, "agent": result.agent, "tool": str(result.tool)}
               for name, result in steps.items() if result is not None]
    return Made(clip=str(output(video).relative_to(data_dir)), fps=video.output.fps, made_by=made_by, **paths,
                video_prompt=video.arguments.get("prompt") or None,
                **{name: defaults[name] if video.arguments.get(name) is None else video.arguments[name]
                   for name in ("motion_bucket_id", "noise_aug_strength")})


def write_sets(data_dir: Path, sets: list[CandidateSet]) -> None:
    with atomic_path(data_dir / SETS) as tmp:
        tmp.write_text(json.dumps([s.model_dump(mode="json") for s in sets], indent=1) + "\n", encoding="utf-8")


def read_sets(data_dir: Path) -> list[CandidateSet]:
    """The candidate sets of a data folder; InputError when it holds none (no `mora data make` finished there)."""
    path = Path(data_dir) / SETS
    if not path.is_file():
        raise InputError(f"{data_dir}: no {SETS} (make the candidates first: `mora data make --out {data_dir}`)")
    try:
        return TypeAdapter(list[CandidateSet]).validate_python(json.loads(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: damaged ({read_problem(e)}); the same `mora data make` command writes it "
                         "again") from None


def sample_frames(video: Path, count: int) -> tuple[list[np.ndarray], list[float]]:
    """`count` frames spread evenly over a video (the first and the last included) and their times in seconds."""
    frames, fps = read_video(video)
    indices = sorted({round(i) for i in np.linspace(0, len(frames) - 1, count)})
    return [frames[i] for i in indices], [i / fps for i in indices]
