"""Errors that the CLI turns into one-line messages and exit codes."""

import json

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


def read_problem(error: Exception) -> str:
    """Why a file could not be read as the JSON expected of it, on one line."""
    if isinstance(error, ValidationError):
        whole = [e["type"] for e in error.errors() if not e["loc"]]
        return "not a JSON object" if whole == ["model_type"] else validation_summary(error)
    if isinstance(error, UnicodeDecodeError):
        return "not valid UTF-8"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


def validation_summary(error: ValidationError, locations: bool = True) -> str:
    """A pydantic ValidationError on one line: 'field: problem; field: problem' (or 'problem; problem'); a problem
    of several fields together has no field."""
    def one(e: dict) -> str:
        message = e["msg"].removeprefix("Value error, ")
        return f"{'.'.join(map(str, e['loc']))}: {message}" if locations and e["loc"] else message

    return "; ".join(one(e) for e in error.errors())
