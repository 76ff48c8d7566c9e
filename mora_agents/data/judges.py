"""Judges of candidate sets: multimodal LLMs behind OpenAI-compatible endpoints, or the project's own metrics.

Each judge gets one of the ten criteria (`CRITERIA`, the paper's Table 3 aspects in our words), the prompt the
candidates were made from, and K frames of every candidate as labelled images; it answers a ranking of the
candidates in a fixed JSON schema (`Ranking`). A malformed answer goes back to the model with the error; after 3
tries the judge abstains, as it does on a timeout, an HTTP 5xx or 429 (after the client's retries) or a lost
connection; each vote records why. An endpoint that refuses the request itself (HTTP 400, 401, 403, 404, 422: a
wrong key, model or image limit) stops the selection with that error, since every further set would fail alike.

Metric judges (`metric:NAME`, the offline default) rank by one `mora eval` metric on the whole video (weight-free
fallbacks where reference weights are missing) and ignore the criterion; their votes say so (`judge: metric:...`).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mora_agents.errors import InputError, MoraError, validation_summary
from mora_agents.eval import METRICS, Evaluator, Target

CRITERIA = {
    1: "Sharpness and clarity: rank the videos by how crisp and detailed their frames are, with clean edges, smooth "
       "transitions and little blur, flicker or noise.",
    2: "Object consistency and scene stability: rank the videos by how well objects keep their shape, identity and "
       "interactions from frame to frame, and how believably they move.",
    3: "Temporal coherence: rank the videos by how continuously each frame follows from the one before, without "
       "jumps or sudden changes.",
    4: "Narrative coherence: rank the videos by how much sense their sequence of events makes as a small story or "
       "logical progression.",
    5: "Colour and lighting: rank the videos by how consistent their colour grading and lighting are, with smooth "
       "changes of light and even colour.",
    6: "Realism: rank the videos from the most to the least lifelike objects, textures, backgrounds and scene "
       "detail.",
    7: "Relevance: rank the videos by how well they show what the prompt asks for, in theme and content.",
    8: "Aesthetics: rank the videos by how pleasing they are to look at: composition, balance and overall visual "
       "appeal.",
    9: "Cleanliness: rank the videos by how free they are of artifacts, distortions and noise.",
    10: "Motion: rank the videos by how natural and smooth their motion is, without stutter, lag or frozen frames.",
}

JUDGE_SYSTEM = """You judge candidate videos for a video generation system's training data.
You are shown several candidate videos made from the same prompt. Each candidate is shown as a few frames in time
order, each frame labelled with its candidate's number. Rank all the candidates by the given criterion, best
first, judging only by that criterion and by what the frames show.
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
DEFAULT_JUDGES = ("metric:imaging_quality", "metric:subject_consistency")
"""The offline judges: per-frame quality (BRISQUE without weights) and temporal consistency (SSIM without weights)."""


class Ranking(BaseModel):
    ranking: list[int]
    reason: str = ""


class JudgeSpec(BaseModel):
    """One judge, as a `--judge` option, a judges file entry or `MORA_JUDGES` gives it."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    """The label in every record (default: `metric:NAME`, or the model)."""
    metric: str | None = None
    """A `mora eval` metric: a metric judge."""
    model: str | None = None
    """The model the endpoint serves: an MLLM judge."""
    base_url: str | None = None
    """An OpenAI-compatible endpoint (vLLM, ...); none: OpenAI's API."""
    api_key_env: str | None = None
    """The environment variable with the endpoint's key (default: MORA_JUDGE_API_KEY, then OPENAI_API_KEY)."""
    structured_output: bool = True
    """Send the answer schema as `response_format` (json_schema); off for endpoints that do not support it."""
    timeout: float = Field(120.0, gt=0)
    """Seconds per request; past it the judge abstains."""
    retries: int = Field(2, ge=0, le=10)
    """The HTTP client's retries of 429, 5xx and lost connections before the judge abstains."""
    max_side: int = Field(512, ge=32, le=2048)
    """Frames are scaled down to fit this many pixels per side."""
    temperature: float = Field(0.0, ge=0, le=2)

    @model_validator(mode="after")
    def _one_kind(self) -> JudgeSpec:
        if (self.metric is None) == (self.model is None):
            raise ValueError("give either 'metric' (a metric judge) or 'model' (an MLLM judge)")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"unknown metric '{self.metric}' (metrics: {', '.join(METRICS)})")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url '{self.base_url}' is not an http(s) URL")
        return self

    @property
    def label(self) -> str:
        return self.name or (f"metric:{self.metric}" if self.metric else str(self.model))

    def api_key(self) -> str | None:
        names = [self.api_key_env] if self.api_key_env else ["MORA_JUDGE_API_KEY", "OPENAI_API_KEY"]
        return next((os.environ[n] for n in names if os.environ.get(n)), None)


def parse_judge(text: str, label: str = "--judge") -> JudgeSpec:
    """`metric:NAME`, or `[NAME=]MODEL[@BASE_URL]` (e.g. `qwen=Qwen/Qwen2-VL-7B-Instruct@http://gpu1:8000/v1`)."""
    text = text.strip()
    try:
        if text.startswith("metric:"):
            return JudgeSpec(metric=text.removeprefix("metric:"))
        head, _, url = text.partition("@")
        name, _, model = head.partition("=") if "=" in head else ("", "", head)
        return JudgeSpec(name=name or None, model=model or None, base_url=url or None)
    except ValidationError as e:
        raise InputError(f"{label} {text}: {validation_summary(e, locations=False).replace('Value error, ', '')}"
                         ) from None


def read_judges_file(path: Path) -> list[JudgeSpec]:
    """A JSON or YAML list of judge entries (or `{"judges": [...]}`); InputError names the file and the entry."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--judges {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"--judges {path}: not a readable JSON or YAML file ({' '.join(str(e).split())})") from None
    entries = data.get("judges") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise InputError(f"--judges {path}: expected a list of judges (or {{\"judges\": [...]}})")
    specs = []
    for number, entry in enumerate(entries, 1):
        try:
            specs.append(parse_judge(entry, f"--judges {path} entry {number}:") if isinstance(entry, str)
                         else JudgeSpec.model_validate(entry))
        except ValidationError as e:
            raise InputError(f"--judges {path} entry {number}: "
                             f"{validation_summary(e).replace('Value error, ', '')}") from None
    return specs


def judge_specs(options: Sequence[str] = (), file: Path | None = None) -> list[JudgeSpec]:
    """The configured judges: `--judge` options and a `--judges` file, else `MORA_JUDGES` (the same specs as
    `--judge`, separated by spaces), else the offline metric judges. At least two, with distinct labels."""
    specs = [parse_judge(text) for text in options] + (read_judges_file(file) if file is not None else [])
    if not specs and os.environ.get("MORA_JUDGES", "").strip():
        specs = [parse_judge(text, "MORA_JUDGES:") for text in os.environ["MORA_JUDGES"].split()]
    specs = specs or [parse_judge(text) for text in DEFAULT_JUDGES]
    labels = [spec.label for spec in specs]
    if len(specs) < 2:
        raise InputError(f"judges: {len(specs)} given; the rule needs at least two (--judge, --judges or MORA_JUDGES)")
    if duplicate := next((label for label in labels if labels.count(label) > 1), None):
        raise InputError(f"judges: two are named '{duplicate}'; name them (--judge NAME=MODEL@URL, or 'name:')")
    for spec in specs:
        if spec.model is not None and spec.base_url is None and not spec.api_key():
            raise InputError(f"judge {spec.label}: no base URL, and no key for OpenAI's API "
                             f"({spec.api_key_env or 'MORA_JUDGE_API_KEY or OPENAI_API_KEY'} is not set)")
    return specs


# -- what a judge sees, and what it answers ----------------------------------------------------------------------


@dataclass
class Showing:
    """One candidate set as the judges see it: the prompt(s) and each candidate's video and sampled frames."""

    prompt: str
    """The prompt the candidates were drawn from (the enhanced one when they share it)."""
    videos: dict[int, Path]
    frames: dict[int, tuple[list[np.ndarray], list[float]]]
    """Candidate -> (K frames, their times in seconds)."""
    own_prompts: dict[int, str] = field(default_factory=dict)
    """Candidate -> its own enhanced prompt, when the candidates' prompt agent enhanced them differently."""


class Vote(BaseModel):
    """One judge's answer on one set (or its abstention, with the reason)."""

    judge: str
    kind: Literal["mllm", "metric"]
    criterion: int
    """The criterion drawn for this judge (metric judges rank by their metric instead)."""
    ranking: list[int] | None = None
    """Candidate numbers, best first; None: abstained."""
    reason: str = ""
    error: str | None = None
    """Why it abstained."""
    tries: int = 0
    model: str | None = None
    scores: dict[str, float] | None = None
    """A metric judge's value per candidate."""
    backend: str | None = None
    """A metric judge's backend (`reference` or `fallback:...`)."""
    time: str = Field(default_factory=lambda: datetime.now().isoformat())

    @property
    def top(self) -> int | None:
        return self.ranking[0] if self.ranking else None


class Judge(Protocol):
    spec: JudgeSpec

    def rank(self, showing: Showing, criterion: int) -> Vote: ...


def check_ranking(ranking: Ranking, candidates: Sequence[int]) -> list[int]:
    """A ranking that names every candidate exactly once; ValueError (meant for the model) otherwise."""
    if sorted(ranking.ranking) != sorted(candidates):
        raise ValueError(f"'ranking' must list each of the candidates {list(candidates)} exactly once, best first; "
                         f"got {ranking.ranking}")
    return ranking.ranking


class MetricJudge:
    """Ranks the candidates by one `mora eval` metric of their videos (higher is better), ignoring the criterion."""

    def __init__(self, spec: JudgeSpec) -> None:
        assert spec.metric is not None
        self.spec, self.metric, self.evaluator = spec, spec.metric, Evaluator([spec.metric])

    def rank(self, showing: Showing, criterion: int) -> Vote:
        vote = Vote(judge=self.spec.label, kind="metric", criterion=criterion, tries=1)
        results = {n: self.evaluator.evaluate(Target(str(path), path, showing.own_prompts.get(n, showing.prompt)))
                   .results[self.metric] for n, path in showing.videos.items()}
        missing = next((r for r in results.values() if r.value is None), None)
        if missing is not None:
            return vote.model_copy(update={"error": f"metric {self.metric} unavailable: {missing.reason}"})
        scores = {n: float(r.value) for n, r in results.items() if r.value is not None}
        return vote.model_copy(update={
            "ranking": sorted(scores, key=lambda n: (-scores[n], n)), "scores": {str(n): v for n, v in scores.items()},
            "backend": next(iter(results.values())).backend,
            "reason": f"by {self.metric}, higher is better (a metric judge: the criterion is not used)"})


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
        f"Criterion: {CRITERIA[criterion]}\nThe videos were made from this prompt: {showing.prompt}\n"
        f"There are {len(numbers)} candidates ({', '.join(map(str, numbers))}), each shown as {count} frames in "
        "time order.")}]
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
    """The JSON object in a reply (code fences and text around it tolerated), checked; ValueError otherwise."""
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


class OpenAIJudge:
    """A multimodal LLM behind an OpenAI-compatible chat completions endpoint, through the `openai` client."""

    def __init__(self, spec: JudgeSpec) -> None:
        import openai

        self.spec, self.openai = spec, openai
        self.client = openai.OpenAI(base_url=spec.base_url, api_key=spec.api_key() or "not-needed",
                                    timeout=spec.timeout, max_retries=spec.retries)

    def rank(self, showing: Showing, criterion: int) -> Vote:
        vote = Vote(judge=self.spec.label, kind="mllm", criterion=criterion, model=self.spec.model)
        messages = judge_messages(showing, criterion, self.spec.max_side)
        extra = {"response_format": {"type": "json_schema", "json_schema": {
            "name": "candidate_ranking", "strict": True, "schema": RANKING_SCHEMA}}} if self.spec.structured_output else {}
        error = ""
        for attempt in range(1, TRIES + 1):
            try:
                reply = self.client.chat.completions.create(model=str(self.spec.model), messages=messages,
                                                            temperature=self.spec.temperature, **extra)
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
                return vote.model_copy(update={"tries": attempt, "error": f"no connection to {self.spec.base_url} ({e})"})
            content = reply.choices[0].message.content if reply.choices else None
            try:
                answer = parse_answer(content, sorted(showing.videos))
            except ValueError as e:
                error = str(e)
                messages += [{"role": "assistant", "content": content or ""},
                             {"role": "user", "content": f"That answer is not valid: {error}. Answer again with the "
                                                         "JSON object only."}]
                continue
            return vote.model_copy(update={"tries": attempt, "ranking": answer.ranking, "reason": answer.reason})
        return vote.model_copy(update={"tries": TRIES, "error": f"no valid answer in {TRIES} tries (last: {error})"})


def build_judges(specs: Sequence[JudgeSpec]) -> list[Judge]:
    return [MetricJudge(spec) if spec.metric else OpenAIJudge(spec) for spec in specs]


def describe_judges(specs: Sequence[JudgeSpec]) -> list[dict]:
    """The judges as recorded in the selection log (no keys: only the name of their variable)."""
    return [spec.model_dump(exclude_defaults=True) | {"label": spec.label} for spec in specs]
