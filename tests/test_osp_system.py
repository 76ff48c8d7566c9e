"""The paper's second system as one choice (`--system osp`: SD3, SD3 image-to-image, Open-Sora-Plan): every task end
to end on the tiny preset, the system applied as `--set TOOL.backend` overrides that SOPs, validation and the model
check see, the same call with the same seed giving the same frames, missing weights failing fast, batches keyed by
the system, and `mora eval` showing the paper's rows of the system."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, make_video
from PIL import Image
from typer.testing import CliRunner

from mora_agents.batch import BatchRequest, check_requests
from mora_agents.cli import app
from mora_agents.errors import InputError, ModelNotAvailable
from mora_agents.eval.chart import paper_rows
from mora_agents.eval.metrics.summary import QUALITY_DIMENSIONS
from mora_agents.media import read_video
from mora_agents.pipelines.sources import check_available
from mora_agents.runs.runner import RunOptions, check_options, run_request
from mora_agents.settings import use_settings
from mora_agents.sop.calls import required_models
from mora_agents.sop.loader import get_sop
from mora_agents.tools import connect_images, edit_image, image_to_video, text_to_image
from mora_agents.tools.backends import SYSTEMS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(tmp_path: Path, text: str, **request) -> dict:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=3, system="osp")
    outcome = asyncio.run(run_request(text, options=options, **request))
    return json.loads((outcome.run_dir / "run.json").read_text())


@pytest.mark.parametrize(("task", "request_", "tools"), [
    ("text_to_video", {"duration": 1}, {"text_to_image", "image_to_video"}),
    ("image_to_video", {"images": ["image"], "duration": 1}, {"edit_image", "image_to_video"}),
    ("extend_video", {"videos": ["a"], "duration": 1}, {"image_to_video"}),
    ("edit_video", {"videos": ["a"]}, {"edit_image", "image_to_video"}),
    ("connect_videos", {"videos": ["a", "b"]}, {"connect_videos"}),
    ("digital_world", {"duration": 1}, {"text_to_image", "image_to_video"}),
    ("text_to_video_keyframes", {"duration": 1}, {"text_to_image", "connect_images"}),  # its SOP names wan2.1-flf2v
])
def test_every_task_runs_on_the_osp_system(tmp_path: Path, task: str, request_: dict, tools: set[str]) -> None:
    files = {"image": make_image(tmp_path / "in.png"), "a": make_video(tmp_path / "a.mp4", frames=7, seed=1),
             "b": make_video(tmp_path / "b.mp4", frames=7, seed=2)}  # 1 s: one segment of the tiny preset
    request_ = {key: [files[name] for name in value] if isinstance(value, list) else value
                for key, value in request_.items()}
    info = _run(tmp_path, "a red fox running through snow", task=task, **request_)
    assert info["status"] == "finished" and info["system"] == "osp" and info["noise"]
    assert info["backends"] == {tool: [SYSTEMS["osp"][tool]] for tool in tools}


def test_the_system_is_set_overrides_that_a_persons_set_wins_over() -> None:
    options = RunOptions(system="osp", overrides={"image_to_video": {"backend": "svd-xt", "steps": 9}})
    assert options.tool_overrides == {"text_to_image": {"backend": "sd3"}, "edit_image": {"backend": "sd3"},
                                      "image_to_video": {"backend": "svd-xt", "steps": 9},
                                      "connect_videos": {"backend": "open-sora-plan"},
                                      "connect_images": {"backend": "open-sora-plan"}}
    assert options.overrides == {"image_to_video": {"backend": "svd-xt", "steps": 9}}  # the person's, unchanged
    assert RunOptions().tool_overrides == {}  # no system: the SOPs' own backends
    # SOPs see it: the Wan SOP runs the system's models instead of FLUX and Wan, under both systems
    assert required_models(get_sop("text_to_video_wan"), RunOptions(system="osp").tool_overrides) == [
        "sd3", "open_sora_plan", "mt5_xxl"]
    assert required_models(get_sop("text_to_video_wan"), RunOptions(system="svd").tool_overrides) == [
        "sdxl_base", "sdxl_refiner", "svd"]


@pytest.mark.parametrize(("options", "message"), [
    (RunOptions(system="sora"), "--system sora: unknown (choose from svd, osp)"),
    (RunOptions(system="osp", overrides={"image_to_video": {"frames": 24}}),
     "--set image_to_video: frames 24: backend open-sora-plan makes 4k+1 frames (e.g. 21 or 25)"),
    (RunOptions(system="osp", overrides={"image_to_video": {"motion_bucket_id": 100}}),
     "motion_bucket_id: backend open-sora-plan does not take it (only svd-xt)"),
])
def test_system_settings_are_checked_before_anything_runs(tmp_path: Path, options: RunOptions, message: str) -> None:
    with pytest.raises(InputError) as error:
        check_options(RunOptions(**{**vars(options), "out": tmp_path}))
    assert message in str(error.value)


def test_same_call_same_seed_same_frames(tiny) -> None:
    """Twice in one process, and after other calls: image, edit, clip and transition."""
    image = text_to_image("a red fox in the snow", backend="sd3", seed=1)
    other = text_to_image("a blue bird", backend="sd3", seed=2)
    again = text_to_image("a red fox in the snow", backend="sd3", seed=1)
    assert np.array_equal(_frames(image.path), _frames(again.path))
    edited = edit_image(image.path, "make it winter", backend="sd3", seed=4)
    clip = image_to_video(image.path, prompt="the fox runs", backend="open-sora-plan", seed=5)
    transition = connect_images(image.path, other.path, prompt="it turns", backend="open-sora-plan", seed=6)
    assert np.array_equal(_frames(edited.path), _frames(edit_image(image.path, "make it winter", backend="sd3",
                                                                   seed=4).path))
    assert np.array_equal(_frames(clip.path), _frames(image_to_video(image.path, prompt="the fox runs",
                                                                     backend="open-sora-plan", seed=5).path))
    again = connect_images(image.path, other.path, prompt="it turns", backend="open-sora-plan", seed=6)
    assert np.array_equal(_frames(transition.path), _frames(again.path))
    assert not np.array_equal(_frames(transition.path)[1:-1], _frames(clip.path)[1:-1])


def _frames(path: str) -> np.ndarray:
    return np.asarray(read_video(path)[0]) if path.endswith(".mp4") else np.asarray(Image.open(path))


def test_missing_weights_of_the_osp_system_fail_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailable, match=r"^2 models not on this machine .*\n"
                       r"  hf download LanguageBind/Open-Sora-Plan-v1.2.0 --include '93x480p_i2v/\*' "
                       r"--include 'vae/\*'   "
                       r"# model 'open_sora_plan', MORA_MODEL_OPEN_SORA_PLAN\n"
                       r"  hf download google/mt5-xxl --include '\*.json' --include spiece.model "
                       r"--include pytorch_model.bin   "
                       r"# model 'mt5_xxl', MORA_MODEL_MT5_XXL$"):
        check_available(["open_sora_plan", "mt5_xxl"])
    monkeypatch.setenv("MORA_MODEL_OPEN_SORA_PLAN", str(tmp_path))
    with pytest.raises(ModelNotAvailable, match=f"  {tmp_path} has no 93x480p_i2v/config.json   # model 'open_sora_plan'"):
        check_available(["open_sora_plan"])
    image = make_image(tmp_path / "in.png")
    result = CliRunner().invoke(app, ["run", "the cat dances", "--image", str(image), "--task", "image_to_video",
                                      "--system", "osp", "--out", str(tmp_path / "runs")], terminal_width=300)
    assert result.exit_code == 2, result.output
    missing = [line.split("#")[0].strip() for line in result.output.splitlines()[1:]]
    assert missing == ["hf download stabilityai/stable-diffusion-3-medium-diffusers",  # the editor, then the video
                       f"{tmp_path} has no 93x480p_i2v/config.json",  # MORA_MODEL_OPEN_SORA_PLAN, set above
                       "hf download google/mt5-xxl --include '*.json' --include spiece.model --include pytorch_model.bin"
                       ], result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("command", [["run"], ["chat"], ["serve"], ["batch"], ["data", "make"]])
def test_every_generating_command_takes_the_system(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--system" in result.output and "osp" in result.output


def test_a_batch_is_keyed_by_its_system(tmp_path: Path) -> None:
    requests = [BatchRequest("a red fox", task="text_to_video", duration=1, seed=1)]
    with use_settings(preset="tiny", device="cpu"):
        keys = {system: check_requests(requests, RunOptions(preset="tiny", device="cpu", out=tmp_path,
                                                            system=system))[0].key for system in (None, "svd", "osp")}
    assert None not in keys.values() and len(set(keys.values())) == 3


def test_paper_rows_of_each_system(tmp_path: Path) -> None:
    osp = paper_rows("t2v", "osp")
    assert list(osp) == ["Mora OSP (paper T1)", "Mora OSP untrained (paper T1)", "Mora OSP (paper T4)",
                         "OSP w/o human (paper T5)", "OSP w/o self-mod. (paper T5)", "OSP random mod. (paper T5)",
                         "Sora (paper)"]
    for row in osp.values():  # as printed: each Video Quality is the mean of its six dimensions, to rounding
        assert row["video_quality"] == pytest.approx(sum(row[d] for d in QUALITY_DIMENSIONS) / 6, abs=1e-3)
    assert paper_rows("i2v", "osp")["Mora OSP (paper T2)"] == {"video_ti": 0.90, "motion_smoothness": 0.98,
                                                               "dynamic_degree": 1.00, "imaging_quality": 0.67}
    assert list(paper_rows("extend_video", "svd")) == ["Mora SVD untrained (paper T2)", "Mora (paper)", "Sora (paper)"]
    assert paper_rows("connect_videos", "osp") == paper_rows("connect_videos")  # no rows of its own: the task's
    run = tmp_path / "run"
    run.mkdir()
    (run / "plan.json").write_text(json.dumps({"task": "text_to_video", "inputs": {"prompt": "a fox"}}))
    (run / "run.json").write_text(json.dumps({"system": "osp"}))
    make_video(run / "result.mp4", frames=16)
    result = CliRunner().invoke(app, ["eval", str(run), "--metrics", "dynamic_degree", "--weights",
                                      str(tmp_path / "none")], terminal_width=200)
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("this run"):]  # the dynamic degree next to each row's
    assert "Mora OSP untrained (paper T1)" in table and "0.430" in table and "Sora (paper)" in table
