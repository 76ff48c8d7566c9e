"""First-last-frame generation: a clip from one frame to another (SEINE by default, Wan 2.1 FLF2V or Open-Sora-Plan),
the video connection built on it, A + transition + B, and the join of a story's shots, each by its own transition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from PIL import Image
from pydantic import Field

from mora_agents.inputs import MAX_SEED
from mora_agents.media import (
    Artifact,
    load_image,
    read_video,
    resample_fps,
    resize_frames,
    write_video,
)
from mora_agents.llm.storyboard import Transition
from mora_agents.settings import denoise_callback, output_path, report, settings, steps_callback
from mora_agents.tools.backends import BACKENDS, backend_named
from mora_agents.tools.defaults import fill_defaults, seeded
from mora_agents.tools.params import (
    ConnectBackend,
    Fps,
    Frames,
    Guidance,
    OptionalText,
    Sampler,
    Seed,
    Side,
    Steps,
    Text,
)
from mora_agents.tools.registry import register
from mora_agents.tools.text_budget import note_cut_prompts


def transition(first: Image.Image, last: Image.Image, prompt: str, backend: str | None, seed: int | None,
               **given: Any) -> np.ndarray:
    """Frames [N, H, W, 3] uint8 at the model size from `first` to `last` (both among them), by a first-last-frame
    backend; `given`: its parameters (those not given or None: the backend's defaults)."""
    from mora_agents.pipelines.loading import load_pipeline

    spec = backend_named(BACKENDS["connect_videos"], backend)
    names = ("negative_prompt", "frames", "width", "height", "sampler", "steps", "guidance_scale")
    p = fill_defaults("connect_videos", spec.name, **{name: given.get(name) for name in names})
    pipe = load_pipeline(spec.models[0])
    note_cut_prompts(pipe, spec, {"prompt": prompt, "negative_prompt": p["negative_prompt"]})
    with seeded(seed) as gen:
        if spec.name in ("seine", "open-sora-plan"):  # this project's pipelines: uint8 frames
            specific = (dict(mask_type="onelast1", sampler=p["sampler"]) if spec.name == "seine" else
                        dict(negative_prompt=p["negative_prompt"], max_sequence_length=spec.text.tokens))
            frames = pipe([first, last], prompt=prompt, num_frames=p["frames"], height=p["height"], width=p["width"],
                          num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"], generator=gen,
                          output_type="np", callback=steps_callback("connect_videos"), **specific).frames
            settings().progress.stop()
            return np.asarray(frames)
        video = pipe(first, last_image=last, prompt=prompt, negative_prompt=p["negative_prompt"],
                     num_frames=p["frames"], height=p["height"], width=p["width"], num_inference_steps=p["steps"],
                     guidance_scale=p["guidance_scale"], max_sequence_length=spec.text.tokens,
                     generator=gen, output_type="np",
                     callback_on_step_end=denoise_callback("connect_videos", p["steps"])).frames[0]
    settings().progress.stop()
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)


@register(produces="video", media={"video_a": "video", "video_b": "video"}, backends=BACKENDS["connect_videos"])
def connect_videos(
    video_a: Annotated[str, "path of the first video"],
    video_b: Annotated[str, "path of the second video"],
    prompt: Annotated[Text, "what the transition shows"] = "smooth transition",
    negative_prompt: Annotated[OptionalText | None, "what the transition should not show (wan2.1-flf2v, "
                               "open-sora-plan)"] = None,
    frames: Annotated[Frames | None, "frames of the transition (wan2.1-flf2v, open-sora-plan: 4k+1)"] = None,
    width: Annotated[Side | None, "width the model works at (seine: a multiple of 8; the others: of 16)"] = None,
    height: Annotated[Side | None, "height the model works at (seine: a multiple of 8; the others: of 16)"] = None,
    sampler: Annotated[Sampler | None, "ddpm (the reference) or ddim (fewer steps) (seine)"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[ConnectBackend | None, "the model: seine (default), wan2.1-flf2v or open-sora-plan"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Connect two videos with a generated transition (seine: SEINE; wan2.1-flf2v; open-sora-plan: Open-Sora-Plan
    v1.2 conditioned on both frames): the result is A, the transition, then B.

    The transition is generated from A's last and B's first frame at the model size, then fitted to A's
    size. B is fitted to A's size and resampled to A's frame rate; the result has A's size and frame rate.
    Unset parameters take the backend's defaults (seine: 16 frames, 512x512, DDPM with 250 steps, guidance 8).
    """
    a, fps = read_video(video_a)
    b, fps_b = read_video(video_b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{video_a if len(a) < 2 else video_b}: a video needs at least 2 frames")
    size = (a.shape[2], a.shape[1])
    b = resample_fps(resize_frames(b, *size), fps_b, fps)
    clip = transition(Image.fromarray(a[-1]), Image.fromarray(b[0]), prompt, backend, seed,
                      negative_prompt=negative_prompt, frames=frames, width=width, height=height, sampler=sampler,
                      steps=steps, guidance_scale=guidance_scale)
    path = output_path(output, "connect_videos", ".mp4")
    return write_video(np.concatenate([a, resize_frames(clip, *size), b]), fps, path, noise=settings().preset == "tiny")


@register(produces="video", media={"image": "image", "last_image": "image"}, backends=BACKENDS["connect_images"])
def connect_images(
    image: Annotated[str, "path of the first frame"],
    last_image: Annotated[str, "path of the last frame"],
    prompt: Annotated[Text, "what happens between them"] = "smooth transition",
    negative_prompt: Annotated[OptionalText | None, "what the clip should not show (wan2.1-flf2v, "
                               "open-sora-plan)"] = None,
    frames: Annotated[Frames | None, "frames of the clip (wan2.1-flf2v, open-sora-plan: 4k+1)"] = None,
    width: Annotated[Side | None, "width the model works at (seine: a multiple of 8; the others: of 16)"] = None,
    height: Annotated[Side | None, "height the model works at (seine: a multiple of 8; the others: of 16)"] = None,
    fps: Annotated[Fps | None, "frame rate the clip is written at"] = None,
    sampler: Annotated[Sampler | None, "ddpm (the reference) or ddim (fewer steps) (seine)"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[ConnectBackend | None, "the model: seine (default), wan2.1-flf2v or open-sora-plan"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Generate a clip that starts at one image and ends at another (first-last-frame to video, by the backends of
    connect_videos), written at the first image's size.

    Chained with keyframes planned ahead (an SOP's `repeat.chain.keyframes`), each segment ends on a clean
    keyframe. Unset parameters take the backend's defaults (seine: 16 frames at 512x512, 8 fps; wan2.1-flf2v: 81
    frames at 1280x720, 16 fps; open-sora-plan: 93 frames at 640x480, 24 fps).
    """
    first, last = load_image(image), load_image(last_image)
    clip = transition(first, last, prompt, backend, seed, negative_prompt=negative_prompt, frames=frames,
                      width=width, height=height, sampler=sampler, steps=steps, guidance_scale=guidance_scale)
    rate = fill_defaults("connect_images", backend_named(BACKENDS["connect_images"], backend).name, fps=fps)["fps"]
    path = output_path(output, "connect_images", ".mp4")
    return write_video(resize_frames(clip, *first.size), rate, path, noise=settings().preset == "tiny")


TRANSITION_BACKENDS = {"seine": "seine", "flf2v": "wan2.1-flf2v"}
"""The connect backend that generates each kind of transition (a cut generates nothing)."""


def _join_models(arguments: Mapping[str, Any]) -> tuple[str, ...]:
    """The models of the transitions a join asks for."""
    kinds = arguments.get("transitions")
    backends = BACKENDS["connect_videos"]
    return tuple(dict.fromkeys(m for kind in kinds if kind in TRANSITION_BACKENDS
                               for m in backends[TRANSITION_BACKENDS[kind]].models)) if isinstance(kinds, list) else ()


@register(produces="video", media={"videos": "video"}, models_of=_join_models)
def join_clips(
    videos: Annotated[list[str], Field(min_length=1), "paths of the clips (a story's shots), in order"],
    transitions: Annotated[list[Transition], "how each clip after the first follows the one before: cut, seine (a "
                           "SEINE transition) or flf2v (a Wan 2.1 FLF2V clip); default: cuts"] = [],
    prompts: Annotated[list[str], "what each generated transition shows (default: 'smooth transition')"] = [],
    seed: Annotated[Seed | None, "random seed (transition k takes seed + k)"] = None,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Join clips in order, each to the one before by its transition: a cut, or a generated clip from the last frame
    before to the first frame after (SEINE, or Wan 2.1 FLF2V; the backend's defaults, as `connect_images`).

    Clips and transitions are fitted to the first clip's size and resampled to its frame rate (as `concat_videos`).
    Where each shot and transition lies in the result is reported (`parts`: kind, shot or via, first frame, frames)."""
    if transitions and len(transitions) != len(videos) - 1:
        raise ValueError(f"transitions: {len(transitions)} given for {len(videos)} clips (one per clip after the "
                         "first)")
    if prompts and len(prompts) != len(videos) - 1:
        raise ValueError(f"prompts: {len(prompts)} given for {len(videos)} clips (one per clip after the first)")
    first, fps = read_video(videos[0])
    height, width = first.shape[1:3]
    pieces, parts = [first], [{"kind": "shot", "shot": 1, "start": 0, "frames": len(first)}]
    start, previous = len(first), first
    for k, video in enumerate(videos[1:], 1):
        frames, clip_fps = read_video(video)
        frames = resample_fps(resize_frames(frames, width, height), clip_fps, fps)
        via = transitions[k - 1] if transitions else "cut"
        if via != "cut":
            made = transition(Image.fromarray(previous[-1]), Image.fromarray(frames[0]),
                              prompts[k - 1] if prompts else "smooth transition", TRANSITION_BACKENDS[via],
                              None if seed is None else (seed + k) % (MAX_SEED + 1))
            clip = resize_frames(made, width, height)
            pieces.append(clip)
            parts.append({"kind": "transition", "via": via, "start": start, "frames": len(clip)})
            start += len(clip)
        pieces.append(frames)
        parts.append({"kind": "shot", "shot": k + 1, "start": start, "frames": len(frames)})
        start, previous = start + len(frames), frames
    path = output_path(output, "join_clips", ".mp4")
    joined = write_video(np.concatenate(pieces), fps, path, noise=settings().preset == "tiny")
    report(parts=parts)
    return joined
