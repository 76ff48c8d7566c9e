"""Metric registry: name -> function of an :class:`EvalContext`, in evaluation order."""

from __future__ import annotations

from collections.abc import Callable

from mora_agents.eval.metrics import (
    aesthetic_quality,
    appearance_style,
    background_consistency,
    dynamic_degree,
    imaging_quality,
    motion_smoothness,
    subject_consistency,
    summary,
    viclip,
    video_ti,
)
from mora_agents.eval.metrics.base import EvalContext
from mora_agents.eval.result import MetricResult

METRICS: dict[str, Callable[[EvalContext], MetricResult]] = {
    "subject_consistency": subject_consistency.compute,
    "background_consistency": background_consistency.compute,
    "motion_smoothness": motion_smoothness.compute,
    "dynamic_degree": dynamic_degree.compute,
    "aesthetic_quality": aesthetic_quality.compute,
    "imaging_quality": imaging_quality.compute,
    "temporal_style": viclip.temporal_style,
    "appearance_style": appearance_style.compute,
    "video_ti": video_ti.compute,
    "tcon": viclip.tcon,
    "tmean": viclip.tmean,
    "video_length": summary.video_length,
    # Last: aggregates the six quality dimensions computed above.
    "video_quality": summary.video_quality,
}

__all__ = ["METRICS", "EvalContext"]
