"""A story's storyboard: the structured message an LLM writes (shots, characters, settings), its checks, the view
templates read, the edits a person makes at its review, and the offline client's writer.

    board = write_storyboard("a fox and an owl become friends in a snowy forest", shots=3, duration=12)
    board = edit_storyboard(board, "shot 2 camera: close-up; remove 3")

Every character and setting has a short canonical description; each shot names the characters present and its
setting by name, so the keyframes are drawn from the same reference sheets and the same words.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mora_agents.errors import validation_summary
from mora_agents.media import article

MAX_SHOTS = 12
MAX_NAMES = 8
"""Characters, and settings, a storyboard may have (each gets a reference sheet)."""
MAX_EDIT_CHARS = 20_000
TRANSITIONS = {
    "cut": "a hard cut: the next shot starts at once",
    "seine": "a generated transition (SEINE) from the last frame of the shot before to this shot's first frame",
    "flf2v": "a first-last-frame clip (Wan 2.1 FLF2V) from the last frame of the shot before to this shot's first",
}
"""How a shot follows the one before."""
Transition = Literal["cut", "seine", "flf2v"]


def _bounded(limit: int, what: str):
    def check(value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError(f"{what} is empty")
        if len(value) > limit:
            raise ValueError(f"{what} has {len(value)} characters (at most {limit})")
        return value
    return AfterValidator(check)


Name = Annotated[str, _bounded(40, "a name")]
Description = Annotated[str, _bounded(400, "a description")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Character(_Strict):
    name: Name = Field(description="short name, unique in the storyboard, e.g. 'Mira'")
    description: Description = Field(description="canonical look, one sentence: species or person, age, build, "
                                                 "clothes, colours; the same words in every shot")


class Setting(_Strict):
    name: Name = Field(description="short name, unique in the storyboard, e.g. 'Harbour'")
    description: Description = Field(description="canonical look of the place, one sentence: what it is, light, "
                                                 "colours, time of day")


class Shot(_Strict):
    description: Description = Field(description="what happens in the shot, one or two sentences")
    characters: list[Name] = Field(description="names of the characters present (may be empty)")
    setting: Name = Field(description="name of the setting")
    camera: Annotated[str, _bounded(120, "a camera")] = Field(description="shot size and camera motion, e.g. "
                                                                          "'slow dolly-in, close-up'")
    duration: float = Field(ge=0.5, le=20, description="seconds")
    transition: Transition = Field(description="how this shot follows the one before: cut, seine or flf2v (the "
                                               "first shot's is not used)")


class Storyboard(_Strict):
    """N shots, each with its characters, setting, camera, duration and transition; characters and settings with
    short canonical descriptions. Names are unique (characters and settings together) and every name a shot uses
    is defined."""

    title: Annotated[str, _bounded(120, "a title")]
    characters: list[Character] = Field(max_length=MAX_NAMES)
    settings: list[Setting] = Field(min_length=1, max_length=MAX_NAMES)
    shots: list[Shot] = Field(min_length=1, max_length=MAX_SHOTS)

    @model_validator(mode="after")
    def _names_are_defined(self) -> Storyboard:
        names = [c.name.lower() for c in self.characters] + [s.name.lower() for s in self.settings]
        if duplicate := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"the name '{duplicate}' is used twice (characters and settings need distinct names)")
        characters = {c.name.lower() for c in self.characters}
        settings = {s.name.lower() for s in self.settings}
        for number, shot in enumerate(self.shots, 1):
            unknown = [n for n in shot.characters if n.lower() not in characters]
            if unknown:
                raise ValueError(f"shot {number} names the character '{unknown[0]}', who is not among the characters "
                                 f"({', '.join(c.name for c in self.characters) or 'none'})")
            if len({n.lower() for n in shot.characters}) < len(shot.characters):
                raise ValueError(f"shot {number} names a character twice")
            if shot.setting.lower() not in settings:
                raise ValueError(f"shot {number} is set in '{shot.setting}', which is not among the settings "
                                 f"({', '.join(s.name for s in self.settings)})")
        return self

    def _character(self, name: str) -> Character:
        return next(c for c in self.characters if c.name.lower() == name.lower())

    def _setting(self, name: str) -> Setting:
        return next(s for s in self.settings if s.name.lower() == name.lower())

    def shot_prompt(self, shot: Shot) -> str:
        """A shot as one prompt: what happens, then each character's and the setting's canonical description (the
        same words in every shot), then the camera."""
        who = "; ".join(f"{c.name}: {c.description}" for c in map(self._character, shot.characters))
        setting = self._setting(shot.setting)
        return " ".join(part for part in (
            _sentence(shot.description), f"{who}." if who else "", f"{setting.name}: {_sentence(setting.description)}",
            f"Camera: {_sentence(shot.camera)}") if part)

    def view(self) -> dict[str, Any]:
        """What SOP templates read of the storyboard (`steps.ID.output.FIELD`, and `item` in a `for_each` step):

        - `cast`: every character, then every setting, each `{name, kind, description, sheet_prompt}` (what a
          reference sheet is drawn from);
        - `shots`: each shot's fields with `number`, `prompt` (`shot_prompt`) and `cast` (the names of its characters
          and its setting: whose sheets its keyframe is drawn from);
        - `transitions`: how each shot after the first follows the one before; `transition_prompts`: what each
          generated transition shows."""
        cast = [{"name": c.name, "kind": "character", "description": c.description,
                 "sheet_prompt": f"Character reference sheet of {c.name}: {_sentence(c.description)} Full body, "
                                 "front view, neutral pose, plain light background, even studio light."}
                for c in self.characters]
        cast += [{"name": s.name, "kind": "setting", "description": s.description,
                  "sheet_prompt": f"Reference picture of {s.name}: {_sentence(s.description)} Wide establishing "
                                  "view, empty of people, even light."} for s in self.settings]
        shots = [{**shot.model_dump(), "number": number, "prompt": self.shot_prompt(shot),
                  "cast": [self._character(n).name for n in shot.characters] + [self._setting(shot.setting).name]}
                 for number, shot in enumerate(self.shots, 1)]
        return {"title": self.title, "characters": [c.model_dump() for c in self.characters],
                "settings": [s.model_dump() for s in self.settings], "cast": cast, "shots": shots,
                "transitions": [shot.transition for shot in self.shots[1:]],
                "transition_prompts": [f"{_sentence(a.description)} Then: {_sentence(b.description)}"
                                       for a, b in zip(self.shots, self.shots[1:])]}

    @classmethod
    def from_view(cls, view: dict[str, Any]) -> Storyboard:
        """The storyboard a `view()` shows."""
        return cls(title=view["title"], characters=view["characters"], settings=view["settings"],
                   shots=[{name: shot[name] for name in Shot.model_fields} for shot in view["shots"]])

    def to_yaml(self) -> str:
        """The storyboard as YAML, the form a person edits."""
        return yaml.safe_dump(self.model_dump(), sort_keys=False, allow_unicode=True, width=110)


VIEW_FIELDS = ("title", "characters", "settings", "cast", "shots", "transitions", "transition_prompts")
"""The fields of `Storyboard.view()`."""


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def parse_storyboard(text: str) -> Storyboard:
    """A storyboard from JSON or YAML text; ValueError on one line naming the problem."""
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"not JSON or YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(data, dict):
        raise ValueError("a storyboard is a mapping with title, characters, settings and shots")
    try:
        return Storyboard.model_validate(data)
    except ValidationError as e:
        raise ValueError(validation_summary(e)) from None


# -- a person's edits --------------------------------------------------------------------------------------------

EDIT_HELP = ("a whole storyboard (YAML or JSON), or commands separated by ';': 'shot 2: NEW DESCRIPTION', "
             "'shot 2 camera: close-up' (also characters, setting, duration, transition), 'add: DESCRIPTION' or "
             "'add after 1: DESCRIPTION', 'remove 3', 'character NAME: DESCRIPTION', 'setting NAME: DESCRIPTION', "
             "'title: TEXT'")
_SHOT = re.compile(r"shot\s+(\d+)(?:\s+(description|characters|setting|camera|duration|transition))?\s*:\s*(.+)",
                   re.I | re.S)
_ADD = re.compile(r"add(?:\s+shot)?(?:\s+after\s+(\d+))?\s*:\s*(.+)", re.I | re.S)
_REMOVE = re.compile(r"(?:remove|delete)(?:\s+shot)?\s+(\d+)", re.I)
_NAMED = re.compile(r"(character|setting)\s+([^:]+?)\s*:\s*(.+)", re.I | re.S)
_TITLE = re.compile(r"title\s*:\s*(.+)", re.I | re.S)


def edit_storyboard(board: Storyboard, text: str) -> Storyboard:
    """`board` as a person's edit leaves it (see EDIT_HELP); ValueError, meant for the person, when the edit is not
    understood or leaves an invalid storyboard."""
    text = text.strip()
    if len(text) > MAX_EDIT_CHARS:
        raise ValueError(f"the edit has {len(text)} characters (at most {MAX_EDIT_CHARS})")
    if text.startswith("{") or "\n" in text and re.match(r"\s*title\s*:", text) and "shots" in text:
        return parse_storyboard(text)
    data = board.model_dump()
    for command in filter(None, (c.strip() for c in text.split(";"))):
        _apply(data, command)
    try:
        return Storyboard.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"after the edit: {validation_summary(e)}") from None


def _shot_index(data: dict, number: str) -> int:
    index = int(number) - 1
    if not 0 <= index < len(data["shots"]):
        raise ValueError(f"there is no shot {number} (shots 1 to {len(data['shots'])})")
    return index


def _apply(data: dict, command: str) -> None:
    """One edit command applied to a storyboard's data (checked as a whole afterwards)."""
    if match := _SHOT.fullmatch(command):
        index, field, value = _shot_index(data, match[1]), (match[2] or "description").lower(), match[3].strip()
        data["shots"][index][field] = [n.strip() for n in value.split(",") if n.strip()] \
            if field == "characters" else value
    elif match := _ADD.fullmatch(command):
        after = _shot_index(data, match[1]) if match[1] else len(data["shots"]) - 1
        data["shots"].insert(after + 1, {**data["shots"][after], "description": match[2].strip(), "transition": "cut"})
    elif match := _REMOVE.fullmatch(command):
        if len(data["shots"]) == 1:
            raise ValueError("the only shot cannot be removed")
        del data["shots"][_shot_index(data, match[1])]
    elif match := _NAMED.fullmatch(command):
        kind, name, description = match[1].lower() + "s", match[2].strip(), match[3].strip()
        entries = data["characters" if kind == "characters" else "settings"]
        entry = next((e for e in entries if e["name"].lower() == name.lower()), None)
        if entry is None:
            entries.append({"name": name, "description": description})
        else:
            entry["description"] = description
    elif match := _TITLE.fullmatch(command):
        data["title"] = match[1].strip()
    else:
        raise ValueError(f"'{command[:80]}' is not an edit of the storyboard: give {EDIT_HELP}")


# -- the offline writer ------------------------------------------------------------------------------------------

_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
            "ten": 10, "eleven": 11, "twelve": 12}
_COUNT = re.compile(rf"\b(\d+|{'|'.join(_NUMBERS)})[\s-]+(?:shots?|scenes?)\b", re.I)
CHARACTER_WORDS = ("fox", "owl", "cat", "dog", "bear", "rabbit", "wolf", "deer", "bird", "horse", "dragon", "robot",
                   "girl", "boy", "woman", "man", "child", "knight", "wizard", "princess", "king", "queen",
                   "astronaut", "detective", "pirate", "sailor", "fisherman", "farmer", "musician", "dancer",
                   "explorer", "traveller", "scientist", "witch", "monster", "alien", "penguin", "turtle", "mouse")
LOOKS = ("with a bright red scarf and amber eyes", "with a small green backpack and a curious look",
         "in a long blue coat with brass buttons", "with silver-grey fur and a white-tipped tail",
         "in a yellow raincoat and black boots", "with a striped orange hat and round glasses")
# (keywords, name, description): the first row whose keyword occurs in the request sets the story's place.
PLACES = (
    (("snow", "winter", "ice"), "Snowfield", "a snow-covered clearing among pine trees, soft white light"),
    (("sea", "ocean", "beach", "harbour", "harbor", "wave"), "Shore", "a pebble beach with rolling grey-green waves"),
    (("city", "street", "town"), "Street", "a narrow old-town street with warm shop windows"),
    (("forest", "wood", "tree", "jungle"), "Forest", "a dense green forest with shafts of sunlight"),
    (("space", "planet", "moon", "star"), "Station", "a quiet space station window over a blue planet"),
    (("desert", "dune", "sand"), "Dunes", "wind-shaped golden dunes under a pale sky"),
    (("castle", "kingdom"), "Castle", "a grey stone castle courtyard with banners"),
)
DEFAULT_PLACE = ("Meadow", "a wide green meadow with wildflowers, soft afternoon light")
BEATS = (
    ("{all} in {place}, the world of the story", "wide establishing shot, slow pan"),
    ("{first} notices something and moves closer", "medium tracking shot"),
    ("{all} meet face to face", "close-up, slight dolly-in"),
    ("a moment of tension: {all} hesitate", "over-the-shoulder shot"),
    ("{all} set off together across {place}", "wide shot, camera follows"),
    ("{all} rest as the light changes", "slow dolly-out, wide shot"),
)


def _story_count(request: str, shots: int) -> int:
    match = _COUNT.search(request)
    count = int(_NUMBERS.get(match[1].lower(), match[1])) if match else shots
    return max(1, min(MAX_SHOTS, count))


def write_storyboard(request: str, shots: int = 3, duration: float = 12.0) -> Storyboard:
    """The offline writer: a storyboard drawn from keyword tables, the same for the same request. The characters are
    the creatures and people the request names (at most 3; else one traveller), the setting the first place it names;
    the shots follow a fixed arc of beats and cameras; `N shots` in the request overrides `shots`. Transitions are
    cuts, or SEINE transitions when the request asks for smooth ones ('smooth', 'dissolve', 'flow', 'fade'), or
    first-last-frame clips when it asks to 'morph'."""
    low = request.lower()
    count = _story_count(request, shots)
    found = sorted({(m.start(), m[1]) for word in CHARACTER_WORDS
                    if (m := re.search(rf"\b(?:a|an|the|one)\s+(?:\w+\s+)?({word})\b", low))})
    names = [word.capitalize() for _, word in found[:3]] or ["Traveller"]
    characters = [Character(name=name, description=f"{article(name.lower())} {LOOKS[i % len(LOOKS)]}")
                  for i, name in enumerate(names)]
    place = next(((n, d) for words, n, d in PLACES if any(w in low for w in words)), DEFAULT_PLACE)
    transition = "seine" if any(w in low for w in ("smooth", "dissolve", "flow", "fade")) else \
        "flf2v" if "morph" in low else "cut"
    every = " and ".join(names)
    board_shots = []
    for i in range(count):
        beat, camera = BEATS[i % len(BEATS)] if i < count - 1 or count == 1 else BEATS[-1]
        present = names[:1] if "{first}" in beat else names
        text = beat.format(all=every, first=names[0], place=place[0].lower())
        board_shots.append(Shot(description=text[:1].upper() + text[1:], characters=present, setting=place[0],
                                camera=camera, duration=round(max(0.5, min(20.0, duration / count)), 2),
                                transition="cut" if i == 0 else transition))
    title = " ".join(request.split()[:12])
    return Storyboard(title=title, characters=characters, settings=[Setting(name=place[0], description=place[1])],
                      shots=board_shots)
