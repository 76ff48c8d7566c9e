"""The agent roles of the group chat (the paper's agents), by name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    description: str
    llm: bool
    """True: an LLM decides the tool call (or writes the answer); False: the tool runs as requested."""


ROLES: dict[str, Role] = {
    "prompt_agent": Role("Enhances prompts with concrete visual detail.", llm=True),
    "text_to_image_agent": Role("Turns prompts into images (SDXL base + refiner).", llm=True),
    "image_to_image_agent": Role("Edits images following instructions (InstructPix2Pix).", llm=True),
    "image_to_video_agent": Role("Animates images into video clips (Stable Video Diffusion).", llm=True),
    "video_connection_agent": Role("Generates transitions that connect two videos (SEINE).", llm=True),
    "media_agent": Role("Extracts frames and joins clips.", llm=False),
}
