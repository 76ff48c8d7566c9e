"""Files the server hands out: only regular files inside a folder it shows (a run directory, a data folder), and
still pictures of their videos (posters)."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from fastapi import HTTPException

from mora_agents.serve.openai_videos import write_preview


def real_file(path: Path) -> Path | None:
    """The real path of a regular file, or None: also for a name that the file system refuses (longer than its
    names, a loop of links), so that no name a client sends can raise."""
    try:
        real = path.resolve()
        return real if real.is_file() else None
    except (OSError, RuntimeError, ValueError):
        return None


def shown(name: str) -> str:
    """A name from a client as a message shows it: at most 100 characters."""
    return name if len(name) <= 100 else f"{name[:100]}..."


def inside(root: Path, relative: str, what: str = "the run directory") -> Path:
    """A file inside `root` (its real path); absolute paths, `..`, and links that lead out are refused (403), names
    that no file has are not found (404)."""
    if (not relative or relative.startswith("/") or "\\" in relative or "\0" in relative
            or ".." in PurePosixPath(relative).parts):
        raise HTTPException(403, f"{shown(relative)}: not a path inside {what}")
    path = real_file(root / relative)
    if path is None:
        raise HTTPException(404, f"{shown(relative)}: no such file in {what.removeprefix('the ')}")
    if not path.is_relative_to(root.resolve()):
        raise HTTPException(403, f"{shown(relative)}: leads outside {what}")
    return path


def poster(run_dir: Path, relative: str) -> Path:
    """The first frame of a video of the run as WebP, made once into `previews/` (the result's is the /v1 API's
    thumbnail)."""
    video = inside(run_dir, relative)
    name = "thumbnail.webp" if relative == "result.mp4" else \
        f"poster-{hashlib.sha256(relative.encode()).hexdigest()[:16]}.webp"
    path = run_dir / "previews" / name
    if not path.is_file():
        try:
            write_preview(video, "thumbnail", path)
        except (OSError, RuntimeError, ValueError, StopIteration) as e:
            raise HTTPException(415, f"{shown(relative)}: not a video this server can read ({e})") from None
    return path
