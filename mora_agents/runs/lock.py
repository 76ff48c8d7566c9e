"""One process at a time: an exclusive `flock` on a lock file that holds the owner's pid.

`run_lock`: one process per run (`RUN/run.lock`); the batch engine locks its `--out` folder the same way. The
lock belongs to the open file, so the OS releases it when its process ends in any way (`kill -9` included): a
stale lock never blocks anyone. A second holder, in this process or another, is refused at once (it does not wait).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from mora_agents.errors import MoraError

LOCK_FILE = "run.lock"


class RunLocked(MoraError):
    """Another process (or another task of this one) is running this run."""


@contextmanager
def file_lock(path: Path, refuse: Callable[[str], Exception]) -> Iterator[None]:
    """Hold the lock of `path` (made if needed) while the block runs; if someone else holds it, raise
    `refuse(owner)` at once, `owner` saying who (`process PID on HOST`)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise MoraError(f"{path}: cannot open the lock file ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise refuse(os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_lock(run_dir: Path) -> AbstractContextManager[None]:
    """Hold `run_dir`'s lock while the block runs; RunLocked if someone else holds it."""
    return file_lock(run_dir / LOCK_FILE, lambda owner: RunLocked(
        f"{run_dir}: already being run by {owner}; wait for it to end or stop it first"))
