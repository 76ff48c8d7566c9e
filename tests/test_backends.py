"""Backends as data: every backend of every model tool runs end to end on its tiny pipeline; a backend's parameters
and rules are checked before anything runs (`--set`, SOP validation, the agents' calls, the plan); the shipped SOPs
with newer backends run; missing weights fail fast; adapters stay with the paper's models."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from conftest import make_video
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.errors import InputError, ModelNotAvailable
from mora_agents.pipelines.adapters import CARD
from mora_agents.pipelines.sources import check_available
from mora_agents.batch.engine import check_requests
from mora_agents.batch.requests import parse_line
from mora_agents.runs.runner import RunOptions, check_overrides, prepare_run, run_request
from mora_agents.serve.app import RunCreate
from mora_agents.settings import use_settings
from mora_agents.sop.calls import check_calls
from mora_agents.sop.loader import BUILTIN_DIR, SOPError, get_sop, load_sop
from mora_agents.sop.roles import ROLES
from mora_agents.tools import (
    REGISTRY,
    connect_images,
    connect_videos,
    edit_image,
    image_to_video,
    text_to_image,
)
from mora_agents.tools.backends import BACKENDS
from mora_agents.tools.defaults import backend_defaults

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NEWER = ["flux-schnell", "flux-kontext", "wan2.2-ti2v-5b", "ltx-video", "wan2.1-flf2v"]


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> str:
    with use_settings(preset="tiny", device="cpu", out_dir=tmp_path_factory.mktemp("start")):
        return text_to_image("a red fox in the snow", seed=1).path


@pytest.mark.parametrize("profile", ["resident", "24gb"])
@pytest.mark.parametrize("backend", list(BACKENDS["text_to_image"]))
def test_text_to_image_backends_draw_and_redraw(tiny, start: str, backend: str, profile: str) -> None:
    with use_settings(memory_profile=profile):
        drawn = text_to_image("a red fox in the snow", backend=backend, seed=2)
        redrawn = text_to_image("a red fox in the snow", image=start, strength=0.25, backend=backend, seed=3)
    assert (drawn.width, drawn.height) == (64, 64) and drawn.noise
    assert (redrawn.width, redrawn.height) == (64, 64)  # img2img keeps the image's size


@pytest.mark.parametrize("backend", list(BACKENDS["edit_image"]))
def test_edit_image_backends(tiny, start: str, backend: str) -> None:
    with use_settings(memory_profile="24gb" if backend in NEWER else "resident"):
        edited = edit_image(start, "make it winter", backend=backend, seed=4)
    assert (edited.width, edited.height) == (64, 64)


@pytest.mark.parametrize("backend", ["wan2.2-ti2v-5b", "ltx-video", "open-sora-plan"])
def test_image_to_video_backends_follow_their_frame_rules(tiny, start: str, backend: str) -> None:
    defaults = backend_defaults("tiny", "image_to_video", backend)
    with use_settings(memory_profile="24gb"):
        clip = image_to_video(start, prompt="the fox runs", backend=backend, seed=5)
        longer = image_to_video(start, prompt="the fox runs", frames=17, fps=10, backend=backend, seed=5)
    assert (clip.frames, clip.fps, clip.width) == (defaults["frames"], defaults["fps"], 64)
    assert (longer.frames, longer.fps) == (17, 10)  # 4k+1 and 8k+1 alike


@pytest.mark.parametrize("backend", list(BACKENDS["connect_videos"]))
def test_first_last_frame_backends_connect_videos_and_images(tiny, tmp_path: Path, start: str, backend: str) -> None:
    a, b = make_video(tmp_path / "a.mp4", seed=1), make_video(tmp_path / "b.mp4", seed=2)
    frames = backend_defaults("tiny", "connect_videos", backend)["frames"]
    joined = connect_videos(str(a), str(b), backend=backend, seed=6)
    assert joined.frames == 14 + frames + 14 and (joined.width, joined.height) == (64, 48)
    clip = connect_images(start, start, prompt="the fox turns", backend=backend, seed=7)
    assert clip.frames == frames and clip.fps == backend_defaults("tiny", "connect_videos", backend)["fps"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"image_to_video": {"backend": "wan2.2-ti2v-5b", "frames": 24}},
     "--set image_to_video: frames 24: backend wan2.2-ti2v-5b makes 4k+1 frames (e.g. 21 or 25)"),
    ({"image_to_video": {"backend": "ltx-video", "frames": 24}}, "backend ltx-video makes 8k+1 frames (e.g. 17 or 25)"),
    ({"image_to_video": {"backend": "ltx-video", "width": 1000}}, "width 1000: backend ltx-video needs a multiple of 32"),
    ({"image_to_video": {"backend": "ltx-video", "motion_bucket_id": 127}},
     "motion_bucket_id: backend ltx-video does not take it (only svd-xt)"),
    ({"text_to_image": {"backend": "flux-schnell", "guidance_scale": 3}},
     "guidance_scale: backend flux-schnell does not take it (only sdxl, sd3, sd3.5-large, sd3.5-medium)"),
    ({"image_to_video": {"backend": "cogvideox"}},
     "Input should be 'svd-xt', 'wan2.2-ti2v-5b', 'ltx-video', 'open-sora-plan', 'skyreels-v2-df' or 'framepack'"),
    ({"image_to_video": {"backend": "open-sora-plan", "frames": 16}},
     "frames 16: backend open-sora-plan makes 4k+1 frames (e.g. 13 or 17)"),
    ({"connect_videos": {"backend": "open-sora-plan", "steps": 3}}, "steps 3: backend open-sora-plan takes at least 4"),
    ({"edit_image": {"strength": 0.5}}, "strength: backend instruct-pix2pix does not take it (only sd3)"),
])
def test_set_checks_a_backend_and_its_rules(overrides: dict, message: str) -> None:
    with pytest.raises(InputError, match=None) as error:
        check_overrides(overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_library_calls_follow_the_backend_rules_too(tmp_path: Path) -> None:
    """A tool called from Python checks what `--set` checks, before any model loads (nothing is rounded)."""
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (90, 60, 30)).save(start)
    with use_settings(preset="tiny", device="cpu"):
        with pytest.raises(ValueError, match=r"frames 24: backend ltx-video makes 8k\+1 frames \(e.g. 17 or 25\)"):
            image_to_video(str(start), backend="ltx-video", frames=24)
        with pytest.raises(ValueError, match="guidance_scale: backend flux-schnell does not take it"):
            text_to_image("a fox", backend="flux-schnell", guidance_scale=3.0)
        with pytest.raises(ValueError, match="backend sd5: unknown"):
            edit_image(str(start), "make it winter", backend="sd5")
    assert not list(tmp_path.glob("*.mp4"))


def test_the_agents_schema_and_their_calls_carry_the_backends() -> None:
    for tool, backends in BACKENDS.items():  # the parameter's type and the table name the same backends
        choice = REGISTRY[tool].args_model.model_json_schema()["properties"]["backend"]["anyOf"][0]
        assert choice.get("enum", [choice.get("const")]) == list(backends), tool  # one backend: a const
    spec = REGISTRY["image_to_video"]
    with pytest.raises(ValidationError, match="frames 24: backend wan2.2-ti2v-5b makes 4k\\+1 frames"):
        spec.validate_args({"image": "a.png", "backend": "wan2.2-ti2v-5b", "frames": 24})
    assert spec.validate_args({"image": "a.png", "frames": 24}) == {"image": "a.png", "frames": 24}  # svd-xt: any


def _sop(tmp_path: Path, **segment_args) -> Path:
    data = yaml.safe_load((BUILTIN_DIR / "text_to_video.yaml").read_text())
    data["steps"][2]["args"].update(segment_args)
    path = tmp_path / "t2v.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("args", "message"), [
    ({"backend": "sora"}, "field 'args.backend': Input should be 'svd-xt'"),
    ({"backend": "ltx-video", "frames": 24}, "field 'args': frames 24: backend ltx-video makes 8k+1 frames"),
    ({"backend": "wan2.2-ti2v-5b", "decode_chunk_size": 4}, "field 'args': decode_chunk_size: backend wan2.2-ti2v-5b"),
    ({"backend": "{{ inputs.prompt }}"}, "field 'args.backend': a backend is a name, not a template"),
])
def test_sop_validation_checks_backends(tmp_path: Path, args: dict, message: str) -> None:
    with pytest.raises(SOPError, match=None) as error:
        load_sop(_sop(tmp_path, **args))
    assert "step 'segments'" in str(error.value) and message in str(error.value)
    result = CliRunner().invoke(app, ["sops", "validate", str(_sop(tmp_path, **args))])
    assert result.exit_code == 2 and message in result.output


def test_a_run_whose_settings_do_not_fit_the_planned_backend_is_refused_before_any_work(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", overrides={"image_to_video": {"frames": 24}})
    with pytest.raises(InputError, match="task 'text_to_video_wan', step 'segments': frames 24: backend wan2.2-ti2v-5b"):
        asyncio.run(run_request("a fox", task="text_to_video_wan", options=options))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


WAN = {"image_to_video.backend": "wan2.2-ti2v-5b"}
COERCED = [  # a float that is whole, or a text: typed as the tool call types it, then the backend's rules
    ({"image_to_video.frames": 24.0}, "frames 24: backend wan2.2-ti2v-5b makes 4k+1 frames"),
    ({"image_to_video.frames": "24"}, "frames 24: backend wan2.2-ti2v-5b makes 4k+1 frames"),
    ({"image_to_video.width": 104.0}, "width 104: backend wan2.2-ti2v-5b needs a multiple of 32"),
    ({"image_to_video.height": "104"}, "height 104: backend wan2.2-ti2v-5b needs a multiple of 32"),
    ({"image_to_video.frames": 24.5}, "Input should be a valid integer, got a number with a fractional part"),
]


def _overrides(flat: dict) -> dict[str, dict]:
    overrides: dict[str, dict] = {}
    for key, value in {**WAN, **flat}.items():
        tool, _, param = key.partition(".")
        overrides.setdefault(tool, {})[param] = value
    return overrides


@pytest.mark.parametrize(("given", "message"), COERCED)
def test_numbers_are_typed_before_the_backend_rules_on_every_path_in(tmp_path: Path, given: dict, message: str
                                                                     ) -> None:
    """`--set`, SOP files (`mora sops validate`), batch lines and the server (both through `validate_request`)."""
    (key, value), = given.items()
    cli = CliRunner().invoke(app, ["run", "a fox", "--preset", "tiny", "--device", "cpu", "--out", str(tmp_path / "runs"),
                                   *[f"--set={k}={json.dumps(v)}" for k, v in {**WAN, **given}.items()]])
    assert cli.exit_code == 2 and message in cli.output and len(cli.output.strip().splitlines()) == 1, cli.output
    param = key.partition(".")[2]
    sop = _sop(tmp_path, backend="wan2.2-ti2v-5b", **{param: value})
    validated = CliRunner().invoke(app, ["sops", "validate", str(sop)])
    assert validated.exit_code == 2 and "step 'segments'" in validated.output and message in validated.output
    line = parse_line(json.dumps({"text": "a fox", "set": {**WAN, **given}}), tmp_path, "requests.jsonl:1")
    (checked,) = check_requests([line], RunOptions(preset="tiny", device="cpu", out=tmp_path / "batch"))
    assert checked.status == "invalid" and message in checked.error
    asked = RunCreate(text="a fox", set=_overrides(given))  # what POST /api/runs reads, then gives prepare_run
    with pytest.raises(InputError, match=None) as error:
        prepare_run(asked.text, options=RunOptions(preset="tiny", device="cpu", out=tmp_path / "served",
                                                   overrides=asked.set))
    assert message in str(error.value)
    assert not any(tmp_path.glob("*/*/run.json"))


def test_numbers_that_fit_are_recorded_and_used_typed(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs",
                         overrides=_overrides({"image_to_video.frames": "9", "image_to_video.guidance_scale": 4}))
    run_dir = prepare_run("a fox", task="text_to_video_wan", options=options)
    assert json.loads((run_dir / "run.json").read_text())["overrides"] == {
        "image_to_video": {"backend": "wan2.2-ti2v-5b", "frames": 9, "guidance_scale": 4.0}}
    sop = _sop(tmp_path, backend="wan2.2-ti2v-5b", frames=9.0, guidance_scale=4)
    assert CliRunner().invoke(app, ["sops", "validate", str(sop)]).exit_code == 0
    with use_settings(preset="tiny", device="cpu", out_dir=tmp_path / "out"):
        start = text_to_image("a fox", seed=1).path
        assert image_to_video(start, backend="ltx-video", frames=9.0, width="64", steps=1).frames == 9


def test_missing_weights_of_a_backend_fail_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailable, match="^1 model not on this machine .*\n  hf download "
                       "Wan-AI/Wan2.2-TI2V-5B-Diffusers   # model 'wan_ti2v', MORA_MODEL_WAN_TI2V$"):
        check_available(["wan_ti2v"])
    result = CliRunner().invoke(app, ["run", "a fox", "--task", "text_to_video_wan", "--out", str(tmp_path / "runs")],
                                terminal_width=200)
    # every model the run needs, each with its own command: FLUX.1 [schnell] (first frame and refiner) and Wan
    assert result.exit_code == 2 and "2 models not on this machine" in result.output, result.output
    commands = [line.split("#")[0].strip() for line in result.output.splitlines() if "hf download" in line]
    assert commands == ["hf download black-forest-labs/FLUX.1-schnell", "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_adapters_stay_with_the_papers_models(tmp_path: Path) -> None:
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / CARD).write_text(json.dumps({"preset": "tiny", "files": {}, "agents": {"text_to_image": {
        "model": "sdxl_base", "source": "stabilityai/stable-diffusion-xl-base-1.0", "mode": "lora", "weights": "x"}}}))
    with pytest.raises(InputError, match="--adapters .*: trained on sdxl, but step 'image' runs text_to_image with "
                       "backend flux-schnell"):
        check_calls(get_sop("text_to_video_wan"), {}, folder)
    check_calls(get_sop("text_to_video"), {}, folder)  # the paper's models: fine
    check_calls(get_sop("connect_videos_flf2v"), {}, folder)  # trained nothing that task runs
    with pytest.raises(ValidationError, match="adapters: backend flux-schnell does not take it"):
        REGISTRY["text_to_image"].validate_args({"prompt": "a fox", "backend": "flux-schnell", "adapters": str(folder)})


def test_roles_name_no_single_model() -> None:
    for name in ("text_to_image_agent", "image_to_image_agent", "image_to_video_agent", "video_connection_agent"):
        assert "with the backend the step names" in ROLES[name].description


def _run(tmp_path: Path, text: str, **kwargs) -> Path:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=3)
    return asyncio.run(run_request(text, options=options, **kwargs)).run_dir


def test_shipped_sops_with_newer_backends_run(tmp_path: Path) -> None:
    wan = json.loads((_run(tmp_path, "a red fox", task="text_to_video_wan", duration=18) / "run.json").read_text())
    assert wan["status"] == "finished"
    assert wan["backends"] == {"text_to_image": ["flux-schnell"], "image_to_video": ["wan2.2-ti2v-5b"]}
    assert len(wan["drift"]["segments"]) == 2
    keyframes = _run(tmp_path, "a red fox", task="text_to_video_keyframes", duration=18)
    info = json.loads((keyframes / "run.json").read_text())
    assert info["backends"] == {"text_to_image": ["sdxl"], "connect_images": ["wan2.1-flf2v"]}
    requests = [json.loads(line)["message"]["content"] for line in (keyframes / "transcript.jsonl").read_text().splitlines()
                if json.loads(line)["type"].endswith("[StepRequest]")]
    steps = [(r["step"], r["iteration"]) for r in requests]
    assert steps[:4] == [("enhance", 0), ("image", 0), ("segments.keyframe", 0), ("segments", 0)]
    segment = next(r for r in requests if r["step"] == "segments")
    keyframe = next(r for r in requests if r["step"] == "segments.keyframe")
    assert segment["media"]["last_image"][0]["path"] == "artifacts/segments.keyframe.png"
    assert keyframe["arguments"]["strength"] == 0.6 and keyframe["arguments"]["image"].endswith("artifacts/image.png")
    a, b = make_video(tmp_path / "a.mp4", seed=1), make_video(tmp_path / "b.mp4", seed=2)
    flf2v = _run(tmp_path, "join them", task="connect_videos_flf2v", videos=[a, b])
    assert json.loads((flf2v / "run.json").read_text())["backends"] == {"connect_videos": ["wan2.1-flf2v"]}
