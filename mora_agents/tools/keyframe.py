"""Keyframes drawn from reference pictures (a story's character and setting sheets), so that the same character
looks the same in every shot.

- `flux-kontext` (default): FLUX.1 Kontext [dev] edits a canvas of the keyframe's size on which the references are
  laid out side by side, into the scene the prompt describes (the way Kontext takes several references: one image).
- `sdxl-ip-adapter`: SDXL base with IP-Adapter (`h94/IP-Adapter`, `ip-adapter_sdxl.bin` and its ViT-bigG image
  encoder): the references' image features steer the cross-attention beside the prompt's, by `reference_scale`.
"""

from __future__ import annotations

from typing import Annotated

from PIL import Image
from pydantic import Field

from mora_agents.media import Artifact, load_image, probe, save_image
from mora_agents.settings import denoise_callback, output_path, settings
from mora_agents.tools.backends import BACKENDS, backend_named
from mora_agents.tools.defaults import fill_defaults, seeded
from mora_agents.tools.params import Guidance, KeyframeBackend, OptionalText, Seed, Side, Steps, Strength, Text
from mora_agents.tools.registry import register
from mora_agents.tools.text_budget import note_cut_prompts

MAX_REFERENCES = 8


def reference_board(references: list[Image.Image], width: int, height: int) -> Image.Image:
    """The references side by side on a white canvas of `width` x `height`, each fitted into its column (aspect
    kept, centred)."""
    board = Image.new("RGB", (width, height), "white")
    column = width // len(references)
    for i, picture in enumerate(references):
        picture = picture.copy()
        picture.thumbnail((column, height), Image.Resampling.LANCZOS)
        board.paste(picture, (i * column + (column - picture.width) // 2, (height - picture.height) // 2))
    return board


@register(produces="image", media={"references": "image"}, backends=BACKENDS["keyframe"])
def keyframe(
    prompt: Annotated[Text, "what the picture shows (the scene, with the characters and place of the references)"],
    references: Annotated[list[str], Field(min_length=1, max_length=MAX_REFERENCES), "reference pictures whose "
                          "characters and places the picture keeps (e.g. their reference sheets)"],
    negative_prompt: Annotated[OptionalText | None, "what the picture should not show (sdxl-ip-adapter)"] = None,
    width: Annotated[Side | None, "width in pixels (flux-kontext: a multiple of 16)"] = None,
    height: Annotated[Side | None, "height in pixels (flux-kontext: a multiple of 16)"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    guidance_scale: Annotated[Guidance | None, "guidance scale (flux-kontext: its distilled guidance)"] = None,
    reference_scale: Annotated[Strength | None, "how strongly the references steer the picture, 0-1 "
                               "(sdxl-ip-adapter)"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[KeyframeBackend | None, "the model: flux-kontext (default) or sdxl-ip-adapter"] = None,
    output: Annotated[str | None, "path of the PNG to write"] = None,
) -> Artifact:
    """Draw a picture from a prompt that keeps the characters and places of reference pictures (a shot's first
    keyframe from its characters' and setting's sheets).

    flux-kontext: FLUX.1 Kontext [dev] redraws a canvas on which the references lie side by side into the prompt's
    scene; sdxl-ip-adapter: SDXL base with IP-Adapter, the references' image features beside the prompt. Unset
    parameters take the backend's defaults (flux-kontext: 1024x576, 28 steps, guidance 2.5; sdxl-ip-adapter:
    1024x576, 40 steps, guidance 5, reference scale 0.6).
    """
    spec = backend_named(BACKENDS["keyframe"], backend)
    p = fill_defaults("keyframe", spec.name, width=width, height=height, steps=steps, guidance_scale=guidance_scale,
                      negative_prompt=negative_prompt, reference_scale=reference_scale)
    pictures = [load_image(path) for path in references]
    from mora_agents.pipelines.loading import load_pipeline

    pipe = load_pipeline(spec.models[-1])
    note_cut_prompts(pipe, spec, {"prompt": prompt, "negative_prompt": p["negative_prompt"]})
    common = dict(prompt=prompt, width=p["width"], height=p["height"], num_inference_steps=p["steps"],
                  guidance_scale=p["guidance_scale"], callback_on_step_end=denoise_callback("keyframe", p["steps"]))
    with seeded(seed) as gen:
        if spec.name == "flux-kontext":
            board = reference_board(pictures, p["width"], p["height"])
            picture = pipe(image=board, max_area=p["width"] * p["height"], _auto_resize=False,
                           max_sequence_length=spec.text.tokens, generator=gen, **common).images[0]
        else:
            pipe.set_ip_adapter_scale(p["reference_scale"])
            square = [reference_board([picture], 224, 224) for picture in pictures]  # whole: no centre crop
            picture = pipe(negative_prompt=p["negative_prompt"] or None, ip_adapter_image=[square], generator=gen,
                           **common).images[0]
    settings().progress.stop()
    path = output_path(output, "keyframe", ".png")
    save_image(picture, path)
    return probe(path, noise=settings().preset == "tiny")
