"""Executing an SOP: which step request comes next, given the results so far.

Pure logic, no agents: the conductor agent asks `next_request()`, sends the request to the named
agent, and gives the result back with `record()`. At a review point a person's decision can take a
result back (`redo`) so the step runs again, with a new seed and possibly an edited argument.
Everything is derived from the SOP, its inputs and this state (`state()` / `from_state()`), so an
execution rebuilt from its state continues where it stopped, with the same seeds.

Each request carries the digest of its step's SOP arguments as rendered (`StepRequest.inputs`); a result holds
while its step would be asked the same. So when a person changes an earlier output (a storyboard edited after some
shots were made), the steps walk again in order and keep every result whose inputs did not change: a `for_each`
step finds each item's result by that digest, whatever its position; the rest run again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mora_agents.errors import InputError, MoraError
from mora_agents.inputs import MAX_SEED, check_attachment, check_number, check_text
from mora_agents.media import Artifact, probe
from mora_agents.sop.calls import CRITIC_AGENT, PICK_TOOL, prompt_budget, step_calls
from mora_agents.sop.formats import parse, revise, view
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
    """What templates see of a step: `output` (the last one), `outputs` (all, for repeated and for_each steps) and
    `named` (a for_each step's outputs by their item's `name`)."""

    outputs: list[Any]
    named: dict[str, Any] = field(default_factory=dict)

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


def _digest(args: Any) -> str:
    """A short digest of rendered arguments (artifacts by their path and sha256)."""
    def plain(value: Any) -> Any:
        if isinstance(value, Artifact):
            return {"path": value.path, "sha256": value.sha256}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(plain(args), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _holds(result: StepResult | None, digest: str) -> bool:
    """Whether a result answers a request with these inputs (results made before digests were kept always do)."""
    return result is not None and (result.inputs is None or result.inputs == digest)


class Execution:
    def __init__(self, sop: SOP, inputs: dict[str, Any], run_dir: Path, seed: int,
                 overrides: dict[str, dict[str, Any]] | None = None, candidates: int = 1) -> None:
        self.sop, self.inputs, self.run_dir, self.seed = sop, inputs, run_dir, seed
        self.overrides = overrides or {}
        self.candidates = candidates
        """Candidates per iteration of a `best_of` step (the run's `--candidates`)."""
        self.results: dict[str, StepResult] = {}
        self.skipped: set[str] = set()
        self.count = 0
        """Results recorded so far, taken-back ones included: the next request's seed is seed + count."""
        self.repeats: dict[str, int] = {}
        """Review repeats (and edits) per step key."""
        self.edits: dict[str, str] = {}
        """Reviewers' rewrites of a step's `edit` argument, per step key."""
        self.slots: dict[str, int] = {}
        """Per `for_each` step and inputs digest (`"step digest"`), the iteration number of its requests."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue this execution elsewhere (JSON-compatible)."""
        inputs = {k: v.model_dump(mode="json") if isinstance(v, Artifact) else v for k, v in self.inputs.items()}
        return {"sop": self.sop.model_dump(mode="json"), "inputs": inputs, "seed": self.seed,
                "overrides": self.overrides, "results": [r.model_dump(mode="json") for r in self.results.values()],
                "skipped": sorted(self.skipped), "count": self.count, "repeats": self.repeats, "edits": self.edits,
                "candidates": self.candidates, "slots": self.slots}

    @classmethod
    def from_state(cls, state: dict[str, Any], run_dir: Path) -> Execution:
        inputs = {k: Artifact.model_validate(v) if isinstance(v, dict) else v for k, v in state["inputs"].items()}
        execution = cls(SOP.model_validate(state["sop"]), inputs, run_dir, state["seed"], state["overrides"],
                        state.get("candidates", 1))
        for result in map(StepResult.model_validate, state["results"]):
            execution.results[result.key] = result
        execution.skipped = set(state["skipped"])
        execution.count, execution.repeats, execution.edits = state["count"], state["repeats"], state["edits"]
        execution.slots = state.get("slots", {})
        return execution

    def artifacts(self) -> list[Artifact]:
        """Every file this execution relies on: its media inputs and its results' outputs."""
        values = [*self.inputs.values(), *(r.output for r in self.results.values())]
        return [v for v in values if isinstance(v, Artifact)]

    # -- what templates see --------------------------------------------------------------------

    def _main_results(self, step_id: str) -> list[StepResult]:
        return [r for r in self.results.values() if r.step == step_id]

    def _output(self, step: StepSpec, result: StepResult) -> Any:
        """A result's output as templates see it: a structured answer as its view (`sop.formats.view`)."""
        if step.format is not None and isinstance(result.output, str):
            return view(step.format, result.output)
        return result.output

    def context(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "steps": self._walk()[0]}

    def chains(self) -> dict[str, tuple[Artifact, list[Artifact]]]:
        """Per chained step that ran: its first keyframe (the first iteration's `into`) and its segments."""
        views, chains = self._walk()[0], {}
        for step in self.sop.steps:
            chain = step.repeat.chain if step.repeat else None
            if chain is not None and views[step.id].outputs:
                context = {"inputs": self.inputs, "steps": views}
                first = self._render(step.args.get(chain.into), f"step '{step.id}', field 'args.{chain.into}'", context)
                chains[step.id] = (self._artifact(first), views[step.id].outputs)
        return chains

    def _render(self, value: Any, where: str, context: dict[str, Any]) -> Any:
        """Render a field's templates; a failure (e.g. over a render limit) names `where` (step and field)."""
        try:
            return render(value, context)
        except Exception as e:
            raise MoraError(f"{where}: {e}") from None

    def _render_args(self, step: StepSpec, context: dict[str, Any]) -> dict[str, Any]:
        return {name: self._render(value, f"step '{step.id}', field 'args.{name}'", context)
                for name, value in step.args.items()}

    # -- the next request ----------------------------------------------------------------------

    def next_request(self) -> StepRequest | None:
        """The next step request, or None when every step is done."""
        return self._walk()[1]

    def _walk(self) -> tuple[dict[str, StepView], StepRequest | None]:
        """The steps in order: what templates see of each (the results that hold), and the first request still to
        make (later steps are not looked at: they read this one)."""
        views = {s.id: StepView([]) for s in self.sop.steps}
        for step in self.sop.steps:
            context = {"inputs": self.inputs, "steps": views}
            if step.id in self.skipped:
                continue
            if not self._main_results(step.id) and step.when is not None and not self._render(
                    step.when, f"step '{step.id}', field 'when'", context):
                self.skipped.add(step.id)
                continue
            if step.for_each is not None:
                request = self._each(step, context, views)
            elif step.repeat is not None:
                request = self._repeated(step, context, views)
            else:
                args = self._render_args(step, context)
                digest = _digest(args)
                result = self.results.get(step.id)
                if not _holds(result, digest):
                    return views, self._attempt(step, 0, args, digest, context)
                views[step.id] = StepView([self._output(step, result)])
                request = None
            if request is not None:
                return views, request
        return views, None

    def _each(self, step: StepSpec, context: dict[str, Any], views: dict[str, StepView]) -> StepRequest | None:
        """A `for_each` step: the request of its first item without a result that holds (views: the outputs of the
        items before it)."""
        where = f"step '{step.id}', field 'for_each'"
        items = self._render(step.for_each, where, context)
        if not isinstance(items, list):
            raise MoraError(f"{where}: must give a list, not {type(items).__name__}")
        if len(items) > MAX_ITERATIONS:
            raise MoraError(f"{where}: {len(items)} items (at most {MAX_ITERATIONS})")
        outputs, named, seen = [], {}, {}
        for index, item in enumerate(items):
            local = {**context, "item": item, "index": index}
            args = self._render_args(step, local)
            digest = _digest(args)
            seen[digest] = seen.get(digest, 0) + 1  # equal items are distinct iterations
            digest = f"{digest}.{seen[digest]}" if seen[digest] > 1 else digest
            result = next((r for r in self._main_results(step.id) if r.inputs == digest), None)
            if result is None:
                views[step.id] = StepView(outputs, named)
                return self._attempt(step, self._slot(step.id, digest), args, digest, local, len(items))
            outputs.append(self._output(step, result))
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                named[item["name"]] = outputs[-1]
        views[step.id] = StepView(outputs, named)
        return None

    def _slot(self, step_id: str, digest: str) -> int:
        """The iteration number of a `for_each` item's requests: kept per inputs digest, so a review's repeat or edit
        of it keeps its name; a new item takes the next number unused by the step."""
        key = f"{step_id} {digest}"
        if key not in self.slots:
            used = [r.iteration for r in self.results.values() if r.step.partition(".")[0] == step_id]
            used += [n for k, n in self.slots.items() if k.partition(" ")[0] == step_id]
            self.slots[key] = max(used, default=-1) + 1
        return self.slots[key]

    def _repeated(self, step: StepSpec, context: dict[str, Any], views: dict[str, StepView]) -> StepRequest | None:
        """A repeated step: its next iteration (or chain sub-step), or None when it has run enough times."""
        args = self._render_args(step, context)
        digest = _digest(args)
        done = []
        while _holds(result := self.results.get(step_key(step.id, len(done))), digest):
            done.append(result)
        eased = {r.iteration - 1: r.output for r in self.results.values()
                 if r.step == f"{step.id}.ease" and _holds(r, digest)}
        views[step.id] = StepView([eased.get(r.iteration, r.output) for r in done])
        if done and len(done) >= (count := self._repeat_count(step, done[0], context)):
            return None
        return self._iteration(step, done, count if done else None, args, digest, context)

    def _attempt(self, step: StepSpec, iteration: int, args: dict[str, Any], digest: str, context: dict[str, Any],
                 iterations: int | None = None) -> StepRequest:
        """The request that makes (or picks) one output of a step: the step's own call; for a `best_of` step with
        several candidates, each candidate's call first (sub-steps `STEP.candidateK`), then the critic's pick."""
        count = self.candidates if step.best_of is not None else 1
        if count <= 1:
            return self._request(step.id, iteration, step.agent, step.tool, args, iterations, digest)
        made = []
        for number in range(1, count + 1):
            result = self.results.get(step_key(candidate_step(step.id, number), iteration))
            if not _holds(result, digest):
                return self._request(candidate_step(step.id, number), iteration, step.agent, step.tool, args,
                                     iterations, digest)
            made.append(result.output)
        best = step.best_of
        pick = {"candidates": made,
                "prompt": self._render(best.prompt, f"step '{step.id}', field 'best_of.prompt'", context),
                "references": self._render(best.references, f"step '{step.id}', field 'best_of.references'",
                                           context) or []}
        return self._request(step.id, iteration, CRITIC_AGENT, PICK_TOOL, pick, iterations, digest)

    def _repeat_count(self, step: StepSpec, first: StepResult, context: dict[str, Any]) -> int:
        clip = first.output.seconds if isinstance(first.output, Artifact) else 0.0
        if clip <= 0:
            raise MoraError(f"step '{step.id}': repeat needs a video output with a duration")
        return self._count(step, clip, context)

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
                    self._count(step, frames / fps, {"inputs": self.inputs})
                except MoraError as e:
                    raise InputError(str(e)) from None

    def _count(self, step: StepSpec, clip: float, context: dict[str, Any]) -> int:
        """How many clips of `clip` seconds the step's `repeat.until_seconds` asks for."""
        where = f"step '{step.id}', field 'repeat.until_seconds'"
        try:
            target = check_number(self._render(step.repeat.until_seconds, where, context), where, 0)
        except InputError as e:
            raise MoraError(str(e)) from None
        count = max(1, round(target / clip))
        if count > MAX_ITERATIONS:
            raise MoraError(f"{where}: {target:g} s of {clip:g} s clips would run {count} times "
                            f"(at most {MAX_ITERATIONS})")
        return count

    def _iteration(self, step: StepSpec, done: list[StepResult], count: int | None, args: dict[str, Any],
                   digest: str, context: dict[str, Any]) -> StepRequest:
        """The next request of a step's iteration `len(done)`: the first of its chain's sub-steps still to run (from
        the second iteration on, and the keyframe from the first), else the step itself."""
        i, args = len(done), dict(args)
        chain = step.repeat.chain if step.repeat else None
        if chain is None:
            return self._request(step.id, i, step.agent, step.tool, args, count, digest)
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
            if not _holds(result, digest):
                sub = {name: self._render(value, f"step '{step.id}', field '{call.field}'", context)
                       for name, value in call.args.items()}
                return self._request(call.step, i, call.agent, call.tool, {**sub, **given}, count, digest)
            if kind == "keyframe":
                args[chain.keyframes.into] = result.output
            elif kind != "ease":
                frame = result.output
        if i > 0:
            args[chain.into] = frame
        return self._request(step.id, i, step.agent, step.tool, args, count, digest)

    def _name(self, step: str, iteration: int) -> str:
        """The file name (without suffix) of a request's output: `image`, `segments-2`, a review's retake `image-r1`,
        a candidate `keyframes-2-c3` (a retake's candidates `keyframes-2-r1-c3`)."""
        main, _, sub = step.partition(".")
        base = step if not sub.startswith("candidate") else main
        name = base if iteration == 0 else f"{base}-{iteration}"
        if retry := self.repeats.get(step_key(base, iteration)):  # earlier takes are kept
            name = f"{name}-r{retry}"
        return f"{name}-c{sub.removeprefix('candidate')}" if base != step else name

    def _request(self, step: str, iteration: int, agent: str, tool: str | None, args: dict[str, Any],
                 iterations: int | None = None, digest: str | None = None) -> StepRequest:
        media: dict[str, list[Artifact]] = {}
        budget = prompt_budget(self.sop, step, self.overrides) if tool is None else None
        step_spec = self._spec(step)
        if tool is not None:
            spec = get_tool(tool)
            args = {**args, **self.overrides.get(tool, {})}
            if spec.backends and args.get("backend") is None:  # recorded: the transcript names the model
                args["backend"] = default_backend(spec.backends)
            for param in spec.media:
                if args.get(param) is not None:
                    items = args[param] if isinstance(args[param], list) else [args[param]]
                    media[param] = [self._artifact(item) for item in items]
            edit = "choice" if tool == PICK_TOOL else step_spec.edit if step_spec is not None else None
            if edit and (text := self.edits.get(step_key(step, iteration))):
                args[edit] = text
            if "seed" in spec.parameters and args.get("seed") is None:
                args["seed"] = (self.seed + self.count) % (MAX_SEED + 1)
            if "output" in spec.parameters:
                args["output"] = str(self.run_dir / "artifacts" / f"{self._name(step, iteration)}{spec.suffix}")
        return StepRequest(step=step, iteration=iteration, agent=agent, tool=tool,
                           arguments=self._as_arguments(args), media=media, iterations=iterations, budget=budget,
                           format=step_spec.format if step_spec is not None else None, inputs=digest)

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

    def edit_target(self, result: StepResult) -> str:
        """What a review edit of a result rewrites: the SOP's `edit` argument, `output` for a text step, `choice`
        (the candidate kept) for a pick, '' for none."""
        spec = self._spec(result.step)
        if spec is None:
            return ""
        if result.tool == PICK_TOOL:
            return "choice"
        return spec.edit or ("output" if spec.tool is None else "")

    def structured(self, format_: str) -> dict[str, Any] | None:
        """The output of the step that answers in `format_` (a storyboard), as a person last left it; None before
        it ran."""
        for step in self.sop.steps:
            if step.format == format_ and isinstance(output := getattr(self.results.get(step.id), "output", None), str):
                return parse(format_, output).model_dump()
        return None

    def format_of(self, step_id: str) -> str | None:
        spec = self._spec(step_id)
        return spec.format if spec is not None else None

    def candidates_of(self, result: StepResult) -> list[Artifact]:
        """The candidates a pick chose among, in their order (none for other results)."""
        if result.tool != PICK_TOOL:
            return []
        keys = (step_key(candidate_step(result.step, n), result.iteration) for n in range(1, self.candidates + 1))
        return [self.results[key].output for key in keys if key in self.results]

    def redo(self, key: str, text: str | None = None) -> None:
        """Take a result back so its step runs again (new seed), with its `edit` argument set to `text`. A pick
        repeated (no text) takes its candidates back too: new candidates are made."""
        result = self.results.pop(key)
        self.repeats[key] = self.repeats.get(key, 0) + 1
        if text is not None:
            self.edits[key] = text
        elif result.tool == PICK_TOOL:
            self.edits.pop(key, None)
            for number in range(1, self.candidates + 1):
                self.results.pop(step_key(candidate_step(result.step, number), result.iteration), None)

    def replace_output(self, key: str, text: str) -> None:
        """A text step's output, rewritten by a person (a structured one: the edited message, checked)."""
        result = self.results[key]
        if (format_ := self.format_of(result.step)) is not None and isinstance(result.output, str):
            text = revise(format_, result.output, text)
        self.results[key] = result.model_copy(update={"output": text})

    def outputs(self) -> dict[str, Any]:
        context = self.context()
        return {name: self._render(template, f"field 'outputs.{name}'", context)
                for name, template in self.sop.outputs.items()}


def candidate_step(step_id: str, number: int) -> str:
    """The sub-step that makes candidate `number` of a best-of step."""
    return f"{step_id}.candidate{number}"
