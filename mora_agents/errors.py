"""Errors that the CLI turns into one-line messages and exit codes."""

from pydantic import ValidationError


class MoraError(Exception):
    """A failure during work: exit code 1, the run directory kept."""


class InputError(MoraError, ValueError):
    """Bad user input (files, durations, tasks, settings): exit code 2, nothing written."""


class ModelNotAvailable(InputError):
    """Weights for a model are not on this machine."""


def describe_error(error: BaseException) -> str:
    """An exception on one line: its type and the first line of its message."""
    first = str(error).strip().partition("\n")[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def validation_summary(error: ValidationError) -> str:
    """A pydantic ValidationError on one line: 'field: problem; field: problem'."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(value)'}: {e['msg']}" for e in error.errors())
