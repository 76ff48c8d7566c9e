"""What `run.json` records of an execution besides its status: the backends its tools ran, each chain's drift, and a
story's storyboard and consistency measures."""

from __future__ import annotations

from typing import Any

from mora_agents.eval.drift import chain_drift, clip_drift
from mora_agents.eval.story import story_measures
from mora_agents.llm.storyboard import Storyboard
from mora_agents.media import Artifact
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


def story(execution: Execution) -> dict[str, Any] | None:
    """For an SOP whose outputs name a `storyboard` and its `shots` (the clips, in order): the storyboard, its clips,
    where they lie in the result (`parts`, the report of the step that made it) and the measures
    (`mora_agents.eval.story.story_measures`), which `mora eval RUN` computes again with its own weights."""
    outputs = execution.outputs()
    board, shots, result = outputs.get("storyboard"), outputs.get("shots"), outputs.get("result")
    if not isinstance(board, dict) or not isinstance(shots, list) or not shots or not isinstance(result, Artifact):
        return None
    run_dir = execution.run_dir
    parts = next((r.details.get("parts") for r in execution.results.values()
                  if isinstance(r.output, Artifact) and r.output.path == result.path and r.details.get("parts")), [])
    return {"storyboard": Storyboard.from_view(board).model_dump(), "clips": [shot.path for shot in shots],
            "parts": parts, **story_measures(board, [run_dir / shot.path for shot in shots], run_dir / result.path,
                                             parts)}


def run_measures(execution: Execution | None, finished: bool) -> dict[str, Any]:
    """`backends` (see `backends_used`) and, for a finished run, `drift`: per chained step, each segment's drift
    (`mora_agents.eval.drift.chain_drift`), per step marked `drift` that ran, its clip's every 4 s (`clip_drift`),
    and for a story `story`: its storyboard and measures (see `story`)."""
    if execution is None:
        return {}
    measures: dict[str, Any] = {"backends": backends_used(execution)}
    if finished:
        run_dir = execution.run_dir
        measures["drift"] = {step: chain_drift(run_dir / first.path, [run_dir / s.path for s in segments])
                             for step, (first, segments) in execution.chains().items()}
        measures["drift"].update({step.id: clip_drift(run_dir / result.output.path) for step in execution.sop.steps
                                  if step.drift and (result := execution.results.get(step_key(step.id, 0)))})
        if (measured := story(execution)) is not None:
            measures["story"] = measured
    return measures
