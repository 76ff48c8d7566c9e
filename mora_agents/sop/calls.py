"""The tool calls an SOP makes, as far as they are known before it runs: each step's tool and the sub-steps of its
chain, with their arguments as written and the person's `--set` values.

What is checked before a run (the models that must be present, each backend's rules, the adapters) and the token
budget of the prompt agent's answers are read off them; the execution renders the same arguments at run time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mora_agents.errors import InputError
from mora_agents.sop.messages import PromptBudget
from mora_agents.sop.schema import SOP, StepSpec
from mora_agents.sop.template import has_template, references
from mora_agents.tools.backends import PROMPTS, Backend
from mora_agents.tools.registry import get_tool

CHAIN_AGENT = "media_agent"
REDRAW_AGENT = "text_to_image_agent"
"""The agent that redraws chain frames and keyframes (`text_to_image` from an image)."""
CRITIC_AGENT, PICK_TOOL = "critic_agent", "pick_best"
"""Who picks the best of a `best_of` step's candidates, and with which tool."""


@dataclass(frozen=True)
class Call:
    step: str
    """The step (`segments`) or chain sub-step (`segments.refine`) that makes it."""
    field: str
    """Where the SOP writes its arguments (`args`, `repeat.chain.refine`)."""
    agent: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    """Its arguments as the SOP writes them (templates included); the chain's media arguments come at run time."""

    def known(self, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The arguments known before the run: the literal ones, with the person's `--set` values over them."""
        return {**{k: v for k, v in self.args.items() if not has_template(v)}, **overrides.get(self.tool, {})}

    def backend(self, overrides: Mapping[str, Mapping[str, Any]]) -> Backend | None:
        return get_tool(self.tool).backend(self.known(overrides))


def step_calls(step: StepSpec) -> Iterator[Call]:
    """A step's tool call (and a best-of step's pick), then those of its chain's sub-steps, in the order they run before
    each later segment."""
    if step.tool is not None:
        yield Call(step.id, "args", step.agent, step.tool, step.args)
    if step.best_of is not None:  # with several candidates: the critic's pick
        yield Call(f"{step.id}.pick", "best_of", CRITIC_AGENT, PICK_TOOL)
    chain = step.repeat.chain if step.repeat else None
    if chain is None:
        return
    yield Call(f"{step.id}.chain", "repeat.chain.tool", CHAIN_AGENT, chain.tool)
    if chain.color_match or chain.sharpen:
        yield Call(f"{step.id}.match", "repeat.chain", CHAIN_AGENT, "match_frame",
                   {"color": chain.color_match, "sharpen": chain.sharpen})
    if chain.refine is not None:
        yield Call(f"{step.id}.refine", "repeat.chain.refine", REDRAW_AGENT, "text_to_image",
                   {**chain.refine.args, "prompt": chain.refine.prompt, "strength": chain.refine.strength})
    if chain.corrects:
        yield Call(f"{step.id}.ease", "repeat.chain", CHAIN_AGENT, "ease_into")
    if chain.keyframes is not None:
        yield Call(f"{step.id}.keyframe", "repeat.chain.keyframes", REDRAW_AGENT, "text_to_image",
                   {**chain.keyframes.args, "prompt": chain.keyframes.prompt, "strength": chain.keyframes.strength})


def sop_calls(sop: SOP) -> list[Call]:
    return [call for step in sop.steps for call in step_calls(step)]


def required_models(sop: SOP, overrides: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The model keys the SOP's calls load, with the backends they choose."""
    return list(dict.fromkeys(m for call in sop_calls(sop) for m in get_tool(call.tool).models_for(
        call.known(overrides))))


def check_calls(sop: SOP, overrides: Mapping[str, Mapping[str, Any]], adapters: Path | None = None) -> None:
    """Before a run: each call's known arguments fit its backend (what it reads, its frame and size rules), and
    trained adapters only meet the backends they were trained on: a step whose tool a trained model serves must run
    that model (adapters of one system refused on the other's). Raises InputError naming the step."""
    from mora_agents.pipelines.adapters import read_card, trained_models  # torch: only where a run starts

    trained = set(trained_models(adapters))
    system = read_card(adapters).system if trained else None
    for call in sop_calls(sop):
        spec = get_tool(call.tool)
        try:
            spec.check_combination(call.known(overrides))
        except ValueError as e:
            raise InputError(f"task '{sop.name}', step '{call.step}': {e}") from None
        backend = call.backend(overrides)
        served = [b.name for b in spec.backends.values() if b.adapters and trained & set(b.models)]
        if backend is not None and served and not trained & set(backend.models):
            raise InputError(f"--adapters {adapters}: trained on {', '.join(served)}, but step '{call.step}' runs "
                             f"{call.tool} with backend {backend.name} (adapters apply to the models they were "
                             f"trained on: run them with --system {system})")


def prompt_budget(sop: SOP, step_id: str, overrides: Mapping[str, Mapping[str, Any]]) -> PromptBudget | None:
    """The token budget of a text step's answer: the smallest text encoder among the calls whose prompt reads it."""
    budgets = []
    for call in sop_calls(sop):
        text = call.args.get(PROMPTS.get(call.tool, ""))
        if not any(root == "steps" and name == step_id for root, name, *_ in references(text)):
            continue
        backend = call.backend(overrides)
        if backend is not None and backend.text is not None:
            budgets.append(PromptBudget(tool=call.tool, backend=backend.name, encoder=backend.text.encoder,
                                        tokens=backend.text.tokens, step=call.step))
    return min(budgets, key=lambda b: b.tokens, default=None)
