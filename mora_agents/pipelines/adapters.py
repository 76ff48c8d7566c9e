"""What `mora train` produces and how pipelines use it: LoRA or full denoiser weights and modulation tokens.

An adapter folder holds, per trained agent, its weights (`<agent>/pytorch_lora_weights.safetensors` in diffusers'
LoRA layout, or the whole denoiser, `<agent>/unet.safetensors` or `<agent>/transformer.safetensors`) and its
modulation token z (`<agent>/modulation.safetensors`), and a card (`card.json`, written last) naming the system,
the base models, the preset, the LoRA settings and the sha256 of every file. The folder's sha256 is the card's: the
card pins every file, so it identifies the whole folder.

The LoRA files are what diffusers' own `save_lora_weights` writes (keys `unet.<module>.lora_A.weight`, or
`transformer.<module>...` for a DiT, the peft config in the file's metadata): `pipe.load_lora_weights(
"OUT/text_to_image")` loads them into a plain diffusers SDXL, InstructPix2Pix or Stable Diffusion 3 pipeline; SVD's
pipeline and our Open-Sora-Plan one have no LoRA loader, peft's `inject_adapter_in_model` and
`set_peft_model_state_dict` load the same file (docs/training.md shows both, and how to attach z).

The modulation token (the paper's self-modulation, Algorithm 1) is one extra vector appended to the text (or image)
tokens the denoiser reads: a forward pre-hook on the denoiser adds it to `encoder_hidden_states` (and a kept
position to `encoder_attention_mask` where the denoiser takes one), so it takes part in every call the pipelines
make, classifier-free-guidance batches included, in training and in inference alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn
from torch.utils.hooks import RemovableHandle

from mora_agents.errors import InputError, validation_summary
from mora_agents.media import atomic_path, sha256_file
from mora_agents.pipelines.sources import model_source
from mora_agents.settings import settings, use_settings

AGENT_MODELS: dict[str, dict[str, str]] = {
    "svd": {"text_to_image": "sdxl_base", "image_to_image": "instruct_pix2pix", "image_to_video": "svd"},
    "osp": {"text_to_image": "sd3", "image_to_video": "open_sora_plan"},
}
"""Per system (the paper's Mora (SVD) and Mora (Open-Sora-Plan)), the trainable agents, upstream first, and the
model (pipeline key) each fine-tunes: its denoiser (UNet or DiT). The OSP system's image editor (SD3 image-to-image)
and connection agent (Open-Sora-Plan) share these models, so they run with the same adapters."""
CARD = "card.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
"""diffusers' default LoRA file name: `load_lora_weights(folder)` finds it without `weight_name`."""
MODULATION = "modulation.safetensors"
MODULATION_NOTE = ("z: one token [1, width] appended to the denoiser's encoder_hidden_states (after the prompt or "
                   "image tokens, in every call, the unconditional rows of classifier-free guidance included; a "
                   "kept position appended to encoder_attention_mask where the denoiser takes one)")


class LoraSpec(BaseModel):
    rank: int
    alpha: float
    target_modules: list[str]

    def config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.target_modules,
                          init_lora_weights="gaussian")


class AgentWeights(BaseModel):
    model: str
    """The model key (`sdxl_base`, `sd3`, ...) whose denoiser these weights belong to."""
    source: str
    """The model id or folder it was trained from."""
    mode: Literal["lora", "full"]
    weights: str
    """Relative path of the safetensors file: LoRA weights (diffusers' layout) or the whole denoiser's state dict."""
    modulation: str | None = None
    """Relative path of the modulation token {"z": [1, width]}; none when trained with --no-modulation."""


class AdapterCard(BaseModel):
    """The part of `card.json` that inference reads; the training record (hyper-parameters, dataset, losses)
    rides along as extra fields."""

    model_config = ConfigDict(extra="allow")
    format: Literal[1] = 1
    system: Literal["svd", "osp"] = "svd"
    """The paper's system whose agents were trained (cards from before the OSP system have none: svd)."""
    preset: str
    agents: dict[str, AgentWeights]
    lora: LoraSpec | None = None
    files: dict[str, str]
    """sha256 of every weight file, by relative path."""


def read_card(folder: Path) -> AdapterCard:
    """The card of an adapter folder; a missing or invalid one raises InputError."""
    path = Path(folder) / CARD
    if not Path(folder).is_dir():
        raise InputError(f"adapters {folder}: no such folder")
    if not path.is_file():
        raise InputError(f"adapters {folder}: no {CARD} (not a finished `mora train` output)")
    try:
        return AdapterCard.model_validate_json(path.read_bytes())
    except ValidationError as e:
        raise InputError(f"adapters {path}: invalid card ({validation_summary(e)})") from None


def card_sha256(folder: Path) -> str:
    """The sha256 of an adapter folder: its card's, which holds the sha256 of every weight file."""
    return hashlib.sha256((Path(folder) / CARD).read_bytes()).hexdigest()


def check_adapters(folder: Path) -> AdapterCard:
    """Check that an adapter folder fits the current settings (preset, base models); raises InputError."""
    card = read_card(folder)
    preset = settings().preset
    if card.preset != preset:
        raise InputError(f"adapters {folder}: trained on preset '{card.preset}', but this runs preset '{preset}'")
    for agent, weights in card.agents.items():
        if AGENT_MODELS[card.system].get(agent) != weights.model:
            raise InputError(f"adapters {folder}: agent '{agent}' has model '{weights.model}', which the "
                             f"{card.system} system does not train")
        if (source := model_source(weights.model)) != weights.source:
            raise InputError(f"adapters {folder}: agent '{agent}' was trained on {weights.source}, but model "
                             f"'{weights.model}' is {source} here")
        for relative in filter(None, (weights.weights, weights.modulation)):
            check_file(folder, relative, card.files.get(relative))
    return card


def check_file(folder: Path, relative: str, sha256: str | None) -> None:
    """A weight file of an adapter folder: present, as the card pins it (sha256), a readable safetensors file and
    every value finite; raises InputError. Checked once per file state (path, size, modification time)."""
    path = Path(folder) / relative
    try:
        stat = path.stat()
    except OSError:
        raise InputError(f"adapters {folder}: {relative} is missing") from None
    problem = _file_problem(str(path.resolve()), (stat.st_size, stat.st_mtime_ns, stat.st_ino), sha256)
    if problem:
        raise InputError(f"adapters {folder}: {relative} {problem}")


@lru_cache(maxsize=256)
def _file_problem(path: str, state: tuple[int, int, int], sha256: str | None) -> str | None:
    from safetensors import SafetensorError, safe_open

    if sha256_file(Path(path)) != sha256:
        return "is damaged or changed since training (its sha256 differs from the card's)"
    try:
        with safe_open(path, "pt") as tensors:
            for name in tensors.keys():
                if not torch.isfinite(tensors.get_tensor(name)).all():
                    return f"holds non-finite values (NaN or infinity) in {name}"
    except (SafetensorError, OSError, RuntimeError) as e:
        return f"is not a readable safetensors file ({str(e).splitlines()[0]})"
    return None


@contextmanager
def adapters_scope(adapters: str | Path | None) -> Iterator[None]:
    """Within the block, pipelines load with `adapters` (a tool's parameter); None keeps the settings' ones."""
    with use_settings(adapters=Path(adapters)) if adapters else nullcontext():
        yield


# -- the modulation token ----------------------------------------------------------------------------


class Modulation(nn.Module):
    """The modulation token z [1, width], appended to a denoiser's conditioning sequence once attached."""

    def __init__(self, z: torch.Tensor, trainable: bool = False) -> None:
        super().__init__()
        self.z = nn.Parameter(z.detach().reshape(1, -1).clone(), requires_grad=trainable)

    def extend(self, states: torch.Tensor) -> torch.Tensor:
        """[..., tokens, width] -> [..., tokens + 1, width]: z appended to every row (Open-Sora-Plan's text states
        come as [batch, 1, tokens, width])."""
        z = self.z.to(device=states.device, dtype=states.dtype)
        return torch.cat([states, z.expand(*states.shape[:-2], 1, -1)], dim=-2)

    def attach(self, denoiser: nn.Module) -> RemovableHandle:
        """Append z to every call of `denoiser` (its `encoder_hidden_states`, keyword or third positional argument),
        and a kept position to its `encoder_attention_mask` when the call gives one."""

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if "encoder_hidden_states" in kwargs:
                kwargs = {**kwargs, "encoder_hidden_states": self.extend(kwargs["encoder_hidden_states"])}
            else:
                args = (*args[:2], self.extend(args[2]), *args[3:])
            if kwargs.get("encoder_attention_mask") is not None:
                mask = kwargs["encoder_attention_mask"]
                kwargs["encoder_attention_mask"] = torch.cat([mask, mask.new_ones(*mask.shape[:-1], 1)], dim=-1)
            return args, kwargs

        return denoiser.register_forward_pre_hook(hook, with_kwargs=True)


def denoiser_name(pipe: Any) -> str:
    """The pipeline component that denoises (and that training fine-tunes): `unet` or `transformer`."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def width(denoiser: nn.Module) -> int:
    """The width of the conditioning tokens a denoiser reads, z's width: a UNet's cross-attention width, SD3's joint
    text width (its T5 width), Open-Sora-Plan's text encoder width (before its caption projection)."""
    config = denoiser.config
    return next(config[key] for key in ("joint_attention_dim", "caption_channels", "cross_attention_dim")
                if config.get(key))


# -- weights ------------------------------------------------------------------------------------------


def add_lora(denoiser: nn.Module, spec: LoraSpec) -> None:
    """Inject LoRA layers (peft) into a denoiser. SVD's UNet and our Open-Sora-Plan DiT lack diffusers'
    `add_adapter`, so every denoiser goes through peft's `inject_adapter_in_model`, which is what `add_adapter`
    calls."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(spec.config(), denoiser)


def save_lora(denoiser: nn.Module, component: str, spec: LoraSpec, path: Path) -> None:
    """A denoiser's LoRA weights in diffusers' layout (what its `save_lora_weights` writes: peft keys prefixed by the
    `component`, `unet` or `transformer`, the peft config in the metadata), written atomically."""
    from diffusers.loaders import SD3LoraLoaderMixin, StableDiffusionLoraLoaderMixin
    from peft import get_peft_model_state_dict

    state = {name: t.detach().float().cpu().contiguous() for name, t in get_peft_model_state_dict(denoiser).items()}
    metadata = spec.config().to_dict()
    with atomic_path(path) as tmp:
        if component == "unet":
            StableDiffusionLoraLoaderMixin.save_lora_weights(tmp.parent, unet_lora_layers=state, weight_name=tmp.name,
                                                             unet_lora_adapter_metadata=metadata)
        else:
            SD3LoraLoaderMixin.save_lora_weights(tmp.parent, transformer_lora_layers=state, weight_name=tmp.name,
                                                 transformer_lora_adapter_metadata=metadata)


def save_modulation(z: torch.Tensor, path: Path) -> None:
    """The modulation token as `{"z": [1, width]}` (fp32), with a note in the metadata saying how it is used."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({"z": z.detach().float().cpu().reshape(1, -1).contiguous()}, tmp,
                  metadata={"format": "pt", "mora_modulation": MODULATION_NOTE})


def load_weights(denoiser: nn.Module, component: str, folder: Path, card: AdapterCard, agent: str
                 ) -> Modulation | None:
    """Load an agent's trained weights into `denoiser` (the pipeline's `component`; LoRA injected first) and return
    its modulation token (not yet attached). Every file is checked first (`check_file`: the card's sha256, finite
    values)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    entry = card.agents[agent]
    for relative in filter(None, (entry.weights, entry.modulation)):
        check_file(folder, relative, card.files.get(relative))
    weights = load_file(Path(folder) / entry.weights)
    if entry.mode == "lora":
        if card.lora is None:
            raise InputError(f"adapters {folder}: agent '{agent}' has LoRA weights but the card has no lora settings")
        add_lora(denoiser, card.lora)
        result = set_peft_model_state_dict(denoiser, {name.removeprefix(f"{component}."): t
                                                      for name, t in weights.items()})
        if result.unexpected_keys:
            raise InputError(f"adapters {folder}: {entry.weights} does not fit model '{entry.model}' "
                             f"(unexpected {result.unexpected_keys[0]})")
    else:
        try:
            denoiser.load_state_dict(weights)
        except RuntimeError as e:
            raise InputError(f"adapters {folder}: {entry.weights} does not fit model '{entry.model}' "
                             f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
    if entry.modulation is None:
        return None
    z = load_file(Path(folder) / entry.modulation)["z"]
    if z.shape[-1] != width(denoiser):
        raise InputError(f"adapters {folder}: the modulation token of '{agent}' has width {z.shape[-1]}, "
                         f"the model's conditioning {width(denoiser)}")
    return Modulation(z)


def apply_adapters(pipe: Any, key: str, folder: Path) -> None:
    """For inference: give the pipeline of model `key` the trained weights (LoRA merged) and modulation token of
    the agent that fine-tuned its denoiser, if the folder has one."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    card = check_adapters(folder)
    agent = next((name for name, entry in card.agents.items() if entry.model == key), None)
    if agent is None:
        return
    component = denoiser_name(pipe)
    denoiser = getattr(pipe, component)
    modulation = load_weights(denoiser, component, folder, card, agent)
    for module in denoiser.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()  # the same function, without the LoRA matmuls at every step
    if modulation is not None:
        modulation.to(device=denoiser.device, dtype=denoiser.dtype)
        denoiser.mora_modulation_hook = modulation.attach(denoiser)
        denoiser.mora_modulation = modulation  # a submodule: it follows the denoiser between devices


def trained_models(folder: Path | None) -> dict[str, str]:
    """Model key -> the adapter folder's sha256, for the models a folder trained (empty without one)."""
    if folder is None:
        return {}
    card = read_card(folder)
    sha = card_sha256(folder)
    return {entry.model: sha for entry in card.agents.values()}
