"""Long videos without drift: a 60 s chain of a stand-in image-to-video tool that darkens and blurs every clip a
little (synthetic drift), without and with the chain's options, through a real run; the drift measure in run.json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter

from mora_agents.media import Artifact, load_image, probe, read_video, write_video
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.settings import output_path
from mora_agents.tools.registry import REGISTRY, register

CLIP_FRAMES, CLIP_FPS = 33, 8.0
"""A stand-in clip: 4 s (32 frame intervals at 8 fps, 4.125 s of 33 frames), so a 60 s video is 15 of them."""
SEGMENTS = round(60 / (CLIP_FRAMES / CLIP_FPS))
DARKEN, BLUR = 0.08, 0.6
"""Over one clip, the picture loses 8 % of its brightness and is blurred by a Gaussian of sigma 0.6 px."""
MAX_COLOR_DRIFT = 5.0
"""Delta E of the last segment's start from the first keyframe: about twice a just-noticeable difference."""
MIN_SHARPNESS = 0.8
"""The last segment's start keeps at least this share of the first keyframe's sharpness."""


def drifting_clip(
    image: Annotated[str, "path of the first frame"],
    seed: Annotated[int | None, "random seed"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """A stand-in for an image-to-video model: 4 s that start on the image and darken and blur a little."""
    start = np.asarray(load_image(image)).astype(np.float64)
    frames = []
    for t in range(CLIP_FRAMES):
        share = t / (CLIP_FRAMES - 1)
        frame = gaussian_filter(start, sigma=(BLUR * share, BLUR * share, 0)) * (1 - DARKEN * share)
        frames.append(np.clip(frame, 0, 255).round().astype(np.uint8))
    path = output_path(output, "drifting_clip", ".mp4")
    write_video(np.stack(frames), CLIP_FPS, path)
    return probe(path)


@pytest.fixture
def stand_in():
    register(produces="video", media={"image": "image"})(drifting_clip)
    yield
    del REGISTRY["drifting_clip"]


def keyframe(path: Path) -> Path:
    """A detailed, colourful first keyframe (smooth blobs of colour with fine texture), 96x64."""
    rng = np.random.default_rng(0)
    coarse = gaussian_filter(rng.uniform(0, 255, (64, 96, 3)), sigma=(6, 6, 0))
    fine = rng.normal(0, 25, (64, 96, 1))
    Image.fromarray(np.clip((coarse - coarse.mean()) * 3 + 128 + fine, 0, 255).astype(np.uint8)).save(path)
    return path


def write_sop(folder: Path, **chain_options) -> Path:
    folder.mkdir()
    sop = {
        "name": "long_clip",
        "description": "A long video chained from a stand-in image-to-video tool.",
        "inputs": {"image": {"type": "image", "required": True},
                   "duration": {"type": "number", "default": 60, "min": 1, "max": 120}},
        "steps": [
            {"id": "segments", "agent": "image_to_video_agent", "tool": "drifting_clip",
             "args": {"image": "{{ inputs.image }}"},
             "repeat": {"until_seconds": "{{ inputs.duration }}",
                        "chain": {"tool": "last_frame", "into": "image", **chain_options}}},
            {"id": "join", "agent": "media_agent", "tool": "concat_videos",
             "args": {"videos": "{{ steps.segments.outputs }}", "overlap": 1}},
        ],
        "outputs": {"result": "{{ steps.join.output }}"},
    }
    (folder / "long_clip.yaml").write_text(yaml.safe_dump(sop, sort_keys=False))
    return folder


def run_chain(tmp_path: Path, name: str, duration: float = 60, **chain_options) -> Path:
    sops = write_sop(tmp_path / f"sops-{name}", **chain_options)
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / f"runs-{name}", seed=1, sops_dir=sops)
    outcome = asyncio.run(run_request("a long clip", images=[keyframe(tmp_path / "key.png")], task="long_clip",
                                      duration=duration, options=options))
    return outcome.run_dir


def final_segments(run_dir: Path) -> list[np.ndarray]:
    """The segments the result was joined from (after the chain's options), read back from the join's call."""
    records = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    join = next(r["message"]["content"] for r in records
                if r["type"].endswith("[StepResult]") and r["message"]["content"]["step"] == "join")
    return [read_video(path)[0] for path in join["arguments"]["videos"]]


def test_a_60s_chain_drifts_without_the_options_and_not_with_them(tmp_path: Path, stand_in) -> None:
    plain = json.loads((run_chain(tmp_path, "plain") / "run.json").read_text())["drift"]["segments"]
    fixed_dir = run_chain(tmp_path, "fixed", color_match=True, sharpen=True)
    fixed = json.loads((fixed_dir / "run.json").read_text())["drift"]["segments"]
    assert len(plain) == len(fixed) == SEGMENTS == 15 and fixed[-1]["start"] == 56.0
    # Without the options the drift piles up past both thresholds, and grows from segment to segment.
    assert plain[-1]["to_first"]["color"] > 4 * MAX_COLOR_DRIFT
    assert plain[-1]["to_first"]["sharpness"] < MIN_SHARPNESS / 3
    colour = [row["to_first"]["color"] for row in plain]
    assert colour == sorted(colour)
    # With them, every segment starts within both.
    for row in fixed:
        assert row["to_first"]["color"] < MAX_COLOR_DRIFT and row["to_first"]["sharpness"] > MIN_SHARPNESS, row
    # Seams stay continuous: each segment ends on the frame the next one starts from (up to H.264's rounding),
    # which the measure against the previous segment's last frame says too.
    segments = final_segments(fixed_dir)
    for before, after in zip(segments, segments[1:]):
        assert np.abs(before[-1].astype(int) - after[0].astype(int)).mean() < 3.0
    assert all(row["to_previous"]["color"] < 1.0 and abs(row["to_previous"]["sharpness"] - 1) < 0.1 for row in fixed[1:])


def test_mora_eval_shows_a_runs_drift_over_time(tmp_path: Path) -> None:
    from conftest import make_video
    from typer.testing import CliRunner

    from mora_agents.cli import app

    run = tmp_path / "run"
    run.mkdir()
    make_video(run / "result.mp4", frames=12)
    (run / "plan.json").write_text(json.dumps({"task": "text_to_video", "inputs": {"prompt": "a fox"}}))
    rows = [{"segment": k + 1, "start": 4.0 * k, "to_first": {"color": 3.0 * k, "sharpness": 1 - 0.2 * k},
             "to_previous": None if k == 0 else {"color": 0.4, "sharpness": 1.0}} for k in range(4)]
    (run / "run.json").write_text(json.dumps({"status": "finished", "drift": {"segments": rows}}))
    out, chart = tmp_path / "eval.json", tmp_path / "chart.png"
    result = CliRunner().invoke(app, ["eval", str(run), "--metrics", "subject_consistency", "--json-out", str(out),
                                      "--chart", str(chart)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "drift of segments" in result.output and "colour shift" in result.output
    curves = result.output.replace(" ", "")
    assert "4segments,thelastfrom12s:colourshift▁▃▆█(0.0->9.0),sharpness█▇▅▄(1.00->0.40)" in curves  # drifting: up, and down
    assert json.loads(out.read_text())["videos"][0]["drift"] == {"segments": rows}
    assert (tmp_path / "chart-drift.png").stat().st_size > 0


def test_match_frame_undoes_a_darkening_and_ease_into_ends_on_the_corrected_frame(tmp_path: Path) -> None:
    from mora_agents.eval.drift import frame_drift
    from mora_agents.tools.chain import ease_into, match_frame

    reference = keyframe(tmp_path / "first.png")
    picture = np.asarray(Image.open(reference)).astype(np.float64)
    dark = gaussian_filter(picture * 0.7, sigma=(BLUR, BLUR, 0))  # 30 % darker and one clip's blur
    Image.fromarray(dark.round().astype(np.uint8)).save(tmp_path / "dark.png")
    before = frame_drift(dark.round().astype(np.uint8), picture.astype(np.uint8))
    fixed = match_frame(str(tmp_path / "dark.png"), str(reference), sharpen=True, output=str(tmp_path / "fixed.png"))
    after = frame_drift(np.asarray(Image.open(fixed.path)), picture.astype(np.uint8))
    assert before["color"] > 10 and after["color"] < 1.5, (before, after)
    assert before["sharpness"] < MIN_SHARPNESS < after["sharpness"] < 1.2, (before, after)

    clip = np.stack([dark.round().astype(np.uint8)] * 9)
    write_video(clip, 8.0, tmp_path / "segment.mp4")
    eased, _ = read_video(ease_into(str(tmp_path / "segment.mp4"), fixed.path, output=str(tmp_path / "eased.mp4")).path)
    original, _ = read_video(tmp_path / "segment.mp4")
    target = np.asarray(Image.open(fixed.path)).astype(int)
    assert np.abs(eased[0].astype(int) - original[0].astype(int)).mean() < 2.0  # starts as it did
    assert np.abs(eased[-1].astype(int) - target).mean() < 3.0  # ends on the corrected frame (after H.264)
    steps = [np.abs(eased[k].astype(int) - target).mean() for k in range(len(eased))]
    assert all(a >= b - 0.5 for a, b in zip(steps, steps[1:]))  # and gets there step by step
