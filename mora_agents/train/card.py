"""The result of a training run: each agent's weights and modulation token, and the card (JSON + Markdown)."""

from __future__ import annotations

from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from mora_agents.media import atomic_path, sha256_file
from mora_agents.pipelines.adapters import (
    CARD,
    LORA_WEIGHTS,
    MODULATION,
    AdapterCard,
    AgentWeights,
    LoraSpec,
    card_sha256,
    save_lora,
    save_modulation,
)
from mora_agents.pipelines.sources import model_source


def _save(tensors: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({name: t.detach().float().cpu().contiguous() for name, t in tensors.items()}, tmp)


def write_card(out_dir: Path, agents: list, config, lora: LoraSpec | None, record: dict[str, Any]) -> AdapterCard:
    """Write every agent's weights (`<agent>/pytorch_lora_weights.safetensors`, diffusers' LoRA layout, or the
    whole denoiser, `unet.safetensors` or `transformer.safetensors`) and modulation token, then `card.md` and, last,
    `card.json` (each file atomically): a folder with a card is complete.

    `record`: the training's own entries of the card (dataset, losses, environment, ...).
    """
    entries, files = {}, {}
    for agent in agents:
        weights = f"{agent.name}/{f'{agent.component}.safetensors' if config.full else LORA_WEIGHTS}"
        if config.full:
            _save(agent.denoiser.state_dict(), out_dir / weights)
        else:
            save_lora(agent.denoiser, agent.component, lora, out_dir / weights)
        modulation = None
        if agent.modulation is not None:
            modulation = f"{agent.name}/{MODULATION}"
            save_modulation(agent.modulation.z, out_dir / modulation)
        for relative in filter(None, (weights, modulation)):
            files[relative] = sha256_file(out_dir / relative)
        entries[agent.name] = AgentWeights(model=agent.model, source=model_source(agent.model),
                                           mode="full" if config.full else "lora", weights=weights, modulation=modulation)
    parent = None
    if config.init_adapters is not None:
        parent = {"path": str(Path(config.init_adapters).resolve()), "sha256": card_sha256(config.init_adapters)}
    card = AdapterCard(system=config.system, preset=config.preset, agents=entries, lora=lora, files=files,
                       hyperparameters=config.model_dump(mode="json"), iteration=config.iteration, parent=parent,
                       **record, created=datetime.now().isoformat(), mora_agents=version("mora-agents"))
    with atomic_path(out_dir / "card.md") as tmp:
        tmp.write_text(card_markdown(card), encoding="utf-8")
    with atomic_path(out_dir / CARD) as tmp:
        tmp.write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return card


def card_markdown(card: AdapterCard) -> str:
    """The card for people: models, settings, dataset and the loss of every agent at every step."""
    extra = card.model_extra or {}
    h = extra.get("hyperparameters", {})
    lines = [f"# Mora agents fine-tuned (iteration {extra.get('iteration', 0)})", "",
             f"System `{card.system}`, preset `{card.preset}`, {extra.get('steps')} steps, created "
             f"{extra.get('created', '')}.", "",
             "| agent | base model | trained | weights | modulation token |", "|---|---|---|---|---|"]
    modulation = extra.get("modulation", {})
    for name, entry in card.agents.items():
        token = modulation.get(name)
        token_text = f"norm {token['norm']:.4g}, alpha {token['alpha']:.4g}" if token else "none"
        trained = f"LoRA rank {card.lora.rank}" if entry.mode == "lora" and card.lora else entry.mode
        lines.append(f"| {name} | {entry.model} (`{entry.source}`) | {trained} | `{entry.weights}` | {token_text} |")
    dataset = extra.get("dataset", {})
    lines += ["", f"Dataset `{dataset.get('path')}`: {dataset.get('samples')} samples "
              f"({', '.join(f'{k}: {v}' for k, v in dataset.get('per_agent', {}).items())}), sha256 `{dataset.get('sha256')}`.",
              "", "Hyper-parameters: " + ", ".join(f"{k} `{v}`" for k, v in h.items() if k not in ("models",)) + ".", ""]
    if extra.get("parent"):
        lines += [f"Started from `{extra['parent']['path']}` (sha256 `{extra['parent']['sha256']}`).", ""]
    losses = extra.get("losses", [])
    names = [*card.agents, "total"]
    lines += ["| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for entry in losses:
        lines.append(f"| {entry['step']} | " + " | ".join(
            f"{entry[n]:.5g}" if n in entry else "" for n in names) + " |")
    return "\n".join(lines) + "\n"
