"""A run's log file, RUN/log.txt: what the model libraries log and warn while the run works.

diffusers, transformers, torch and the others write their warnings to stderr, often once per call (a keyframes run
printed one diffusers warning 54 times and CLIP's truncation warning 18 times). During a run they go to its log
file instead, so the terminal shows the run; the run's own notes (a prompt cut to its encoder's length, say) are in
its transcript. Python's warnings (`warnings.warn`, shown as its filters say: by default once per place) go there too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG = "log.txt"
LIBRARIES = ("diffusers", "transformers", "torch", "accelerate", "peft", "huggingface_hub", "safetensors", "PIL",
             "imageio", "py.warnings")
"""The loggers routed to the log file (py.warnings: Python's warnings)."""


@contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """While the block runs, the libraries' log records and Python's warnings are appended to RUN/log.txt and not
    shown; afterwards every logger is as it was. The libraries must be imported before (they add their own stderr
    handler when first imported)."""
    path = run_dir / LOG
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers, logger.propagate))
        logger.handlers, logger.propagate = [handler], False
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


def log_lines(run_dir: Path) -> int:
    """The lines of a run's log file (0 without one)."""
    path = run_dir / LOG
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0
