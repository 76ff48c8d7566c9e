"""One process at a time per run: an exclusive `flock` on `RUN/run.lock`, which holds the owner's pid.

The lock belongs to the open file, so the OS releases it when its process ends in any way (`kill -9`
included): a stale lock never blocks a resume. A second `resume_run` of the same run, in this process or
another, is refused at once with `RunLocked` (it does not wait).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mora_agents.errors import MoraError

LOCK_FILE = "run.lock"


class RunLocked(MoraError):
    """Another process (or another task of this one) is running this run."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while the block runs; RunLocked if someone else holds it."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise MoraError(f"{path}: cannot open the run's lock file ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunLocked(f"{run_dir}: already being run by {owner}; wait for it to end or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
