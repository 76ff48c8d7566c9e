"""The speed stack: how the denoisers run. One profile (`--speed exact|fast|fastest`, `exact` by default) with
options over it (`--speed-option NAME=VALUE`), applied to each pipeline when it is built (`apply_speed`).

| option | values | what it does |
|---|---|---|
| `cache` | none, auto, first-block, taylorseer | diffusers' caches on the transformer (`enable_cache`): First-Block-Cache skips the other blocks while the first block's output changes less than `cache_threshold`; TaylorSeer predicts the blocks' outputs between full steps; `auto`: each model's own (`CACHE`) |
| `cache_threshold` | a number | First-Block-Cache's threshold (default: the model's, `CACHE`) |
| `attention` | default, auto, or a diffusers attention backend (native, flash, sage, ...) | `set_attention_backend` on the transformer; `auto`: sage, then flash, when installed on CUDA, else PyTorch's SDPA |
| `compile` | none, regional, full | `torch.compile` of the denoiser: its repeated blocks where diffusers lists them (`compile_repeated_blocks`), else all of it |
| `quantize` | none, fp8, int8 | the denoiser's weights through torchao (CUDA only; fp8 needs compute capability 8.9) |
| `distill` | none, lightx2v | a few-step distilled LoRA where one exists for the backend (`DISTILL`): its steps and guidance become the defaults |
| `parallel` | ulysses, ring | how `--gpus N` splits a sequence (context parallelism, `mora_agents.pipelines.parallel`) |

`exact` changes nothing: the same frames as without the stack. `fast` turns on the cache (each model's own choice and
threshold), the best attention backend installed and regional compilation; `fastest` adds fp8 weights on a GPU that
has fp8 (elsewhere it leaves them, and says so) and First-Block-Cache's larger threshold for fp8 where its authors give
one. Caches and attention backends apply to the transformers of the newer backends (the paper's UNets run PyTorch's
SDPA and have no diffusers cache); compilation and quantization apply to every denoiser.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mora_agents.errors import InputError, ModelNotAvailable
from mora_agents.settings import Speed

PROFILES = ("exact", "fast", "fastest")
CHOICES: dict[str, tuple[str, ...]] = {
    "cache": ("none", "auto", "first-block", "taylorseer"),
    "compile": ("none", "regional", "full"),
    "quantize": ("none", "fp8", "int8"),
    "distill": ("none", "lightx2v"),
    "parallel": ("ulysses", "ring"),
}
ATTENTION_LIBRARIES = {"flash": "flash_attn", "flash_varlen": "flash_attn", "_flash_3": "flash_attn_interface",
                       "sage": "sageattention", "sage_varlen": "sageattention", "xformers": "xformers"}
"""Attention backends that need a library, by the module it installs."""


@dataclass(frozen=True)
class CacheChoice:
    cache: str
    fast: float | None = None
    fastest: float | None = None
    """First-Block-Cache's threshold under each profile (None for other caches)."""
    source: str = ""


CACHE: dict[str, CacheChoice] = {
    "flux_schnell": CacheChoice("first-block", 0.08, 0.12, "ParaAttention's FLUX default; 0.12 with fp8"),
    "flux_kontext": CacheChoice("first-block", 0.08, 0.12, "ParaAttention's FLUX default; 0.12 with fp8"),
    "framepack": CacheChoice("first-block", 0.06, 0.06, "ParaAttention's HunyuanVideo default"),
    "wan_ti2v": CacheChoice("first-block", 0.05, 0.05, "diffusers' default: no author figure for Wan"),
    "wan_flf2v": CacheChoice("first-block", 0.05, 0.05, "diffusers' default: no author figure for Wan"),
    "ltx_video": CacheChoice("first-block", 0.05, 0.05, "diffusers' default: no author figure for LTX-Video"),
    "skyreels_df": CacheChoice("taylorseer", source="diffusers has no First-Block-Cache metadata for its blocks"),
}
"""Per model with a cacheable transformer, the cache the `fast` profiles use and First-Block-Cache's thresholds."""
TAYLORSEER_MODULES = r"(?:blocks|transformer_blocks|single_transformer_blocks)\.\d+\.attn\d?"
"""The modules whose outputs TaylorSeer predicts: every block's attention (`attn`, `attn1`, `attn2`; diffusers' own
default patterns name `attn` only, which Wan's and SkyReels-V2's blocks do not have)."""


@dataclass(frozen=True)
class Distill:
    repo: str
    file: str
    key: str
    """Its model key: MORA_MODEL_<KEY> may name the file."""
    steps: int
    guidance_scale: float


REPEATED_BLOCKS = {
    "svd": ("BasicTransformerBlock", "TemporalBasicTransformerBlock"),
    "seine": ("TransformerBlock3D",),
}
"""The transformer blocks of the denoisers that declare no `_repeated_blocks` (UNet2DConditionModel declares its
`BasicTransformerBlock`), for regional compilation."""


DISTILL: dict[str, Distill] = {
    "wan2.1-flf2v": Distill("lightx2v/Wan2.1-I2V-14B-480P-StepDistill-CfgDistill-Lightx2v",
                            "loras/Wan21_I2V_14B_lightx2v_cfg_step_distill_lora_rank64.safetensors",
                            "lightx2v_flf2v", 4, 1.0),
}
"""Few-step distilled LoRAs by backend: LightX2V's step- and guidance-distilled LoRA of Wan 2.1 I2V-14B, which
FLF2V-14B (the same architecture, fine-tuned) is run with by the community; 4 steps without guidance."""
DISTILL_MODELS = {"wan2.1-flf2v": "wan_flf2v"}


def _cuda_fp8(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 9)


def _best_attention(device: torch.device) -> str:
    if device.type != "cuda":
        return "default"
    return next((name for name in ("sage", "flash") if importlib.util.find_spec(ATTENTION_LIBRARIES[name])),
                "default")


def resolve_speed(profile: str, options: Mapping[str, Any], device: torch.device) -> Speed:
    """The settings of a profile with `options` over it, for `device`; a bad name or value, or an option this device
    cannot run, raises InputError (one line)."""
    if profile not in PROFILES:
        raise InputError(f"--speed {profile}: unknown (choose from {', '.join(PROFILES)})")
    notes: list[str] = []
    speed = Speed(profile)
    if profile != "exact":
        speed = replace(speed, cache="auto", attention=_best_attention(device), compile="regional")
    if profile == "fastest":
        if _cuda_fp8(device):
            speed = replace(speed, quantize="fp8")
        else:
            notes.append(f"no fp8 weights on {device} (a CUDA GPU of compute capability 8.9 or newer has them)")
    for name, value in options.items():
        speed = replace(speed, **{name: _option(name, value, device)})
    if speed.quantize != "none":
        runs_here = _cuda_fp8(device) if speed.quantize == "fp8" else device.type == "cuda"
        if not runs_here:
            raise InputError(f"--speed-option quantize={speed.quantize}: needs a CUDA GPU"
                             f"{' of compute capability 8.9 or newer' if speed.quantize == 'fp8' else ''} "
                             f"(this run's device: {device})")
        if importlib.util.find_spec("torchao") is None:
            raise InputError(f"--speed-option quantize={speed.quantize}: needs torchao "
                             "(pip install 'mora-agents[speed]')")
    return replace(speed, notes=tuple(notes))


def _option(name: str, value: Any, device: torch.device) -> Any:
    label = f"--speed-option {name}={value}"
    if name == "cache_threshold":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InputError(f"{label}: a positive number is needed")
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"{label}: a positive number is needed") from None
        if not 0 < number < 10:
            raise InputError(f"{label}: a positive number below 10 is needed")
        return number
    if name == "attention":
        return _attention(str(value), device, label)
    if name not in CHOICES:
        names = ", ".join([*CHOICES, "cache_threshold", "attention"])
        raise InputError(f"--speed-option {name}: unknown (options: {names})")
    if value not in CHOICES[name]:
        raise InputError(f"{label}: choose from {', '.join(CHOICES[name])}")
    return value


def _attention(value: str, device: torch.device, label: str) -> str:
    from diffusers.models.attention_dispatch import AttentionBackendName

    if value == "auto":
        return _best_attention(device)
    known = {b.value for b in AttentionBackendName}
    if value != "default" and value not in known:
        raise InputError(f"{label}: unknown (default, auto, or one of diffusers' attention backends: "
                         f"native, flash, sage, _native_cudnn, flex, ...)")
    if value in ATTENTION_LIBRARIES and device.type != "cuda":
        raise InputError(f"{label}: needs a CUDA GPU (this run's device: {device})")
    if value in ATTENTION_LIBRARIES and importlib.util.find_spec(ATTENTION_LIBRARIES[value]) is None:
        raise InputError(f"{label}: needs the {ATTENTION_LIBRARIES[value]} package, which is not installed")
    return value


def parse_speed_options(items: list[str]) -> dict[str, str]:
    """`--speed-option NAME=VALUE` items as a dict (values checked by `resolve_speed`)."""
    options = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InputError(f"--speed-option {item}: expected NAME=VALUE (e.g. cache=first-block)")
        options[name.strip()] = value.strip()
    return options


def denoiser(pipe: Any) -> torch.nn.Module | None:
    """The pipeline's denoiser: its transformer, else its UNet."""
    return getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)


def distill_lora(backend: str) -> Path:
    """The distilled LoRA file of a backend, from MORA_MODEL_<KEY> (the file) or the Hugging Face cache; raises
    ModelNotAvailable naming it and how to get it."""
    import os

    from huggingface_hub import try_to_load_from_cache

    spec = DISTILL[backend]
    local = os.environ.get(f"MORA_MODEL_{spec.key.upper()}")
    if local:
        if not Path(local).is_file():
            raise ModelNotAvailable(f"distilled LoRA for {backend}: MORA_MODEL_{spec.key.upper()}={local} is no file")
        return Path(local)
    cached = try_to_load_from_cache(spec.repo, spec.file)
    if not isinstance(cached, str):
        raise ModelNotAvailable(f"distilled LoRA for {backend} ({spec.repo}, {spec.file}) is not on this machine: "
                                f"download it with `hf download {spec.repo} {spec.file}` or set "
                                f"MORA_MODEL_{spec.key.upper()} to the file")
    return Path(cached)


def check_speed(speed: Speed, backends: list[str]) -> None:
    """Before a run: a distilled LoRA is asked for only with a backend that has one, and its file is here.
    `backends`: those of the tool calls the run makes. Raises InputError (ModelNotAvailable for a missing file)."""
    if speed.distill == "none":
        return
    used = sorted({b for b in backends if b in DISTILL})
    if not used:
        raise InputError(f"--speed-option distill={speed.distill}: none of this run's backends "
                         f"({', '.join(sorted(set(backends)))}) has a distilled LoRA (only {', '.join(DISTILL)})")
    for backend in used:
        distill_lora(backend)


def distilled_defaults(backend: str, speed: Speed) -> dict[str, Any]:
    """The parameter defaults a distilled LoRA sets for a backend (none without one)."""
    if speed.distill == "none" or backend not in DISTILL:
        return {}
    return {"steps": DISTILL[backend].steps, "guidance_scale": DISTILL[backend].guidance_scale}


def apply_speed(key: str, pipe: Any, speed: Speed, device: torch.device, gpus: int = 1) -> tuple[Any, list[str]]:
    """Apply the settings to a pipeline of model `key` (already placed on its device) and, with `gpus` > 1, split its
    denoiser across them if diffusers can (`mora_agents.pipelines.parallel`). Returns the pipeline (on rank 0 of a
    group: one whose calls the other ranks make too) and what was done to it, one phrase each."""
    from mora_agents.pipelines import parallel

    done: list[str] = []
    model = denoiser(pipe)
    split = gpus > 1 and parallel.has_plan(model)
    if model is None or (speed.exact and not split):
        return pipe, done
    backend = next((b for b, k in DISTILL_MODELS.items() if k == key), None)
    if speed.distill != "none" and backend is not None:
        pipe.load_lora_weights(str(distill_lora(backend)), adapter_name="distill")
        done.append(f"distilled LoRA {DISTILL[backend].repo}")
    if speed.quantize != "none":
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        quantize_(model, Float8DynamicActivationFloat8WeightConfig() if speed.quantize == "fp8"
                  else Int8WeightOnlyConfig())
        done.append(f"{speed.quantize} weights")
    if speed.attention != "default" and key in CACHE:  # the transformers that dispatch their attention
        model.set_attention_backend(speed.attention)
        done.append(f"attention {speed.attention}")
    if split:  # after the attention backend (it must support splitting), before caches and compilation
        parallel.group(gpus, device)  # on rank 0: the workers start and join first
        parallel.make_parallel(model, gpus, speed, device)
        done.append(f"split across {gpus} GPUs ({speed.parallel})")
    if speed.cache != "none" and hasattr(model, "enable_cache") and key in CACHE:
        done.append(_enable_cache(model, key, speed))
    if speed.compile != "none":
        blocks = REPEATED_BLOCKS.get(key) or getattr(model, "_repeated_blocks", None)
        if speed.compile == "regional" and blocks:
            model._repeated_blocks = blocks
            model.compile_repeated_blocks()
            done.append(f"compiled {', '.join(blocks)}")
        else:
            model.compile()
            done.append(f"compiled {type(model).__name__}")
    cached, shared = getattr(model, "is_cache_enabled", False), split and parallel.is_rank0()
    return (SpedPipeline(key, pipe, cached, shared) if cached or shared else pipe), done


def _enable_cache(model: Any, key: str, speed: Speed) -> str:
    from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig

    choice = CACHE[key]
    cache = choice.cache if speed.cache == "auto" else speed.cache
    if cache == "first-block" and choice.cache != "first-block":
        return f"no First-Block-Cache ({choice.source})"
    if cache == "taylorseer":
        model.enable_cache(TaylorSeerCacheConfig(cache_identifiers=[TAYLORSEER_MODULES]))
        return "TaylorSeer cache"
    threshold = speed.cache_threshold or (choice.fastest if speed.quantize == "fp8" else choice.fast)
    model.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    return f"First-Block-Cache {threshold:g}"


class SpedPipeline:
    """A pipeline run with the speed settings (everything but its calls is the pipeline's own): each call in a cache
    context of its own when its denoiser has a cache (pipelines such as FramePack's and the img2img ones set none;
    diffusers resets the cache's state at the end of every call), and, on rank 0 of a `--gpus` group, made by the
    other ranks too."""

    def __init__(self, key: str, pipe: Any, cached: bool, shared: bool) -> None:
        self.__dict__.update(_key=key, _pipe=pipe, _cached=cached, _shared=shared)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pipe, name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from mora_agents.pipelines import parallel

        if self._shared:
            parallel.send_call(self._key, args, kwargs)
        with denoiser(self._pipe).cache_context("call") if self._cached else nullcontext():
            return self._pipe(*args, **kwargs)

    def derived(self, key: str, pipe: Any) -> SpedPipeline:
        """Another pipeline over the same components (an img2img one), run the same way."""
        return SpedPipeline(key, pipe, self._cached, self._shared)
