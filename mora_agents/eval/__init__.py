"""Video evaluation with the Mora paper's metrics (VBench dimensions and the paper's own).

Importing this package loads no model library; networks are imported when a metric needs them, and the package's
names when first used (so that `mora` registers `mora eval` without them).
"""

from mora_agents.lazy import lazy_names

_MODULES = {
    "Evaluator": "api", "evaluate_video": "api", "resolve_metrics": "api", "METRICS": "metrics",
    "MetricResult": "result", "VideoEvaluation": "result", "Target": "targets", "load_target": "targets",
    "BadInputError": "video", "Video": "video", "read_video": "video", "MissingWeightsError": "weights",
    "WeightStore": "weights",
}
__all__ = sorted(_MODULES)

__getattr__ = lazy_names(__name__, _MODULES)
