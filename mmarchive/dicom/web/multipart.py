"""``multipart/related`` bodies for DICOMweb: the media-type parameters, a streaming reader and the writer.

:func:`media_type` splits a Content-Type or one Accept entry into its type and parameters.
:class:`MultipartReader` is fed the request body chunk by chunk as it arrives and hands back each part
once it is complete (headers and bytes), so a body is parsed without waiting for all of it; anything that
does not follow RFC 2046 raises :class:`MalformedMultipart`. :func:`part_header` and :func:`closing` write
the framing of a response, whose part bodies the caller streams in between.
"""

from __future__ import annotations

from typing import NamedTuple

from mmarchive.errors import InvalidInputError

_MAX_HEADER_BYTES = 16 * 1024


class MalformedMultipart(InvalidInputError):
    """The body does not follow the multipart syntax its Content-Type announced."""


class Part(NamedTuple):
    """One body part: its header fields (names lowercased) and its bytes."""

    headers: dict[str, str]
    data: bytes


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
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def split_list(value: str) -> list[str]:
    """Split an Accept header at commas outside quoted strings."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return [s.strip() for s in out if s.strip()]


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
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._searched = 0

    @property
    def done(self) -> bool:
        return self._state == "epilogue"

    def feed(self, chunk: bytes) -> list[Part]:
        self._buf += chunk
        parts: list[Part] = []
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
                        self._headers = {}
                        self._state = "body"
                        continue
                    if len(self._buf) > _MAX_HEADER_BYTES:
                        raise MalformedMultipart("a part's header fields are missing or too long")
                    return parts
                self._headers = _parse_headers(bytes(self._buf[:end]))
                del self._buf[:end + 4]
                self._state = "body"
                self._searched = 0
            elif self._state == "body":
                at = self._buf.find(self._delim, self._searched)
                if at < 0:
                    self._searched = max(0, len(self._buf) - len(self._delim) + 1)
                    return parts
                self._body += self._buf[:at]
                del self._buf[:at + len(self._delim)]
                parts.append(Part(self._headers, bytes(self._body)))
                self._body = bytearray()
                self._searched = 0
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


def part_header(boundary: str, content_type: str, *, first: bool) -> bytes:
    """The delimiter and header fields in front of one part of a response body."""
    lead = b"" if first else b"\r\n"
    return lead + f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")


def closing(boundary: str) -> bytes:
    """The closing delimiter after the last part."""
    return f"\r\n--{boundary}--\r\n".encode("latin-1")
