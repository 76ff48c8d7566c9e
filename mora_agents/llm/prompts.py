"""The texts LLM-backed agents are given, and how a step request is put to a model."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field

PLANNER_SYSTEM = """You are the planner of Mora, a team of agents that generates videos.
Choose the one SOP (standard operating procedure) that fits the person's request, using the attached
files' kinds (images, videos), and extract the description of the wanted video and any duration in seconds.
`previous` is the video made in the chat's turn before: a follow-up that refers to it ("extend it", "make it
1920s style", "connect it with ...") is a task on that video. A request that tells a story over several shots or
scenes (characters and events in sequence) is the `story` task.
Answer with JSON only, matching the given schema."""

PROMPT_AGENT_SYSTEM = """You are the prompt agent of Mora. Rewrite the given prompt for a text-to-image and
image-to-video model: keep its subject and intent, and add concrete visual detail: the subject's
appearance, the setting, the lighting, the camera (shot and motion) and the style. Keep it to one or two
sentences under 70 words. Reply with the enhanced prompt only."""

STORY_AGENT_SYSTEM = """You are the story agent of Mora. From a person's request, write the storyboard of a short video
story: its shots in order, the characters and the settings they use.
- Give every character and every setting a short name and one canonical description of its look (species or
  person, age, build, clothes and colours; for a place: what it is, its light and colours). The same words describe
  it in every shot, so keep them concrete and visual; a character's sheet and every keyframe are drawn from them.
- Each shot: what happens (one or two sentences a camera could film), the names of the characters present, the
  name of its setting, the camera (shot size and motion), its duration in seconds, and how it follows the shot
  before: "cut" (a hard cut), "seine" (a generated transition) or "flf2v" (a first-last-frame clip between them).
- Write as many shots as the step asks for unless the request itself says how many, with durations adding up to
  about the requested length. Answer with JSON only, matching the given schema."""

TOOL_AGENT_SYSTEM = """You are the {role} of Mora. {description}
When you are given a step, call the named tool exactly once with the arguments given in the step's JSON.
Paths must stay as given: they are inside the run directory."""

PROMPT_WRITER_SYSTEM = """You write prompts for a video generation system, to make its training data.
From the example prompts, learn their style and length, then write the requested number of new prompts of the
requested kind. A `scene` prompt describes one short scene that a camera could film: a concrete subject, what it
does and where. An `edit` prompt is an instruction that changes a given picture or video: its weather, season,
time of day, light, style, or an object in it.
Vary subjects, actions, places, times of day, changes and moods across your prompts; never copy or lightly reword
an example, and never repeat yourself. One sentence each, under 40 words.
Answer with JSON only, matching the given schema."""
PROMPT_KINDS = ("scene", "edit")
"""What the prompt writer writes: scenes (text-to-video tasks) or edit instructions (tasks that edit an input)."""


class WrittenPrompts(BaseModel):
    """The prompt writer's answer (the data stage of training)."""

    prompts: list[str] = Field(description="the new prompts, one scene each")


_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.S)


def step_prompt(step: str, tool: str | None, arguments: dict[str, Any], budget: dict[str, Any] | None = None,
                format_: str | None = None) -> str:
    """The user message that gives a step to an agent; the JSON block is the machine-readable part. `budget`: the
    text encoder that will read a text answer (`tool`, `backend`, `encoder`, `tokens`), which cuts what is longer;
    `format_`: the structured message a text answer must be (`storyboard`)."""
    payload = json.dumps({"step": step, "tool": tool, "arguments": arguments,
                          **({"budget": budget} if budget else {}), **({"format": format_} if format_ else {})},
                         indent=1)
    if format_ is not None:
        what = f"Write the {format_} this step asks for, as JSON matching the given schema."
    elif tool is None:
        what = "Answer this step in text, as your instructions say."
        if budget:
            what += (f" Your answer is read by {budget['tool']} ({budget['backend']}), whose {budget['encoder']} text "
                     f"encoder reads at most {budget['tokens']} tokens and drops the rest: stay within them.")
    else:
        what = f"Call the tool `{tool}` with exactly these arguments."
    return f"Step `{step}`. {what}\n```json\n{payload}\n```"


def planner_prompt(request: dict[str, Any], sops: list[dict[str, Any]]) -> str:
    return (f"SOPs:\n```json\n{json.dumps(sops, indent=1)}\n```\n"
            f"Request:\n```json\n{json.dumps(request, indent=1)}\n```")


def writer_prompt(examples: list[str], count: int, seed: int, kind: str = "scene") -> str:
    """The prompt writer's task: `count` new prompts of a kind (`PROMPT_KINDS`) in the manner of `examples` (`seed`
    varies the offline one)."""
    payload = json.dumps({"examples": examples, "count": count, "seed": seed, "kind": kind}, indent=1)
    return f"Write {count} new {kind} prompts in the manner of these examples.\n```json\n{payload}\n```"


def json_blocks(text: str) -> list[Any]:
    """The JSON code blocks of a message, parsed, in order."""
    return [json.loads(block) for block in _JSON_BLOCK.findall(text)]
