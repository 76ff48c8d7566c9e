"""Review sources: who answers a review point, and how.

At a review point the team stops (its turn ends with a ReviewRequest), the runner asks a *reviewer* and
passes the decision back to the team as its next task: autogen's human-in-the-loop by handoff, so the
same review works from a terminal, a notebook or a web page. A reviewer is any callable that takes a
ReviewRequest and returns a ReviewDecision (or an awaitable of one):

- `auto_accept`: chooses next (non-interactive runs);
- `TextReviewer(input_func)`: a person typing answers like `next`, `repeat`, `edit a red fox`, `stop` (at a
  storyboard, `edit shot 2 camera: close-up; remove 3` or a whole storyboard in YAML; at a best-of pick, `pick 2`);
  `input_func` has the signature of autogen's UserProxyAgent input function (sync `prompt -> str`, or
  async `(prompt, cancellation_token) -> str`). A sync one is called in the event loop's own thread
  (nothing else runs while the team waits for the review), so Ctrl-C interrupts it at once;
- `scripted([...])`: answers given in advance (tests, notebooks);
- `storyboard_editor(func)`: a function that edits the storyboard (a `Storyboard`, returned changed) at its review
  and accepts everything else (notebooks).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from mora_agents.errors import MoraError
from mora_agents.llm.storyboard import Storyboard
from mora_agents.sop.formats import EDITS, parse, revise
from mora_agents.sop.messages import ReviewDecision, ReviewRequest

Reviewer = Callable[[ReviewRequest], "ReviewDecision | Awaitable[ReviewDecision]"]
InputFunc = Callable[..., "str | Awaitable[str]"]
ALIASES = {"n": "next", "ok": "next", "accept": "next", "": "next", "r": "repeat", "e": "edit", "s": "stop",
           "pick": "edit", "p": "edit"}


def auto_accept(request: ReviewRequest) -> ReviewDecision:
    """The reviewer of a run without review: accepts every output."""
    return ReviewDecision(step=request.step, iteration=request.iteration, decision="next", by="auto")


def parse_decision(answer: str, request: ReviewRequest, by: str) -> ReviewDecision:
    """`next`, `repeat`, `edit NEW TEXT` (or `edit: NEW TEXT`), `stop`, or their first letters; at a best-of pick,
    `pick N` (an edit of the candidate kept).

    Raises ValueError, meant for the person, when the answer is not one of the request's options (or an edit does
    not fit what it rewrites, see `check_edit`).
    """
    word, _, rest = answer.strip().partition(" ")
    word = word.lower().rstrip(":")
    if word in ("pick", "p") and request.edit != "choice":
        raise ValueError(f"'{word}' picks a candidate at a best-of step's review; here choose "
                         f"{', '.join(request.options)}")
    decision = ALIASES.get(word, word)
    if decision not in request.options:
        raise ValueError(f"'{answer.strip()}' is not an option here: choose {', '.join(request.options)}"
                         + ("" if request.repeats_left else " (no repeats left)"))
    text = rest.strip() or None
    if decision == "edit" and not text:
        raise ValueError(f"edit needs the new {request.edit}, e.g. `edit a red fox in the snow`")
    if decision == "edit":
        check_edit(request, text)
    return ReviewDecision(step=request.step, iteration=request.iteration, decision=decision,
                          text=text if decision == "edit" else None, by=by)


def check_edit(request: ReviewRequest, text: str) -> None:
    """An edit fits what it rewrites: a candidate's number at a pick, a valid edit of a structured output; ValueError,
    meant for the person, otherwise."""
    if request.edit == "choice":
        if not text.isdigit() or not 1 <= int(text) <= len(request.candidates):
            raise ValueError(f"pick a candidate: a number from 1 to {len(request.candidates)}, e.g. `pick 2`")
    elif request.format is not None and isinstance(request.output, str):
        try:
            revise(request.format, request.output, text)
        except ValueError as e:
            raise ValueError(f"{e}\n(an edit of the {request.format}: {EDITS[request.format]})") from None


def question(request: ReviewRequest) -> str:
    """The prompt shown to a person at a review point."""
    output = request.output if isinstance(request.output, str) else request.output.path
    lines = [f"review of step '{request.key}' ({request.agent}): "
             f"{output if request.format is None else 'the ' + request.format}"]
    if request.format is not None and request.text is not None:
        lines.append("  " + request.text.rstrip().replace("\n", "\n  "))
    elif request.text is not None and request.edit not in ("output", "choice"):
        lines.append(f"  {request.edit}: {request.text}")
    for number, candidate in enumerate(request.candidates, 1):
        points = request.details.get("points", {}).get(str(number))
        lines.append(f"  candidate {number}: {candidate.path}" + (f" ({points} points)" if points is not None else "")
                     + (" <- kept" if str(number) == request.text else ""))
    for vote in request.details.get("votes", []):
        said = f"ranked {vote['ranking']}: {vote.get('reason', '')}" if vote.get("ranking") else \
            f"abstained: {vote.get('error')}"
        lines.append(f"  judge {vote['judge']} ({vote['kind']}) {said}")
    edit = ("pick <candidate>" if request.edit == "choice" else
            f"edit <{request.format} edit>" if request.format else f"edit <new {request.edit}>")
    options = {"next": "next (accept)", "repeat": "repeat (new seed" + ("s" if request.candidates else "") + ")",
               "edit": edit, "stop": "stop"}
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


def storyboard_editor(edit: Callable[[Storyboard], Storyboard], name: str = "notebook") -> Callable[
        [ReviewRequest], ReviewDecision]:
    """A reviewer that edits the storyboard with `edit` (a function of the `Storyboard`, returning it changed) and
    accepts every other review point (and a storyboard it returns unchanged)."""
    def review(request: ReviewRequest) -> ReviewDecision:
        if request.format == "storyboard" and isinstance(request.output, str) and "edit" in request.options:
            board = parse("storyboard", request.output)
            edited = edit(board.model_copy(deep=True))
            if edited != board:
                return ReviewDecision(step=request.step, iteration=request.iteration, decision="edit",
                                      text=edited.model_dump_json(), by=name)
        return ReviewDecision(step=request.step, iteration=request.iteration, decision="next", by=name)

    return review
