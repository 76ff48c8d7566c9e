"""`mora bench --count-flops`: FLOPs of every model call, counted on meta, equal to those of a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from mora_agents.bench.build import META, build_pipeline
from mora_agents.bench.cli import bench_command
from mora_agents.bench.configurations import OURS, Pipelines
from mora_agents.bench.flops import count_workload
from mora_agents.bench.measure import Recorder
from mora_agents.bench.workloads import WORKLOADS, settings_for

app = typer.Typer()
app.command()(bench_command)
CPU = torch.device("cpu")


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_counted_flops_equal_those_of_a_real_run(name: str, one_torch_thread) -> None:
    """On the tiny models, counting on meta (each distinct call once) gives exactly the FLOPs that running the
    workload for real on the CPU does, and the denoiser calls of each stage that the bench's recorder sees."""
    workload = WORKLOADS[name]
    rows = count_workload(workload, "tiny")
    recorder = Recorder(CPU)
    # The math attention counts as its two batched matmuls, as attention on meta does.
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        workload.run(Pipelines(OURS, "tiny", CPU), settings_for("tiny"), recorder, 0)
    assert sum(row.flops for row in rows) == counter.get_total_flops() > 0
    denoisers = [row for row in rows if row.model.endswith((".unet", ".transformer"))]
    assert {row.stage: row.calls for row in denoisers} == {sample.name: sample.denoiser_calls for sample in recorder.samples}
    assert all(0 < row.attention_flops < row.flops for row in denoisers)


def test_full_size_svd_segment_counts_each_call_at_the_papers_shapes() -> None:
    rows = {row.model: row for row in count_workload(WORKLOADS["svd_segment"], "full")}
    p = settings_for("full")["image_to_video"]
    assert rows["svd.unet"].calls == p["steps"] == 25
    # 25 frames decoded 12 at a time: chunks of 12, 12 and 1.
    assert rows["svd.vae.decode"].calls == 3
    assert rows["svd.unet"].dtype == "float16" and rows["svd.vae.encode"].dtype == "float32"  # diffusers upcasts

    # One UNet call by hand: classifier-free guidance batched (2), 25 frames, 4 noisy + 4 image latent channels.
    unet = build_pipeline("svd", "full", META).unet
    sample = torch.empty(2, p["frames"], 8, p["height"] // 8, p["width"] // 8, device=META, dtype=torch.float16)
    with FlopCounterMode(display=False) as counter:
        unet(
            sample,
            torch.tensor(1.0),
            encoder_hidden_states=torch.empty(2, 1, 1024, device=META, dtype=torch.float16),
            added_time_ids=torch.empty(2, 3, device=META, dtype=torch.float16),
        )
    assert rows["svd.unet"].flops == 25 * counter.get_total_flops()


def test_cli_writes_the_table_and_json(tmp_path: Path) -> None:
    json_path, markdown_path = tmp_path / "flops.json", tmp_path / "flops.md"
    result = CliRunner().invoke(
        app,
        ["--count-flops", "--preset", "tiny", "--workloads", "image_edit", "--gpu", "H200",
         "--json-out", str(json_path), "--markdown", str(markdown_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    assert report["peak_tflops"] == 989.4 and report["gpu"] == "H200"
    models = [row["model"] for row in report["rows"]]
    assert models == [
        "instruct_pix2pix.text_encoder", "instruct_pix2pix.vae.encode", "instruct_pix2pix.unet",
        "instruct_pix2pix.vae.decode",
    ]
    markdown = markdown_path.read_text()
    for row in report["rows"]:
        assert f"| image_edit | edit | {row['model']} | {row['dtype']} | {row['calls']} |" in markdown
    calls = sum(row["calls"] for row in report["rows"])
    assert f"| **image_edit** | **total** |  |  | {calls} |" in markdown and markdown in result.output


def test_unknown_gpu_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "flops.json"
    result = CliRunner().invoke(app, ["--count-flops", "--preset", "tiny", "--gpu", "TPU v5", "--json-out", str(out)])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("mora bench: error: --gpu TPU v5: no dense bf16 peak known for it (known: ")
    assert not out.exists()
