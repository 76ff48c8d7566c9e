"""Appearance style: CLIP ViT-B/32 frame-text similarity (logit / 100), mean over frames."""

from __future__ import annotations

from mora_agents.eval._deps import require
from mora_agents.eval.metrics.base import EvalContext, reference_or_fallback
from mora_agents.eval.result import MetricResult, unavailable

NAME = "appearance_style"


def reference(ctx: EvalContext) -> MetricResult:
    from mora_agents.eval.nets.preprocess import clip_input_pil

    torch = require("torch")
    clip = ctx.backends.clip("clip_vit_b32")
    tokenizer = ctx.backends.tokenizer()
    size = clip.model.visual.input_resolution
    tokens = tokenizer.model.tokenize([ctx.prompt], clip.model.context_length).to(ctx.backends.torch_device)
    with torch.no_grad():
        text = torch.nn.functional.normalize(clip.model.encode_text(tokens), dim=-1)
        scale = clip.model.logit_scale.exp()
    images = ctx.backends.encode_frames(ctx.video.frames, lambda f: clip_input_pil(f, size), clip.model.encode_image)
    # VBench reads CLIP's logits_per_text (logit_scale * cosine) and divides by 100.
    per_frame = (torch.from_numpy(images).to(text.device) @ text.T).squeeze(-1) * scale / 100
    result = clip.result(NAME, float(per_frame.mean()), list(range(ctx.video.num_frames)), ctx.video.fps)
    result.details.update(tokenizer=str(tokenizer.path), tokenizer_sha256=tokenizer.sha256, input_size=[size, size])
    return result


def compute(ctx: EvalContext) -> MetricResult:
    if not ctx.prompt:
        return unavailable(NAME, "needs a prompt (--prompt, --prompts or a run directory)", ctx.video.fps)
    return reference_or_fallback(NAME, ctx, reference, None)
