"""Image tools: text-to-image (SDXL base + refiner) and instruction-based editing (InstructPix2Pix)."""

from __future__ import annotations

from typing import Annotated

import torch

from mora_agents.media import Artifact, load_image, probe, save_image
from mora_agents.pipelines.adapters import adapters_scope
from mora_agents.pipelines.loading import load_pipeline
from mora_agents.settings import denoise_callback, output_path, settings
from mora_agents.tools.defaults import fill_defaults, generator
from mora_agents.tools.registry import register


@register(produces="image", models=("sdxl_base", "sdxl_refiner"))
def text_to_image(
    prompt: Annotated[str, "what the image shows"],
    negative_prompt: str = "",
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    high_noise_frac: float | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's)"] = None,
    output: str | None = None,
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
    instruction: Annotated[str, "the edit, e.g. 'make it look like winter'"],
    steps: int | None = None,
    guidance_scale: float | None = None,
    image_guidance_scale: float | None = None,
    seed: int | None = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's)"] = None,
    output: str | None = None,
) -> Artifact:
    """Edit an image following a written instruction with InstructPix2Pix; the size is kept.

    Unset parameters take the pipeline's defaults (100 steps, guidance 7.5, image guidance 1.5) under `full`.
    `adapters`: with the image-to-image agent's fine-tuned weights and modulation token from that folder.
    """
    p = fill_defaults("edit_image", steps=steps, guidance_scale=guidance_scale,
                      image_guidance_scale=image_guidance_scale)
    source = load_image(image)
    with adapters_scope(adapters):
        pipe = load_pipeline("instruct_pix2pix")
    with torch.inference_mode():
        edited = pipe(instruction, image=source, num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                      image_guidance_scale=p["image_guidance_scale"], generator=generator(seed),
                      callback_on_step_end=denoise_callback("edit_image", p["steps"])).images[0]
    settings().progress.stop()
    path = output_path(output, "edit_image", ".png")
    save_image(edited.resize(source.size), path)
    return probe(path, noise=settings().preset == "tiny")
