"""Training (tiny preset, CPU): the dataset format, overfitting, self-modulation, resume after SIGKILL, DDP through
`accelerate launch`, and runs with the trained adapters."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.errors import InputError
from mora_agents.media import read_video, save_image, sha256_file, write_video
from mora_agents.pipelines.adapters import card_sha256
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript
from mora_agents.train import TrainConfig, load_hf_dataset, read_dataset, train, validation_loss, write_sample
from mora_agents.train.trainer import build_agents, chain_loss, param_groups, sample_chains, set_modulated_rates

pytestmark = pytest.mark.usefixtures("one_torch_thread")
AGENTS = ("text_to_image", "image_to_image", "image_to_video")
FAST = {"preset": "tiny", "device": "cpu", "frames": 4, "batch_size": 2, "resolution": (32, 32)}
"""Small steps: 4 clip frames at 32x32, both samples in every batch (and, by the tiny preset's default, 2 sampling
steps of an upstream agent in the chain)."""


def frames(seed: int, count: int = 8, size: int = 64) -> np.ndarray:
    """A smooth moving pattern (codec-friendly), different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 6, 3)
    return np.stack([np.stack([127 + 120 * np.sin(4 * x + 3 * y + p + 0.4 * i) for p in phase], -1)
                     for i in range(count)]).astype(np.uint8)


def make_dataset(folder: Path, scratch: Path) -> Path:
    """Two samples as the data stage writes them: a text-to-video one (first frame, clip) and one with an edit step
    (the text-to-image agent's frame, edited, then animated)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        clip = frames(i)
        save_image(_image(clip[0]), scratch / f"first{i}.png")
        write_video(clip, 7, scratch / f"clip{i}.mp4")
    save_image(_image(frames(5)[0]), scratch / "edited1.png")
    write_sample(folder, clip=scratch / "clip0.mp4", task="text_to_video", prompt="a fox", seed=1,
                 enhanced_prompt="a red fox in fresh snow, morning light", first_frame=scratch / "first0.png",
                 votes=[{"judge": "metrics:clip", "ranking": [0, 1]}], decision={"by": "judges", "accepted": 0})
    write_sample(folder, clip=scratch / "clip1.mp4", task="text_to_video", prompt="a lake", seed=2,
                 enhanced_prompt="a calm lake at dusk", first_frame=scratch / "first1.png",
                 source_frame=scratch / "first1.png", edited_frame=scratch / "edited1.png",
                 instruction="make it winter", iteration=0, decision={"by": "alice", "accepted": 2},
                 judge_notes="the data stage's own field")
    return folder


def _image(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "data", root / "scratch")


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory) -> Path:
    """Adapters from 4 default-setting steps (LoRA, modulation) of the tiny agents."""
    out = tmp_path_factory.mktemp("trained") / "adapters"
    train(dataset, out, TrainConfig(**FAST, steps=4))
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{path.parent.name}/{path.name}:{name}": tensor for path in sorted(folder.glob("*/*.safetensors"))
            for name, tensor in load_file(path).items()}


# -- the dataset ----------------------------------------------------------------------------------------------


def test_dataset_round_trip_and_hugging_face_loading(dataset: Path, tmp_path: Path):
    samples = read_dataset(dataset)
    assert [s.id for s in samples] == ["000001", "000002"]
    assert samples[0].votes == [{"judge": "metrics:clip", "ranking": [0, 1]}]  # opaque fields kept as written
    assert samples[1].decision == {"by": "alice", "accepted": 2} and samples[1].judge_notes == "the data stage's own field"
    assert samples[1].source_frame == samples[1].first_frame  # one file stored once for two fields
    assert samples[1].clip_start == samples[1].edited_frame and samples[0].clip_start == samples[0].first_frame
    hf = load_hf_dataset(dataset, cache_dir=tmp_path / "hf")
    assert hf.num_rows == 2 and {"video", "enhanced_prompt", "edited_frame", "votes"} <= set(hf.column_names)
    assert Path(hf[1]["video"]["path"]) == dataset / "000002" / "clip.mp4"
    assert hf[1]["instruction"] == "make it winter" and hf[0]["edited_frame"] is None


def test_write_sample_rejects_bad_input_without_writing(dataset: Path, tmp_path: Path):
    before = (dataset / "metadata.jsonl").read_bytes()
    with pytest.raises(InputError, match="source_frame, edited_frame and instruction go together"):
        write_sample(dataset, clip=dataset / "000001/clip.mp4", task="t", prompt="p", seed=0,
                     first_frame=dataset / "000001/first_frame.png", enhanced_prompt="e",
                     edited_frame=dataset / "000001/first_frame.png")
    with pytest.raises(InputError, match="no such file"):
        write_sample(dataset, clip=tmp_path / "none.mp4", task="t", prompt="p", seed=0,
                     first_frame=dataset / "000001/first_frame.png", enhanced_prompt="e")
    assert (dataset / "metadata.jsonl").read_bytes() == before and not (dataset / "000003").exists()


def test_a_dataset_with_a_missing_file_is_one_line_and_exit_2(dataset: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    (broken / "000002" / "edited_frame.png").unlink()
    result = CliRunner().invoke(app, ["train", str(broken), "--out", str(tmp_path / "out"), "--preset", "tiny"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert errors == [f"mora: error: dataset {broken / 'metadata.jsonl'} line 2: edited_frame "
                      f"000002/edited_frame.png: no such file"]
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    (broken / "000001" / "clip.mp4").write_bytes(b"not a video")
    result = CliRunner().invoke(app, ["train", str(broken), "--out", str(tmp_path / "out"), "--preset", "tiny"])
    assert result.exit_code == 2 and "line 1: file_name 000001/clip.mp4: not a readable video" in result.output


# -- what training does -------------------------------------------------------------------------------------


def test_thirty_steps_overfit_two_samples(dataset: Path, tmp_path: Path):
    """Each agent's loss at fixed noise and timesteps (4 draws per sample) falls below half of what it was.

    Full fine-tuning at lr 1e-3, at 64x64 (8x8 latents; measured: 27-36 % of the loss left): LoRA on these random
    miniatures (one attention block per UNet) has too little capacity to memorise two samples in 30 steps (it moves
    the loss by a few percent)."""
    config = TrainConfig(**{**FAST, "resolution": (64, 64)}, objective="per-agent", full=True, steps=30, lr=1e-3, lr_modulation=1e-3,
                         checkpoint_every=30, keep_checkpoints=0)
    before = validation_loss(dataset, config, seed=7, repeats=4)
    result = train(dataset, tmp_path / "out", config)
    after = validation_loss(dataset, config, adapters=result.out_dir, seed=7, repeats=4)
    assert set(before) == set(after) == {*AGENTS, "total"}
    for agent in AGENTS:
        assert after[agent] < 0.5 * before[agent], (agent, before[agent], after[agent])
    assert [entry["step"] for entry in result.losses] == list(range(1, 31))


def test_thirty_chain_steps_lower_the_video_loss(dataset: Path, tmp_path: Path):
    """The default path (the chain objective, LoRA rank 16 with modulation) learns: at lr 3e-3 L_total at fixed
    noise (4 draws per sample) falls by more than 10 % in 30 steps at 64x64 (8x8 latents; measured: 18 %)."""
    config = TrainConfig(**{**FAST, "resolution": (64, 64)}, steps=30, lr=3e-3, lr_modulation=1e-3, checkpoint_every=30, keep_checkpoints=0,
                         gradient_checkpointing=False)
    before = validation_loss(dataset, config, seed=7, repeats=4)
    after = validation_loss(dataset, config, adapters=train(dataset, tmp_path / "out", config).out_dir, seed=7,
                            repeats=4)
    assert set(before) == set(after) == {"total"}
    assert after["total"] < 0.9 * before["total"], (before, after)


def test_a_chain_step_sends_the_video_loss_to_the_upstream_agents(dataset: Path):
    """L_total is the video agent's loss alone, yet it gives the text-to-image and image-to-image agents' LoRA
    weights and modulation tokens a gradient, through the frames they generated: cut that path (their output
    detached) and they get none, while the video agent still does."""
    config = TrainConfig(**FAST)
    samples = read_dataset(dataset)
    chains = sample_chains(samples, list(AGENTS), "svd")
    assert chains == {0: ["text_to_image", "image_to_video"], 1: list(AGENTS)}  # sample 2's edit source: its first frame

    def gradients(detach: bool) -> dict[str, tuple[float, float]]:
        agents = build_agents(config, samples, dataset, torch.device("cpu"), torch.float32)
        for agent in agents:
            agent.generator.manual_seed(1)
            if detach and agent.name != "image_to_video":
                agent.generate = lambda *args, generate=agent.generate: generate(*args).detach()
        chain_loss(agents, agents, chains, [0, 1], config.sampling()).backward()
        return {a.name: (sum(p.grad.norm().item() for p in a.denoiser.parameters() if p.grad is not None),
                         a.modulation.z.grad.norm().item() if a.modulation.z.grad is not None else 0.0)
                for a in agents}

    through, cut = gradients(False), gradients(True)
    for agent in AGENTS:
        assert through[agent][0] > 0 and through[agent][1] > 0, (agent, through)
    assert cut["text_to_image"] == cut["image_to_image"] == (0.0, 0.0)
    assert cut["image_to_video"][0] > 0 and cut["image_to_video"][1] > 0


def test_the_video_agents_differentiable_image_token_is_the_pipelines():
    """In the chain, SVD's conditioning token is computed from a generated frame in torch (so gradients pass): it
    equals what the pipeline's own `_encode_image` makes of the same picture."""
    from PIL import Image

    from mora_agents.models import tiny
    from mora_agents.train.agents import ImageToVideoAgent

    pipe = tiny.stable_video_diffusion()
    agent = ImageToVideoAgent(pipe, torch.device("cpu"), TrainConfig(preset="tiny", frames=4))
    image = Image.fromarray(frames(3, count=1, size=48)[0])
    with torch.no_grad():
        ours = agent.image_tokens(pipe.video_processor.preprocess(image, height=48, width=48))
        torch.testing.assert_close(ours, pipe._encode_image(image, "cpu", 1, False), rtol=0, atol=1e-6)


def test_alpha_scales_each_agents_rate_and_z_learns(dataset: Path):
    """After a step, agent i's weights learn at lr * ||z_i|| / n, with z_i updated by its own (non-zero) gradient."""
    config = TrainConfig(**FAST)
    samples = read_dataset(dataset)
    agents = build_agents(config, samples, dataset, torch.device("cpu"), torch.float32)
    optimizer = torch.optim.AdamW(param_groups(agents, config))
    initial = {a.name: a.modulation.z.detach().clone() for a in agents}
    for agent in agents:
        agent([0, 1]).backward()
        assert agent.modulation.z.grad is not None and agent.modulation.z.grad.abs().sum() > 0
    optimizer.step()
    set_modulated_rates(optimizer, agents, config.lr)
    rates = {group["agent"]: group["lr"] for group in optimizer.param_groups}
    for agent in agents:
        z = agent.modulation.z.detach()
        assert not torch.equal(z, initial[agent.name])
        assert rates[agent.name] == pytest.approx(config.lr * z.norm().item() / len(AGENTS), rel=1e-6)
        assert rates[agent.name + ".z"] == config.lr_modulation


def test_the_modulation_token_lengthens_the_conditioning_by_one(dataset: Path):
    samples = read_dataset(dataset)
    for modulation in (True, False):
        agents = build_agents(TrainConfig(**FAST, modulation=modulation, agents=["text_to_image", "image_to_video"]),
                              samples, dataset, torch.device("cpu"), torch.float32)
        for agent in agents:
            seen = []
            agent.denoiser.register_forward_hook(
                lambda m, args, kwargs, out: seen.append(kwargs["encoder_hidden_states"].shape[1]), with_kwargs=True)
            with torch.no_grad():
                agent([0])
            assert seen == [agent.cache["embeds"].shape[1] + modulation]
            assert (agent.modulation is not None) == modulation
    # the ablation's random start: another direction, the norm of the [Mod] embedding (so alpha starts the same)
    text, random = (build_agents(TrainConfig(**FAST, objective="per-agent", modulation_init=init,
                                             agents=["text_to_image"]), samples, dataset,
                                 torch.device("cpu"), torch.float32)[0].modulation.z.detach() for init in ("text", "random"))
    assert random.norm().item() == pytest.approx(text.norm().item(), rel=1e-6)
    assert torch.nn.functional.cosine_similarity(text.flatten(), random.flatten(), dim=0).abs() < 0.5


def test_the_24gb_profile_trains_the_same_weights(dataset: Path, tmp_path: Path):
    """One sample at a time (the 24gb profile's micro-batches) gives the batch's gradient: the same weights as the
    resident profile within float rounding (2e-6). The profile is the per-agent objective's (a chain keeps its
    agents on the device together)."""
    config = TrainConfig(**FAST, objective="per-agent", steps=2, keep_checkpoints=0)
    resident = train(dataset, tmp_path / "resident", config)
    offloaded = train(dataset, tmp_path / "24gb", config.model_copy(update={"memory_profile": "24gb"}))
    for name, tensor in weights(resident.out_dir).items():
        torch.testing.assert_close(weights(offloaded.out_dir)[name], tensor, rtol=0, atol=2e-6, msg=name)
    for a, b in zip(resident.losses, offloaded.losses):
        assert a == pytest.approx(b, rel=1e-5)


def test_killed_training_resumes_to_the_same_weights(dataset: Path, tmp_path: Path):
    """SIGKILL after the checkpoint of step 3 (mid-epoch), then --resume: the final weights equal an uninterrupted
    run's within 1e-6 (CPU, one thread, deterministic), and so do the per-step losses."""
    options = ["--preset", "tiny", "--device", "cpu", "--frames", "4", "--resolution", "32x32", "--batch-size", "1",
               "--steps", "9", "--checkpoint-every", "3", "--seed", "5"]
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "mora_agents", "train", str(dataset), "--out", str(out), *options],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-000003").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, "training ended or stalled before step 3"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "card.json").exists()
    result = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    reference = train(dataset, tmp_path / "reference", TrainConfig(**{**FAST, "batch_size": 1}, steps=9,
                                                                   checkpoint_every=3, seed=5))
    resumed, expected = weights(out), weights(reference.out_dir)
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    card = json.loads((out / "card.json").read_text())
    assert [e["step"] for e in card["losses"]] == list(range(1, 10))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000006", "step-000009"]  # the last 2
    for got, want in zip(card["losses"], reference.losses):
        assert got == pytest.approx(want, abs=1e-6)


def test_two_cpu_processes_train_as_one_with_the_global_batch(dataset: Path, tmp_path: Path):
    """`--num-processes 2` runs DDP on CPU (gloo) under `accelerate launch`: the global batch of 2 is one sample per
    process, the progress comes back step by step, and TensorBoard gets the losses; a batch the processes cannot
    share equally is refused before any starts."""
    out = tmp_path / "ddp"
    options = ["--preset", "tiny", "--device", "cpu", "--steps", "2", "--frames", "4", "--resolution", "32x32",
               "--agents", "image_to_image,image_to_video", "--num-processes", "2"]
    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(out), *options, "--batch-size", "3"])
    assert result.exit_code == 2 and "--batch-size 3: the global batch is shared equally by the 2 processes" in result.output
    assert not out.exists()
    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(out), *options, "--batch-size", "2",
                                      "--report-to", "tensorboard"], env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["environment"]["processes"] == 2 and [e["step"] for e in card["losses"]] == [1, 2]
    assert set(card["agents"]) == {"image_to_image", "image_to_video"} and card["hyperparameters"]["batch_size"] == 2
    assert "2/2" in result.output  # the progress bar, fed by the main process's reports
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "mora-train")).Reload()
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2]


# -- using what was trained ---------------------------------------------------------------------------------


def test_the_card_describes_the_training(trained: Path, dataset: Path):
    card = json.loads((trained / "card.json").read_text())
    assert card["preset"] == "tiny" and set(card["agents"]) == set(AGENTS) and card["lora"]["rank"] == 16
    assert card["dataset"]["sha256"] and card["dataset"]["per_agent"] == {
        "text_to_image": 2, "image_to_image": 1, "image_to_video": 2}
    assert card["hyperparameters"]["lr"] == 1e-5 and card["hyperparameters"]["ema_decay"] == 0.999
    for relative, sha in card["files"].items():
        assert sha256_file(trained / relative) == sha
    for agent, token in card["modulation"].items():
        z = load_file(trained / agent / "modulation.safetensors")["z"]
        assert token["norm"] == pytest.approx(z.norm().item(), rel=1e-5)
    assert "| text_to_image |" in (trained / "card.md").read_text()


def _run(out: Path, adapters: Path | None):
    options = RunOptions(preset="tiny", device="cpu", out=out, seed=3, adapters=adapters,
                         overrides={"image_to_video": {"frames": 6}})
    return asyncio.run(run_request("a red fox in the snow", duration=1, options=options))


def check_adapters_change_a_run(adapters: Path, scratch: Path) -> None:
    """A run with `adapters` makes another video than the same run without, and records them (also used by the
    data-free loop's tests)."""
    plain, tuned = _run(scratch / "plain", None), _run(scratch / "tuned", adapters)
    assert sha256_file(plain.result) != sha256_file(tuned.result)
    assert not np.array_equal(read_video(plain.result)[0], read_video(tuned.result)[0])
    info = json.loads((tuned.run_dir / "run.json").read_text())
    assert info["adapters"] == str(adapters) and info["adapters_sha256"] == card_sha256(adapters)
    note = read_transcript(tuned.run_dir / "transcript.jsonl")[0]
    assert note.type == "Adapters" and str(adapters) in note.message["text"] and card_sha256(adapters) in note.message["text"]


def test_a_run_with_adapters_differs_and_records_them(trained: Path, tmp_path: Path):
    check_adapters_change_a_run(trained, tmp_path)


def _calls(run_dir: Path) -> dict[str, dict]:
    """A run's tool calls by tool name (their arguments) and outputs (`output`: the artifact's path)."""
    calls, names = {}, {}
    for line in (run_dir / "transcript.jsonl").read_text().splitlines():
        record = json.loads(line)
        for part in record.get("message", {}).get("content", []) if record["type"].startswith("ToolCall") else []:
            if record["type"] == "ToolCallRequestEvent":
                names[part["id"]] = part["name"]
                calls[part["name"]] = json.loads(part["arguments"])
            else:
                calls[names[part["call_id"]]]["output"] = run_dir / json.loads(part["content"])["path"]
    return calls


def test_plain_diffusers_loads_the_adapters_and_makes_the_same_frames(trained: Path, tmp_path: Path):
    """The adapters in diffusers' own layout: in a process that never imports mora_agents, SDXL's
    `load_lora_weights` (and peft's functions for SVD, which has no LoRA loader) with the modulation token attached
    as docs/training.md shows reproduce a `mora run --adapters` run's first frame and, from it, its clip (up to the
    rounding of a merged LoRA: at most 1 level in under 0.1 % of the values; without the adapters they differ by
    about 4 levels on average)."""
    from PIL import Image

    from mora_agents.media import fit_image, load_image
    from mora_agents.models import tiny
    from mora_agents.pipelines.loading import load_pipeline
    from mora_agents.settings import use_settings
    from mora_agents.tools.defaults import DEFAULTS

    base = tiny.sdxl_base()
    for name, pipe in (("sdxl_base", base), ("sdxl_refiner", tiny.sdxl_refiner(base)),
                       ("svd", tiny.stable_video_diffusion())):
        pipe.save_pretrained(tmp_path / "models" / name)
    run = _run(tmp_path / "runs", trained)
    calls = _calls(run.run_dir)
    t2i, i2v = calls["text_to_image"], calls["image_to_video"]
    job = {"text_to_image": {**DEFAULTS["tiny"]["text_to_image"], "prompt": t2i["prompt"], "seed": t2i["seed"]},
           "image_to_video": {**DEFAULTS["tiny"]["image_to_video"], "image": i2v["image"], "seed": i2v["seed"],
                              "frames": i2v["frames"]}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "plain_diffusers.py"), str(tmp_path / "models"),
                           str(trained), str(tmp_path / "job.json"), str(tmp_path / "plain.npz")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    plain = np.load(tmp_path / "plain.npz")
    image = np.asarray(Image.open(t2i["output"]).convert("RGB")).astype(int)
    assert np.abs(plain["image"] - image).max() <= 1 and (plain["image"] != image).mean() < 1e-3
    # the clip: mora's image-to-video model with the adapters, called as the run called it, made the run's clip ...
    p = job["image_to_video"]
    with use_settings(preset="tiny", device="cpu", adapters=trained), torch.inference_mode():
        ours = load_pipeline("svd")(
            fit_image(load_image(p["image"]), p["width"], p["height"]), width=p["width"], height=p["height"],
            num_frames=p["frames"], num_inference_steps=p["steps"], fps=p["fps"], motion_bucket_id=p["motion_bucket_id"],
            noise_aug_strength=p["noise_aug_strength"], decode_chunk_size=p["decode_chunk_size"],
            generator=torch.Generator("cpu").manual_seed(p["seed"]), output_type="np").frames[0]
    ours = (np.clip(ours, 0, 1) * 255).round().astype(np.uint8)
    write_video(ours, p["fps"], tmp_path / "ours.mp4")
    np.testing.assert_array_equal(read_video(tmp_path / "ours.mp4")[0], read_video(i2v["output"])[0])
    # ... and plain diffusers makes the same frames (merged-LoRA rounding: 1 level in a few values)
    difference = np.abs(plain["frames"].astype(int) - ours)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_a_batch_line_runs_with_its_own_adapters_and_they_are_part_of_its_key(trained: Path, tmp_path: Path):
    shutil.copytree(trained, tmp_path / "adapters")  # a line's path is relative to the requests file
    request = {"text": "a red fox in the snow", "duration": 1, "seed": 3, "set": {"image_to_video.frames": 6}}
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps({**request, "adapters": "adapters"}) + "\n" + json.dumps({**request, "seed": 4}) + "\n")
    args = ["batch", str(path), "--out", str(tmp_path / "out"), "--preset", "tiny", "--device", "cpu"]

    def summary() -> list[dict]:
        return [json.loads(line) for line in (tmp_path / "out" / "summary.jsonl").read_text().splitlines()]

    assert (result := CliRunner().invoke(app, args)).exit_code == 0, result.output
    tuned, plain = summary()
    infos = [json.loads((Path(s["run_dir"]) / "run.json").read_text()) for s in (tuned, plain)]
    assert infos[0]["adapters"] == str(tmp_path / "adapters") and infos[1]["adapters"] is None
    assert infos[0]["adapters_sha256"] == card_sha256(trained) and tuned["status"] == plain["status"] == "finished"
    # The whole batch with --adapters: the line with its own is already made; the other is now another run.
    assert (result := CliRunner().invoke(app, [*args, "--adapters", str(trained)])).exit_code == 0, result.output
    again = summary()
    assert again[0]["run_dir"] == tuned["run_dir"] and again[0]["skipped"]
    assert again[1]["run_dir"] != plain["run_dir"] and not again[1]["skipped"] and again[1]["status"] == "finished"
    assert json.loads((Path(again[1]["run_dir"]) / "run.json").read_text())["adapters"] == str(trained)


def test_mismatched_or_missing_adapters_stop_before_a_run_exists(trained: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "a fox", "--preset", "full", "--adapters", str(trained), "--out", str(runs)])
    assert result.exit_code == 2 and "trained on preset 'tiny', but this runs preset 'full'" in result.output
    result = CliRunner().invoke(app, ["run", "a fox", "--preset", "tiny", "--adapters", str(tmp_path / "none"),
                                      "--out", str(runs)])
    assert result.exit_code == 2 and "no such folder" in result.output
    other = tmp_path / "other-base"
    shutil.copytree(trained, other)
    card = json.loads((other / "card.json").read_text())
    card["agents"]["image_to_video"]["source"] = "someone/another-svd"
    (other / "card.json").write_text(json.dumps(card))
    result = CliRunner().invoke(app, ["run", "a fox", "--preset", "tiny", "--adapters", str(other), "--out", str(runs)])
    assert result.exit_code == 2 and "was trained on someone/another-svd" in result.output
    assert not runs.exists()


def test_bench_training_smoke_runs_and_counts(tmp_path: Path):
    """`mora bench --training` at size tiny on the CPU: every row trains (timings meaningless) and is counted."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--training", "--preset", "tiny", "--device", "cpu", "--workloads",
                                      "image_to_image", "--repeats", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["profile"]) for r in rows] == [("lora", "resident"), ("full", "resident")]
    from mora_agents.models.tiny import instruct_pix2pix

    unet = sum(p.numel() for p in instruct_pix2pix().unet.parameters())
    lora, full = rows[0], rows[1]
    assert full["trainable"] == unet + 32 and full["parameters"] == unet + 32  # the UNet and z (width 32)
    assert 32 < lora["trainable"] < unet and lora["parameters"] == unet + lora["trainable"]
    assert full["optimizer_gib"] == pytest.approx(2 * full["gradients_gib"]) and full["ema_gib"] == full["gradients_gib"]
    assert all(r["step_s"] > 0 and r["tflop_per_step"] > 0 for r in rows)
    assert full["tflop_per_step"] > lora["tflop_per_step"]  # LoRA computes no gradient of the frozen weights


def test_a_tool_parameter_names_adapters_for_one_step(trained: Path, tiny):
    """SOP steps (and `--set`) name adapters through the tools' `adapters` parameter; unset, the settings' apply."""
    from mora_agents.tools import edit_image, text_to_image

    plain = text_to_image("a red fox", seed=4)
    tuned = text_to_image("a red fox", seed=4, adapters=str(trained))
    assert plain.sha256 != tuned.sha256
    assert edit_image(plain.path, "make it winter", seed=5).sha256 != edit_image(
        plain.path, "make it winter", seed=5, adapters=str(trained)).sha256
    with pytest.raises(InputError, match="no such folder"):
        text_to_image("a red fox", seed=4, adapters=str(trained.parent / "missing"))


def test_chat_checks_its_adapters_before_starting(tmp_path: Path):
    result = CliRunner().invoke(app, ["chat", "--preset", "tiny", "--adapters", str(tmp_path / "none")], input="/quit\n")
    assert result.exit_code == 2 and "no such folder" in result.output


def test_the_next_iteration_starts_from_the_previous_adapters(trained: Path, dataset: Path, tmp_path: Path):
    """`init_adapters` (the loop's iteration n + 1) starts from iteration n's weights and tokens: at a learning rate
    of 1e-12 one step leaves them as they were; the card names its parent and iteration."""
    config = TrainConfig(**FAST, steps=1, lr=1e-12, lr_modulation=1e-12, iteration=1, init_adapters=trained)
    result = train(dataset, tmp_path / "next", config)
    for name, tensor in weights(trained).items():
        torch.testing.assert_close(weights(result.out_dir)[name], tensor, rtol=0, atol=1e-6, msg=name)
    card = json.loads((result.out_dir / "card.json").read_text())
    assert card["parent"] == {"path": str(trained), "sha256": card_sha256(trained)} and card["iteration"] == 1
    with pytest.raises(InputError, match="was trained with other settings"):
        train(dataset, tmp_path / "other", config.model_copy(update={"full": True}))
    assert not (tmp_path / "other").exists()


# -- bad numbers, divergence, damage ---------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, problem", [
    ("--lr", "inf", "--lr: Input should be a finite number"),
    ("--lr-modulation", "nan", "--lr-modulation: Input should be a finite number"),
    ("--frames", "100000", "--frames: Input should be less than or equal to 257"),
    ("--lora-rank", "1000000000", "--lora-rank: Input should be less than or equal to 1024"),
    ("--resolution", "100000x100000", "--resolution: Input should be less than or equal to 2048"),
    ("--steps", "0", "--steps: Input should be greater than or equal to 1"),
    ("--backprop-steps", "5", "--backprop-steps 5: at most --sampling-steps (2)"),
    ("--keep-checkpoints", "-1", "--keep-checkpoints: Input should be greater than or equal to 0"),
    ("--report-to", "mlflow", "--report-to: Input should be 'none', 'tensorboard' or 'wandb'"),
    ("--num-processes", "0", "--num-processes 0: from 1 to 64"),
])
def test_every_number_is_bounded_and_refused_in_one_line(dataset: Path, tmp_path: Path, option: str, value: str,
                                                         problem: str):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(out), "--preset", "tiny", "--device", "cpu",
                                      option, value])
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if "error" in line] == [f"mora: error: {problem}"]
    assert not out.exists()


def test_a_configuration_that_would_not_fit_in_memory_is_refused_before_anything_is_written(
        dataset: Path, tmp_path: Path, monkeypatch):
    from mora_agents.train import trainer

    monkeypatch.setattr(trainer, "_free_bytes", lambda device: 2**20)  # 1 MiB free
    with pytest.raises(InputError, match=r"training needs about .* GiB on cpu beyond the models .* LoRA rank 512.*"
                                         r"more than the 0.0 GiB free: lower --lora-rank"):
        train(dataset, tmp_path / "out", TrainConfig(**FAST, lora_rank=512))
    assert not (tmp_path / "out").exists()


def test_a_diverging_training_stops_at_its_step_with_one_line(dataset: Path, tmp_path: Path, monkeypatch):
    """A NaN loss stops training before the update, a NaN weight after it; each names the step, exit code 1, no
    card (the adapters never hold NaN)."""
    from mora_agents.train.agents import ImageToVideoAgent

    options = ["--preset", "tiny", "--device", "cpu", "--frames", "4", "--resolution", "32x32", "--batch-size", "2",
               "--steps", "3"]
    original, calls = ImageToVideoAgent.sample_loss, []

    def nan_in_the_second_step(self, rows, inputs=None):
        calls.append(rows)
        return original(self, rows, inputs) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(ImageToVideoAgent, "sample_loss", nan_in_the_second_step)
    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(tmp_path / "loss"), *options])
    assert result.exit_code == 1, result.output
    assert "mora: error: step 2: the loss (total) is nan (not finite); stopped before the update" in result.output
    assert not (tmp_path / "loss" / "card.json").exists()
    monkeypatch.undo()

    def poisoned(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.data.fill_(float("inf"))

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    result = CliRunner().invoke(app, ["train", str(dataset), "--out", str(tmp_path / "weights"), *options])
    assert result.exit_code == 1, result.output
    assert "mora: error: step 1: the weights of text_to_image are no longer finite after the update" in result.output
    assert not (tmp_path / "weights" / "card.json").exists()


def test_resume_skips_a_damaged_checkpoint_and_names_a_damaged_file(dataset: Path, tmp_path: Path):
    """The last 2 checkpoints are kept (the final step's too). With the newest one truncated, --resume says so and
    continues from the one before, to the same weights; a damaged train.json, or every checkpoint damaged, is one
    line and exit code 2."""
    out = tmp_path / "out"
    finished = train(dataset, out, TrainConfig(**{**FAST, "batch_size": 1}, steps=4, checkpoint_every=1, seed=3))
    expected, card = weights(finished.out_dir), (out / "card.json").read_text()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    (out / "card.json").unlink()  # as if killed after its last checkpoint
    optimizer = out / "checkpoints" / "step-000004" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:50])
    result = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert "damaged checkpoint step-000004" in result.output and "resumed from step-000003 instead" in result.output
    for name, tensor in expected.items():
        torch.testing.assert_close(weights(out)[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert json.loads((out / "card.json").read_text())["losses"] == json.loads(card)["losses"]

    (out / "card.json").unlink()
    for checkpoint in (out / "checkpoints").iterdir():
        for path in checkpoint.glob("*.safetensors"):
            path.write_bytes(os.urandom(200))
    result = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 2 and "every checkpoint is damaged (step-000004" in result.output, result.output
    (out / "train.json").write_text('{"dataset": ')
    result = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 2 and f"--resume {out}: train.json is damaged" in result.output, result.output
    assert "Traceback" not in result.output


def test_damaged_or_non_finite_adapters_are_refused_before_a_run_exists(trained: Path, tmp_path: Path):
    """A truncated weight file, or one holding infinities whose card was made to match, is one line and exit code 2
    from `mora run` and `mora batch`, before a run directory exists."""
    from safetensors.torch import save_file

    truncated = tmp_path / "truncated"
    shutil.copytree(trained, truncated)
    lora = truncated / "image_to_video" / "pytorch_lora_weights.safetensors"
    lora.write_bytes(lora.read_bytes()[:100])
    infinite = tmp_path / "infinite"
    shutil.copytree(trained, infinite)
    lora = infinite / "text_to_image" / "pytorch_lora_weights.safetensors"
    state = load_file(lora)
    state[next(iter(state))] = torch.full_like(next(iter(state.values())), float("inf"))
    save_file(state, lora)
    card = json.loads((infinite / "card.json").read_text())
    card["files"]["text_to_image/pytorch_lora_weights.safetensors"] = sha256_file(lora)
    (infinite / "card.json").write_text(json.dumps(card))
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"text": "a fox"}\n')
    for folder, problem in ((truncated, "image_to_video/pytorch_lora_weights.safetensors is damaged or changed since "
                                        "training"),
                            (infinite, "text_to_image/pytorch_lora_weights.safetensors holds non-finite values")):
        for command in (["run", "a fox"], ["batch", str(requests)]):
            result = CliRunner().invoke(app, [*command, "--preset", "tiny", "--adapters", str(folder), "--out",
                                              str(tmp_path / "runs")])
            assert result.exit_code == 2 and problem in result.output, result.output
            assert len([line for line in result.output.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "runs").exists()
