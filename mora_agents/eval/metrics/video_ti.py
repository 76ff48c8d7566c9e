"""VideoTI: similarity of "[input caption] [instruction]" and the output video's caption.

Captions are supplied by the user (no captioner is bundled). Text similarity uses the CLIP ViT-B/32
text tower (cosine of L2-normalised features); without its weights, a bag-of-words cosine.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from mora_agents.eval._deps import require
from mora_agents.eval.formulas import cosine
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult, unavailable
from mora_agents.eval.result import fallback as fallback_label

NAME = "video_ti"


def _texts(ctx: EvalContext) -> tuple[str, str]:
    return f"{ctx.input_caption} {ctx.prompt}", str(ctx.output_caption)


def reference(ctx: EvalContext) -> MetricResult:
    torch = require("torch")
    clip = ctx.backends.clip("clip_vit_b32")
    tokenizer = ctx.backends.tokenizer()
    tokens = tokenizer.model.tokenize(list(_texts(ctx)), clip.model.context_length).to(ctx.backends.torch_device)
    with torch.no_grad():
        source, output = torch.nn.functional.normalize(clip.model.encode_text(tokens), dim=-1)
    result = clip.result(NAME, float(source @ output), [], ctx.video.fps, text_encoder="CLIP ViT-B/32")
    result.details.update(tokenizer=str(tokenizer.path), tokenizer_sha256=tokenizer.sha256)
    return result


def bag_of_words_similarity(a: str, b: str) -> float:
    words_a, words_b = (Counter(re.findall(r"\w+", t.lower())) for t in (a, b))
    vocab = sorted(words_a | words_b)
    return cosine(np.array([words_a[w] for w in vocab], float), np.array([words_b[w] for w in vocab], float))


def fallback(ctx: EvalContext) -> MetricResult:
    return MetricResult(NAME, bag_of_words_similarity(*_texts(ctx)), fallback_label("bag-of-words"), [], ctx.video.fps)


def compute(ctx: EvalContext) -> MetricResult:
    missing = [
        n
        for n, v in (
            ("prompt", ctx.prompt),
            ("input caption", ctx.input_caption),
            ("output caption", ctx.output_caption),
        )
        if not v
    ]
    if missing:
        return unavailable(NAME, f"needs {', '.join(missing)} (captions are not generated)", ctx.video.fps)
    return reference_or_fallback(NAME, ctx, reference, fallback)
