"""Training the OSP system (tiny preset, CPU): SD3 and Open-Sora-Plan learn, the chain's video loss reaches SD3, the
adapters load into an OSP run and into plain diffusers, and adapters of one system are refused on the other."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.errors import InputError
from mora_agents.media import read_video, save_image, sha256_file, write_video
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.train import TrainConfig, read_dataset, train, validation_loss, write_sample
from mora_agents.train.trainer import build_agents, chain_loss, sample_chains
from test_train import frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = {"system": "osp", "preset": "tiny", "device": "cpu", "frames": 5, "batch_size": 2, "resolution": (32, 32)}
"""Open-Sora-Plan learns 5 frames (4k+1) at 32x32, both samples in every batch; SD3 samples in 2 steps."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two text-to-video samples of the OSP system: SD3's first frame, Open-Sora-Plan's 9-frame clip from it (one
    with the prompt the clip's step read, one without: the enhanced prompt stands in)."""
    root = tmp_path_factory.mktemp("osp-dataset")
    for i, (prompt, video_prompt) in enumerate([("a red fox in fresh snow", "a fox runs through snow"),
                                                ("a calm lake at dusk", None)]):
        clip = frames(i, count=9)
        save_image(Image.fromarray(clip[0]), root / f"first{i}.png")
        write_video(clip, 8, root / f"clip{i}.mp4")
        write_sample(root / "data", clip=root / f"clip{i}.mp4", task="text_to_video", prompt=prompt, seed=i,
                     enhanced_prompt=prompt, first_frame=root / f"first{i}.png",
                     **({"video_prompt": video_prompt} if video_prompt else {}))
    return root / "data"


@pytest.fixture(scope="module")
def adapters(dataset: Path, tmp_path_factory) -> Path:
    """`mora train --system osp`: 2 chain steps (LoRA, modulation) at a rate that moves the LoRA weights visibly."""
    out = tmp_path_factory.mktemp("osp-adapters") / "adapters"
    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(out), "--system", "osp", "--preset", "tiny",
                                      "--device", "cpu", "--frames", "5", "--resolution", "32x32", "--batch-size", "2",
                                      "--steps", "2", "--lr", "3e-3"])
    assert result.exit_code == 0, result.output
    return out


def test_each_osp_agent_learns_its_own_objective(dataset: Path, tmp_path: Path):
    """Per agent, SD3's flow-matching loss and Open-Sora-Plan's inpainting loss at fixed noise, timesteps and masks
    (4 draws per sample) fall by more than 15 % in 10 steps (full fine-tuning at 1e-3; measured: 26 % and 24 %)."""
    config = TrainConfig(**FAST, objective="per-agent", full=True, steps=10, lr=1e-3, lr_modulation=1e-3,
                         checkpoint_every=10, keep_checkpoints=0)
    before = validation_loss(dataset, config, seed=7, repeats=4)
    after = validation_loss(dataset, config, adapters=train(dataset, tmp_path / "out", config).out_dir, seed=7,
                            repeats=4)
    assert set(before) == set(after) == {"text_to_image", "image_to_video", "total"}
    for agent in ("text_to_image", "image_to_video"):
        assert after[agent] < 0.85 * before[agent], (agent, before, after)
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["agents"]["image_to_video"]["weights"] == "image_to_video/transformer.safetensors"


def test_thirty_chain_steps_lower_the_video_loss(dataset: Path, tmp_path: Path):
    """SD3 -> Open-Sora-Plan with the default chain objective (LoRA rank 16, modulation): at lr 3e-3 L_total at
    fixed noise (4 draws per sample) falls by more than 10 % in 30 steps (measured: 18 %)."""
    config = TrainConfig(**FAST, steps=30, lr=3e-3, lr_modulation=1e-3, checkpoint_every=30, keep_checkpoints=0,
                         gradient_checkpointing=False)
    before = validation_loss(dataset, config, seed=7, repeats=4)
    after = validation_loss(dataset, config, adapters=train(dataset, tmp_path / "out", config).out_dir, seed=7,
                            repeats=4)
    assert after["total"] < 0.9 * before["total"], (before, after)


def test_a_chain_step_sends_the_video_loss_to_sd3(dataset: Path):
    """L_total is Open-Sora-Plan's loss alone, yet SD3's LoRA weights and modulation token get a gradient, through
    the first frame it generated (the masked video's known frame): detach that frame and they get none, while
    Open-Sora-Plan still does. z lengthens each denoiser's text by one token (and Open-Sora-Plan's text mask)."""
    samples = read_dataset(dataset)
    chains = sample_chains(samples, ["text_to_image", "image_to_video"], "osp")
    assert chains == {0: ["text_to_image", "image_to_video"], 1: ["text_to_image", "image_to_video"]}
    config = TrainConfig(**FAST)

    def gradients(detach: bool) -> dict[str, tuple[float, float]]:
        agents = build_agents(config, samples, dataset, torch.device("cpu"), torch.float32)
        seen = {}

        def note(name: str, kwargs: dict) -> None:
            seen.setdefault(name, (kwargs["encoder_hidden_states"].shape[-2], kwargs.get("encoder_attention_mask")))

        for agent in agents:
            agent.generator.manual_seed(1)
            agent.denoiser.register_forward_hook(lambda m, args, kwargs, out, name=agent.name: note(name, kwargs),
                                                 with_kwargs=True)
            if detach and agent.name == "text_to_image":
                agent.generate = lambda *args, generate=agent.generate: generate(*args).detach()
        chain_loss(agents, agents, chains, [0, 1], config.sampling()).backward()
        sd3, osp = agents
        assert seen["text_to_image"] == (sd3.cache["embeds"].shape[1] + 1, None)
        assert seen["image_to_video"][0] == osp.cache["text"].shape[1] + 1
        assert seen["image_to_video"][1].shape[-1] == osp.cache["text_mask"].shape[1] + 1
        return {a.name: (sum(p.grad.norm().item() for p in a.denoiser.parameters() if p.grad is not None),
                         a.modulation.z.grad.norm().item() if a.modulation.z.grad is not None else 0.0)
                for a in agents}

    through, cut = gradients(False), gradients(True)
    assert through["text_to_image"][0] > 0 and through["text_to_image"][1] > 0, through
    assert cut["text_to_image"] == (0.0, 0.0)
    assert all(value > 0 for value in (*through["image_to_video"], *cut["image_to_video"]))


def test_the_card_names_the_system_and_its_models(adapters: Path):
    card = json.loads((adapters / "card.json").read_text())
    assert card["system"] == "osp" and card["preset"] == "tiny"
    assert {name: entry["model"] for name, entry in card["agents"].items()} == {
        "text_to_image": "sd3", "image_to_video": "open_sora_plan"}
    assert "add_q_proj" in card["lora"]["target_modules"] and "System `osp`" in (adapters / "card.md").read_text()
    for relative, sha in card["files"].items():
        assert sha256_file(adapters / relative) == sha


def _run(out: Path, adapters: Path | None, system: str = "osp"):
    options = RunOptions(preset="tiny", device="cpu", out=out, seed=3, adapters=adapters, system=system)
    return asyncio.run(run_request("a red fox in the snow", duration=1, options=options))


def test_the_osp_adapters_load_into_a_run_and_change_its_frames(adapters: Path, tmp_path: Path):
    plain, tuned = _run(tmp_path / "plain", None), _run(tmp_path / "tuned", adapters)
    assert not np.array_equal(read_video(plain.result)[0], read_video(tuned.result)[0])
    info = json.loads((tuned.run_dir / "run.json").read_text())
    assert info["adapters"] == str(adapters) and info["system"] == "osp"
    assert info["backends"]["text_to_image"] == ["sd3"] and info["backends"]["image_to_video"] == ["open-sora-plan"]


def test_adapters_of_one_system_are_refused_on_the_other(adapters: Path, dataset: Path, tmp_path: Path):
    """Before a run directory exists: OSP adapters on the svd system (the default), and SVD adapters on the osp
    system (checked on the SOP's calls, as `mora run` does); and before a validation loss."""
    from mora_agents.pipelines.adapters import CARD
    from mora_agents.sop.loader import get_sop
    from mora_agents.sop.calls import check_calls
    from mora_agents.tools.backends import system_overrides

    runs = tmp_path / "runs"
    command = ["run", "a fox", "--preset", "tiny", "--adapters", str(adapters), "--out", str(runs)]
    result = CliRunner().invoke(app, [*command, "--system", "svd"])
    assert result.exit_code == 2 and "trained the osp system's agents, but this run uses --system svd" in result.output
    assert not runs.exists()
    result = CliRunner().invoke(app, command)  # the SOPs' backends: the svd system's, checked once the task is known
    assert result.exit_code == 2, result.output
    assert "trained on sd3, but step 'image' runs text_to_image with backend sdxl" in result.output
    assert "--system osp" in result.output and not any(runs.glob("*/run.json"))
    svd = tmp_path / "svd-adapters"
    svd.mkdir()
    (svd / CARD).write_text(json.dumps({"preset": "tiny", "files": {}, "agents": {"image_to_video": {
        "model": "svd", "source": "stabilityai/stable-video-diffusion-img2vid-xt", "mode": "lora", "weights": "x"}}}))
    with pytest.raises(InputError, match="trained on svd-xt, but step 'segments' runs image_to_video with backend "
                                         "open-sora-plan .*--system svd"):
        check_calls(get_sop("text_to_video"), system_overrides("osp", {}), svd)
    check_calls(get_sop("text_to_video"), system_overrides("osp", {}), adapters)  # its own system: fine
    with pytest.raises(InputError, match="trained the osp system's agents, not the svd system's"):
        validation_loss(dataset, TrainConfig(**{**FAST, "system": "svd", "frames": 4}), adapters=adapters)


def test_sd3s_lora_loads_in_plain_diffusers(adapters: Path, tiny):
    """diffusers' own `StableDiffusion3Pipeline.load_lora_weights` loads the text-to-image agent's file; with z
    attached as docs/training.md shows, it draws the frame `text_to_image(backend="sd3", adapters=...)` draws (up to
    the rounding of a merged LoRA: at most 1 level); z alone, without the LoRA, draws another."""
    from safetensors.torch import load_file

    from mora_agents.models.tiny_backends import sd3
    from mora_agents.tools import text_to_image

    ours = np.asarray(Image.open(text_to_image("a red fox", seed=4, backend="sd3", adapters=str(adapters)).path))

    def plain(lora: bool) -> np.ndarray:
        pipe = sd3()
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()
        if lora:
            pipe.load_lora_weights(adapters / "text_to_image")
        z = load_file(adapters / "text_to_image" / "modulation.safetensors")["z"]

        def append_z(module, args, kwargs):
            states = kwargs["encoder_hidden_states"]
            kwargs["encoder_hidden_states"] = torch.cat([states, z.to(states).expand(len(states), 1, -1)], dim=1)
            return args, kwargs

        pipe.transformer.register_forward_pre_hook(append_z, with_kwargs=True)
        image = pipe("a red fox", width=64, height=64, num_inference_steps=2, guidance_scale=7.0,
                     max_sequence_length=256, generator=torch.Generator("cpu").manual_seed(4)).images[0]
        return np.asarray(image)

    assert np.abs(plain(True).astype(int) - ours).max() <= 1
    assert np.abs(plain(False).astype(int) - ours).max() > 1


def test_the_system_reaches_the_trainings_and_runs_of_the_loop_and_the_ablations(tmp_path: Path, monkeypatch):
    """`mora train --iterations` and `mora train ablations` with `--system osp`: the candidates are made on the OSP
    system, and the settings they record train its agents (the stage after is cut off here)."""
    from mora_agents.data import ablations, loop

    made = []

    def stop(seeds, data, make, options, *args) -> None:
        made.append(options.system)
        raise InputError("stopped after the settings")

    monkeypatch.setattr(loop, "make_candidates", stop)
    monkeypatch.setattr(ablations, "make_candidates", stop)
    (tmp_path / "seeds.txt").write_text("a red fox running through snow\na lighthouse in a storm\n")
    common = ["--preset", "tiny", "--device", "cpu", "--system", "osp", "--frames", "5", "--resolution", "32x32"]
    for command, record in ((["--iterations", "1", "--prompts", str(tmp_path / "seeds.txt"), "--out",
                              str(tmp_path / "loop")], tmp_path / "loop" / "loop.json"),
                            (["ablations", str(tmp_path / "seeds.txt"), "--out", str(tmp_path / "ablations")],
                             tmp_path / "ablations" / "ablations.json")):
        result = CliRunner().invoke(app, ["train", *command, *common])
        assert result.exit_code == 2 and "stopped after the settings" in result.output, result.output
        assert json.loads(record.read_text())["train"]["system"] == "osp"
    assert made == ["osp", "osp"]
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "out"), "--system", "osp",
                                      "--agents", "image_to_image", "--preset", "tiny"])
    assert result.exit_code == 2 and "--agents: unknown agent image_to_image for the osp system" in result.output
    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "out"), "--system", "osp",
                                      "--frames", "8", "--preset", "tiny"])
    assert result.exit_code == 2 and "--frames 8: the osp system's image-to-video agent" in result.output
