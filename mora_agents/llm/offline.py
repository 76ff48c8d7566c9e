"""The embedded default LLM: a deterministic, rule-based, offline `ChatCompletionClient`.

It plays the three LLM roles well enough to run every SOP with no model server:
- planner (asked for `PlanChoice` JSON): picks the SOP from attached media and keywords;
- prompt agent (asked for text): enhances a prompt from keyword tables (subject, setting, lighting,
  camera, style);
- tool agents (given tools): emit the tool call that the step's JSON block prescribes;
- prompt writer (asked for `WrittenPrompts` JSON): new scenes or edit instructions drawn, seeded, from its own
  tables;
- story agent (asked for a `Storyboard`): characters, setting and shots drawn from keyword tables
  (`mora_agents.llm.storyboard.write_storyboard`).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from mora_agents.llm.prompts import WrittenPrompts, json_blocks
from mora_agents.llm.storyboard import Storyboard, write_storyboard

# (keywords, phrase): the first table row whose keyword occurs in the prompt wins.
SETTINGS = [
    (("snow", "winter", "ice"), "in a snow-covered landscape with drifting flakes"),
    (("ocean", "sea", "beach", "wave"), "by the sea, waves rolling onto the shore"),
    (("city", "street", "tokyo", "new york"), "on a busy city street"),
    (("forest", "tree", "jungle"), "in a dense forest"),
    (("space", "galaxy", "planet", "astronaut"), "in outer space among distant stars"),
    (("desert", "sand"), "across wind-shaped desert dunes"),
    (("minecraft", "digital world", "game"), "in a blocky voxel world"),
]
LIGHTING = [
    (("night", "moon", "dark"), "moonlit with cool blue tones"),
    (("sunset", "dusk", "evening"), "warm golden-hour light"),
    (("sunrise", "dawn", "morning"), "soft early-morning light"),
    (("neon", "cyberpunk"), "glowing neon light"),
]
CAMERA = [
    (("running", "flying", "driving", "racing", "chasing", "walking", "swimming"), "smooth tracking shot following the subject"),
    (("landscape", "city", "mountain", "aerial"), "slow aerial drone shot"),
    (("face", "portrait", "eye"), "close-up with shallow depth of field"),
]
STYLE = [
    (("minecraft", "digital world", "voxel"), "Minecraft-like digital world style, crisp blocky textures"),
    (("anime", "cartoon"), "anime style, clean line art"),
    (("painting", "watercolor", "oil"), "painterly style with visible brush strokes"),
    (("1920s", "vintage", "old film"), "vintage 1920s film look, grainy black and white"),
]
DEFAULTS = {"setting": "in a natural setting", "lighting": "soft natural daylight",
            "camera": "steady cinematic wide shot", "style": "photorealistic, cinematic, highly detailed"}


def _pick(table: list[tuple[tuple[str, ...], str]], text: str, default: str) -> str:
    return next((phrase for words, phrase in table if any(w in text for w in words)), default)


def enhance(prompt: str, max_chars: int | None = None) -> str:
    """Template-based prompt enhancement: the prompt plus setting, lighting, camera and style phrases; within
    `max_chars`, the camera, then the lighting, then the setting and last the style are left out, and then the
    prompt's own last words."""
    text = prompt.lower()
    words = prompt.strip().rstrip(".").split()
    parts = {name: _pick(table, text, DEFAULTS[name])
             for name, table in (("setting", SETTINGS), ("lighting", LIGHTING), ("camera", CAMERA), ("style", STYLE))}

    def sentence() -> str:
        subject = " ".join(words)
        return ", ".join([subject[:1].upper() + subject[1:], *parts.values()]) + "."

    for dropped in ("camera", "lighting", "setting", "style"):
        if max_chars is None or len(sentence()) <= max_chars:
            break
        del parts[dropped]
    while max_chars is not None and len(words) > 1 and len(sentence()) > max_chars:
        words.pop()
    return sentence()


# The offline prompt writer's scenes: subject, action, place and time drawn independently.
SUBJECTS = ["a red fox", "an old fisherman", "a paper boat", "a hot-air balloon", "a golden retriever",
            "a street musician", "a hummingbird", "a steam locomotive", "a child in a yellow raincoat", "a sailboat",
            "a herd of wild horses", "a lighthouse keeper", "a vintage convertible", "a snow leopard",
            "a pair of dancers", "a koi fish", "an astronaut", "a barn owl", "a skateboarder", "a jellyfish"]
ACTIONS = ["walks slowly", "races ahead", "turns to look at the camera", "drifts past", "leaps over a puddle",
           "circles overhead", "rests quietly", "spins in place", "climbs upward", "glides in a long curve",
           "splashes through water", "waits in the rain"]
PLACES = ["in a snowy pine forest", "on a windswept beach", "on a neon-lit city street", "among rolling desert dunes",
          "beside a misty mountain lake", "in a crowded night market", "inside an abandoned greenhouse",
          "in a field of sunflowers", "on a rooftop above the city", "under a starry sky", "in an autumn vineyard",
          "in a flooded cave lit by lanterns"]
TIMES = ["at dawn", "at golden hour", "as a storm rolls in", "in thick fog", "at midnight", "on a bright afternoon",
         "in light snowfall", "at dusk"]
# Its edit instructions: a change, and a look, drawn independently.
CHANGES = ["make it snow", "turn it into a watercolour painting", "make it night time", "cover the ground in autumn "
           "leaves", "make it look like an old film photograph", "add heavy rain", "turn the sky a deep orange",
           "make it look like a pencil sketch", "flood the scene with warm sunset light", "add drifting fog",
           "turn it into a claymation scene", "make everything look frozen in ice"]
LOOKS = ["with soft pastel colours", "with strong contrast", "in muted tones", "with a cinematic grade",
         "with vivid saturated colours", "with a gentle film grain", "in cool blue tones", "with a dreamy glow"]
TABLES = {"scene": (SUBJECTS, ACTIONS, PLACES, TIMES), "edit": (CHANGES, LOOKS)}
"""The writer's tables for each kind of prompt (`mora_agents.llm.prompts.PROMPT_KINDS`)."""


def write_prompts(examples: Sequence[str], count: int, seed: int, kind: str = "scene") -> list[str]:
    """`count` distinct prompts of a kind, none equal to an example: a seeded draw of subject, action, place and
    time (scenes), or of a change and a look (edit instructions)."""
    rng, taken = random.Random(seed), {e.strip().lower().rstrip(".") for e in examples}
    tables = TABLES[kind]
    prompts: list[str] = []
    while len(prompts) < min(count, math.prod(map(len, tables)) // 2):
        text = " ".join(rng.choice(table) for table in tables)
        if text.lower() not in taken:
            taken.add(text.lower())
            prompts.append(text[:1].upper() + text[1:] + ".")
    return prompts


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s|sec|secs|second|seconds)\b", re.I)
_MINUTES = re.compile(r"(\d+(?:\.\d+)?)[\s-]*(?:min|mins|minute|minutes)\b", re.I)
LONG_SECONDS = 30
"""The shortest video `long_video` makes."""
# (task, keywords): checked in order, each only when the attachments fit the task.
_ROUTES = [
    ("story", ("story", "storyboard", "shots", "scenes", "episode", "a tale ", "fairy tale", "short film")),
    ("connect_videos", ("connect", "transition", "join", "bridge", "merge")),
    ("digital_world", ("minecraft", "digital world", "game world", "simulate", "voxel")),
    ("extend_video", ("extend", "continue", "longer", "more seconds", "lengthen")),
    ("long_video", ("long video", "long-form", "long take", "minute")),
    ("edit_video", ("edit", "change", "make it", "turn it", "style", "restyle", "convert")),
]


def route(request: dict[str, Any], task_names: Sequence[str]) -> dict[str, Any]:
    """Rule-based planning: a PlanChoice as a dict, from the attachments and keywords."""
    text = request["text"]
    low = text.lower()
    n_images, n_videos = len(request.get("images", [])), len(request.get("videos", []))
    available = n_videos + bool(request.get("previous"))  # a follow-up may refer to the previous result
    duration = request.get("duration")
    if duration is None and (match := _DURATION.search(text)):
        duration = float(match.group(1))
    elif duration is None and (match := _MINUTES.search(text)):
        duration = 60 * float(match.group(1))
    fits = {
        "story": n_images == n_videos == 0,
        "connect_videos": available >= 2,
        "digital_world": n_videos == 0,
        "extend_video": available == 1,
        "long_video": n_videos <= 1 and n_images <= 1 and (duration is None or duration >= LONG_SECONDS),
        "edit_video": available == 1,
    }
    task = request.get("task")
    reason = "task given by the person"
    if not task:
        task = next((t for t, words in _ROUTES if fits[t] and any(w in low for w in words)), None)
        reason = f"keywords of '{task}' and the attachments fit" if task else ""
    if not task:
        task = ("connect_videos" if n_videos >= 2 else "edit_video" if n_videos == 1
                else "image_to_video" if n_images else "text_to_video")
        reason = f"{n_images} image(s) and {n_videos} video(s) attached"
    if task not in task_names:
        task = "text_to_video"
    return {"task": task, "prompt": text.strip(), "duration": duration, "reason": reason}


def _shorter(messages: Sequence[LLMMessage], blocks: list[Any]) -> int | None:
    """After an answer found too long (a JSON block of its `tokens` and the `budget`): a length in characters for
    the next one, shorter in proportion (tokens are not characters: a next answer still too long is shortened
    again)."""
    feedback = [b for b in blocks if "tokens" in b]
    answers = [m.content for m in messages if isinstance(m, AssistantMessage) and isinstance(m.content, str)]
    if not feedback or not answers:
        return None
    return int(len(answers[-1]) * feedback[-1]["budget"] / feedback[-1]["tokens"])


class OfflineChatCompletionClient(ChatCompletionClient):
    """A deterministic stand-in for an LLM; see the module docstring for what it answers."""

    def __init__(self) -> None:
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._calls = 0

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | str = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        blocks = [b for m in messages if isinstance(getattr(m, "content", None), str) for b in json_blocks(m.content)]
        if json_output is WrittenPrompts:
            task = blocks[-1]
            content: str | list[FunctionCall] = json.dumps(
                {"prompts": write_prompts(task["examples"], task["count"], task["seed"], task.get("kind", "scene"))})
        elif json_output is Storyboard:
            step = blocks[-1]["arguments"]
            content = write_storyboard(str(step.get("request", "")), int(step.get("shots") or 3),
                                       float(step.get("duration") or 12)).model_dump_json()
        elif isinstance(json_output, type):
            sops, request = blocks[-2], blocks[-1]
            content = json.dumps(route(request, [s["name"] for s in sops]))
        elif tools:
            step = blocks[-1]
            self._calls += 1
            content = [FunctionCall(id=f"offline-{self._calls}", name=step["tool"],
                                    arguments=json.dumps(step["arguments"]))]
        else:
            content = enhance(next(b for b in reversed(blocks) if "step" in b)["arguments"]["prompt"],
                              _shorter(messages, blocks))
        return CreateResult(finish_reason="function_calls" if isinstance(content, list) else "stop",
                            content=content, usage=self._usage, cached=False)

    async def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any) -> AsyncGenerator[str | CreateResult, None]:
        yield await self.create(messages, **kwargs)

    async def close(self) -> None:
        pass

    def actual_usage(self) -> RequestUsage:
        return self._usage

    def total_usage(self) -> RequestUsage:
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return 0

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return 1_000_000

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]
        return ModelCapabilities(vision=False, function_calling=True, json_output=True)  # type: ignore[typeddict-item]

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(vision=False, function_calling=True, json_output=True, family=ModelFamily.UNKNOWN,
                         structured_output=True)
