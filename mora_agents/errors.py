"""Errors that the CLI turns into one-line messages and exit codes."""

from pydantic import ValidationError


class MoraError(Exception):
    """A failure during work: exit code 1, the run directory kept."""


class InputError(MoraError, ValueError):
    """Bad user input (files, durations, tasks, settings): exit code 2, nothing written."""


class ModelNotAvailable(InputError):
    """Weights for a model are not on this machine."""


def validation_summary(error: ValidationError, locations: bool = True) -> str:
    """A pydantic ValidationError on one line: 'field: problem; field: problem' (or 'problem; problem'); a problem
    of several fields together has no field."""
    def one(e: dict) -> str:
        message = e["msg"].removeprefix("Value error, ")
        return f"{'.'.join(map(str, e['loc']))}: {message}" if locations and e["loc"] else message

    return "; ".join(one(e) for e in error.errors())
