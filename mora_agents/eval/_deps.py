"""Lazy imports of optional heavy dependencies with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_HINT = "pip install mora-agents[eval]"


class MissingDependencyError(RuntimeError):
    """An optional package needed by a metric is not installed."""


def require(module: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise MissingDependencyError(
            f"'{name}' is required for this metric but is not installed; run `{EXTRA_HINT}`"
        ) from exc
