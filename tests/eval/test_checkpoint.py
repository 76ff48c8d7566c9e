"""The restricted unpickler behind the AMT-S and ViCLIP loaders."""

import argparse
import pickle
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mora_agents.eval.nets.checkpoint import Inert, load_checkpoint

from .helpers import TRIPPED, Tripwire


def test_pickled_code_is_never_run_and_tensors_are_rebuilt(tmp_path):
    path = tmp_path / "model.pth"
    state = OrderedDict(weight=torch.arange(6.0).view(2, 3), step=torch.tensor(7, dtype=torch.int64))
    args = argparse.Namespace(lr=1e-4)
    torch.save({"state_dict": state, "config": Tripwire(), "args": args, "psnr": np.float64(36.5)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # why VBench loads these checkpoints with weights_only=False

    TRIPPED.clear()
    checkpoint = load_checkpoint(path)
    assert TRIPPED == []
    assert type(checkpoint["state_dict"]) is OrderedDict and list(checkpoint["state_dict"]) == ["weight", "step"]
    assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in state.items())
    assert checkpoint["state_dict"]["step"].dtype == torch.int64
    assert all(type(checkpoint[k]) is Inert and checkpoint[k] == {} for k in ("config", "args", "psnr"))

    torch.load(path, weights_only=False)  # the plain unpickler does run it: the tripwire works
    assert TRIPPED == ["unpickled"]
    TRIPPED.clear()
