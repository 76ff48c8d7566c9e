"""What `run.json` records of an execution besides its status: the backends its tools ran, and each chain's drift."""

from __future__ import annotations

from typing import Any

from mora_agents.eval.drift import chain_drift, clip_drift
from mora_agents.sop.execution import Execution
from mora_agents.sop.messages import step_key


def backends_used(execution: Execution) -> dict[str, list[str]]:
    """Per tool with backends, the backends its calls ran, in the order first used."""
    used: dict[str, list[str]] = {}
    for result in execution.results.values():
        backend = result.arguments.get("backend") if result.tool else None
        if backend and backend not in used.setdefault(result.tool, []):
            used[result.tool].append(backend)
    return used


def run_measures(execution: Execution | None, finished: bool) -> dict[str, Any]:
    """`backends` (see `backends_used`) and, for a finished run, `drift`: per chained step, each segment's drift
    (`mora_agents.eval.drift.chain_drift`), and per step marked `drift` that ran, its clip's every 4 s (`clip_drift`)."""
    if execution is None:
        return {}
    measures: dict[str, Any] = {"backends": backends_used(execution)}
    if finished:
        run_dir = execution.run_dir
        measures["drift"] = {step: chain_drift(run_dir / first.path, [run_dir / s.path for s in segments])
                             for step, (first, segments) in execution.chains().items()}
        measures["drift"].update({step.id: clip_drift(run_dir / result.output.path) for step in execution.sop.steps
                                  if step.drift and (result := execution.results.get(step_key(step.id, 0)))})
    return measures
