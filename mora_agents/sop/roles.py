"""The agent roles of the group chat (the paper's agents), by name. Each model agent runs its tools' backends
(`mora_agents.tools.backends`): the paper's model unless a step or `--set` names another."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    description: str
    llm: bool
    """True: an LLM decides the tool call (or writes the answer); False: the tool runs as requested."""


ROLES: dict[str, Role] = {
    "prompt_agent": Role("Enhances prompts with concrete visual detail.", llm=True),
    "story_agent": Role("Writes storyboards: the shots of a story, its characters and settings, each with a short "
                        "canonical description.", llm=True),
    "text_to_image_agent": Role("Turns prompts into images, or redraws an image from a prompt, with the backend "
                                "the step names (SDXL base + refiner by default).", llm=True),
    "image_to_image_agent": Role("Edits images following instructions, with the backend the step names "
                                 "(InstructPix2Pix by default).", llm=True),
    "image_to_video_agent": Role("Animates images into video clips, or continues a video, with the backend the step "
                                 "names (Stable Video Diffusion XT by default).", llm=True),
    "video_connection_agent": Role("Generates clips from a first to a last frame, e.g. transitions that connect two "
                                   "videos, with the backend the step names (SEINE by default).", llm=True),
    "media_agent": Role("Extracts frames and joins clips.", llm=False),
    "critic_agent": Role("Ranks candidate images or clips with the judges (multimodal LLMs, or metric judges offline) "
                         "and keeps the best.", llm=False),
}
