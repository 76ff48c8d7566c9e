"""Multipart request bodies streamed to files, each file cut off at its kind's size limit.

Files come in the fields `image` and `video` (repeatable); every other field is text. Nothing here checks that a
file is media: the runner does (`prepare_run`), exactly as for the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from mora_agents.errors import InputError
from mora_agents.media import article

MAX_TEXT_FIELD = 1 << 20


class UploadTooLarge(InputError):
    """A file over its size limit (HTTP 413)."""


@dataclass
class Upload:
    kind: str
    """The field it came in: `image` or `video`."""
    path: Path


def megabytes(n: int) -> str:
    return f"{n / 2**20:.3g} MB"


def safe_name(filename: str) -> str:
    """A file name of the client's choosing reduced to a plain name (no folders), keeping its suffix."""
    name = re.sub(r"[^\w.-]", "_", filename.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    return name[-100:] or "upload"


class _Reader:
    """python-multipart callbacks that collect text fields and write files; the first problem is kept in `problem`
    (later data is dropped) so that the body can still be read to its end."""

    def __init__(self, folder: Path, limits: dict[str, int]) -> None:
        self.folder, self.limits = folder, limits
        self.fields: dict[str, str] = {}
        self.uploads: list[Upload] = []
        self.problem: InputError | None = None
        self._header, self._disposition = [b"", b""], b""
        self._name, self._text, self._file, self._size = "", bytearray(), None, 0

    def fail(self, problem: InputError) -> None:
        self.problem = self.problem or problem
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._text, self._size = b"", "", bytearray(), 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def on_header_end(self) -> None:
        if self._header[0].lower() == b"content-disposition":
            self._disposition = self._header[1]
        self._header = [b"", b""]

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options or self.problem:
            return
        if self._name not in self.limits:
            return self.fail(InputError(f"file field '{self._name}': files go in the fields {' or '.join(self.limits)}"))
        path = self.folder / str(len(self.uploads)) / safe_name(options[b"filename"].decode("utf-8", "replace"))
        path.parent.mkdir()
        self._file = open(path, "wb")  # noqa: SIM115 - closed at the part's end
        self.uploads.append(Upload(self._name, path))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            if not self.problem:
                self._text += data[start:end]
            if len(self._text) > MAX_TEXT_FIELD:
                self.fail(InputError(f"field '{self._name}': longer than {megabytes(MAX_TEXT_FIELD)}"))
            return
        self._size += end - start
        if self._size > self.limits[self._name]:
            name = self.uploads[-1].path.name
            return self.fail(UploadTooLarge(f"{self._name} '{name}': larger than the "
                                            f"{megabytes(self.limits[self._name])} limit for {article(self._name)}"))
        self._file.write(data[start:end])

    def on_part_end(self) -> None:
        if self._file is not None:
            self.close()
        elif not self.problem and self._name not in self.limits:
            self.fields[self._name] = self._text.decode("utf-8", "replace")


async def read_multipart(request: Request, folder: Path, limits: dict[str, int]) -> tuple[dict[str, str], list[Upload]]:
    """The text fields and the uploaded files (written into `folder`) of a multipart/form-data request.

    `limits`: the file fields and their size limits in bytes. A file over its limit raises UploadTooLarge, other
    problems InputError, once the whole body has been read (the rest is read and dropped, so that the client gets
    the answer rather than a closed connection).
    """
    _, params = parse_options_header(request.headers.get("content-type", ""))
    if b"boundary" not in params:
        raise InputError("multipart body without a boundary")
    reader = _Reader(folder, limits)
    parser = MultipartParser(params[b"boundary"], {name: getattr(reader, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end")})
    chunks = request.stream()
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
    except Exception as e:
        reader.fail(InputError(f"invalid multipart body ({e})"))
        async for _ in chunks:
            pass
    finally:
        reader.close()
    if reader.problem:
        raise reader.problem
    return reader.fields, reader.uploads
