"""Metrics on ViCLIP (InternVid-10M-FLT) video features: temporal style, TCON and Tmean.

A video's feature is ViCLIP's L2-normalised embedding of 8 frames sampled and preprocessed as VBench's
``temporal_style`` does (see :mod:`mora_agents.eval.nets.viclip`).

- temporal style (VBench): cosine of the video feature and the prompt's text feature (32-token
  context), reported raw as VBench does, without a logit scale;
- TCON (Mora): cosine of the video features of the input and the output video;
- Tmean (Mora): (TCON_front + TCON_behind) / 2 for a video connecting two inputs.

Without ViCLIP weights temporal style is unavailable; TCON and Tmean fall back to the cosine of the
videos' mean colour histograms.
"""

from __future__ import annotations

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.features import color_histograms
from mora_agents.eval.formulas import cosine
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult, unavailable
from mora_agents.eval.result import fallback as fallback_label
from mora_agents.eval.video import Video

TEMPORAL_STYLE, TCON, TMEAN = "temporal_style", "tcon", "tmean"
HISTOGRAM = fallback_label("color-histogram")


def video_features(ctx: EvalContext, video: Video) -> tuple[np.ndarray, list[int]]:
    """ViCLIP feature (D,) of ``video`` and the indices of the frames it saw."""
    viclip = ctx.backends.viclip()
    torch = require("torch")
    from mora_agents.eval.nets.viclip import sample_indices, video_input

    frames = sample_indices(video.num_frames)
    clip = video_input(video.frames[frames]).unsqueeze(0).to(ctx.backends.torch_device)
    with torch.no_grad():
        feature = torch.nn.functional.normalize(viclip.model.encode_vision(clip).float(), dim=-1)
    return feature[0].cpu().numpy(), frames


def temporal_style_reference(ctx: EvalContext) -> MetricResult:
    viclip = ctx.backends.viclip()
    tokenizer = ctx.backends.tokenizer()
    torch = require("torch")
    video, frames = video_features(ctx, ctx.video)
    tokens = tokenizer.model.tokenize([ctx.prompt], viclip.model.context_length).to(ctx.backends.torch_device)
    with torch.no_grad():
        text = torch.nn.functional.normalize(viclip.model.encode_text(tokens).float(), dim=-1)[0].cpu().numpy()
    result = viclip.result(TEMPORAL_STYLE, float(video @ text), frames, ctx.video.fps)
    result.details.update(tokenizer=str(tokenizer.path), tokenizer_sha256=tokenizer.sha256)
    return result


def tcon_reference(ctx: EvalContext) -> MetricResult:
    output, frames = video_features(ctx, ctx.video)
    source, source_frames = video_features(ctx, ctx.input_videos[0])
    value = float(source @ output)
    return ctx.backends.viclip().result(TCON, value, frames, ctx.video.fps, input_frames_used=source_frames)


def tmean_reference(ctx: EvalContext) -> MetricResult:
    output, frames = video_features(ctx, ctx.video)
    (front, front_frames), (behind, behind_frames) = (video_features(ctx, v) for v in ctx.input_videos[:2])
    tcon_front, tcon_behind = float(front @ output), float(behind @ output)
    return ctx.backends.viclip().result(
        TMEAN,
        (tcon_front + tcon_behind) / 2,
        frames,
        ctx.video.fps,
        tcon_front=tcon_front,
        tcon_behind=tcon_behind,
        input_frames_used=[front_frames, behind_frames],
    )


def histogram_similarity(a: Video, b: Video) -> float:
    return cosine(color_histograms(a.frames).mean(axis=0), color_histograms(b.frames).mean(axis=0))


def temporal_style(ctx: EvalContext) -> MetricResult:
    if not ctx.prompt:
        return unavailable(TEMPORAL_STYLE, "needs a prompt (--prompt, --prompts or a run directory)", ctx.video.fps)
    return reference_or_fallback(TEMPORAL_STYLE, ctx, temporal_style_reference, None)


def _tcon_fallback(ctx: EvalContext) -> MetricResult:
    value = histogram_similarity(ctx.input_videos[0], ctx.video)
    return MetricResult(TCON, value, HISTOGRAM, list(range(ctx.video.num_frames)), ctx.video.fps)


def tcon(ctx: EvalContext) -> MetricResult:
    """Similarity of the output to the (first) input video."""
    if not ctx.input_videos:
        return unavailable(TCON, "needs an input video (a run directory of a video-input task)", ctx.video.fps)
    return reference_or_fallback(TCON, ctx, tcon_reference, _tcon_fallback)


def _tmean_fallback(ctx: EvalContext) -> MetricResult:
    front, behind = (histogram_similarity(v, ctx.video) for v in ctx.input_videos[:2])
    return MetricResult(
        TMEAN,
        (front + behind) / 2,
        HISTOGRAM,
        list(range(ctx.video.num_frames)),
        ctx.video.fps,
        details={"tcon_front": front, "tcon_behind": behind},
    )


def tmean(ctx: EvalContext) -> MetricResult:
    """(TCON_front + TCON_behind) / 2 for a video connecting two inputs."""
    if len(ctx.input_videos) < 2:
        return unavailable(TMEAN, "needs two input videos (a run directory of a connect task)", ctx.video.fps)
    return reference_or_fallback(TMEAN, ctx, tmean_reference, _tmean_fallback)
