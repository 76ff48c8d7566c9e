"""Errors that the CLI turns into one-line messages and exit codes."""

from pydantic import ValidationError


class MoraError(Exception):
    """A failure during work: exit code 1, the run directory kept."""


class InputError(MoraError, ValueError):
    """Bad user input (files, durations, tasks, settings): exit code 2, nothing written."""


class ModelNotAvailable(InputError):
    """Weights for a model are not on this machine."""


def validation_summary(error: ValidationError, locations: bool = True) -> str:
    """A pydantic ValidationError on one line: 'field: problem; field: problem' (or 'problem; problem')."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(value)'}: {e['msg']}" if locations else e["msg"]
                     for e in error.errors())
