"""Which judges, and where their keys go: `--judge` specs, judges files and `MORA_JUDGES`.

A key goes only to the endpoint it was configured for: a judge's `api_key_env` names the variable that holds the
key of its own endpoint; a judge of OpenAI's API (no `base_url`) without one uses MORA_JUDGE_API_KEY, then
OPENAI_API_KEY; a judge of any other endpoint without one sends no key at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mora_agents.errors import InputError, validation_summary
from mora_agents.eval import METRICS
from mora_agents.jsonl import read_bounded

OPENAI_API = "https://api.openai.com/v1"
"""Where a judge without a `base_url` is asked (set explicitly: OPENAI_BASE_URL does not redirect its key)."""
OPENAI_KEYS = ("MORA_JUDGE_API_KEY", "OPENAI_API_KEY")
"""The variables holding the key of a judge of OpenAI's API without `api_key_env`, in this order."""
DEFAULT_JUDGES = ("metric:imaging_quality", "metric:subject_consistency")
"""The offline judges: per-frame quality (BRISQUE without weights) and temporal consistency (SSIM without weights)."""
JUDGE_METRICS = ("reference_similarity",)
"""Metric judges beside the `mora eval` metrics: the similarity of candidates to the reference pictures shown."""
MAX_JUDGES_BYTES = 1 * 2**20
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    """The environment variable with this endpoint's key (default: none for an endpoint of your own; for OpenAI's
    API MORA_JUDGE_API_KEY, then OPENAI_API_KEY)."""
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
        if self.metric is not None and self.metric not in (*METRICS, *JUDGE_METRICS):
            raise ValueError(f"unknown metric '{self.metric}' (metrics: {', '.join((*METRICS, *JUDGE_METRICS))})")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url '{self.base_url}' is not an http(s) URL")
        if self.api_key_env is not None and not _VARIABLE.fullmatch(self.api_key_env):
            # not echoed: it may be a key given by mistake
            raise ValueError("api_key_env is not the name of an environment variable (name the variable that holds "
                             "the key, never the key)")
        return self

    @property
    def label(self) -> str:
        return self.name or (f"metric:{self.metric}" if self.metric else str(self.model))

    @property
    def key_variables(self) -> tuple[str, ...]:
        """The variables this judge's key may come from, in order (none: the judge sends no key)."""
        if self.api_key_env:
            return (self.api_key_env,)
        return OPENAI_KEYS if self.base_url is None and self.model is not None else ()

    def api_key(self) -> str | None:
        """The key for this judge's endpoint, and only for it (see the module's docstring)."""
        return next((os.environ[n] for n in self.key_variables if os.environ.get(n)), None)


def parse_judge(text: str, label: str = "--judge") -> JudgeSpec:
    """`metric:NAME`, or `[NAME=]MODEL[@BASE_URL][#KEY_VARIABLE]`
    (e.g. `qwen=Qwen/Qwen2-VL-7B-Instruct@http://gpu1:8000/v1#QWEN_KEY`)."""
    text = text.strip()
    try:
        if text.startswith("metric:"):
            return JudgeSpec(metric=text.removeprefix("metric:"))
        rest, _, variable = text.partition("#")
        head, _, url = rest.partition("@")
        name, _, model = head.partition("=") if "=" in head else ("", "", head)
        return JudgeSpec(name=name or None, model=model or None, base_url=url or None, api_key_env=variable or None)
    except ValidationError as e:
        spec = text.partition("#")[0]  # never a key variable's value, but never echo what follows '#' either
        raise InputError(f"{label} {spec}: {validation_summary(e, locations=False).replace('Value error, ', '')}"
                         ) from None


def read_judges_file(path: Path) -> list[JudgeSpec]:
    """A JSON or YAML list of judge entries (or `{"judges": [...]}`); InputError names the file and the entry."""
    try:
        data = yaml.safe_load(read_bounded(Path(path), MAX_JUDGES_BYTES).decode("utf-8-sig"))
    except InputError as e:
        raise InputError(f"--judges {e}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
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


def judge_specs(options: Sequence[str] = (), file: Path | None = None,
                defaults: Sequence[str] = DEFAULT_JUDGES) -> list[JudgeSpec]:
    """The configured judges: `--judge` options and a `--judges` file, else `MORA_JUDGES` (the same specs as
    `--judge`, separated by spaces), else the offline metric judges (`defaults`). At least two, with distinct labels,
    and every key they name set."""
    specs = [parse_judge(text) for text in options] + (read_judges_file(file) if file is not None else [])
    if not specs and os.environ.get("MORA_JUDGES", "").strip():
        specs = [parse_judge(text, "MORA_JUDGES:") for text in os.environ["MORA_JUDGES"].split()]
    specs = specs or [parse_judge(text) for text in defaults]
    labels = [spec.label for spec in specs]
    if len(specs) < 2:
        raise InputError(f"judges: {len(specs)} given; the rule needs at least two (--judge, --judges or MORA_JUDGES)")
    if duplicate := next((label for label in labels if labels.count(label) > 1), None):
        raise InputError(f"judges: two are named '{duplicate}'; name them (--judge NAME=MODEL@URL, or 'name:')")
    for spec in specs:
        if spec.api_key_env and not spec.api_key():
            raise InputError(f"judge {spec.label}: its key's variable {spec.api_key_env} is not set")
        if spec.model is not None and spec.base_url is None and not spec.api_key():
            raise InputError(f"judge {spec.label}: no base URL, and no key for OpenAI's API "
                             f"({' or '.join(OPENAI_KEYS)} is not set)")
    return specs


def describe_judges(specs: Sequence[JudgeSpec]) -> list[dict]:
    """The judges as recorded in the selection log (no keys: only the name of their variable)."""
    return [spec.model_dump(exclude_defaults=True) | {"label": spec.label} for spec in specs]
