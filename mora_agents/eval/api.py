"""Library entry points: :func:`evaluate_video` and the reusable :class:`Evaluator`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from mora_agents.eval._deps import MissingDependencyError
from mora_agents.eval.backends import Backends
from mora_agents.eval.metrics import METRICS, EvalContext
from mora_agents.eval.metrics.summary import QUALITY_DIMENSIONS, VIDEO_QUALITY
from mora_agents.eval.result import VideoEvaluation, unavailable
from mora_agents.eval.story import story_measures
from mora_agents.eval.targets import Target, load_target
from mora_agents.eval.video import BadInputError, read_video
from mora_agents.eval.weights import WeightStore
from mora_agents.llm.storyboard import Storyboard


def resolve_metrics(names: Iterable[str] | None) -> list[str]:
    """Validated metric names in evaluation order; ``video_quality`` brings its six dimensions."""
    if names is None:
        return list(METRICS)
    wanted = set(names)
    unknown = sorted(wanted - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if VIDEO_QUALITY in wanted:
        wanted |= set(QUALITY_DIMENSIONS)
    return [name for name in METRICS if name in wanted]


class Evaluator:
    """Evaluates targets with networks loaded once and shared across videos."""

    def __init__(
        self,
        metrics: Iterable[str] | None = None,
        weights: str | Path | None = None,
        download: bool = False,
        device: str | None = None,
    ) -> None:
        self.metrics = resolve_metrics(metrics)
        self.backends = Backends(WeightStore(weights, download=download), device)

    def evaluate(self, target: Target, on_metric: Callable[[str], None] | None = None) -> VideoEvaluation:
        """Score ``target``; ``on_metric(name)`` is called after each metric."""
        video = read_video(target.video)
        ctx = EvalContext(
            video=video,
            backends=self.backends,
            prompt=target.prompt,
            input_videos=[read_video(p) for p in target.input_videos],
            input_caption=target.input_caption,
            output_caption=target.output_caption,
        )
        for name in self.metrics:
            try:
                ctx.results[name] = METRICS[name](ctx)
            except (MissingDependencyError, ValueError) as exc:
                ctx.results[name] = unavailable(name, str(exc), video.fps)
            if on_metric:
                on_metric(name)
        return VideoEvaluation(target.source, str(target.video), target.prompt, target.task, ctx.results, target.drift,
                               target.system, target.noise, self._story(target))

    def _story(self, target: Target) -> dict:
        """A story run's measures, computed again with this evaluator's networks (its weights)."""
        story = target.story
        if not story.get("storyboard") or not story.get("clips"):
            return {}
        run = target.video.parent
        try:
            board = Storyboard.model_validate(story["storyboard"]).view()
        except ValueError as e:
            raise BadInputError(f"{run / 'run.json'}: its story's storyboard is damaged ({e})") from None
        return story_measures(board, [run / clip for clip in story["clips"]], target.video, story.get("parts") or [],
                              self.backends)


def evaluate_video(
    path: str | Path,
    prompt: str | None = None,
    metrics: Iterable[str] | None = None,
    weights: str | Path | None = None,
    download: bool = False,
) -> VideoEvaluation:
    """Evaluate a video file or run directory; ``prompt`` overrides a run's prompt."""
    target = load_target(path)
    if prompt is not None:
        target.prompt = prompt
    return Evaluator(metrics, weights, download).evaluate(target)
