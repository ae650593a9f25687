"""WADO-RS bulk data: BulkDataURIs in the metadata, and the bulk data values they name, streamed.

:func:`instance_json` builds an instance's DICOM JSON from its header piece alone: binary values (OB, OD,
OF, OL, OV, OW, UN) longer than :data:`INLINE_MAX` base64 characters get a ``BulkDataURI`` instead of
``InlineBinary``, and the pixel data, which the header piece ends before, gets one without being read.
A URI is the instance's URL, ``/bulkdata/``, and the element's tag path: ``7FE00010``, or
``00540016/0/00181072`` for an element of a sequence item (tag, item index, tag...). :func:`locate`
resolves a path back to the value: the pixel value as an ``(offset, length)`` in the stored object (an
encapsulated value's length found by walking its item headers), any other value from the header piece.
:func:`byte_range` reads an HTTP ``Range`` header (one range: ``a-b``, ``a-`` or ``-n``) and
:func:`stream` yields the chosen bytes in chunks, reading only those from the store.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from mmarchive.dicom.errors import DicomInputError
from mmarchive.dicom.scan import file_meta
from mmarchive.dicom.scan_pydicom import header_dataset
from mmarchive.dicom.web.errors import RangeNotSatisfiableError
from mmarchive.dicom.web.frames import (
    EXPLICIT_LITTLE,
    PIXEL_TAGS,
    pixel_element,
    read_header,
    transfer_syntax,
)
from mmarchive.errors import InvalidInputError, NotFoundError

#: Binary values whose base64 text would be longer than this many characters are given as BulkDataURI.
INLINE_MAX = 1024
#: Bytes read from the store and sent per chunk.
CHUNK = 256 << 10
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
#: (0002,0010) Transfer Syntax UID, by its element number in the file meta group.
_TRANSFER_SYNTAX_UID = 0x0010
_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/\d+/[0-9A-Fa-f]{8})*$")


class BulkValue(NamedTuple):
    """Where a bulk data value is: ``length`` bytes at ``offset`` in the stored object, or ``data``."""

    offset: int
    length: int
    data: bytes | None
    pixel: bool  # the pixel data value (its part type names the transfer syntax)


def _paths(ds: Dataset, prefix: str, out: dict[int, str]) -> None:
    """Map id() of every element of ``ds`` (and its sequences' items) to its tag path."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        path = f"{prefix}{int(tag):08X}"
        out[id(elem)] = path
        if elem.VR == "SQ" and elem.value is not None:
            for i, item in enumerate(elem.value):
                _paths(item, f"{path}/{i}/", out)


def instance_json(reader: Any, header_end: int, size: int, uri: str) -> dict[str, Any]:
    """The DICOM JSON of the stored instance ``reader`` reads, read from its header piece only (its first
    ``header_end`` bytes); large binary values and the pixel data as BulkDataURIs under ``uri`` (the
    instance's absolute URL followed by ``/bulkdata``)."""
    try:
        head, ds = read_header(reader, header_end if header_end < size else -1)
    except InvalidInputError as e:
        raise DicomInputError(str(e)) from e
    paths: dict[int, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _paths(ds, "", paths)
            result: dict[str, Any] = ds.to_json_dict(
                bulk_data_threshold=INLINE_MAX,
                bulk_data_element_handler=lambda elem: f"{uri}/{paths[id(elem)]}")
        except Exception as e:  # pydicom raises many kinds
            raise DicomInputError(f"the instance's header cannot be written as DICOM JSON ({e})") from e
    pixel = pixel_element(head, transfer_syntax(ds)) if header_end < size else None
    if pixel is not None:
        vr = pixel.vr if pixel.vr in ("OB", "OW", "OF", "OD") else "OW"
        result[f"{pixel.tag:08X}"] = {"vr": vr, "BulkDataURI": f"{uri}/{pixel.tag:08X}"}
    return result


def locate(reader: Any, header_end: int, size: int, path: str) -> BulkValue:
    """The bulk data value at tag path ``path`` of the stored instance ``reader`` reads.

    InvalidInputError for a malformed path; NotFoundError when the instance has no binary value there."""
    if not _PATH.match(path):
        raise InvalidInputError(f"a bulk data path is a tag, or tag/item/tag... (e.g. 7FE00010 or "
                                f"00540016/0/00181072), not {path!r}")
    reader.seek(0)
    head: bytes = reader.read(header_end if header_end < size else -1)
    steps = path.split("/")
    if len(steps) == 1 and int(path, 16) in PIXEL_TAGS and header_end < size:
        # The pixel value's place needs only the file meta's transfer syntax, not a parse of the header.
        pixel = pixel_element(head, file_meta(head)[0].get(_TRANSFER_SYNTAX_UID) or EXPLICIT_LITTLE)
        if pixel is not None and pixel.tag == int(path, 16):
            length = pixel.length if pixel.length is not None else _items_length(reader, header_end, size)
            if header_end + length > size:
                raise DicomInputError(f"the stored pixel data is cut off ({size - header_end} of {length} "
                                      "bytes)")
            return BulkValue(header_end, length, None, True)
    elem = _element(header_dataset(head, "the instance's header"), steps, path)
    if elem.VR not in _BINARY_VRS or not isinstance(elem.value, bytes | bytearray | None):
        raise NotFoundError(f"element {path} of this instance is not a binary value (it is {elem.VR}); "
                            "its value is in the metadata")
    data = bytes(elem.value or b"")
    return BulkValue(0, len(data), data, False)


def _element(ds: Dataset, steps: list[str], path: str) -> DataElement:
    missing = NotFoundError(f"this instance has no element at bulk data path {path}; take the "
                            "BulkDataURIs from its metadata")
    current = ds
    for n in range(0, len(steps), 2):
        tag = int(steps[n], 16)
        if tag not in current:
            raise missing
        elem = current[tag]
        if n + 1 == len(steps):
            return elem
        index = int(steps[n + 1])
        if elem.VR != "SQ" or elem.value is None or index >= len(elem.value):
            raise missing
        current = elem.value[index]
    raise missing


def _items_length(reader: Any, start: int, size: int) -> int:
    """The length of an encapsulated pixel value at ``start`` (its items, up to and without the
    sequence delimiter), read from the item headers only."""
    pos = start
    while pos + 8 <= size:
        reader.seek(pos)
        header: bytes = reader.read(8)
        if header[:4] == _SEQUENCE_DELIMITER:
            return pos - start
        if header[:4] != _ITEM:
            break
        pos += 8 + int.from_bytes(header[4:], "little")
    raise DicomInputError("the stored encapsulated pixel data has no sequence delimiter where expected")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(start, stop)`` an HTTP Range header asks of a ``size``-byte value; None for the whole value
    (no header, or one this server ignores as RFC 9110 14.2 allows: not ``bytes``, several ranges,
    malformed). RangeNotSatisfiableError when the one range lies wholly outside the value."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or (not first and last.isdigit())) or (last and not last.isdigit()):
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiableError(f"the range {spec} selects no byte of the {size}-byte value", size)
        return max(0, size - n), size
    start = int(first)
    stop = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(f"the range {spec} starts past the end of the {size}-byte value", size)
    return start, stop


def stream(reader: Any, value: BulkValue, start: int, stop: int) -> Iterator[bytes]:
    """Bytes ``start:stop`` of ``value``, in chunks of at most :data:`CHUNK`, read from ``reader`` only as
    they are sent."""
    if value.data is not None:
        view = memoryview(value.data)
        for pos in range(start, stop, CHUNK):
            yield bytes(view[pos:min(pos + CHUNK, stop)])
        return
    reader.seek(value.offset + start)
    left = stop - start
    while left > 0:
        chunk: bytes = reader.read(min(CHUNK, left))
        if not chunk:
            raise DicomInputError(f"the stored value ended {left} bytes early")
        left -= len(chunk)
        yield chunk

