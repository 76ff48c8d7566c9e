"""Video evaluation with the Mora paper's metrics (VBench dimensions and the paper's own).

Importing this package loads no model library; networks are imported when a metric needs them.
"""

from mora_agents.eval.api import Evaluator, evaluate_video, resolve_metrics
from mora_agents.eval.metrics import METRICS
from mora_agents.eval.result import MetricResult, VideoEvaluation
from mora_agents.eval.targets import Target, load_target
from mora_agents.eval.video import BadInputError, Video, read_video
from mora_agents.eval.weights import MissingWeightsError, WeightStore

__all__ = [
    "METRICS",
    "BadInputError",
    "Evaluator",
    "MetricResult",
    "MissingWeightsError",
    "Target",
    "Video",
    "VideoEvaluation",
    "WeightStore",
    "evaluate_video",
    "load_target",
    "read_video",
    "resolve_metrics",
]
