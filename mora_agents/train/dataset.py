"""The training dataset: a folder in the Hugging Face `videofolder` convention, plus Mora's own fields.

    DATA/
        metadata.jsonl               one JSON object per accepted sample (see `Sample`)
        000001/clip.mp4              the clip (`file_name`: videofolder's video column)
        000001/first_frame.png       the intermediates each agent learns from
        000001/source_frame.png
        000001/edited_frame.png

`datasets.load_dataset("videofolder", data_dir=DATA)` loads it (`load_hf_dataset`): the clip becomes the `video`
column, every other field a column of its own (image paths stay relative strings, since videofolder would read
any `*_file_name` column as a video). Decoding that column needs `torchcodec`; training does not use `datasets`,
it reads the folder with `read_dataset`, which checks every file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mora_agents.errors import InputError, validation_summary
from mora_agents.jsonl import dumps, text_lines
from mora_agents.media import atomic_copy, atomic_path, load_image, media_kind, read_video, sha256_file

METADATA = "metadata.jsonl"
IMAGE_FIELDS = ("first_frame", "source_frame", "edited_frame", "start_frame")


class Intermediates(BaseModel):
    """What the trainable agents made for one sample: each agent's input and output (paths relative to a folder).

    - text-to-image: `first_frame` from `enhanced_prompt` (when both are set);
    - image-to-image: `edited_frame` from `source_frame` and `instruction` (when the SOP has an edit step);
    - image-to-video: the clip from its start frame: `start_frame`, else `edited_frame`, else `first_frame`, with
      SVD's conditions `fps`, `motion_bucket_id` and `noise_aug_strength`, or the prompt Open-Sora-Plan read
      (`video_prompt`).
    """

    enhanced_prompt: str | None = None
    first_frame: str | None = None
    """The text-to-image agent's image."""
    source_frame: str | None = None
    edited_frame: str | None = None
    instruction: str | None = None
    start_frame: str | None = None
    """The image the clip was animated from, when it is none of the above (e.g. an input video's last frame)."""
    fps: float | None = None
    """The frame rate the clip was made at (SVD's `fps` condition); the clip's own when not set."""
    motion_bucket_id: int = 180
    noise_aug_strength: float = 0.1
    video_prompt: str | None = None
    """The text the image-to-video step read (Open-Sora-Plan reads one, SVD none); when not set, the enhanced
    prompt, else the prompt."""


class Sample(Intermediates):
    """One accepted sample: what the agents made for one prompt (`Intermediates`, the clip), and how it was chosen.

    Paths are relative to the dataset folder. Fields the data stage adds beyond these are kept as they are.
    """

    model_config = ConfigDict(extra="allow")
    id: str
    file_name: str
    """The clip the image-to-video agent made from the start frame (its first segment; later frames are unused)."""
    task: str
    prompt: str
    """The person's (or the prompt writer's) prompt."""
    seed: int
    iteration: int = 0
    votes: Any = None
    """The judges' votes: the data stage's record, kept as written."""
    decision: Any = None
    """Who accepted the sample and how: the data stage's record, kept as written."""
    run_dir: str | None = None
    """The run directory the sample came from, for inspection."""

    @model_validator(mode="after")
    def _consistent(self) -> Sample:
        edit = (self.source_frame, self.edited_frame, self.instruction)
        if any(v is not None for v in edit) and any(v is None for v in edit):
            raise ValueError("source_frame, edited_frame and instruction go together (an edit step's input, "
                             "output and instruction)")
        if (self.first_frame is None) != (self.enhanced_prompt is None):
            raise ValueError("first_frame and enhanced_prompt go together (the text-to-image agent's output and input)")
        if self.clip_start is None:
            raise ValueError("no start frame for the clip: set start_frame, edited_frame or first_frame")
        return self

    @property
    def clip_start(self) -> str | None:
        return self.start_frame or self.edited_frame or self.first_frame

    def files(self) -> dict[str, str]:
        """Field -> relative path of every media file the sample names."""
        return {name: getattr(self, name) for name in ("file_name", *IMAGE_FIELDS) if getattr(self, name)}


def _lines(data_dir: Path) -> list[str]:
    path = data_dir / METADATA
    return text_lines(path.read_bytes(), path) if path.is_file() else []


def write_sample(data_dir: Path, *, clip: Path, task: str, prompt: str, seed: int,
                 enhanced_prompt: str | None = None, first_frame: Path | None = None,
                 source_frame: Path | None = None, edited_frame: Path | None = None, instruction: str | None = None,
                 start_frame: Path | None = None, **fields: Any) -> Sample:
    """Add one sample to a dataset folder (made if needed): its files are copied in, then its line is appended to
    `metadata.jsonl`; both atomically, so a killed writer never leaves a line naming a missing file.

    `fields`: any further JSON-serialisable fields (`iteration`, `votes`, `decision`, `run_dir`, `fps`,
    `motion_bucket_id`, `noise_aug_strength`, or the data stage's own). The same file given for two fields is
    stored once. Returns the sample as written; bad input raises InputError before anything is written.
    """
    data_dir = Path(data_dir)
    lines = _lines(data_dir)
    sample_id = f"{len(lines) + 1:06d}"
    media = {"file_name": clip, "first_frame": first_frame, "source_frame": source_frame,
             "edited_frame": edited_frame, "start_frame": start_frame}
    relative: dict[str, str] = {}
    stored: dict[Path, str] = {}
    for name, src in media.items():
        if src is None:
            continue
        src = Path(src)
        if src.resolve() not in stored:
            stored[src.resolve()] = f"{sample_id}/{'clip' if name == 'file_name' else name}{src.suffix.lower()}"
        relative[name] = stored[src.resolve()]
    try:
        sample = Sample(id=sample_id, task=task, prompt=prompt, seed=seed, enhanced_prompt=enhanced_prompt,
                        instruction=instruction, **relative, **fields)
        line = dumps(sample.model_dump(mode="json"))
    except ValidationError as e:
        raise InputError(f"sample for {data_dir}: {validation_summary(e)}") from None
    except TypeError as e:
        raise InputError(f"sample for {data_dir}: a field is not JSON-serialisable ({e})") from None
    for src, rel in stored.items():
        _check_media(src, "video" if rel.split("/")[1].startswith("clip") else "image", str(src))
    for src, rel in stored.items():
        atomic_copy(src, data_dir / rel)
    with atomic_path(data_dir / METADATA) as tmp:
        tmp.write_text("".join(f"{existing}\n" for existing in lines) + line + "\n", encoding="utf-8")
    return sample


def _check_media(path: Path, kind: str, label: str) -> None:
    """A readable image, or a readable video of 2 frames or more; raises InputError naming `label`."""
    if not path.is_file():
        raise InputError(f"{label}: no such file")
    try:
        actual = media_kind(path)
    except InputError:
        raise InputError(f"{label}: not {kind} file ({path.suffix or 'no suffix'})") from None
    if actual != kind:
        raise InputError(f"{label}: is {actual}, not {kind}")
    try:
        if kind == "image":
            load_image(path)
        elif len(read_video(path)[0]) < 2:
            raise InputError(f"{label}: a clip needs at least 2 frames")
    except InputError as e:
        raise InputError(f"{label}: {str(e).removeprefix(f'{path}: ')}") from None


def read_dataset(data_dir: Path) -> list[Sample]:
    """The samples of a dataset folder, every file checked (present, inside the folder, readable).

    Any problem raises InputError naming the folder, the line and the field: a dataset is used whole or not at all.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"dataset {data_dir}: no such folder")
    if not (data_dir / METADATA).is_file():
        raise InputError(f"dataset {data_dir}: no {METADATA} (not a dataset folder)")
    samples = []
    for number, line in enumerate(_lines(data_dir), 1):
        if not line.strip():
            continue
        where = f"dataset {data_dir / METADATA} line {number}"
        try:
            sample = Sample.model_validate_json(line)
        except ValidationError as e:
            raise InputError(f"{where}: {validation_summary(e)}") from None
        for name, rel in sample.files().items():
            path = (data_dir / rel).resolve()
            if not path.is_relative_to(data_dir.resolve()):
                raise InputError(f"{where}: {name} {rel} is outside the dataset folder")
            _check_media(path, "video" if name == "file_name" else "image", f"{where}: {name} {rel}")
        samples.append(sample)
    if not samples:
        raise InputError(f"dataset {data_dir}: {METADATA} has no samples")
    return samples


def dataset_sha256(data_dir: Path, samples: list[Sample]) -> str:
    """One sha256 for the dataset: its metadata and every file it names."""
    digest = hashlib.sha256((Path(data_dir) / METADATA).read_bytes())
    for rel in sorted({rel for sample in samples for rel in sample.files().values()}):
        digest.update(f"{rel}\0{sha256_file(Path(data_dir) / rel)}\n".encode())
    return digest.hexdigest()


def load_hf_dataset(data_dir: Path, cache_dir: Path | None = None):
    """The folder as a Hugging Face `datasets.Dataset` (split `train`), the clip column left undecoded
    ({"path", "bytes"}; `cast_column("video", datasets.Video())` decodes it where `torchcodec` is installed)."""
    import datasets

    dataset = datasets.load_dataset("videofolder", data_dir=str(data_dir), split="train",
                                    cache_dir=str(cache_dir) if cache_dir else None)
    return dataset.cast_column("video", datasets.Video(decode=False))


def copy_samples(source_dir: Path, samples: list[Sample], dest_dir: Path) -> None:
    """Write `samples` of the dataset `source_dir` into the dataset `dest_dir` (files copied, numbered anew there;
    every other field kept, `run_dir` made relative to the new folder)."""
    for sample in samples:
        fields = sample.model_dump(mode="json", exclude={"id"})
        media = {name: Path(source_dir) / fields.pop(name) if fields.get(name) else fields.pop(name)
                 for name in ("file_name", *IMAGE_FIELDS)}
        if fields.get("run_dir"):
            fields["run_dir"] = os.path.relpath(Path(source_dir) / fields["run_dir"], dest_dir)
        write_sample(dest_dir, clip=media.pop("file_name"), **media, **fields)
