"""Image tools: text-to-image (SDXL base + refiner, FLUX.1 [schnell] or Stable Diffusion 3.x), also from a starting
image (img2img), and image editing (InstructPix2Pix, FLUX.1 Kontext, or SD3 image-to-image)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

from PIL import Image

from mora_agents.media import Artifact, load_image, probe, save_image, shrink_image
from mora_agents.settings import denoise_callback, output_path, settings
from mora_agents.tools.backends import BACKENDS, Backend, backend_named
from mora_agents.tools.defaults import fill_defaults, seeded
from mora_agents.tools.params import (
    EditImageBackend,
    Fraction,
    Guidance,
    OptionalText,
    Seed,
    Side,
    Steps,
    Redraw,
    Text,
    TextToImageBackend,
)
from mora_agents.tools.registry import register
from mora_agents.tools.text_budget import note_cut_prompts

if TYPE_CHECKING:
    import torch


def work_size(image: Image.Image, backend: Backend) -> tuple[int, int]:
    """The size a model works at for an image: each side rounded to the backend's multiple, at least 64."""
    step = backend.side
    return max(64, round(image.width / step) * step), max(64, round(image.height / step) * step)


@register(produces="image", media={"image": "image"}, backends=BACKENDS["text_to_image"])
def text_to_image(
    prompt: Annotated[Text, "what the image shows"],
    negative_prompt: Annotated[OptionalText | None, "what the image should not show (sdxl, sd3.x)"] = None,
    image: Annotated[str | None, "an image to start from (img2img: the result keeps its size and layout)"] = None,
    strength: Annotated[Redraw | None, "with an image: how much of it is redrawn, above 0 and up to 1"] = None,
    width: Annotated[Side | None, "width in pixels (sdxl: a multiple of 8; the others: of 16)"] = None,
    height: Annotated[Side | None, "height in pixels (sdxl: a multiple of 8; the others: of 16)"] = None,
    steps: Annotated[Steps | None, "denoising steps (with an image: of the whole schedule, of which `strength` "
                     "runs, at least one)"] = None,
    high_noise_frac: Annotated[Fraction | None, "share of the steps the base model runs; the refiner runs the rest "
                               "(sdxl)"] = None,
    guidance_scale: Annotated[Guidance | None, "classifier-free guidance scale (sdxl, sd3.x)"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[TextToImageBackend | None, "the model: sdxl (default), flux-schnell, sd3, sd3.5-large or "
                       "sd3.5-medium"] = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's; sdxl, sd3)"] = None,
    output: Annotated[str | None, "path of the PNG to write"] = None,
) -> Artifact:
    """Generate an image from a text prompt (sdxl: SDXL base finished by its refiner; flux-schnell: FLUX.1 [schnell];
    sd3, sd3.5-large, sd3.5-medium: Stable Diffusion 3 Medium, 3.5 Large, 3.5 Medium).

    sdxl: the base denoises the first `high_noise_frac` of the `steps`, the refiner the rest (ensemble of experts).
    With `image`, the model starts from it, noised by `strength` (img2img; sdxl: a strength within the refiner's
    share runs the refiner alone), at its size rounded to the backend's multiple, and the result has the image's
    size. Unset parameters take the backend's defaults (sdxl: 1024x576, 40 steps, 0.8, guidance 5.0, strength
    0.3). `adapters`: the base (sd3: the transformer) runs with the text-to-image agent's fine-tuned weights and
    modulation token.
    """
    from mora_agents.pipelines.adapters import adapters_scope
    from mora_agents.pipelines.loading import load_pipeline

    spec = backend_named(BACKENDS["text_to_image"], backend)
    p = fill_defaults("text_to_image", spec.name, width=width, height=height, steps=steps, strength=strength,
                      high_noise_frac=high_noise_frac, guidance_scale=guidance_scale)
    if strength is not None and image is None:
        raise ValueError("strength applies to an image to start from: give `image` too")
    source = load_image(image) if image else None
    size = source.size if source else (p["width"], p["height"])
    if source is not None:
        p["steps"] = max(p["steps"], math.ceil(1 / p["strength"]))  # img2img runs strength x steps of them
        if width is None and height is None:
            p["width"], p["height"] = work_size(source, spec)
    start = source.resize((p["width"], p["height"]), Image.Resampling.LANCZOS) if source else None
    with adapters_scope(adapters):
        pipe = load_pipeline(spec.models[0])
        note_cut_prompts(pipe, spec, {"prompt": prompt, "negative_prompt": negative_prompt})
        with seeded(seed) as gen:
            if spec.name == "flux-schnell":
                result = _flux_schnell(prompt, start, p, gen)
            elif spec.name == "sdxl":
                result = _sdxl(prompt, negative_prompt, start, p, gen)
            else:
                result = _sd3(spec.models[0], prompt, negative_prompt, start, p, gen)
    settings().progress.stop()
    path = output_path(output, "text_to_image", ".png")
    save_image(result.resize(size, Image.Resampling.LANCZOS) if result.size != size else result, path)
    return probe(path, noise=settings().preset == "tiny")


def _sdxl(prompt: str, negative_prompt: str | None, start: Image.Image | None, p: dict, gen: torch.Generator
          ) -> Image.Image:
    from mora_agents.pipelines.loading import load_pipeline

    common = dict(prompt=prompt, negative_prompt=negative_prompt or None, num_inference_steps=p["steps"],
                  guidance_scale=p["guidance_scale"], generator=gen)
    share = p["high_noise_frac"]
    refiner = load_pipeline("sdxl_refiner")
    if start is not None and p["strength"] <= 1 - share:  # the refiner's own job: a light redraw of an image
        return refiner(**common, image=start, strength=p["strength"],
                       callback_on_step_end=denoise_callback("text_to_image: refiner", p["steps"])).images[0]
    if start is None:
        latents = load_pipeline("sdxl_base")(
            **common, width=p["width"], height=p["height"], denoising_end=share, output_type="latent",
            callback_on_step_end=denoise_callback("text_to_image: base", p["steps"])).images
    else:
        latents = load_pipeline("sdxl_img2img")(
            **common, image=start, strength=p["strength"], denoising_end=share, output_type="latent",
            callback_on_step_end=denoise_callback("text_to_image: base", p["steps"])).images
    return refiner(**common, image=latents, denoising_start=share,
                   callback_on_step_end=denoise_callback("text_to_image: refiner", p["steps"])).images[0]


def _flux_schnell(prompt: str, start: Image.Image | None, p: dict, gen: torch.Generator) -> Image.Image:
    from mora_agents.pipelines.loading import load_pipeline

    common = dict(prompt=prompt, width=p["width"], height=p["height"], num_inference_steps=p["steps"],
                  guidance_scale=0.0, max_sequence_length=BACKENDS["text_to_image"]["flux-schnell"].text.tokens,
                  generator=gen, callback_on_step_end=denoise_callback("text_to_image", p["steps"]))
    if start is None:
        return load_pipeline("flux_schnell")(**common).images[0]
    return load_pipeline("flux_schnell_img2img")(**common, image=start, strength=p["strength"]).images[0]


def _sd3(key: str, prompt: str, negative_prompt: str | None, start: Image.Image | None, p: dict,
         gen: torch.Generator) -> Image.Image:
    """Stable Diffusion 3.x, drawing or (with `start`) redrawing; its T5 reads the prompt's first 256 tokens."""
    from mora_agents.pipelines.loading import load_pipeline

    common = dict(prompt=prompt, negative_prompt=negative_prompt or None, num_inference_steps=p["steps"],
                  guidance_scale=p["guidance_scale"], max_sequence_length=BACKENDS["text_to_image"]["sd3"].text.tokens,
                  generator=gen, callback_on_step_end=denoise_callback("text_to_image", p["steps"]))
    if start is None:
        return load_pipeline(key)(**common, width=p["width"], height=p["height"]).images[0]
    return load_pipeline(f"{key}_img2img")(**common, image=start, strength=p["strength"]).images[0]


@register(produces="image", media={"image": "image"}, backends=BACKENDS["edit_image"])
def edit_image(
    image: Annotated[str, "path of the image to edit"],
    instruction: Annotated[Text, "the edit, e.g. 'make it look like winter'"],
    steps: Annotated[Steps | None, "denoising steps"] = None,
    guidance_scale: Annotated[Guidance | None, "text guidance scale (flux-kontext: its distilled guidance)"] = None,
    image_guidance_scale: Annotated[Guidance | None, "image guidance scale (instruct-pix2pix)"] = None,
    max_side: Annotated[Side | None, "the longest side the edit works at; larger images are scaled down"] = None,
    strength: Annotated[Redraw | None, "how much of the image is redrawn, above 0 and up to 1 (sd3)"] = None,
    seed: Annotated[Seed | None, "random seed"] = None,
    backend: Annotated[EditImageBackend | None, "the model: instruct-pix2pix (default), flux-kontext or sd3"] = None,
    adapters: Annotated[str | None, "a `mora train` output folder (default: the run's; instruct-pix2pix, sd3)"] = None,
    output: Annotated[str | None, "path of the PNG to write"] = None,
) -> Artifact:
    """Edit an image following a written instruction (instruct-pix2pix: InstructPix2Pix; flux-kontext: FLUX.1
    Kontext [dev]; sd3: Stable Diffusion 3 Medium image-to-image); the size is kept up to `max_side`.

    A larger image is scaled down to fit `max_side` (that is the size written); the model works at that size
    rounded to the backend's multiple (8, FLUX and SD3: 16; at least 64). Unset parameters take the backend's
    defaults (instruct-pix2pix: 100 steps, guidance 7.5, image guidance 1.5, max side 1024; flux-kontext: 28 steps,
    guidance 2.5; sd3: 28 steps of which `strength` 0.6 run, guidance 7). sd3 is no instruction-tuned editor: it
    redraws the image towards the instruction read as a description of the result (SDEdit). `adapters`: with the
    image-to-image agent's fine-tuned weights and modulation token from that folder (sd3: the text-to-image agent's,
    whose transformer it shares).
    """
    from mora_agents.pipelines.adapters import adapters_scope
    from mora_agents.pipelines.loading import load_pipeline

    spec = backend_named(BACKENDS["edit_image"], backend)
    p = fill_defaults("edit_image", spec.name, steps=steps, guidance_scale=guidance_scale,
                      image_guidance_scale=image_guidance_scale, max_side=max_side, strength=strength)
    source = shrink_image(load_image(image), p["max_side"])
    width, height = work_size(source, spec)
    work = source.resize((width, height), Image.Resampling.LANCZOS)
    with adapters_scope(adapters):
        pipe = load_pipeline("sd3_img2img" if spec.name == "sd3" else spec.models[0])
    common = dict(image=work, num_inference_steps=p["steps"], guidance_scale=p["guidance_scale"],
                  callback_on_step_end=denoise_callback("edit_image", p["steps"]))
    note_cut_prompts(pipe, spec, {"instruction": instruction})
    with seeded(seed) as gen:
        if spec.name == "flux-kontext":  # at the work size, not Kontext's preferred ones
            edited = pipe(prompt=instruction, width=width, height=height, max_area=width * height, _auto_resize=False,
                          max_sequence_length=spec.text.tokens, generator=gen, **common).images[0]
        elif spec.name == "sd3":  # img2img runs strength x steps of them: at least one
            common["num_inference_steps"] = max(p["steps"], math.ceil(1 / p["strength"]))
            edited = pipe(prompt=instruction, strength=p["strength"], max_sequence_length=spec.text.tokens,
                          generator=gen, **common).images[0]
        else:
            edited = pipe(instruction, image_guidance_scale=p["image_guidance_scale"], generator=gen,
                          **common).images[0]
    settings().progress.stop()
    path = output_path(output, "edit_image", ".png")
    save_image(edited.resize(source.size), path)
    return probe(path, noise=settings().preset == "tiny")
