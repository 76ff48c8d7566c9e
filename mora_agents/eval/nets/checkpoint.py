"""Loading of training checkpoints that pickle more than tensors, without running any pickled code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

# The only globals a pickled state dict needs; ``torch.load`` resolves storage classes itself.
ALLOWED = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"), ("collections", "OrderedDict")}
)


class Inert(dict):
    """Stands in for every other pickled object (training config, optimiser, counters): empty, never built."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()

    def __setstate__(self, state: object) -> None:
        pass


class _Unpickler(pickle.Unpickler):
    """Imports the :data:`ALLOWED` globals only; any other one becomes :class:`Inert`, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(module, name) if (module, name) in ALLOWED else Inert


class _PickleModule:
    """The ``pickle_module`` interface ``torch.load`` needs, around :class:`_Unpickler`."""

    Unpickler = _Unpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _Unpickler(file, **kwargs).load()


def load_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=False)`` on the CPU, except that nothing but tensors is rebuilt.

    VBench loads ``amt-s.pth`` and ViCLIP's checkpoint with ``weights_only=False`` because they also
    pickle training metadata, which ``weights_only`` loading refuses; here every such object becomes
    an empty :class:`Inert`, so none of its code is imported or run.
    """
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PickleModule)
