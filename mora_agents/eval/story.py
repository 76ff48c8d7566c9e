"""How consistent a multi-shot story is (run.json's `story`; `mora eval RUN` shows it), and how much a picture or clip
looks like reference pictures (the critic's offline judge of candidates).

Everything compares **whole frames**: no character detector is bundled, so a character's consistency across shots
is that of the shots it appears in. Two feature kinds, each with its weight-free fallback, labelled in every number:

- `dino`: DINO ViT-B/16 features (VBench's subject consistency checkpoint); without its weights, SSIM
  (`fallback:ssim`: structure, so it is low for the same character drawn elsewhere in the frame);
- `clip`: CLIP ViT-B/32 image features (VBench's background consistency checkpoint); without its weights, colour
  histograms (`fallback:color-histogram`: colours only).

Measures: within each shot, VBench's subject and background consistency of its clip; across shots, per character
and per setting, the mean similarity of the shots it is in (each shot's frames averaged: the cosine of their mean
features, or the mean fallback similarity of the frame pairs); at every join, the smoothness of the frames around it
(motion smoothness: AMT-S, else `fallback:flow-jerk`) and the similarity of the two frames that meet there; and each
shot's adherence to its description: ViCLIP's text-video cosine (as VBench's temporal style computes it; without
ViCLIP's weights no weight-free stand-in exists, so it is reported unavailable with the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mora_agents.eval.backends import Backends
from mora_agents.eval.features import color_histograms, ssim
from mora_agents.eval.formulas import cosine
from mora_agents.eval.metrics import METRICS, EvalContext
from mora_agents.eval.metrics.base import NOT_REFERENCE
from mora_agents.eval.result import REFERENCE, fallback
from mora_agents.eval.video import Video, read_video
from mora_agents.eval.weights import WeightStore

FRAMES = "whole frames (no character crops: no detector is bundled)"
KINDS = {"dino": fallback("ssim"), "clip": fallback("color-histogram")}
"""Each feature kind and its weight-free fallback."""
SAMPLES = 4
"""Frames per shot compared across shots."""
WINDOW = 4
"""Frames of each shot on either side of a join in its smoothness window."""


def sample(frames: np.ndarray, count: int = SAMPLES) -> np.ndarray:
    """`count` frames spread evenly over a clip (all of a shorter one)."""
    return frames[np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))]


class Similarity:
    """Similarity of two sets of frames by DINO or CLIP features, or their fallbacks where the weights are missing."""

    def __init__(self, backends: Backends | None = None) -> None:
        self.backends = backends or Backends(WeightStore())

    def features(self, kind: str, frames: np.ndarray) -> np.ndarray:
        """L2-normalised reference features (T, D); raises when the network is unavailable (see NOT_REFERENCE)."""
        from mora_agents.eval.nets.preprocess import clip_input, dino_input

        if kind == "dino":
            return self.backends.encode_frames(frames, dino_input, self.backends.dino().model)
        model = self.backends.clip("clip_vit_b32").model
        size = model.visual.input_resolution
        return self.backends.encode_frames(frames, lambda f: clip_input(f, size), model.encode_image)

    def __call__(self, kind: str, a: np.ndarray, b: np.ndarray) -> tuple[float, str]:
        """(value, backend): 1.0 for identical frames. Reference: the cosine of the two sets' mean features;
        fallback: the mean SSIM of every pair (dino) or the cosine of the mean colour histograms (clip)."""
        try:
            fa, fb = self.features(kind, a), self.features(kind, b)
            return cosine(fa.mean(axis=0), fb.mean(axis=0)), REFERENCE
        except NOT_REFERENCE:
            pass
        if kind == "clip":
            return cosine(color_histograms(a).mean(axis=0), color_histograms(b).mean(axis=0)), KINDS[kind]
        height, width = a.shape[1:3]
        b = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR)) for f in b])
        return float(np.mean([ssim(x, y) for x in a for y in b])), KINDS[kind]

    def both(self, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        """Both kinds: `{"dino": v, "clip": v, "backends": {"dino": ..., "clip": ...}}`."""
        values = {kind: self(kind, a, b) for kind in KINDS}
        return {**{k: round(v, 4) for k, (v, _) in values.items()}, "backends": {k: b for k, (_, b) in values.items()}}


def reference_similarity(frames: np.ndarray, references: Sequence[np.ndarray], similarity: Similarity | None = None
                         ) -> tuple[float, str]:
    """How much a picture or clip (its frames) looks like reference pictures: the mean over the references of the
    DINO similarity (fallback: of the CLIP kind, colour histograms, since a reference sheet is drawn elsewhere in the
    frame than the character in a shot). Returns (value, backend)."""
    similarity = similarity or Similarity()
    values = []
    for reference in references:
        value, backend = similarity("dino", sample(frames), reference[None])
        if backend != REFERENCE:
            value, backend = similarity("clip", sample(frames), reference[None])
        values.append(value)
    return float(np.mean(values)), backend


def _metric(name: str, video: Video, backends: Backends, prompt: str | None = None) -> dict[str, Any]:
    result = METRICS[name](EvalContext(video=video, backends=backends, prompt=prompt))
    return {"value": None if result.value is None else round(result.value, 4), "backend": result.backend,
            **({"reason": result.reason} if result.reason else {})}


def story_measures(storyboard: dict[str, Any], clips: Sequence[Path], result: Path | None = None,
                   parts: Sequence[dict[str, Any]] = (), backends: Backends | None = None) -> dict[str, Any]:
    """The measures of a story: `storyboard` is its view (`Storyboard.view()`: shots with their `cast`), `clips`
    the shots' clips in order, `result` the joined video and `parts` where each shot and transition lies in it
    (`join_clips`' report: `{"kind": "shot" | "transition", "start", "frames", ...}`)."""
    backends = backends or Backends(WeightStore())
    similarity = Similarity(backends)
    videos = [read_video(path) for path in clips]
    shots = storyboard["shots"][:len(videos)]
    within = [{"shot": shot["number"], "subject_consistency": _metric("subject_consistency", video, backends),
               "background_consistency": _metric("background_consistency", video, backends)}
              for shot, video in zip(shots, videos)]
    across = {}
    for entry in storyboard["cast"]:
        present = [i for i, shot in enumerate(shots) if entry["name"] in shot["cast"]]
        pairs = [similarity.both(sample(videos[i].frames), sample(videos[j].frames))
                 for i, j in combinations(present, 2)]
        if pairs:
            across[entry["name"]] = {"kind": entry["kind"], "shots": [shots[i]["number"] for i in present],
                                     **{k: round(float(np.mean([p[k] for p in pairs])), 4) for k in KINDS},
                                     "backends": pairs[0]["backends"]}
    adherence = [{"shot": shot["number"], **_metric("temporal_style", video, backends, shot["description"])}
                 for shot, video in zip(shots, videos)]
    measures = {"frames": FRAMES, "within_shot": within, "across_shots": across,
                "adjacent_shots": [{"shots": [a["number"], b["number"]],
                                    **similarity.both(sample(va.frames), sample(vb.frames))}
                                   for (a, va), (b, vb) in zip(zip(shots, videos), zip(shots[1:], videos[1:]))],
                "adherence": adherence, "adherence_metric": "ViCLIP text-video cosine of the clip and the shot's "
                                                            "description (as VBench's temporal style)"}
    if result is not None and parts:
        measures["joins"] = join_measures(read_video(result), parts, backends, similarity)
    return measures


def join_measures(video: Video, parts: Sequence[dict[str, Any]], backends: Backends,
                  similarity: Similarity | None = None) -> list[dict[str, Any]]:
    """At every join of a joined story (`parts`: its shots and transitions in order): the smoothness of the window
    from WINDOW frames before the join to WINDOW after it (transition frames included), and the similarity of the
    frames that meet at each of its seams (the lowest, where a transition makes two seams)."""
    similarity = similarity or Similarity(backends)
    shots = [p for p in parts if p["kind"] == "shot"]
    joins = []
    for before, after in zip(shots, shots[1:]):
        between = [p for p in parts if before["start"] < p["start"] < after["start"] and p["kind"] == "transition"]
        end = before["start"] + before["frames"]
        first, last = max(before["start"], end - WINDOW), after["start"] + min(WINDOW, after["frames"])
        window = video.frames[first:last]
        seams = [end] + [p["start"] + p["frames"] for p in between]
        meeting = [similarity("dino", video.frames[s - 1:s], video.frames[s:s + 1]) for s in seams
                   if 0 < s < len(video.frames)]
        joins.append({"after_shot": before["shot"], "via": between[0]["via"] if between else "cut",
                      "frames": [int(first), int(last)],
                      "smoothness": _metric("motion_smoothness", Video(window, video.fps), backends),
                      "seam": {"value": round(min(v for v, _ in meeting), 4), "backend": meeting[0][1]} if meeting
                      else None})
    return joins
