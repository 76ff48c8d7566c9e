"""MLLM judges: a multimodal LLM behind an OpenAI-compatible chat completions endpoint, through the `openai` client.

The judge gets the criterion, the prompt the candidates were made from, and K frames of every candidate as labelled
images; it answers a ranking in a fixed JSON schema (`Ranking`). The answer is read from the first `{` to the last
`}` of the reply (code fences and text around it tolerated), then checked. A malformed answer goes back to the model
with the error; a reply that is no chat completion at all (an HTML page, `choices: [1]`) is asked again; after 3
tries the judge abstains, as it does on a timeout, an HTTP 5xx or 429 (after the client's retries) or a lost
connection; each vote records why. An endpoint that refuses the request itself (HTTP 400, 401, 403, 404, 422: a
wrong key, model or image limit) raises MoraError, since every further request would fail alike.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image
from pydantic import ValidationError

from mora_agents.errors import MoraError, validation_summary
from mora_agents.judges.specs import OPENAI_API, JudgeSpec
from mora_agents.judges.votes import CRITERION_TEXTS, Ranking, Showing, Vote, check_ranking

JUDGE_SYSTEM = """You judge candidate videos (or pictures) made by a video generation system.
You are shown several candidate videos made from the same prompt. Each candidate is shown as a few frames in time
order (a picture: one frame), each frame labelled with its candidate's number; reference pictures, when given, come
first. Rank all the candidates by the given criterion, best first, judging only by that criterion and by what the
frames show.
Answer with JSON only: {"ranking": [the candidate numbers, best first, each exactly once], "reason": "one short
sentence"}."""

RANKING_SCHEMA = {
    "type": "object",
    "properties": {"ranking": {"type": "array", "items": {"type": "integer"}}, "reason": {"type": "string"}},
    "required": ["ranking", "reason"],
    "additionalProperties": False,
}
"""The answer's JSON schema (sent as structured output where the endpoint supports it; checked here either way)."""
TRIES = 3
CONFIG_ERRORS = (400, 401, 403, 404, 422)


def data_url(frame: np.ndarray, max_side: int) -> str:
    """A frame as a JPEG data URL, scaled down to fit `max_side`."""
    image = Image.fromarray(frame)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def judge_messages(showing: Showing, criterion: int, max_side: int) -> list[dict]:
    """The chat messages: the instructions, then the criterion, the prompt and every frame labelled."""
    numbers = sorted(showing.videos)
    count = len(next(iter(showing.frames.values()))[0])
    parts: list[dict] = [{"type": "text", "text": (
        f"Criterion: {CRITERION_TEXTS[criterion]}\nThe videos were made from this prompt: {showing.prompt}\n"
        f"There are {len(numbers)} candidates ({', '.join(map(str, numbers))}), each shown as {count} frames in "
        "time order.")}]
    for label, picture in showing.references:
        parts.append({"type": "text", "text": f"Reference picture: {label}"})
        parts.append({"type": "image_url", "image_url": {"url": data_url(picture, max_side)}})
    for number in numbers:
        own = f" It was made from: {showing.own_prompts[number]}" if number in showing.own_prompts else ""
        parts.append({"type": "text", "text": f"Candidate {number}.{own}"})
        frames, times = showing.frames[number]
        for i, (frame, seconds) in enumerate(zip(frames, times), 1):
            parts.append({"type": "text", "text": f"Candidate {number}, frame {i} of {len(frames)} ({seconds:.1f} s):"})
            parts.append({"type": "image_url", "image_url": {"url": data_url(frame, max_side)}})
    parts.append({"type": "text", "text": "Rank the candidates by the criterion. Answer with the JSON object only."})
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": parts}]


def parse_answer(content: str | None, candidates: Sequence[int]) -> Ranking:
    """The JSON object in a reply, from its first `{` to its last `}` (code fences and text around it tolerated),
    checked; ValueError otherwise."""
    text = content or ""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the answer")
    try:
        ranking = Ranking.model_validate_json(text[start:end + 1])
    except ValidationError as e:
        raise ValueError(f"the JSON does not match the schema ({validation_summary(e)})") from None
    check_ranking(ranking, candidates)
    return ranking


def reply_text(reply: object) -> str | None:
    """The text of a chat completion's first choice (None: it has none); ValueError when the reply is no chat
    completion (an endpoint answering HTTP 200 with an HTML page, or with JSON of another shape)."""
    try:
        choices = reply.choices  # type: ignore[attr-defined]
        content = choices[0].message.content if choices else None
        if content is None or isinstance(content, str):
            return content
    except (AttributeError, IndexError, KeyError, TypeError):
        pass
    raise ValueError(f"the endpoint's reply is not a chat completion ({' '.join(str(reply).split())[:120]})")


class OpenAIJudge:
    """A multimodal LLM behind an OpenAI-compatible chat completions endpoint, through the `openai` client.

    Its key (`JudgeSpec.api_key`) goes to its own endpoint only; without one, no Authorization header is sent."""

    def __init__(self, spec: JudgeSpec) -> None:
        import openai

        key = spec.api_key()
        self.spec, self.openai = spec, openai
        self.client = openai.OpenAI(base_url=spec.base_url or OPENAI_API, api_key=key or "no key",
                                    timeout=spec.timeout, max_retries=spec.retries)
        self.headers = {} if key else {"Authorization": openai.Omit()}

    def rank(self, showing: Showing, criterion: int) -> Vote:
        vote = Vote(judge=self.spec.label, kind="mllm", criterion=criterion, model=self.spec.model)
        messages = judge_messages(showing, criterion, self.spec.max_side)
        schema = {"name": "candidate_ranking", "strict": True, "schema": RANKING_SCHEMA}
        extra = {"response_format": {"type": "json_schema", "json_schema": schema}} if self.spec.structured_output \
            else {}
        error = ""
        for attempt in range(1, TRIES + 1):
            try:
                reply = self.client.chat.completions.create(model=str(self.spec.model), messages=messages,
                                                            temperature=self.spec.temperature,
                                                            extra_headers=self.headers, **extra)
            except self.openai.APITimeoutError:
                return vote.model_copy(update={"tries": attempt, "error": f"timed out after {self.spec.timeout:g} s"})
            except self.openai.APIStatusError as e:
                body = e.body if isinstance(e.body, dict) else {}
                message = " ".join(str(body.get("message") or e.message).split())[:300]
                if e.status_code in CONFIG_ERRORS:
                    hint = ("; if it has no JSON-schema output, set structured_output: false"
                            if self.spec.structured_output and e.status_code == 400 else "")
                    raise MoraError(f"judge {self.spec.label}: the endpoint refused the request (HTTP {e.status_code}: "
                                    f"{message}); check its model, key and limits{hint}") from None
                return vote.model_copy(update={"tries": attempt, "error": f"HTTP {e.status_code}: {message}"})
            except self.openai.APIConnectionError as e:
                return vote.model_copy(update={"tries": attempt,
                                               "error": f"no connection to {self.client.base_url} ({e})"})
            try:
                content = reply_text(reply)
            except ValueError as e:  # the endpoint's failure, not the model's answer: asked again as it was
                error = str(e)
                continue
            try:
                answer = parse_answer(content, sorted(showing.videos))
            except ValueError as e:
                error = str(e)
                messages = [*messages, {"role": "assistant", "content": content or ""},
                            {"role": "user", "content": f"That answer is not valid: {error}. Answer again with the "
                                                        "JSON object only."}]
                continue
            return vote.model_copy(update={"tries": attempt, "ranking": answer.ranking, "reason": answer.reason})
        return vote.model_copy(update={"tries": TRIES, "error": f"no valid answer in {TRIES} tries (last: {error})"})
