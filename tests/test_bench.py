"""`mora bench`: the CPU smoke run through the command line, and the shipped full-size configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import typer
from accelerate import init_empty_weights
from diffusers import DiffusionPipeline
from typer.testing import CliRunner, Result

from mora_agents.bench.build import BUILDERS, DEPENDS
from mora_agents.bench.cli import WORKLOAD_HELP, bench_command
from mora_agents.bench.workloads import WORKLOADS

app = typer.Typer()
app.command()(bench_command)

EXPECTED_ROWS = {
    ("text_to_image", "ours"),
    ("text_to_image", "reference"),
    ("image_edit", "ours"),
    ("image_edit", "reference"),
    ("svd_segment", "ours"),
    ("svd_segment", "reference"),
    ("svd_segment", "ours+steps1"),
    ("text_to_video_12s", "ours"),
    ("text_to_video_12s", "reference"),
    ("text_to_video_12s", "ours-24gb"),
    ("seine_transition", "ours"),
    ("seine_transition", "reference"),
    ("seine_transition", "ours+ddim1"),
    ("seine_transition", "ours-24gb"),
}  # tiny settings: SVD 2 steps (approximation: half), SEINE DDIM 2 steps (approximation: a fifth, at least 1)

PUBLISHED_PARAMETERS = {
    # SDXL base UNet, e.g. the 1680 tensors of sd_xl_base_1.0.safetensors; CLIP ViT-L/14 and OpenCLIP bigG text
    # towers, 123,060,480 + 694,659,840 = the SDXL paper's 817M text-encoder parameters; the SD/SDXL VAE.
    ("sdxl_base", "unet"): 2_567_463_684,
    ("sdxl_base", "text_encoder"): 123_060_480,
    ("sdxl_base", "text_encoder_2"): 694_659_840,
    ("sdxl_base", "vae"): 83_653_863,
    # SDXL refiner UNet: its fp16 weights file is 4.52 GB (2 bytes per parameter).
    ("sdxl_refiner", "unet"): 2_259_526_660,
    # SD 1.5's UNet (859,520,964) with 4 more input channels (+4 x 320 x 3 x 3), as NVIDIA NeMo's
    # InstructPix2Pix test asserts (num_weights == 859532484).
    ("instruct_pix2pix", "unet"): 859_532_484,
    ("instruct_pix2pix", "text_encoder"): 123_060_480,
    ("instruct_pix2pix", "vae"): 83_653_863,
    # SVD, per submodule (Ctrl-Crash, arXiv 2506.00227, Table G.6): UNet; CLIP image encoder; VAE encoder
    # 34,163,592 + decoder 63,579,183, plus the 72 weights of the 1x1 quant conv diffusers keeps apart.
    ("svd", "unet"): 1_524_623_082,
    ("svd", "image_encoder"): 632_076_800,
    ("svd", "vae"): 34_163_592 + 63_579_183 + 72,
    # SEINE: seine.pt holds 909,138,756 values (shared/fixtures/seine/full_keys.json lists their shapes),
    # 256 of them the rotary frequencies, which are buffers; with SD v1.4's VAE and text encoder.
    ("seine", "unet"): 909_138_756 - 256,
    ("seine", "vae"): 83_653_863,
    ("seine", "text_encoder"): 123_060_480,
}


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory, one_torch_thread
) -> tuple[Result, dict, str]:
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(
        app,
        [
            "--device",
            "cpu",
            "--size",
            "tiny",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--memory-profile",
            "24gb",
            "--json",
            str(out / "bench.json"),
            "--markdown",
            str(out / "bench.md"),
        ],
    )
    assert result.exit_code == 0, result.output
    return (
        result,
        json.loads((out / "bench.json").read_text()),
        (out / "bench.md").read_text(),
    )


def test_smoke_run_writes_every_workload_and_configuration(smoke) -> None:
    result, report, markdown = smoke
    assert "timings are meaningless" in result.stderr
    assert {
        (row["workload"], row["configuration"]) for row in report["rows"]
    } == EXPECTED_ROWS
    assert (
        report["size"] == "tiny"
        and report["timings_meaningful"] is False
        and report["memory_budget_gib"] == 22
    )
    for workload, configuration in EXPECTED_ROWS:
        assert f"| {workload} | {configuration} | **total** |" in markdown
    assert "meaningless" in markdown and result.stdout == markdown + "\n"


def test_smoke_rows_have_sane_measurements(smoke) -> None:
    _, report, _ = smoke
    for row in report["rows"]:
        stages = {stage["name"]: stage for stage in row["stages"]}
        assert row["total_s"] > 0 and all(
            stage["time_s"] > 0 for stage in stages.values()
        )
        assert row["total_s"] == pytest.approx(
            sum(stage["time_s"] for stage in stages.values())
        )
        for name, stage in stages.items():
            if name != "build":
                assert stage["denoiser_calls"] > 0 and stage["denoiser_flops"] > 0, (
                    row["configuration"],
                    name,
                )
                assert 0 < stage["denoiser_share"] <= 1 and stage["denoiser_tflops"] > 0
        # The reference builds per task, with the same weights and computation as ours.
        if row["configuration"] == "reference":
            assert next(iter(stages)) == "build" and row["setup_s"] is None
            assert row["max_abs_diff_vs_ours"] == 0
        else:
            assert "build" not in stages and row["setup_s"] > 0
        assert row["time_vs_ours"] > 0
    rows = {(row["workload"], row["configuration"]): row for row in report["rows"]}
    t2v = [stage["name"] for stage in rows["text_to_video_12s", "ours"]["stages"]]
    assert t2v == ["base", "refiner", "segment 1", "segment 2", "segment 3"]


def test_approximate_rows_report_their_settings_and_psnr(smoke) -> None:
    _, report, _ = smoke
    approximate = [row for row in report["rows"] if row["approximate"]]
    assert {row["configuration"] for row in approximate} == {
        "ours+steps1",
        "ours+ddim1",
    }
    for row in approximate:
        assert (
            math.isfinite(row["psnr_db_vs_ours"])
            and row["psnr_db_vs_ours"] > 0
            and row["overrides"]
        )
    assert not any(
        row["approximate"]
        for row in report["rows"]
        if not row["configuration"].startswith("ours+")
    )


def test_bad_workload_name_exits_with_one_line_error() -> None:
    result = CliRunner().invoke(
        app, ["--device", "cpu", "--size", "tiny", "--workloads", "svd_segment,nope"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"mora bench: error: --workloads svd_segment,nope: unknown nope (choose from {', '.join(WORKLOADS)})"
    ]


def test_help_names_every_workload() -> None:
    """The help lists the workloads without importing them (and torch)."""
    assert WORKLOAD_HELP == ", ".join(WORKLOADS)


def test_full_size_needs_cuda() -> None:
    result = CliRunner().invoke(app, ["--device", "cpu", "--size", "full"])
    assert result.exit_code == 2 and "--size full needs a CUDA device" in result.output


@pytest.fixture(scope="module")
def full_on_meta() -> dict[str, DiffusionPipeline]:
    """Every full-size pipeline built from the shipped configs with its weights on the meta device (no memory)."""
    built: dict[str, DiffusionPipeline] = {}
    with init_empty_weights():
        for key, builder in BUILDERS["full"].items():
            built[key] = builder(*(built[other] for other in DEPENDS.get(key, ())))
    return built


@pytest.mark.parametrize(("key", "component"), list(PUBLISHED_PARAMETERS))
def test_full_size_configs_have_the_published_parameter_counts(
    full_on_meta, key: str, component: str
) -> None:
    module = getattr(full_on_meta[key], component)
    assert (
        sum(p.numel() for p in module.parameters())
        == PUBLISHED_PARAMETERS[key, component]
    )


def test_refiner_shares_the_base_text_encoder_2_and_vae(full_on_meta) -> None:
    base, refiner = full_on_meta["sdxl_base"], full_on_meta["sdxl_refiner"]
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae


def test_full_configs_name_their_source() -> None:
    for path in sorted(
        (Path(__file__).parents[1] / "mora_agents" / "bench" / "configs").glob("*.json")
    ):
        assert json.loads(path.read_text())["_source"], path.name
