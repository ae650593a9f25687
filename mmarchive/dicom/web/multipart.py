"""``multipart/related`` bodies for DICOMweb: the media-type parameters, a streaming reader and the writer.

:func:`media_type` splits a Content-Type or one Accept entry into its type and parameters.
:class:`MultipartReader` is fed the request body chunk by chunk as it arrives and hands back what each
chunk completes (a part's header fields, pieces of its bytes, its end), so a body is parsed without
waiting for all of it; anything that does not follow RFC 2046 raises :class:`MalformedMultipart`.
:class:`SpooledParts` collects the parts, in memory up to a total size and in temporary files beyond.
:func:`part_header` and :func:`closing` write the framing of a response, whose part bodies the caller
streams in between.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

from mmarchive.errors import InvalidInputError

_MAX_HEADER_BYTES = 16 * 1024


class MalformedMultipart(InvalidInputError):
    """The body does not follow the multipart syntax its Content-Type announced."""


class PartStart(NamedTuple):
    """A part begins: its header fields (names lowercased)."""

    headers: dict[str, str]


class PartData(NamedTuple):
    """The next bytes of the current part."""

    data: bytes


class PartEnd(NamedTuple):
    """The current part is complete."""


Event = PartStart | PartData | PartEnd


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/related; type="application/dicom"'`` -> ``("multipart/related", {"type": ...})``.

    The type and parameter names are lowercased; quotes around parameter values are removed.
    """
    pieces = _split_params(value)
    mtype = pieces[0].strip().lower() if pieces else ""
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, val = piece.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[name.strip().lower()] = val
    return mtype, params


def _split_params(value: str) -> list[str]:
    """Split at semicolons outside quoted strings."""
    return _split_outside_quotes(value, ";")


def split_list(value: str) -> list[str]:
    """Split an Accept header at commas outside quoted strings."""
    return [s.strip() for s in _split_outside_quotes(value, ",") if s.strip()]


def accepted(accept: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The media ranges of an Accept header (``*/*`` when it lists none), in order, as
    :func:`media_type` splits them, leaving out those of quality 0."""
    for entry in split_list(accept) or ["*/*"]:
        mtype, params = media_type(entry)
        if params.get("q") not in ("0", "0.0", "0.00", "0.000"):
            yield mtype, params


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


class MultipartReader:
    """An incremental parser of one multipart body with a known boundary.

    Call :meth:`feed` with each chunk received (it returns the parts completed by it), then
    :meth:`finish`, which raises :class:`MalformedMultipart` if the closing delimiter never came.
    """

    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 70:
            raise MalformedMultipart("the Content-Type has no valid boundary parameter (1 to 70 characters)")
        self._dash = b"--" + boundary.encode("latin-1")
        self._delim = b"\r\n" + self._dash
        self._buf = bytearray()
        self._state = "preamble"

    @property
    def done(self) -> bool:
        return self._state == "epilogue"

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf += chunk
        parts: list[Event] = []
        while True:
            if self._state == "preamble":
                # The first delimiter may open the body (no CRLF before it) or follow a preamble.
                if self._buf.startswith(self._dash):
                    del self._buf[:len(self._dash)]
                else:
                    at = self._buf.find(self._delim)
                    if at < 0:
                        keep = len(self._delim) - 1
                        if len(self._buf) > keep:
                            del self._buf[:len(self._buf) - keep]
                        return parts
                    del self._buf[:at + len(self._delim)]
                self._state = "after-delimiter"
            elif self._state == "after-delimiter":
                if len(self._buf) < 2:
                    return parts
                if self._buf.startswith(b"--"):
                    self._state = "epilogue"
                    return parts
                line_end = self._buf.find(b"\r\n")
                if line_end < 0:
                    if len(self._buf) > 1024:
                        raise MalformedMultipart("a boundary delimiter is not followed by a line break")
                    return parts
                if self._buf[:line_end].strip(b" \t"):
                    raise MalformedMultipart("a boundary delimiter is followed by other text")
                del self._buf[:line_end + 2]
                self._state = "headers"
            elif self._state == "headers":
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if self._buf.startswith(b"\r\n"):  # a part without header fields
                        del self._buf[:2]
                        parts.append(PartStart({}))
                        self._state = "body"
                        continue
                    if len(self._buf) > _MAX_HEADER_BYTES:
                        raise MalformedMultipart("a part's header fields are missing or too long")
                    return parts
                parts.append(PartStart(_parse_headers(bytes(self._buf[:end]))))
                del self._buf[:end + 4]
                self._state = "body"
            elif self._state == "body":
                at = self._buf.find(self._delim)
                if at < 0:
                    # All but a tail that could be the start of the delimiter is the part's.
                    keep = len(self._delim) - 1
                    if len(self._buf) > keep:
                        parts.append(PartData(bytes(self._buf[:len(self._buf) - keep])))
                        del self._buf[:len(self._buf) - keep]
                    return parts
                if at:
                    parts.append(PartData(bytes(self._buf[:at])))
                parts.append(PartEnd())
                del self._buf[:at + len(self._delim)]
                self._state = "after-delimiter"
            else:  # epilogue: ignored
                self._buf.clear()
                return parts

    def finish(self) -> None:
        if self._state != "epilogue":
            raise MalformedMultipart("the multipart body ends before its closing boundary delimiter")


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MalformedMultipart(f"a part has a malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def part_header(boundary: str, content_type: str, *, first: bool,
                extra: Mapping[str, str] | None = None) -> bytes:
    """The delimiter and header fields (Content-Type, then ``extra``) in front of one part of a response
    body."""
    lead = b"" if first else b"\r\n"
    fields = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
    return lead + f"--{boundary}\r\nContent-Type: {content_type}\r\n{fields}\r\n".encode("latin-1")


def closing(boundary: str) -> bytes:
    """The closing delimiter after the last part."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


class SpooledPart(NamedTuple):
    """A received part: its header fields and its bytes, in memory (``data``) or in a file (``path``)."""

    headers: dict[str, str]
    data: bytes | None
    path: Path | None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size if self.path else 0

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


class SpooledParts:
    """Collects the parts :class:`MultipartReader` finds: in memory while all the parts held there come to
    at most ``in_memory`` bytes, each part that would go beyond in a file of a private temporary directory,
    so that a large body, of one large part or of many small ones, is not held in memory. Use as a context
    manager: leaving it removes the files."""

    def __init__(self, in_memory: int) -> None:
        self.in_memory = in_memory
        self.held = 0  # bytes of the finished parts kept in memory
        self.parts: list[SpooledPart] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._headers: dict[str, str] | None = None
        self._buf = bytearray()
        self._file: BinaryIO | None = None
        self._path: Path | None = None

    def __enter__(self) -> SpooledParts:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        if self._dir is not None:
            self._dir.cleanup()

    def add(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, PartStart):
                self._headers = event.headers
                self._buf = bytearray()
            elif isinstance(event, PartData):
                if self._file is not None:
                    self._file.write(event.data)
                elif self.held + len(self._buf) + len(event.data) > self.in_memory:
                    self._spill()
                    assert self._file is not None
                    self._file.write(event.data)
                else:
                    self._buf += event.data
            else:
                headers = self._headers if self._headers is not None else {}
                if self._file is not None:
                    self._file.close()
                    self._file = None
                    self.parts.append(SpooledPart(headers, None, self._path))
                else:
                    self.parts.append(SpooledPart(headers, bytes(self._buf), None))
                    self.held += len(self._buf)
                self._buf = bytearray()
                self._headers = None

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="mmarchive-stow-")
        fd, name = tempfile.mkstemp(dir=self._dir.name, suffix=".dcm")
        os.close(fd)
        self._path = Path(name)
        file = open(name, "wb")  # noqa: SIM115 (closed at the part's end or on exit)
        file.write(self._buf)
        self._file = file
        self._buf = bytearray()
