"""The speed stack and many GPUs, on the tiny pipelines on the CPU: `exact` changes nothing; each option runs and does
what it says (a cache skips blocks, an attention backend is set, compilation wraps the denoiser's blocks, a distilled
LoRA loads with its steps and guidance); what a device cannot run is refused in one line before a run; the settings
reach run.json and the transcript; and `--gpus 2` (diffusers' Ulysses context parallelism over gloo) gives the frames
of one process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.errors import InputError, ModelNotAvailable
from mora_agents.media import load_image
from mora_agents.pipelines import parallel
from mora_agents.pipelines.loading import finish_pipeline, load_pipeline
from mora_agents.pipelines.speed import REPEATED_BLOCKS, SpedPipeline, check_speed, resolve_speed
from mora_agents.runs.runner import RunOptions, run_request, run_speed
from mora_agents.settings import Speed, use_settings
from mora_agents.tools import connect_images, image_to_video, text_to_image
from mora_agents.tools.defaults import backend_defaults

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> str:
    with use_settings(preset="tiny", device="cpu", out_dir=tmp_path_factory.mktemp("start")):
        return text_to_image("a red fox in the snow", seed=1).path


def _mlp_calls(model: torch.nn.Module) -> list[int]:
    """A counter of the MLP calls of FLUX's single-stream blocks (a block the cache skips makes none)."""
    calls = [0]
    for block in model.single_transformer_blocks:
        block.proj_mlp.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _hooks(model: torch.nn.Module) -> set[str]:
    """The diffusers hooks on a model and its submodules, by name."""
    return {name for module in model.modules() if (hooks := getattr(module, "_diffusers_hook", None))
            for name in hooks.hooks}


def test_exact_changes_nothing() -> None:
    from mora_agents.models import tiny_backends

    assert resolve_speed("exact", {}, CPU) == Speed()
    pipe = tiny_backends.wan_ti2v()
    finished = finish_pipeline("wan_ti2v", pipe, "cpu", speed=resolve_speed("exact", {}, CPU))
    assert finished is pipe  # no proxy, no hooks, nothing compiled
    assert not _hooks(pipe.transformer)
    assert all(block._compiled_call_impl is None for block in pipe.transformer.blocks)


def test_first_block_cache_skips_blocks_the_same_way_in_every_call(tiny) -> None:
    counts = {}
    for name, speed in [("exact", Speed()),
                        ("cached", resolve_speed("exact", {"cache": "first-block", "cache_threshold": "5"}, CPU))]:
        with use_settings(speed=speed):
            calls = _mlp_calls(load_pipeline("flux_schnell").transformer)
            counts[name] = []
            for _ in "ab":
                text_to_image("a fox", backend="flux-schnell", steps=6, seed=2)
                counts[name].append(calls[0] - sum(counts[name]))
    assert counts["exact"] == [6, 6]  # every block in every step
    assert counts["cached"] == [1, 1]  # the first step computes them all, the rest reuse it: afresh in every call


def test_each_model_gets_its_own_cache(tiny, start: str) -> None:
    with use_settings(speed=resolve_speed("fast", {"compile": "none"}, CPU)):
        sky = load_pipeline("skyreels_df")
        flux = load_pipeline("flux_schnell")
        svd = load_pipeline("svd")
        image_to_video(start, prompt="a fox", backend="framepack", seconds=1, seed=3)  # a pipeline with no context
    assert isinstance(sky, SpedPipeline) and "taylorseer_cache" in _hooks(sky.transformer)  # no FBC metadata for it
    assert {"fbc_leader_block_hook", "fbc_block_hook"} <= _hooks(flux.transformer)
    assert not isinstance(svd, SpedPipeline)  # a UNet: no cache in diffusers


def test_attention_backend_and_compilation_apply_to_the_denoiser(tiny, start: str, monkeypatch) -> None:
    compile_ = torch.nn.Module.compile  # the eager backend: dynamo traces the blocks without inductor's C++ build
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compile_(self, *a, **k, backend="eager"))
    speed = resolve_speed("exact", {"attention": "native", "compile": "regional"}, CPU)
    with use_settings(speed=speed):
        pipe = load_pipeline("wan_ti2v")
        clip = image_to_video(start, prompt="a fox", backend="wan2.2-ti2v-5b", seed=4)
        svd = load_pipeline("svd")
    assert all(block._compiled_call_impl is not None for block in pipe.transformer.blocks)
    assert {b.attn1.processor._attention_backend for b in pipe.transformer.blocks} == {"native"}
    svd_blocks = [m for m in svd.unet.modules() if type(m).__name__ in REPEATED_BLOCKS["svd"]]
    assert svd_blocks and all(m._compiled_call_impl is not None for m in svd_blocks)  # its blocks, named by us
    with use_settings():  # dynamo's eager backend and the default attention compute exactly the same
        assert image_to_video(start, prompt="a fox", backend="wan2.2-ti2v-5b", seed=4).sha256 == clip.sha256


@pytest.mark.parametrize(("profile", "options", "message"), [
    ("turbo", {}, "--speed turbo: unknown (choose from exact, fast, fastest)"),
    ("fast", {"cache": "mag"}, "--speed-option cache=mag: choose from none, auto, first-block, taylorseer"),
    ("fast", {"quantize": "fp8"}, "--speed-option quantize=fp8: needs a CUDA GPU of compute capability 8.9 or newer "
                                  "(this run's device: cpu)"),
    ("fast", {"quantize": "int8"}, "--speed-option quantize=int8: needs a CUDA GPU (this run's device: cpu)"),
    ("fast", {"attention": "flash"}, "--speed-option attention=flash: needs a CUDA GPU (this run's device: cpu)"),
    ("fast", {"attention": "fastest"}, "--speed-option attention=fastest: unknown"),
    ("fast", {"cache_threshold": "-1"}, "--speed-option cache_threshold=-1: a positive number below 10 is needed"),
    ("fast", {"turbo": "on"}, "--speed-option turbo: unknown (options: cache, compile, quantize"),
])
def test_what_cannot_run_is_refused_in_one_line(profile: str, options: dict, message: str) -> None:
    with pytest.raises(InputError) as error:
        resolve_speed(profile, options, CPU)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_fastest_leaves_out_fp8_off_a_gpu_and_says_so() -> None:
    speed = resolve_speed("fastest", {}, CPU)
    assert speed.quantize == "none" and "no fp8 weights on cpu" in speed.notes[0]
    with pytest.raises(InputError, match="--gpus 2: with --memory-profile resident"):
        run_speed("exact", {}, "cpu", 2, "24gb")
    with pytest.raises(InputError, match="parallel=ring: needs CUDA"):
        run_speed("exact", {"parallel": "ring"}, "cpu", 2, "resident")
    assert run_speed("fast", {}, "cpu", 2, "resident").cache == "none"  # each GPU would decide on its own part


def _tiny_lora(path: Path) -> Path:
    """A LoRA for the tiny Wan 2.1 FLF2V transformer, in diffusers' format (the loading code is the real one)."""
    from peft import LoraConfig, get_peft_model_state_dict

    from mora_agents.models import tiny_backends

    transformer = tiny_backends.wan_flf2v().transformer
    transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k"], init_lora_weights=False))
    save_file({f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(transformer).items()}, path)
    return path


def test_a_distilled_lora_loads_with_its_steps_and_guidance(tiny, tmp_path: Path, start: str, monkeypatch) -> None:
    speed = resolve_speed("exact", {"distill": "lightx2v"}, CPU)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelNotAvailable, match=r"`hf download lightx2v/Wan2.1-I2V-14B-480P-StepDistill-CfgDistill-"
                       r"Lightx2v loras/Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors`"):
        check_speed(speed, ["sdxl", "wan2.1-flf2v"])
    with pytest.raises(InputError, match="none of this run's backends \\(sdxl, svd-xt\\) has a distilled LoRA"):
        check_speed(speed, ["sdxl", "svd-xt"])
    monkeypatch.setenv("MORA_MODEL_LIGHTX2V_FLF2V", str(_tiny_lora(tmp_path / "lora.safetensors")))
    with use_settings(speed=speed):
        defaults = backend_defaults("tiny", "connect_images", "wan2.1-flf2v")
        pipe = load_pipeline("wan_flf2v")
        clip = connect_images(start, start, prompt="a fox turns", backend="wan2.1-flf2v", seed=5)
    assert (defaults["steps"], defaults["guidance_scale"]) == (4, 1.0)
    assert "distill" in pipe.transformer.peft_config and clip.frames == 9


def test_a_run_records_its_speed_and_refuses_a_missing_lora_before_any_work(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "a fox", "--preset", "tiny", "--device", "cpu", "--task", "text_to_video",
                                      "--duration", "1", "--out", str(out), "--speed", "fast",
                                      "--speed-option", "compile=none"])
    assert result.exit_code == 0, result.output
    run_dir = next(out.iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["speed"], info["speed_options"], info["gpus"]) == ("fast", {"compile": "none"}, 1)
    assert info["speed_settings"]["cache"] == "auto" and info["speed_settings"]["compile"] == "none"
    notes = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    assert any(r["type"] == "Speed" and r["message"]["text"].startswith("fast: cache=auto") for r in notes)
    bad = CliRunner().invoke(app, ["run", "a fox", "--preset", "tiny", "--device", "cpu", "--out", str(out),
                                   "--speed-option", "cache"])
    assert bad.exit_code == 2 and "--speed-option cache: expected NAME=VALUE" in bad.output
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "more", speed_options={"distill": "lightx2v"})
    with pytest.raises(InputError, match="distilled LoRA for wan2.1-flf2v .* is not on this machine"):
        asyncio.run(run_request("a fox", task="text_to_video_keyframes", duration=2, options=options))
    assert not (tmp_path / "more").exists() or not any((tmp_path / "more").iterdir())


def test_two_processes_split_the_denoiser_and_make_the_same_frames(tiny) -> None:
    """Ulysses attention over gloo: each rank holds half the sequence inside the blocks, and the image is that of one
    process (up to the rounding noise that any two calls of the tiny pipelines show on this machine)."""
    made = {}
    for gpus in (1, 2):
        with use_settings(gpus=gpus):
            made[gpus] = np.asarray(load_image(text_to_image("a fox", backend="flux-schnell", seed=6).path), float)
    workers = parallel._group.workers
    assert len(workers) == 1 and workers[0].poll() is None  # the worker keeps its pipelines for the next call
    assert np.abs(made[1] - made[2]).max() <= 2 and np.abs(made[1] - made[2]).mean() < 0.25
    logs = parallel._group.logs
    parallel._group.close()
    parallel._group = None
    assert workers[0].wait(timeout=60) == 0 and not logs.exists()  # a clean stop leaves no log folder behind


def test_the_split_transformer_computes_what_one_process_does(tmp_path: Path) -> None:
    """The transformer alone, the same input on both ranks: Ulysses over gloo gives one process's output exactly."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-port", str(_free_port()), str(script)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[:6000]
    assert result.stdout.count("max difference 0.0 with half the sequence in each block") == 2


RANKS = """
import os, sys
import torch, torch.distributed as dist
from mora_agents.models.tiny_backends import wan_ti2v
from mora_agents.pipelines.parallel import make_parallel
from mora_agents.settings import Speed

dist.init_process_group("gloo")
model = wan_ti2v().transformer.eval()
x, t, text = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([500]), \
    torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    alone = model(x, t, text, return_dict=False)[0]
    make_parallel(model, 2, Speed(), torch.device("cpu"))
    lengths = []
    model.blocks[1].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    split = model(x, t, text, return_dict=False)[0]
half = lengths == [3 * 8 * 8 // 2]
print(f"max difference {(split - alone).abs().max().item()} with {'half' if half else 'all'} the sequence in each block")
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # gloo's client side of the store sometimes aborts in the interpreter's teardown once rank 0 has gone
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_gpu_check_script_runs_both_parts_on_the_cpu(tmp_path: Path) -> None:
    """`benchmarks/gpu_check.sh --dry-run` runs the very commands a GPU loan runs (tiny models, no compiling): both
    parts succeed and write their tables, so the script a short loan depends on cannot rot unseen."""
    out = tmp_path / "RESULTS.md"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), "--dry-run", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1",  # its `mora` is this interpreter's
                               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text()
    assert "Failed (exit code" not in report and "Did not finish" not in report, report
    assert "| svd_segment | ours+fastest" in report and "| image_to_video | lora | 24gb |" in report, report
