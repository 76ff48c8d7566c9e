import pytest

from mora_agents.eval.backends import Backends
from mora_agents.eval.metrics.base import EvalContext
from mora_agents.eval.weights import WeightStore


@pytest.fixture
def context(tmp_path):
    """Build an EvalContext for a video with an (initially empty) weights directory."""

    def make(video, weights=None, **kw):
        return EvalContext(video=video, backends=Backends(WeightStore(weights or tmp_path / "empty"), "cpu"), **kw)

    return make
