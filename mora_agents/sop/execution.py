"""Executing an SOP: which step request comes next, given the results so far.

Pure logic, no agents: the conductor agent asks `next_request()`, sends the request to the named
agent, and gives the result back with `record()`. At a review point a person's decision can take a
result back (`redo`) so the step runs again, with a new seed and possibly an edited argument.
Everything is derived from the SOP, its inputs and this state (`state()` / `from_state()`), so an
execution rebuilt from its state continues where it stopped, with the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora_agents.errors import InputError, MoraError
from mora_agents.inputs import MAX_SEED, check_attachment, check_number, check_text
from mora_agents.media import Artifact, probe
from mora_agents.sop.calls import prompt_budget, step_calls
from mora_agents.sop.messages import StepRequest, StepResult, step_key
from mora_agents.sop.schema import SOP, StepSpec
from mora_agents.sop.template import references, render
from mora_agents.settings import settings
from mora_agents.tools.backends import default_backend
from mora_agents.tools.defaults import backend_defaults
from mora_agents.tools.registry import get_tool

MAX_ITERATIONS = 100
"""A repeated step runs at most this many times."""


@dataclass
class StepView:
    """What templates see of a step: `output` (the last one) and `outputs` (all, for repeated steps)."""

    outputs: list[Any]

    @property
    def output(self) -> Any:
        return self.outputs[-1] if self.outputs else None


def validate_inputs(sop: SOP, given: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Check a plan's inputs against the SOP; media inputs (paths in the run directory) become Artifacts."""
    values: dict[str, Any] = {}
    for name in given:
        if name not in sop.inputs:
            raise InputError(f"input '{name}': task '{sop.name}' takes no such input ({', '.join(sop.inputs)})")
    for name, spec in sop.inputs.items():
        value, label = given.get(name), f"input '{name}'"
        if value is None:
            if spec.required:
                raise InputError(f"{label}: required by task '{sop.name}' ({spec.description or spec.type})")
            values[name] = spec.default
        elif spec.type == "number":
            values[name] = check_number(value, label, spec.min, spec.max)
        elif spec.type == "text":
            values[name] = check_text(str(value), label)
        else:
            artifact = check_attachment(run_dir / value, spec.type, f"{label} ({value})", spec.max_seconds)
            values[name] = artifact.relative_to(run_dir)
    return values


class Execution:
    def __init__(self, sop: SOP, inputs: dict[str, Any], run_dir: Path, seed: int,
                 overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.sop, self.inputs, self.run_dir, self.seed = sop, inputs, run_dir, seed
        self.overrides = overrides or {}
        self.results: dict[str, StepResult] = {}
        self.skipped: set[str] = set()
        self.count = 0
        """Results recorded so far, taken-back ones included: the next request's seed is seed + count."""
        self.repeats: dict[str, int] = {}
        """Review repeats (and edits) per step key."""
        self.edits: dict[str, str] = {}
        """Reviewers' rewrites of a step's `edit` argument, per step key."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue this execution elsewhere (JSON-compatible)."""
        inputs = {k: v.model_dump(mode="json") if isinstance(v, Artifact) else v for k, v in self.inputs.items()}
        return {"sop": self.sop.model_dump(mode="json"), "inputs": inputs, "seed": self.seed,
                "overrides": self.overrides, "results": [r.model_dump(mode="json") for r in self.results.values()],
                "skipped": sorted(self.skipped), "count": self.count, "repeats": self.repeats, "edits": self.edits}

    @classmethod
    def from_state(cls, state: dict[str, Any], run_dir: Path) -> Execution:
        inputs = {k: Artifact.model_validate(v) if isinstance(v, dict) else v for k, v in state["inputs"].items()}
        execution = cls(SOP.model_validate(state["sop"]), inputs, run_dir, state["seed"], state["overrides"])
        for result in map(StepResult.model_validate, state["results"]):
            execution.results[result.key] = result
        execution.skipped = set(state["skipped"])
        execution.count, execution.repeats, execution.edits = state["count"], state["repeats"], state["edits"]
        return execution

    def artifacts(self) -> list[Artifact]:
        """Every file this execution relies on: its media inputs and its results' outputs."""
        values = [*self.inputs.values(), *(r.output for r in self.results.values())]
        return [v for v in values if isinstance(v, Artifact)]

    # -- what templates see --------------------------------------------------------------------

    def _main_results(self, step_id: str) -> list[StepResult]:
        return [r for r in self.results.values() if r.step == step_id]

    def segments(self, step_id: str) -> list[Any]:
        """A step's outputs; for a chain that corrects its frames, each segment as eased into the next one's start."""
        eased = {r.iteration - 1: r.output for r in self.results.values() if r.step == f"{step_id}.ease"}
        return [eased.get(r.iteration, r.output) for r in self._main_results(step_id)]

    def context(self) -> dict[str, Any]:
        steps = {s.id: StepView(self.segments(s.id)) for s in self.sop.steps}
        return {"inputs": self.inputs, "steps": steps}

    def chains(self) -> dict[str, tuple[Artifact, list[Artifact]]]:
        """Per chained step that ran: its first keyframe (the first iteration's `into`) and its segments."""
        chains = {}
        for step in self.sop.steps:
            chain = step.repeat.chain if step.repeat else None
            if chain is not None and self._main_results(step.id):
                first = self._render(step.args.get(chain.into), f"step '{step.id}', field 'args.{chain.into}'")
                chains[step.id] = (self._artifact(first), self.segments(step.id))
        return chains

    def _render(self, value: Any, where: str) -> Any:
        """Render a field's templates; a failure (e.g. over a render limit) names `where` (step and field)."""
        try:
            return render(value, self.context())
        except Exception as e:
            raise MoraError(f"{where}: {e}") from None

    def _render_args(self, step: StepSpec) -> dict[str, Any]:
        return {name: self._render(value, f"step '{step.id}', field 'args.{name}'")
                for name, value in step.args.items()}

    # -- the next request ----------------------------------------------------------------------

    def next_request(self) -> StepRequest | None:
        """The next step request, or None when every step is done."""
        for step in self.sop.steps:
            if step.id in self.skipped:
                continue
            done = self._main_results(step.id)
            if not done:
                if step.when is not None and not self._render(step.when, f"step '{step.id}', field 'when'"):
                    self.skipped.add(step.id)
                    continue
                return self._iteration(step, done, None)
            if step.repeat is None or len(done) >= (count := self._repeat_count(step, done[0])):
                continue
            return self._iteration(step, done, count)
        return None

    def _repeat_count(self, step: StepSpec, first: StepResult) -> int:
        clip = first.output.seconds if isinstance(first.output, Artifact) else 0.0
        if clip <= 0:
            raise MoraError(f"step '{step.id}': repeat needs a video output with a duration")
        return self._count(step, clip)

    def check_repeats(self) -> None:
        """Before any step: each repeated step whose count can be told beforehand (its target from the inputs, its
        clip length from its frames and fps, given or its backend's defaults) runs at most MAX_ITERATIONS times.
        Raises InputError."""
        for step in self.sop.steps:
            if step.repeat is None or any(root == "steps" for root, *_ in references(step.repeat.until_seconds)):
                continue
            call = next(step_calls(step))
            backend = call.backend(self.overrides)
            defaults = backend_defaults(settings().preset, step.tool, backend.name) if backend else {}
            params = {**defaults, **get_tool(call.tool).check_combination(call.known(self.overrides))}
            frames, fps = params.get("frames"), params.get("fps")
            if isinstance(frames, int) and isinstance(fps, int | float) and fps > 0:
                try:
                    self._count(step, frames / fps)
                except MoraError as e:
                    raise InputError(str(e)) from None

    def _count(self, step: StepSpec, clip: float) -> int:
        """How many clips of `clip` seconds the step's `repeat.until_seconds` asks for."""
        where = f"step '{step.id}', field 'repeat.until_seconds'"
        try:
            target = check_number(self._render(step.repeat.until_seconds, where), where, 0)
        except InputError as e:
            raise MoraError(str(e)) from None
        count = max(1, round(target / clip))
        if count > MAX_ITERATIONS:
            raise MoraError(f"{where}: {target:g} s of {clip:g} s clips would run {count} times "
                            f"(at most {MAX_ITERATIONS})")
        return count

    def _iteration(self, step: StepSpec, done: list[StepResult], count: int | None) -> StepRequest:
        """The next request of a step's iteration `len(done)`: the first of its chain's sub-steps still to run (from
        the second iteration on, and the keyframe from the first), else the step itself."""
        i, args = len(done), self._render_args(step)
        chain = step.repeat.chain if step.repeat else None
        if chain is None:
            return self._request(step.id, i, step.agent, step.tool, args, count)
        first, frame = args.get(chain.into), None
        for call in step_calls(step):
            kind = call.step.removeprefix(f"{step.id}.")
            if call.step == step.id or (i == 0 and kind != "keyframe"):
                continue
            given = {"chain": {next(iter(get_tool(chain.tool).media)): done[-1].output if done else None},
                     "match": {"image": frame, "reference": first}, "refine": {"image": frame},
                     "ease": {"video": done[-1].output if done else None, "image": frame},
                     "keyframe": {"image": first}}[kind]
            result = self.results.get(step_key(call.step, i))
            if result is None:
                sub = {name: self._render(value, f"step '{step.id}', field '{call.field}'")
                       for name, value in call.args.items()}
                return self._request(call.step, i, call.agent, call.tool, {**sub, **given}, count)
            if kind == "keyframe":
                args[chain.keyframes.into] = result.output
            elif kind != "ease":
                frame = result.output
        if i > 0:
            args[chain.into] = frame
        return self._request(step.id, i, step.agent, step.tool, args, count)

    def _request(self, step: str, iteration: int, agent: str, tool: str | None, args: dict[str, Any],
                 iterations: int | None = None) -> StepRequest:
        media: dict[str, list[Artifact]] = {}
        budget = prompt_budget(self.sop, step, self.overrides) if tool is None else None
        if tool is not None:
            spec = get_tool(tool)
            args = {**args, **self.overrides.get(tool, {})}
            if spec.backends and args.get("backend") is None:  # recorded: the transcript names the model
                args["backend"] = default_backend(spec.backends)
            for param in spec.media:
                if args.get(param) is not None:
                    items = args[param] if isinstance(args[param], list) else [args[param]]
                    media[param] = [self._artifact(item) for item in items]
            step_spec = self._spec(step)
            if step_spec is not None and step_spec.edit and (text := self.edits.get(step_key(step, iteration))):
                args[step_spec.edit] = text
            if "seed" in spec.parameters and args.get("seed") is None:
                args["seed"] = (self.seed + self.count) % (MAX_SEED + 1)
            if "output" in spec.parameters:
                name = step if iteration == 0 else f"{step}-{iteration}"
                if retry := self.repeats.get(step_key(step, iteration)):  # earlier takes are kept
                    name = f"{name}-r{retry}"
                args["output"] = str(self.run_dir / "artifacts" / f"{name}{spec.suffix}")
        return StepRequest(step=step, iteration=iteration, agent=agent, tool=tool,
                           arguments=self._as_arguments(args), media=media, iterations=iterations, budget=budget)

    def _artifact(self, item: Artifact | str) -> Artifact:
        if isinstance(item, Artifact):
            return item
        path = (self.run_dir / item).resolve()
        if not path.is_relative_to(self.run_dir.resolve()):
            raise MoraError(f"{item}: outside the run directory; SOP media arguments name files inside it")
        return probe(self.run_dir / item).relative_to(self.run_dir)

    def _as_arguments(self, value: Any) -> Any:
        """Artifacts become absolute paths: a tool argument is always a plain value."""
        if isinstance(value, Artifact):
            return str(self.run_dir / value.path)
        if isinstance(value, dict):
            return {k: self._as_arguments(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._as_arguments(v) for v in value]
        return value

    # -- results -------------------------------------------------------------------------------

    def _spec(self, step_id: str) -> StepSpec | None:
        return next((s for s in self.sop.steps if s.id == step_id), None)

    def record(self, result: StepResult) -> None:
        self.results[result.key] = result
        self.count += 1

    def is_review_point(self, result: StepResult) -> bool:
        spec = self._spec(result.step)
        return spec is not None and spec.review

    def edit_target(self, step_id: str) -> str:
        """What a review edit rewrites: the SOP's `edit` argument, `output` for a text step, '' for none."""
        spec = self._spec(step_id)
        if spec is None:
            return ""
        return spec.edit or ("output" if spec.tool is None else "")

    def redo(self, key: str, text: str | None = None) -> None:
        """Take a result back so its step runs again (new seed), with its `edit` argument set to `text`."""
        del self.results[key]
        self.repeats[key] = self.repeats.get(key, 0) + 1
        if text is not None:
            self.edits[key] = text

    def replace_output(self, key: str, text: str) -> None:
        """A text step's output, rewritten by a person."""
        self.results[key] = self.results[key].model_copy(update={"output": text})

    def outputs(self) -> dict[str, Any]:
        return {name: self._render(template, f"field 'outputs.{name}'") for name, template in self.sop.outputs.items()}

