"""Diffusion pipelines built on our own models (imported when first named, so that `mora_agents.pipelines.loading`
and `.adapters` load without them)."""

from mora_agents.lazy import lazy_names

_MODULES = {
    "OpenSoraPlanPipeline": "open_sora_plan", "OpenSoraPlanPipelineOutput": "open_sora_plan",
    "load_open_sora_plan_pipeline": "open_sora_plan", "tiny_open_sora_plan_pipeline": "open_sora_plan",
    "SEINEPipeline": "seine", "SEINEPipelineOutput": "seine", "load_seine_pipeline": "seine",
    "seine_scheduler": "seine", "tiny_seine_pipeline": "seine",
}
__all__ = sorted(_MODULES)

__getattr__ = lazy_names(__name__, _MODULES)
