"""Where each model's weights come from: its Hugging Face id or a local folder (`MORA_MODEL_<KEY>`), the file that
shows it is on this machine, and the `hf download` line that gets it. Nothing here loads a model (no torch)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mora_agents.errors import ModelNotAvailable
from mora_agents.settings import settings

MODEL_IDS: dict[str, str] = {
    "sdxl_base": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl_refiner": "stabilityai/stable-diffusion-xl-refiner-1.0",
    "instruct_pix2pix": "timbrooks/instruct-pix2pix",
    "svd": "stabilityai/stable-video-diffusion-img2vid-xt",
    "seine": "Vchitect/SEINE",
    "sd_v1_4": "CompVis/stable-diffusion-v1-4",
    "flux_schnell": "black-forest-labs/FLUX.1-schnell",
    "flux_kontext": "black-forest-labs/FLUX.1-Kontext-dev",
    "wan_ti2v": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    "ltx_video": "Lightricks/LTX-Video",
    "wan_flf2v": "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "sd35_large": "stabilityai/stable-diffusion-3.5-large",
    "sd35_medium": "stabilityai/stable-diffusion-3.5-medium",
    "open_sora_plan": "LanguageBind/Open-Sora-Plan-v1.2.0",
    "mt5_xxl": "google/mt5-xxl",
    "skyreels_df": "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
    "framepack": "lllyasviel/FramePackI2V_HY",
    "hunyuan_video": "hunyuanvideo-community/HunyuanVideo",
    "flux_redux": "lllyasviel/flux_redux_bfl",
    "sdxl_ip_adapter": "h94/IP-Adapter",
}
COMPONENT_FOLDERS = frozenset({"sd_v1_4", "mt5_xxl", "hunyuan_video", "flux_redux"})
"""Models that are no pipeline of their own: folders another model's pipeline takes components from (SEINE's VAE and
text encoder, Open-Sora-Plan's text encoder, FramePack's HunyuanVideo parts and its SigLIP image encoder)."""
KEY_FILES = {"seine": "seine.pt", "open_sora_plan": "93x480p_i2v/config.json", "mt5_xxl": "config.json",
             "framepack": "config.json", "flux_redux": "image_encoder/config.json",
             "sdxl_ip_adapter": "sdxl_models/ip-adapter_sdxl.bin"}
"""The file that shows a model is present (default: a diffusers pipeline's model_index.json)."""
DOWNLOADS = {"seine": "seine.pt", "open_sora_plan": "--include '93x480p_i2v/*' --include 'vae/*'",
             "mt5_xxl": "--include '*.json' --include spiece.model --include pytorch_model.bin"}
"""What `hf download ID` needs after the id to get a model that is not a whole repository (default: nothing)."""
def model_source(key: str) -> str:
    """The id or directory for a model key: tool settings, then MORA_MODEL_<KEY>, then the default id."""
    return settings().models.get(key) or os.environ.get(f"MORA_MODEL_{key.upper()}") or MODEL_IDS[key]


def check_available(keys: Iterable[str]) -> None:
    """Raise ModelNotAvailable naming every model whose weights are not on this machine (no download), each with the
    command that gets it: one line each, to copy into a shell."""
    missing = [line for key in dict.fromkeys(keys) if (line := _missing(key))]
    if missing:
        raise ModelNotAvailable(
            f"{len(missing)} model{'s' if len(missing) > 1 else ''} not on this machine (download "
            f"{'them' if len(missing) > 1 else 'it'}, or set MORA_MODEL_<KEY> to a local folder; --preset tiny runs "
            "a random-weight demo):\n" + "\n".join(f"  {line}" for line in missing))


def _missing(key: str) -> str | None:
    """What is missing of a model, as a line of `check_available`'s message; None when it is here."""
    from huggingface_hub import try_to_load_from_cache

    source, key_file, variable = model_source(key), KEY_FILES.get(key, "model_index.json"), f"MORA_MODEL_{key.upper()}"
    if Path(source).is_file() and Path(source).name == key_file:
        return None
    if Path(source).is_dir():
        return None if (Path(source) / key_file).is_file() else f"{source} has no {key_file}   # model '{key}', {variable}"
    if isinstance(try_to_load_from_cache(source, key_file), str):
        return None
    return f"{download_command(key)}   # model '{key}', {variable}"


def download_command(key: str) -> str:
    """The command that puts a model key's files in the Hugging Face cache."""
    return " ".join(["hf download", model_source(key), *([DOWNLOADS[key]] if key in DOWNLOADS else [])])
