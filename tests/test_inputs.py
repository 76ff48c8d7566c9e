"""Hostile and odd inputs, made here: every bad one is one line on stderr naming it, exit code 2, no run
directory, and the person's files unchanged; valid odd ones are accepted and converted correctly."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import make_image, make_video
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.errors import InputError, MoraError
from mora_agents.inputs import MAX_WORK_SIDE, check_attachment, copy_input
from mora_agents.media import ADAM7, data_ends_early, load_image, sha256_file
from mora_agents.runs.runner import RunOptions, prepare_run
from mora_agents.sop.execution import Execution, validate_inputs
from mora_agents.sop.loader import BUILTIN_DIR, SOPError, load_sop
from mora_agents.sop.template import MAX_RENDER_SIZE, render
from mora_agents.tools import REGISTRY, edit_image

runner = CliRunner()


def png(path: Path, width: int, height: int, row: bytes | None = None, rows: int | None = None) -> Path:
    """A PNG whose header says width x height, every row `row` (RGB; black by default); with `rows`, only
    that many rows of data follow (a file that lies about its size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    first, same = b"\0" + (row or bytes(3 * width)), b"\2" + bytes(3 * width)  # filter "up": a copy of the row above
    packer = zlib.compressobj()
    count = height if rows is None else rows
    data = packer.compress(first) + b"".join(packer.compress(same) for _ in range(count - 1))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data + packer.flush())
                     + chunk(b"IEND", b""))
    return path


def cut(path: Path, size: int) -> Path:
    """A copy of the file without its last `size` bytes (as if a download or copy had stopped)."""
    copy = path.with_name(f"cut{path.suffix}")
    copy.write_bytes(path.read_bytes()[:-size])
    return copy


def noisy(path: Path, **save) -> Path:
    """A 64x48 picture of noise (every byte of its data matters), in the format its suffix names."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, **save)
    return path


def ended_early(path: Path) -> Path:
    """A copy of a JPEG cut in the middle of its scan and then ended by an end marker (libjpeg fills the rest)."""
    copy = path.with_name(f"ended{path.suffix}")
    data = path.read_bytes()
    copy.write_bytes(data[:len(data) // 2] + b"\xff\xd9")
    return copy


def interlaced_png(path: Path, pixels: np.ndarray, keep: float = 1.0) -> Path:
    """An 8-bit grey Adam7-interlaced PNG of `pixels` (Pillow writes none); `keep`: the share of its image data
    that the file holds."""
    passes = [pixels[y::dy, x::dx] for x, y, dx, dy in ADAM7]
    raw = b"".join(b"\0" + row.tobytes() for part in passes if part.size for row in part)
    raw = raw[:round(len(raw) * keep)]
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0, 0, 0, 1)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(raw)), (b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks))
    return path


def bad_run(tmp_path: Path, *args: str, files: tuple[Path, ...] = (), request: str = "a fox") -> str:
    """Run `mora run` with bad input: exit 2, one line on stderr, no run directory, files unchanged."""
    before = {f: sha256_file(f) for f in files if f.is_file()}
    out = tmp_path / "runs"
    result = runner.invoke(app, ["run", "--preset", "tiny", request, "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mora: error: "), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())
    assert {f: sha256_file(f) for f in before} == before
    return lines[0]


# -- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, make, message", [
    ("--image", lambda d: png(d / "bomb.png", 100_000, 100_000, rows=1), "over the limit of 150 megapixels"),
    ("--image", lambda d: png(d / "big.png", 13_000, 13_000, rows=1), "13000x13000 pixels is over the limit"),
    ("--image", lambda d: cut(png(d / "x.png", 64, 64, row=bytes(range(192))), 40), "not a readable image"),
    ("--image", lambda d: png(d / "short.png", 64, 64, rows=1), "truncated PNG image: its image data holds 193 of the "
     "12352 bytes of its 64x64 pixels"),
    ("--image", lambda d: cut(png(d / "x.png", 64, 64), 12), "truncated PNG image: the file ends before its IEND"),
    ("--image", lambda d: cut(png(d / "x.png", 64, 64), 20), "truncated PNG image: the file ends inside its IDAT"),
    ("--image", lambda d: ended_early(noisy(d / "x.jpg")), "truncated JPEG image: Corrupt JPEG data: premature end"),
    ("--image", lambda d: ended_early(noisy(d / "x.jpg", progressive=True)), "truncated JPEG image: Corrupt JPEG"),
    ("--image", lambda d: cut(noisy(d / "x.jpg"), 100), "not a readable image (image file is truncated"),
    ("--image", lambda d: cut(noisy(d / "x.webp"), 100), "not a readable image"),
    ("--image", lambda d: cut(noisy(d / "x.bmp"), 100), "not a readable image (image file is truncated"),
    ("--image", lambda d: cut(noisy(d / "gif.png", format="GIF"), 100), "not a readable image (image file is"),
    ("--image", lambda d: png(d / "dot.png", 1, 1), "1x1 pixels is too small (at least 16 px per side)"),
    ("--image", lambda d: png(d / "wide.png", 2000, 100), "2000x100 pixels is wider than 4:1"),
    ("--image", lambda d: os.mkfifo(d / "pipe.png") or d / "pipe.png", "not a regular file"),
    ("--image", lambda d: (d / "folder.png").mkdir() or d / "folder.png", "not a regular file"),
    ("--image", lambda d: make_video(d / "clip.mp4"), "is a video, not an image"),
    ("--video", lambda d: cut(make_video(d / "x.mp4", frames=30), 4000), "damaged or truncated video"),
    ("--video", lambda d: make_video(d / "slow.mp4", frames=2, fps=0.01), "frame rate 0.01 fps; videos need 1-240 fps"),
    ("--video", lambda d: make_video(d / "fast.mp4", frames=4, fps=300), "frame rate 300 fps; videos need 1-240 fps"),
    ("--video", lambda d: make_video(d / "one.mp4", frames=1), "has 1 frame; a video needs at least 2"),
    ("--video", lambda d: make_video(d / "tiny.mp4", size=(8, 8)), "8x8 pixels is too small"),
    ("--video", lambda d: make_image(d / "a.png"), "is an image, not a video"),
])
def test_bad_files_are_one_line_before_any_run(tmp_path: Path, flag: str, make, message: str) -> None:
    path = make(tmp_path)
    line = bad_run(tmp_path, flag, str(path), files=(path,))
    assert f"{flag} {path}: " in line and message in line


def test_odd_images_are_converted_to_the_rgb_they_show(tmp_path: Path) -> None:
    grey16 = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16).repeat(16, 0).repeat(16, 1))
    grey16.save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    assert [load_image(tmp_path / "grey16.png").getpixel((x, 8)) for x in (0, 16, 40)] == \
        [(0, 0, 0), (128, 128, 128), (255, 255, 255)]

    palette = Image.new("P", (32, 16))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(1, (16, 0, 32, 16))
    palette.save(tmp_path / "palette.png", transparency=0)  # index 0 (red) is transparent: white shows
    assert [load_image(tmp_path / "palette.png").getpixel((x, 8)) for x in (0, 20)] == [(255, 255, 255), (0, 255, 0)]

    grey_alpha = Image.new("LA", (32, 16), (100, 0))
    grey_alpha.paste((100, 255), (16, 0, 32, 16))
    grey_alpha.save(tmp_path / "la.png")
    assert [load_image(tmp_path / "la.png").getpixel((x, 8)) for x in (0, 20)] == [(255, 255, 255), (100, 100, 100)]

    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = load_image(tmp_path / "cmyk.jpg").getpixel((16, 16))
    assert red[0] > 240 and red[1] < 15 and red[2] < 15

    turned = Image.new("RGB", (64, 32), (255, 0, 0))
    turned.paste((0, 0, 255), (32, 0, 64, 32))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: red on top
    turned.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "turned.jpg")
    assert shown.size == (32, 64)
    top, bottom = shown.getpixel((16, 10)), shown.getpixel((16, 54))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]

    for name in ("grey16.png", "palette.png", "la.png", "cmyk.jpg", "turned.jpg"):
        assert check_attachment(tmp_path / name, "image", name).kind == "image"


def test_every_kind_of_png_and_jpeg_with_all_its_data_decodes_and_one_short_of_it_is_refused(tmp_path: Path) -> None:
    """The strict decode counts the data each PNG layout needs (bit depths, colour types, interlacing)."""
    picture = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    kinds = {"bits1.png": Image.fromarray(picture).convert("1"), "rgba16.png": Image.fromarray(picture).convert("RGBA"),
             "palette4.png": Image.fromarray(picture).quantize(16), "grey.png": Image.fromarray(picture).convert("L")}
    for name, image in kinds.items():
        image.save(tmp_path / name, **({"bits": 4} if name == "palette4.png" else {}))
    grey = np.asarray(kinds["grey.png"])
    whole = interlaced_png(tmp_path / "interlaced.png", grey)
    assert np.array_equal(np.asarray(Image.open(whole)), grey)  # the file is what Pillow reads as interlaced
    for name in [*kinds, "interlaced.png", "cmyk.jpg", "progressive.jpg"]:
        if name.endswith(".jpg"):
            noisy(tmp_path / name, **({"progressive": True} if name == "progressive.jpg" else {}))
        assert check_attachment(tmp_path / name, "image", name).width in (53, 64)
    size = sum(part.shape[0] * (1 + part.shape[1]) for x, y, dx, dy in ADAM7 if (part := grey[y::dy, x::dx]).size)
    short = interlaced_png(tmp_path / "short.png", grey, keep=0.99)
    assert data_ends_early(short, "PNG") == (f"its image data holds {round(size * 0.99)} of the {size} bytes of its "
                                             "53x37 pixels")
    with pytest.raises(InputError, match="short.png: "):
        load_image(short)


def test_a_huge_image_is_copied_at_model_size_and_tools_bound_their_working_size(tmp_path: Path, tiny) -> None:
    big = png(tmp_path / "big.png", 12_000, 12_000, row=bytes([90, 160, 30]) * 12_000)
    assert big.stat().st_size < 1_000_000
    digest = sha256_file(big)
    run_dir = prepare_run("make it snowy", images=[big], options=RunOptions(preset="tiny", out=tmp_path / "runs"))
    copied = run_dir / json.loads((run_dir / "run.json").read_text())["request"]["images"][0]
    with Image.open(copied) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (MAX_WORK_SIDE, MAX_WORK_SIDE))
        assert image.getpixel((100, 100)) == (90, 160, 30)
    assert sha256_file(big) == digest
    large = png(tmp_path / "large.png", 1600, 1200)  # a library call: the tool bounds its own working size
    edited = edit_image(str(large), "make it snowy", seed=1)
    assert (edited.width, edited.height) == (128, 96)


# -- videos -------------------------------------------------------------------------------------


def test_a_video_longer_than_its_sop_allows_is_refused(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "long.mp4", frames=20, fps=4)  # 5 s
    sops = tmp_path / "sops"
    sops.mkdir()
    sop = yaml.safe_load((BUILTIN_DIR / "edit_video.yaml").read_text())
    sop["inputs"]["video"]["max_seconds"] = 4
    (sops / "edit_video.yaml").write_text(yaml.safe_dump(sop))
    line = bad_run(tmp_path, "--video", str(clip), "--sops", str(sops), "--task", "edit_video", files=(clip,))
    assert line.endswith(f"--video {clip}: lasts 5 s (20 frames at 4 fps); at most 4 s")
    (tmp_path / "run" / "inputs").mkdir(parents=True)  # the task chosen by the planner: checked before any step
    copy_input(clip, tmp_path / "run" / "inputs", 1)
    with pytest.raises(InputError, match=r"input 'video' \(inputs/1-long.mp4\): lasts 5 s"):
        validate_inputs(load_sop(sops / "edit_video.yaml"), {"video": "inputs/1-long.mp4", "prompt": "snow"},
                        tmp_path / "run")


# -- numbers, text, seeds, output folders -------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--duration", "nan"], "--duration: nan is not a finite number"),
    (["--duration", "inf"], "--duration: inf is not a finite number"),
    (["--duration", "-1"], "--duration -1: must be positive"),
    (["--duration", "abc"], "Invalid value for '--duration'"),
    (["--duration", "500"], "--duration (any task): 500 is out of range [1, 120]"),  # no task takes it
    (["--seed", str(2**70)], f"--seed: {2**70} is not a whole number from 0 to 4294967295"),
    (["--seed", "-1"], "--seed: -1 is not a whole number"),
    (["--device", "banana"], "--device banana:"),
    (["--max-repeats", "-1"], "Invalid value for '--max-repeats'"),
])
def test_bad_numbers_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    assert message in bad_run(tmp_path, *args)


def test_a_duration_outside_the_planned_tasks_range_is_one_line(tmp_path: Path) -> None:
    """60 s fits some task, so it passes the checks before planning; the planner's text_to_video (here at most
    30 s) refuses it, and the run directory made for the planning is gone."""
    sops = tmp_path / "sops"
    sops.mkdir()
    shipped = (BUILTIN_DIR / "text_to_video.yaml").read_text()
    (sops / "text_to_video.yaml").write_text(shipped.replace("min: 1, max: 120", "min: 1, max: 30"))
    assert "input 'duration': 60 is out of range [1, 30]" in bad_run(tmp_path, "--duration", "60", "--sops", str(sops))


@pytest.mark.parametrize("edit, args, message", [
    (('"{{ inputs.duration }}"', "100000"), [], "100000 s of 3.5 s clips would run 28571 times (at most 100)"),
    (None, ["--duration", "120", "--set", "image_to_video.frames=8", "--set", "image_to_video.fps=7"],
     "120 s of 1.14286 s clips would run 105 times"),
])
def test_a_repeat_that_would_run_too_often_is_refused_before_any_step(tmp_path: Path, edit, args, message) -> None:
    """Its count is told from the inputs and the clip length its frames and fps give, before the first clip."""
    sops = tmp_path / "sops"
    sops.mkdir()
    shipped = (BUILTIN_DIR / "text_to_video.yaml").read_text()
    (sops / "text_to_video.yaml").write_text(shipped.replace(*edit) if edit else shipped)
    line = bad_run(tmp_path, "--task", "text_to_video", "--sops", str(sops), *args)
    assert f"step 'segments', field 'repeat.until_seconds': {message}" in line


@pytest.mark.parametrize("request_text, message", [
    (" \t\n ", "REQUEST: empty (only spaces)"),
    ("a fox " * 400, "REQUEST: 2400 characters; at most 2000"),
])
def test_bad_request_text_is_one_line(tmp_path: Path, request_text: str, message: str) -> None:
    assert message in bad_run(tmp_path, request=request_text)


FILE_OUTPUTS = [(lambda d: d, "is a folder, not a file"),
                (lambda d: d / "missing" / "scores.json", "the folder {parent} does not exist"),
                (lambda d: Path("/proc/scores.json"), "cannot write in /proc")]


@pytest.mark.parametrize("command, make, message", [
    ("run", lambda d: make_image(d / "file.png"), "is a file, not a folder"),
    ("run", lambda d: d / "missing" / "runs", "the folder {parent} does not exist"),
    ("run", lambda d: Path("/proc/mora-runs"), "cannot write in /proc"),
    *[(command, make, message) for command in ("eval", "bench") for make, message in FILE_OUTPUTS],
])
def test_bad_output_paths_are_one_line(tmp_path: Path, command: str, make, message: str) -> None:
    path = make(tmp_path)
    flag, args = {"run": ("--out", ["--preset", "tiny", "a fox"]), "bench": ("--json-out", ["--count-flops"]),
                  "eval": ("--json-out", [str(make_video(tmp_path / "clip.mp4"))])}[command]
    result = runner.invoke(app, [command, *args, flag, str(path)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    prog = "mora" if command == "run" else f"mora {command}"
    assert line.startswith(f"{prog}: error: {flag} {path}: {message.format(parent=path.parent)}")
    assert not (tmp_path / "missing").exists()


# -- tool parameters: --set, SOP args and the agents' tool calls ---------------------------------


@pytest.mark.parametrize("item, message", [
    ("text_to_image.steps=0", "greater than or equal to 1"),
    ("text_to_image.steps=-5", "greater than or equal to 1"),
    ("text_to_image.steps=true", "a number is needed, not true or false"),
    ("text_to_image.steps=100000", "less than or equal to 1000"),
    ("text_to_image.width=65", "multiple of 8"),
    ("text_to_image.width=100000", "less than or equal to 2048"),
    ("image_to_video.frames=0", "greater than or equal to 2"),
    ("image_to_video.fps=0", "greater than or equal to 1"),
    ("text_to_image.guidance_scale=.nan", "finite number"),
    ("edit_image.image_guidance_scale=.inf", "finite number"),
    ("connect_videos.sampler=euler", "'ddpm' or 'ddim'"),
    ("text_to_image.seed=-1", "greater than or equal to 0"),
    ("text_to_image.negative_prompt=[1, 2]", "valid string"),
    ("text_to_image.steps=!!python/object/apply:os.system [echo hi]", "YAML tags, anchors and aliases are not allowed"),
    ("text_to_image.steps=[1,", "not a valid value"),
    ("text_to_image.prompt=[&a [x, x], *a]", "anchors and aliases are not allowed"),
])
def test_invalid_set_values_are_one_line(tmp_path: Path, item: str, message: str) -> None:
    line = bad_run(tmp_path, "--set", item)
    assert f"--set {item.split('=')[0]}" in line and message in line


def test_the_tool_schema_carries_the_bounds_and_checks_tool_calls() -> None:
    schema = REGISTRY["text_to_image"].function_tool.schema["parameters"]["properties"]
    assert schema["prompt"]["description"] == "what the image shows" and schema["prompt"]["maxLength"] == 10_000
    width = schema["width"]["anyOf"][0]
    assert (width["minimum"], width["maximum"], width["multipleOf"]) == (64, 2048, 8)
    assert schema["width"]["description"].startswith("width in pixels")
    assert REGISTRY["connect_videos"].function_tool.schema["parameters"]["properties"]["sampler"]["anyOf"][0]["enum"] \
        == ["ddpm", "ddim"]
    spec = REGISTRY["image_to_video"]
    for bad in ({"image": "a.png", "steps": 0}, {"image": "a.png", "width": 100}, {"image": "a.png", "colour": 1},
                {"image": "a.png", "noise_aug_strength": math.nan}):
        with pytest.raises(ValidationError):
            spec.validate_args(bad)
    with pytest.raises(ValidationError, match="empty"):
        REGISTRY["edit_image"].validate_args({"image": "a.png", "instruction": "   "})
    assert spec.validate_args({"image": "a.png", "steps": 3}) == {"image": "a.png", "steps": 3}


# -- SOP files -------------------------------------------------------------------------------------


def _sop(tmp_path: Path, change=None, text: str | None = None, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    if text is None:
        data = yaml.safe_load((BUILTIN_DIR / "text_to_video.yaml").read_text())
        change(data)
        text = yaml.safe_dump(data)
    path.write_text(text)
    return path


def _step(data: dict, step_id: str) -> dict:
    return next(s for s in data["steps"] if s["id"] == step_id)


def changed(step: str, field: str, **values):
    """Makes text_to_video.yaml with `values` set in the step's `field` (args, repeat) and returns its path."""
    return lambda d: _sop(d, lambda s: _step(s, step)[field].update(values))


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize("make, message", [
    (lambda d: _sop(d, text="a: " + "[" * 5000 + "]" * 5000 + "\n"), "nested deeper than 20 levels"),
    (lambda d: _sop(d, text=BOMB), "more than 10000 values (aliases counted in full)"),
    (lambda d: _sop(d, text="a: &a [*a]\n"), "refers to a value that contains it"),
    (lambda d: d.joinpath("u16.yaml").write_text("name: x\n", encoding="utf-16") and d / "u16.yaml",
     "UTF-16 or binary, not UTF-8 text"),
    (lambda d: d.joinpath("latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1")) and d / "latin.yaml",
     "not UTF-8 text (byte 0xe9 at offset 9)"),
    (lambda d: os.mkfifo(d / "pipe.yaml") or d / "pipe.yaml", "not a regular file"),
    (lambda d: _sop(d, text="# " + "x" * 300_000), "larger than 256 KiB"),
    (changed("enhance", "args", prompt="{{ inputs.prompt.__class__ }}"), "'inputs.prompt.__class__' cannot be read"),
    (changed("enhance", "args", prompt="{{ inputs.prompt.upper() }}"), "a function or method call is not allowed"),
    (changed("enhance", "args", prompt="{{ steps['image'].output }}"), "'steps.image' is not an earlier step"),
    (changed("enhance", "args", prompt="{% for i in range(10**9) %}x{% endfor %}"), "a for loop is not allowed"),
    (changed("enhance", "args", prompt="{{ '%099999999d' % 1 }}"), "the operator % is not allowed"),
    (changed("image", "args", steps=0), "step 'image', field 'args.steps': Input should be greater than or equal to 1"),
    (changed("image", "args", output="/tmp/elsewhere.png"), "field 'args.output': set by the run"),
    (changed("segments", "args", image="/etc/passwd"),
     "field 'args.image': '/etc/passwd': media arguments are templates or paths inside the run directory"),
    (changed("segments", "args", image="../../secret.png"), "paths inside the run directory"),
    (changed("segments", "repeat", until_seconds=float("nan")), "step 'segments', field 'repeat.until_seconds"),
    (changed("segments", "repeat", until_seconds="many"),
     "'many' is neither a number of seconds nor one {{ expression }}"),
    (lambda d: _sop(d, lambda s: s["outputs"].update(result="{{ steps.enhance.output }}")),
     "field 'outputs.result': must be one {{ expression }} naming a video"),
    (lambda d: _sop(d, lambda s: s["outputs"].update(result="{{ steps.image.output }}")),
     "field 'outputs.result': must be one {{ expression }} naming a video"),
    (lambda d: _sop(d, lambda s: s["inputs"]["duration"].update(max=float("inf"))), "finite number"),
])
def test_hostile_sop_files_fail_validate_in_one_line(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SOPError) as error:
        load_sop(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    result = runner.invoke(app, ["sops", "validate", str(path)])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_shipped_sops_validate_and_a_bad_user_sop_stops_a_run_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sops", "validate"])
    assert result.exit_code == 0 and result.stdout.count("ok ") == len(list(BUILTIN_DIR.glob("*.yaml"))) == 11
    folder = tmp_path / "sops"
    folder.mkdir()
    _sop(folder, text="steps: " + "[" * 100 + "]" * 100)
    assert "mine.yaml: nested deeper than 20 levels" in bad_run(tmp_path, "--sops", str(folder))


def test_rendering_is_bounded_and_names_the_step_and_field(tmp_path: Path) -> None:
    context = {"inputs": {"prompt": "fox " * 1000}, "steps": {}}
    for template in ("{{ inputs.prompt * 3 }}", "{{ inputs.prompt + inputs.prompt + inputs.prompt }}",
                     "{{ [inputs.prompt] * 100000 }}", "{{ inputs.prompt }}{{ inputs.prompt }}{{ inputs.prompt }}"):
        with pytest.raises(ValueError, match=f"at most {MAX_RENDER_SIZE}|over {MAX_RENDER_SIZE}"):
            render(template, context)
    assert render("{{ inputs.prompt * 2 }}", context) == "fox " * 2000
    data = yaml.safe_load((BUILTIN_DIR / "text_to_video.yaml").read_text())
    _step(data, "enhance")["args"]["prompt"] = "{{ inputs.prompt * 10 }}"
    sop = load_sop(_sop(tmp_path, text=yaml.safe_dump(data)))
    execution = Execution(sop, validate_inputs(sop, {"prompt": "fox " * 500}, tmp_path), tmp_path, seed=1)
    with pytest.raises(MoraError, match="step 'enhance', field 'args.prompt': '\\*' would make 20000"):
        execution.next_request()


# -- mora chat ---------------------------------------------------------------------------------------


def test_chat_reports_a_bad_command_or_attachment_and_goes_on(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from mora_agents.ui.chat import ChatSession
    from mora_agents.ui.terminal import TerminalUI

    console = Console(file=StringIO(), width=200)
    session = ChatSession(RunOptions(preset="tiny", out=tmp_path / "runs"), TerminalUI(console), input)
    dot, good = png(tmp_path / "dot.png", 1, 1), make_image(tmp_path / "good.png")
    for line in ('/image "unclosed', f"/image {dot}", f"/video {good}", "/image missing.png", f"/image {good}"):
        assert session.turn(line) is True
    shown = console.file.getvalue().splitlines()
    assert "error:" in shown[0] and "No closing quotation" in shown[0]
    assert "too small" in shown[1] and "is an image, not a video" in shown[2] and "no such image file" in shown[3]
    assert shown[4].startswith("attached") and session.images == [good]
    assert not (tmp_path / "runs").exists()


def test_inputs_are_copied_without_touching_the_originals(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4")
    before = clip.read_bytes()
    folder = tmp_path / "inputs"
    folder.mkdir()
    assert copy_input(clip, folder, 1).read_bytes() == before == clip.read_bytes()
    with pytest.raises(InputError, match="no such image file"):
        check_attachment(tmp_path / "gone.png", "image", str(tmp_path / "gone.png"))
