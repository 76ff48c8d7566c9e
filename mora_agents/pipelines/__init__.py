"""Diffusion pipelines built on our own models."""

from mora_agents.pipelines.seine import (
    SEINEPipeline,
    SEINEPipelineOutput,
    load_seine_pipeline,
    seine_scheduler,
    tiny_seine_pipeline,
)

__all__ = ["SEINEPipeline", "SEINEPipelineOutput", "load_seine_pipeline", "seine_scheduler", "tiny_seine_pipeline"]
