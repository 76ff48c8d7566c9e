import pytest

from mora_agents.eval.backends import Backends
from mora_agents.eval.metrics.base import EvalContext
from mora_agents.eval.weights import ENV_VAR, WeightStore


@pytest.fixture(autouse=True)
def no_default_weights(tmp_path, monkeypatch):
    """Point ``$VBENCH_CACHE_DIR`` at an empty directory: a real cache on this machine must not change results."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "no-weights"))


@pytest.fixture
def context(tmp_path):
    """Build an EvalContext for a video with an (initially empty) weights directory."""

    def make(video, weights=None, **kw):
        return EvalContext(video=video, backends=Backends(WeightStore(weights or tmp_path / "empty"), "cpu"), **kw)

    return make
