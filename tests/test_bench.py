"""`mora bench`: the CPU smoke run through the command line, and the shipped full-size configs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from accelerate import init_empty_weights
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import FusedAttnProcessor2_0
from torch._dynamo.utils import counters
from typer.testing import CliRunner, Result

from mora_agents.bench.build import BUILDERS, DEPENDS
from mora_agents.bench.cli import CANDIDATE_HELP, WORKLOAD_HELP, bench_command
from mora_agents.bench.configurations import (
    CANDIDATES,
    FUSED_QKV_MODELS,
    PAPER_MODELS,
    Pipelines,
    candidate,
    compile_unavailable,
)
from mora_agents.bench.measure import Recorder
from mora_agents.bench.workloads import WORKLOADS

app = typer.Typer()
app.command()(bench_command)

PAPER_WORKLOADS = [name for name, workload in WORKLOADS.items() if workload.paper]
NEW_WORKLOADS = [name for name, workload in WORKLOADS.items() if not workload.paper]
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
} | {
    (workload, f"ours+{name}")
    for workload in PAPER_WORKLOADS
    for name in ("bf16", "channels_last", "fused_qkv")
    if name != "fused_qkv" or workload not in ("svd_segment", "seine_transition")
} | {
    (workload, configuration) for workload in NEW_WORKLOADS for configuration in ("ours", "ours-24gb")
}  # tiny settings: SVD 2 steps (approximation: half), SEINE DDIM 2 steps (approximation: a fifth, at least 1)
SMOKE_CANDIDATES = "bf16,channels_last,fused_qkv"
"""The candidates the smoke run runs on every workload; compilation runs on one workload (`compiled`)."""
EXACT_DB = 100.0
"""Candidates in the run's dtype change the output by float rounding only: identical, or PSNR above this."""
BF16_DB = 30.0
"""bf16 instead of the CPU's fp32 rounds to 8 significant bits: the output moves, but stays close."""

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
    # Open-Sora-Plan v1.2's image-to-video DiT and VAE: the reference code's counts at the published configs
    # (tests/fixtures/osp/full_keys.json); the DiT is its text-to-video one, 2,771,907,856, plus the mask and
    # masked-video embeddings, 2 x (4 x 2304 x 2 x 2 + 2304 + 2304 x 2304).
    ("open_sora_plan", "transformer"): 2_771_907_856 + 2 * (4 * 2304 * 4 + 2304 + 2304 * 2304),
    ("open_sora_plan", "vae"): 239_189_991,
}
APPROXIMATE_PARAMETERS = {
    # The newer backends, against the sizes their names and cards give: FLUX.1 12B (11.9B), its T5-XXL encoder 4.76B
    # (+ its 131M input embedding, a second copy as transformers 5 builds it: the config does not tie them), Wan 2.2
    # TI2V-5B, the UMT5-XXL encoder (5.68B + its own 1.05B input embedding), LTX-Video 2B (1.9B), Wan 2.1's 14B
    # (14.3B; FLF2V, like I2V, adds 2.1B of image cross-attention), open_clip ViT-H/14's vision tower (632M).
    ("flux_schnell", "transformer"): 11.89e9,
    ("flux_kontext", "transformer"): 11.90e9,
    ("flux_schnell", "text_encoder_2"): 4.76e9 + 32128 * 4096,
    ("wan_ti2v", "transformer"): 5.0e9,
    ("wan_ti2v", "text_encoder"): 5.68e9 + 256384 * 4096,
    ("ltx_video", "transformer"): 1.92e9,
    ("wan_flf2v", "transformer"): 14.3e9 + 40 * 2 * 5120 * 5120,
    ("wan_flf2v", "image_encoder"): 632e6,
    # SD3 Medium's 2B MMDiT (2.03B) and mT5-XXL's encoder (5.66B + its own 1.02B input embedding).
    ("sd3", "transformer"): 2.03e9,
    ("open_sora_plan", "text_encoder"): 5.66e9 + 250112 * 4096,
}


TINY_CPU = ["--device", "cpu", "--preset", "tiny", "--repeats", "1", "--warmup", "1"]


def _bench(out: Path, *args: str) -> tuple[Result, dict, str]:
    """`mora bench` on the tiny CPU models with `args`: its result, JSON report and Markdown table."""
    json_path, markdown_path = out / "bench.json", out / "bench.md"
    result = CliRunner().invoke(
        app, [*TINY_CPU, *args, "--json-out", str(json_path), "--markdown", str(markdown_path)]
    )
    assert result.exit_code == 0, result.output
    return result, json.loads(json_path.read_text()), markdown_path.read_text()


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory, one_torch_thread
) -> tuple[Result, dict, str]:
    return _bench(
        tmp_path_factory.mktemp("bench"),
        "--memory-profile",
        "24gb",
        "--candidates",
        SMOKE_CANDIDATES,
    )


@pytest.fixture(scope="module")
def compiled(
    tmp_path_factory: pytest.TempPathFactory, one_torch_thread
) -> tuple[Result, dict, str, int]:
    """Every candidate, compilation included, on one workload (compiling on the CPU takes a while), and the number
    of graphs dynamo compiled meanwhile."""
    graphs = counters["stats"]["unique_graphs"]
    run = _bench(
        tmp_path_factory.mktemp("compiled"),
        "--workloads",
        "image_edit",
        "--candidates",
        "all",
        "--no-reference",
        "--no-approximate",
    )
    return *run, counters["stats"]["unique_graphs"] - graphs


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


def _assert_close_to_ours(row: dict) -> None:
    floor = BF16_DB if row["configuration"] in ("ours+bf16", "ours+combined") else EXACT_DB
    assert row["max_abs_diff_vs_ours"] == 0 or row["psnr_db_vs_ours"] > floor, row


def test_candidate_rows_are_exact_and_unsupported_ones_are_listed(smoke) -> None:
    _, report, markdown = smoke
    names = SMOKE_CANDIDATES.split(",")
    assert report["candidates"] == names
    rows = [row for row in report["rows"] if row["configuration"].removeprefix("ours+") in names]
    for row in rows:
        assert not row["approximate"] and not row["overrides"] and row["first_run_s"] > 0
        _assert_close_to_ours(row)
    reason = "fused_qkv applies only to instruct_pix2pix, sdxl_base, sdxl_refiner"
    paper = "applies only to instruct_pix2pix, sdxl_base, sdxl_refiner, seine, svd"
    expected = [{"workload": workload, "configuration": "ours+fused_qkv", "reason": reason}
                for workload in ("svd_segment", "seine_transition")]
    expected += [{"workload": workload, "configuration": f"ours+{name}", "reason": f"{name} {paper}" if name != "fused_qkv"
                  else reason} for workload in NEW_WORKLOADS for name in names]
    assert sorted(report["skipped"], key=str) == sorted(expected, key=str)
    assert f"- seine_transition `ours+fused_qkv`: {reason}" in markdown


@pytest.mark.parametrize("key", sorted(PAPER_MODELS))
def test_combined_candidate_changes_each_pipeline(key: str, one_torch_thread) -> None:
    """`ours+combined`'s pipelines: bf16, channels-last 2D convolutions, fused QKV where the pipeline has it, and
    compiled transformer blocks (compiled on first call, so not run here)."""
    pipe = Pipelines(candidate("combined"), "tiny", torch.device("cpu"))[key]
    modules = [module for module in pipe.components.values() if isinstance(module, torch.nn.Module)]
    assert {param.dtype for module in modules for param in module.parameters()} == {torch.bfloat16}
    convs = [m for model in (pipe.unet, pipe.vae) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    assert hasattr(pipe, "fuse_qkv_projections") == (key in FUSED_QKV_MODELS)
    if key in FUSED_QKV_MODELS:
        processors = [*pipe.unet.attn_processors.values(), *pipe.vae.attn_processors.values()]
        assert all(isinstance(processor, FusedAttnProcessor2_0) for processor in processors)
    assert any(module._compiled_call_impl is not None for module in pipe.unet.modules())


def test_compile_runs_where_it_can_else_its_rows_are_skipped_with_the_reason(compiled) -> None:
    result, report, _, graphs = compiled
    rows = {row["configuration"]: row for row in report["rows"]}
    reason = compile_unavailable(torch.device("cpu"))
    compiling = ("ours+compile", "ours+combined")
    if reason is None:
        assert list(rows) == ["ours", *(f"ours+{name}" for name in CANDIDATES)] and not report["skipped"]
        # Dynamo starts afresh for each compiling row: each compiles its own graphs, in its first run.
        assert graphs >= len(compiling) and "skipped" not in result.stderr
        for name in compiling:
            assert rows[name]["first_run_s"] > rows["ours"]["first_run_s"]
            _assert_close_to_ours(rows[name])
    else:
        assert list(rows) == ["ours", "ours+bf16", "ours+channels_last", "ours+fused_qkv"]
        assert report["skipped"] == [
            {"workload": "image_edit", "configuration": name, "reason": reason} for name in compiling
        ]
        assert [line for line in result.stderr.splitlines() if "skipped" in line] == [
            f"mora bench: {name} skipped: {reason}" for name in compiling
        ]


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).relu()


def test_flop_counting_leaves_compiled_blocks_to_compile() -> None:
    """Under a FLOP counter (a dispatch mode) dynamo would never compile the block; the probe counts eagerly."""
    denoiser = torch.nn.Sequential(_Block())
    denoiser[0].compile(backend="eager")  # dynamo only: no C++ compiler needed
    recorder = Recorder(torch.device("cpu"), flops={})
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(2):
        with recorder.stage("denoise", denoiser), torch.inference_mode():
            denoiser(torch.ones(1, 8))
    assert recorder.flops == {"denoise": 2 * 8 * 8} and counters["stats"]["unique_graphs"] == graphs + 1


def test_without_a_cpp_compiler_compile_is_skipped_in_one_line(tmp_path: Path) -> None:
    """A machine without a working C++ compiler, for real: a fresh process whose inductor is given a missing
    compiler and an empty cache."""
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-c++"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
        "OMP_NUM_THREADS": "1",
    }
    args = ["--workloads", "image_edit", "--candidates", "compile", "--no-reference", "--no-approximate"]
    command = [sys.executable, "-c", "from mora_agents.cli import app; app()", "bench", *TINY_CPU, *args]
    run = subprocess.run(
        [*command, "--json-out", str(tmp_path / "bench.json")], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "skipped" in line]
    prefix = "mora bench: ours+compile skipped: "
    assert len(lines) == 1 and lines[0].startswith(prefix + "torch.compile cannot run on cpu here (")
    assert "C++ compiler" in lines[0]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert [row["configuration"] for row in report["rows"]] == ["ours"]
    reason = lines[0].removeprefix(prefix)
    assert report["skipped"] == [{"workload": "image_edit", "configuration": "ours+compile", "reason": reason}]
    assert f"- image_edit `ours+compile`: {reason}" in run.stdout


@pytest.mark.parametrize(
    ("option", "choices"), [("--workloads", list(WORKLOADS)), ("--candidates", [*CANDIDATES, "all"])]
)
def test_bad_name_exits_with_one_line_error(option: str, choices: list[str]) -> None:
    result = CliRunner().invoke(
        app, ["--device", "cpu", "--preset", "tiny", option, f"{choices[0]},nope"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"mora bench: error: {option} {choices[0]},nope: unknown nope (choose from {', '.join(choices)})"
    ]


def test_help_names_every_workload_and_candidate() -> None:
    """The help lists the workloads and candidates without importing them (and torch)."""
    assert WORKLOAD_HELP == ", ".join(WORKLOADS)
    assert CANDIDATE_HELP == ", ".join(CANDIDATES)


def test_full_size_needs_cuda() -> None:
    result = CliRunner().invoke(app, ["--device", "cpu", "--preset", "full"])
    assert result.exit_code == 2 and "--preset full needs a CUDA device" in result.output


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


@pytest.mark.parametrize(("key", "component"), list(APPROXIMATE_PARAMETERS))
def test_newer_backends_have_their_published_sizes(full_on_meta, key: str, component: str) -> None:
    count = sum(p.numel() for p in getattr(full_on_meta[key], component).parameters())
    assert count == pytest.approx(APPROXIMATE_PARAMETERS[key, component], rel=0.01)


def test_refiner_shares_the_base_text_encoder_2_and_vae(full_on_meta) -> None:
    base, refiner = full_on_meta["sdxl_base"], full_on_meta["sdxl_refiner"]
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae


def test_full_configs_name_their_source() -> None:
    for path in sorted(
        (Path(__file__).parents[1] / "mora_agents" / "bench" / "configs").glob("*.json")
    ):
        assert json.loads(path.read_text())["_source"], path.name
