"""Image tools: text-to-image (SDXL base + refiner) and instruction-based editing (InstructPix2Pix)."""

from __future__ import annotations

from typing import Annotated

import torch
from PIL import Image

from mora_agents.media import Artifact, load_image, probe, save_image, shrink_image
from mora_agents.pipelines.adapters import adapters_scope
from mora_agents.pipelines.loading import load_pipeline
from mora_agents.settings import denoise_callback, output_path, settings
from mora_agents.tools.defaults import fill_defaults, generator
from mora_agents.tools.params import (
    Fraction,
    Guidance,
    OptionalText,
    Seed,
    Side,
    Steps,
    Text,
)
from mora_agents.tools.registry import register


@register(produces="image", models=("sdxl_base", "sdxl_refiner"))
def text_to_image(
    prompt: Annotated[Text, "what the image shows"],
    negative_prompt: Annotated[OptionalText, "what the image should not show"] = "",
    width: Annotated[Side | None, "width in pixels, a multiple of 8"] = None,
    height: Annotated[Side | None, "height in pixels, a multiple of 8"] = None,
    steps: Annotated[Steps | None, "denoising steps"] = None,
    high_noise_frac: Annotated[Fraction | None, "share of the steps the base model runs; the refiner runs the rest"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's)"] = None,
    output: Annotated[str | None, "path of the PNG to write"] = None,
) -> Artifact:
    """Generate an image from a text prompt with SDXL base, finished by the SDXL refiner.

    The base denoises the first `high_noise_frac` of the `steps`, the refiner the rest (ensemble of experts).
    Unset parameters take the preset's defaults (full: 1024x576, 40 steps, 0.8, guidance 5.0). `adapters`: the base
    runs with the text-to-image agent's fine-tuned weights and modulation token from that folder.
    """
    p = fill_defaults("text_to_image", width=width, height=height, steps=steps, high_noise_frac=high_noise_frac,
                      guidance_scale=guidance_scale)
    with adapters_scope(adapters):
        base, refiner = load_pipeline("sdxl_base"), load_pipeline("sdxl_refiner")
    common = dict(prompt=prompt, negative_prompt=negative_prompt or None, num_inference_steps=p["steps"],
                  guidance_scale=p["guidance_scale"])
    gen = generator(seed)
    with torch.inference_mode():
        latents = base(**common, width=p["width"], height=p["height"], denoising_end=p["high_noise_frac"],
                       output_type="latent", generator=gen,
                       callback_on_step_end=denoise_callback("text_to_image: base", p["steps"])).images
        image = refiner(**common, image=latents, denoising_start=p["high_noise_frac"], generator=gen,
                        callback_on_step_end=denoise_callback("text_to_image: refiner", p["steps"])).images[0]
    settings().progress.stop()
    path = output_path(output, "text_to_image", ".png")
    save_image(image, path)
    return probe(path, noise=settings().preset == "tiny")


@register(produces="image", media={"image": "image"}, models=("instruct_pix2pix",))
def edit_image(
    image: Annotated[str, "path of the image to edit"],
    instruction: Annotated[Text, "the edit, e.g. 'make it look like winter'"],
    steps: Annotated[Steps | None, "denoising steps"] = None,
    guidance_scale: Annotated[Guidance | None, "text guidance scale"] = None,
    image_guidance_scale: Annotated[Guidance | None, "image guidance scale"] = None,
    max_side: Annotated[Side | None, "the longest side the edit works at; larger images are scaled down"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's)"] = None,
    output: Annotated[str | None, "path of the PNG to write"] = None,
) -> Artifact:
    """Edit an image following a written instruction with InstructPix2Pix; the size is kept up to `max_side`.

    A larger image is scaled down to fit `max_side` (that is the size written); the model works at that size
    rounded to multiples of 8 (at least 64). Unset parameters take the preset's defaults (full: 100 steps,
    guidance 7.5, image guidance 1.5, max side 1024). `adapters`: with the image-to-image agent's fine-tuned
    weights and modulation token from that folder.
    """
    p = fill_defaults("edit_image", steps=steps, guidance_scale=guidance_scale,
                      image_guidance_scale=image_guidance_scale, max_side=max_side)
    source = shrink_image(load_image(image), p["max_side"])
    work = source.resize((max(64, round(source.width / 8) * 8), max(64, round(source.height / 8) * 8)),
                         Image.Resampling.LANCZOS)
    with adapters_scope(adapters):
        pipe = load_pipeline("instruct_pix2pix")
    with torch.inference_mode():
        edited = pipe(instruction, image=work, num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                      image_guidance_scale=p["image_guidance_scale"], generator=generator(seed),
                      callback_on_step_end=denoise_callback("edit_image", p["steps"])).images[0]
    settings().progress.stop()
    path = output_path(output, "edit_image", ".png")
    save_image(edited.resize(source.size), path)
    return probe(path, noise=settings().preset == "tiny")
