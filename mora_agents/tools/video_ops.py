"""Frame and clip operations: first/last frame, concatenation with size and frame-rate matching."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from PIL import Image
from pydantic import Field

from mora_agents.media import (
    Artifact,
    probe,
    read_video,
    resample_fps,
    resize_frames,
    save_image,
    write_video,
)
from mora_agents.settings import output_path
from mora_agents.tools.params import MAX_FRAMES
from mora_agents.tools.registry import register


def _frame_tool(video: str, index: int, tool: str, output: str | None) -> Artifact:
    frames, _ = read_video(video)
    path = output_path(output, tool, ".png")
    save_image(Image.fromarray(frames[index]), path)
    return probe(path)


@register(produces="image", media={"video": "video"})
def first_frame(video: Annotated[str, "path of a video"],
                output: Annotated[str | None, "path of the PNG to write"] = None) -> Artifact:
    """Extract the first frame of a video as a PNG image."""
    return _frame_tool(video, 0, "first_frame", output)


@register(produces="image", media={"video": "video"})
def last_frame(video: Annotated[str, "path of a video"],
               output: Annotated[str | None, "path of the PNG to write"] = None) -> Artifact:
    """Extract the last frame of a video as a PNG image (the start of the next chained segment)."""
    return _frame_tool(video, -1, "last_frame", output)


@register(produces="video", media={"videos": "video"})
def concat_videos(
    videos: Annotated[list[str], Field(min_length=1), "paths of the clips, in order"],
    overlap: Annotated[int, Field(ge=0, le=MAX_FRAMES), "frames dropped from the start of each later clip"] = 0,
    output: Annotated[str | None, "path of the MP4 to write"] = None,
) -> Artifact:
    """Concatenate clips into one video at the first clip's size and frame rate.

    Later clips are fitted to that size (cover + centre crop) and resampled to that frame rate (nearest
    frame, durations kept). `overlap=1` drops the repeated frame where a chained segment starts from the
    previous segment's last frame.
    """
    if not videos:
        raise ValueError("concat_videos needs at least one video")
    clips = [read_video(v) for v in videos]
    first, fps = clips[0]
    height, width = first.shape[1:3]
    parts = [first]
    for frames, clip_fps in clips[1:]:
        frames = resample_fps(resize_frames(frames, width, height), clip_fps, fps)
        parts.append(frames[min(overlap, len(frames) - 1):])
    path = output_path(output, "concat_videos", ".mp4")
    return write_video(np.concatenate(parts), fps, path)
