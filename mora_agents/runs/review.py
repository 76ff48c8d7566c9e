"""Review sources: who answers a review point, and how.

At a review point the team stops (its turn ends with a ReviewRequest), the runner asks a *reviewer* and
passes the decision back to the team as its next task: autogen's human-in-the-loop by handoff, so the
same review works from a terminal, a notebook or a web page. A reviewer is any callable that takes a
ReviewRequest and returns a ReviewDecision (or an awaitable of one):

- `auto_accept`: chooses next (non-interactive runs);
- `TextReviewer(input_func)`: a person typing answers like `next`, `repeat`, `edit a red fox`, `stop`;
  `input_func` has the signature of autogen's UserProxyAgent input function (sync `prompt -> str`, or
  async `(prompt, cancellation_token) -> str`). A sync one is called in the event loop's own thread
  (nothing else runs while the team waits for the review), so Ctrl-C interrupts it at once;
- `scripted([...])`: answers given in advance (tests, notebooks).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from mora_agents.errors import MoraError
from mora_agents.sop.messages import ReviewDecision, ReviewRequest

Reviewer = Callable[[ReviewRequest], "ReviewDecision | Awaitable[ReviewDecision]"]
InputFunc = Callable[..., "str | Awaitable[str]"]
ALIASES = {"n": "next", "ok": "next", "accept": "next", "": "next", "r": "repeat", "e": "edit", "s": "stop"}


def auto_accept(request: ReviewRequest) -> ReviewDecision:
    """The reviewer of a run without review: accepts every output."""
    return ReviewDecision(step=request.step, iteration=request.iteration, decision="next", by="auto")


def parse_decision(answer: str, request: ReviewRequest, by: str) -> ReviewDecision:
    """`next`, `repeat`, `edit NEW TEXT` (or `edit: NEW TEXT`), `stop`, or their first letters.

    Raises ValueError, meant for the person, when the answer is not one of the request's options.
    """
    word, _, rest = answer.strip().partition(" ")
    word = word.lower().rstrip(":")
    decision = ALIASES.get(word, word)
    if decision not in request.options:
        raise ValueError(f"'{answer.strip()}' is not an option here: choose {', '.join(request.options)}"
                         + ("" if request.repeats_left else " (no repeats left)"))
    text = rest.strip() or None
    if decision == "edit" and not text:
        raise ValueError(f"edit needs the new {request.edit}, e.g. `edit a red fox in the snow`")
    return ReviewDecision(step=request.step, iteration=request.iteration, decision=decision,
                          text=text if decision == "edit" else None, by=by)


def question(request: ReviewRequest) -> str:
    """The prompt shown to a person at a review point."""
    output = request.output if isinstance(request.output, str) else request.output.path
    lines = [f"review of step '{request.key}' ({request.agent}): {output}"]
    if request.text is not None and request.edit != "output":
        lines.append(f"  {request.edit}: {request.text}")
    options = {"next": "next (accept)", "repeat": "repeat (new seed)", "edit": f"edit <new {request.edit}>",
               "stop": "stop"}
    lines.append(f"  {' | '.join(options[o] for o in request.options)}; {request.repeats_left} repeat(s) left > ")
    return "\n".join(lines)


class TextReviewer:
    """A person answering in text through an input function; asks again until the answer is valid."""

    def __init__(self, input_func: InputFunc, name: str = "human") -> None:
        self.input_func, self.name = input_func, name

    async def _ask(self, prompt: str) -> str:
        if inspect.iscoroutinefunction(self.input_func):
            return await self.input_func(prompt, None)
        return self.input_func(prompt)

    async def __call__(self, request: ReviewRequest) -> ReviewDecision:
        prompt = question(request)
        while True:
            answer = await self._ask(prompt)
            try:
                return parse_decision(answer, request, self.name)
            except ValueError as e:
                prompt = f"{e}\n{question(request)}"


def scripted(answers: Iterable[str], name: str = "script") -> TextReviewer:
    """A reviewer that gives `answers` in order; running out of them is an error (the run is interrupted)."""
    remaining = iter(answers)

    def next_answer(prompt: str) -> str:
        try:
            return next(remaining)
        except StopIteration:
            raise MoraError(f"review script: no answer left for: {prompt.splitlines()[0]}") from None

    return TextReviewer(next_answer, name)


async def decide(reviewer: Reviewer, request: ReviewRequest) -> ReviewDecision:
    decision = reviewer(request)
    return await decision if inspect.isawaitable(decision) else decision
