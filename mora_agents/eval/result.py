"""Result records: one per metric and one per evaluated video."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REFERENCE = "reference"


def fallback(method: str) -> str:
    """Backend label of a weight-free approximation."""
    return f"fallback:{method}"


@dataclass
class MetricResult:
    """The value of one metric on one video, with everything needed to reproduce it.

    ``value`` is ``None`` when the metric is unavailable; ``reason`` then says why.
    """

    name: str
    value: float | None
    backend: str | None
    frames_used: list[int] = field(default_factory=list)
    fps: float | None = None
    checkpoint: str | None = None
    sha256: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.value is not None

    @property
    def is_reference(self) -> bool:
        return self.backend == REFERENCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unavailable(name: str, reason: str, fps: float | None = None) -> MetricResult:
    """A result that carries no number, only the reason."""
    return MetricResult(name=name, value=None, backend=None, fps=fps, reason=reason)


@dataclass
class VideoEvaluation:
    """All metric results of one video (or run directory)."""

    source: str
    video: str
    prompt: str | None
    task: str | None
    results: dict[str, MetricResult]
    drift: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """For a run with chained segments: their drift, per chained step (from its run.json)."""
    system: str | None = None
    """The paper's system a run was made with (`mora run --system`; its run.json), if any."""
    noise: bool = False
    """A run of random-weight models (`--preset tiny`): its scores measure noise, not the method."""
    story: dict[str, Any] = field(default_factory=dict)
    """For a story: its consistency measures (`mora_agents.eval.story.story_measures`)."""

    def value(self, metric: str) -> float | None:
        result = self.results.get(metric)
        return result.value if result else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "video": self.video,
            "prompt": self.prompt,
            "task": self.task,
            "metrics": {name: r.to_dict() for name, r in self.results.items()},
            **({"drift": self.drift} if self.drift else {}),
            **({"system": self.system} if self.system else {}),
            **({"noise": True} if self.noise else {}),
            **({"story": self.story} if self.story else {}),
        }
