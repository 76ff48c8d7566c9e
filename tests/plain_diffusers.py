"""Run a `mora train` output with diffusers and peft alone (no mora_agents), as docs/training.md shows.

    python plain_diffusers.py MODELS ADAPTERS JOB.json OUT.npz

MODELS holds `save_pretrained` folders sdxl_base, sdxl_refiner and svd; JOB the text-to-image and image-to-video
calls of a run (prompt, seeds, sizes, steps, ...). Writes the first frame and the clip's frames (uint8) to OUT.
"""

import json
import sys

import numpy as np
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, StableVideoDiffusionPipeline
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file


def attach_modulation(unet, folder: str) -> None:
    """Append the modulation token z to every UNet call's encoder_hidden_states (docs/training.md's lines)."""
    z = load_file(f"{folder}/modulation.safetensors")["z"]  # [1, width]

    def append_z(module, args, kwargs):
        states = kwargs["encoder_hidden_states"]
        kwargs["encoder_hidden_states"] = torch.cat([states, z.to(states).expand(len(states), 1, -1)], dim=1)
        return args, kwargs

    unet.register_forward_pre_hook(append_z, with_kwargs=True)


def main(models: str, adapters: str, job: dict, out: str) -> None:
    card = json.load(open(f"{adapters}/card.json"))
    base = StableDiffusionXLPipeline.from_pretrained(f"{models}/sdxl_base")
    base.load_lora_weights(f"{adapters}/text_to_image")  # diffusers' own loader
    base.fuse_lora()
    attach_modulation(base.unet, f"{adapters}/text_to_image")
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(f"{models}/sdxl_refiner")
    t2i = job["text_to_image"]
    common = dict(prompt=t2i["prompt"], num_inference_steps=t2i["steps"], guidance_scale=t2i["guidance_scale"],
                  generator=torch.Generator("cpu").manual_seed(t2i["seed"]))
    latents = base(**common, width=t2i["width"], height=t2i["height"], denoising_end=t2i["high_noise_frac"],
                   output_type="latent").images
    image = refiner(**common, image=latents, denoising_start=t2i["high_noise_frac"]).images[0]

    svd = StableVideoDiffusionPipeline.from_pretrained(f"{models}/svd")  # no LoRA loader: peft's functions
    lora = card["lora"]
    inject_adapter_in_model(LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                       target_modules=lora["target_modules"]), svd.unet)
    state = load_file(f"{adapters}/image_to_video/pytorch_lora_weights.safetensors")
    set_peft_model_state_dict(svd.unet, {name.removeprefix("unet."): t for name, t in state.items()})
    for module in svd.unet.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    attach_modulation(svd.unet, f"{adapters}/image_to_video")
    i2v = job["image_to_video"]
    frames = svd(Image.open(i2v["image"]).convert("RGB"), width=i2v["width"], height=i2v["height"],
                 num_frames=i2v["frames"], num_inference_steps=i2v["steps"], fps=i2v["fps"],
                 motion_bucket_id=i2v["motion_bucket_id"], noise_aug_strength=i2v["noise_aug_strength"],
                 decode_chunk_size=i2v["decode_chunk_size"], generator=torch.Generator("cpu").manual_seed(i2v["seed"]),
                 output_type="np").frames[0]
    assert "mora_agents" not in sys.modules
    np.savez(out, image=np.asarray(image), frames=(np.clip(frames, 0, 1) * 255).round().astype(np.uint8))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read()), sys.argv[4])
