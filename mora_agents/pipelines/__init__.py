"""Diffusion pipelines built on our own models."""

from mora_agents.pipelines.open_sora_plan import (
    OpenSoraPlanPipeline,
    OpenSoraPlanPipelineOutput,
    load_open_sora_plan_pipeline,
    tiny_open_sora_plan_pipeline,
)
from mora_agents.pipelines.seine import (
    SEINEPipeline,
    SEINEPipelineOutput,
    load_seine_pipeline,
    seine_scheduler,
    tiny_seine_pipeline,
)

__all__ = ["OpenSoraPlanPipeline", "OpenSoraPlanPipelineOutput", "SEINEPipeline", "SEINEPipelineOutput",
           "load_open_sora_plan_pipeline", "load_seine_pipeline", "seine_scheduler", "tiny_open_sora_plan_pipeline",
           "tiny_seine_pipeline"]
