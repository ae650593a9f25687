"""What one DICOM Part 10 file holds, found by the native scanner or, when it declines, by pydicom.

This module owns the description of an incoming file: its transfer syntax, the values of the indexed
attributes (:data:`mmarchive.dicom.attributes.INDEXED`, in the value model documented there), where its
dataset starts and where its pixel data lies, so that a caller can cut the file into
``[header | pixel value | trailer]`` and store the pixel value as its own content. :func:`scan_native` is
the fast path (``native/dicomscan.pyx``: a bounds-checked walk that builds no Dataset and returns None for
whatever it does not handle); :func:`describe_with_pydicom` is the reference and the fallback (pydicom,
normalised to the same value model, in :mod:`mmarchive.dicom.scan_pydicom`, imported only when first
needed); :func:`describe` tries the first and falls back to the second, and raises
:class:`DicomInputError` for bytes the archive cannot accept as a DICOM instance. Both paths give the same
answer on every file the native scanner accepts (tests/dicom/test_scan.py checks this on every test file).
"""
from __future__ import annotations

from typing import Final, Literal, NamedTuple

from mmarchive._native import dicomscan
from mmarchive.dicom.attributes import INDEXED, AttributeValues
from mmarchive.dicom.errors import DicomInputError

ParsedBy = Literal["native", "pydicom"]

#: The attributes without which the catalog cannot place an instance.
REQUIRED_IDENTIFIERS: Final = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: The identifiers that key the catalog: each must also be a usable UID (see :func:`describe`).
KEY_IDENTIFIERS: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: pydicom leaves values longer than this unread (it records where they are).
PYDICOM_DEFER_SIZE: Final = 16 * 1024


#: VRs whose explicit VR element header is 12 bytes (two reserved bytes, then a 4-byte length).
LONG_HEADER_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})

_SCANNER: Final = dicomscan.Scanner((a.keyword, a.tag, a.vr) for a in INDEXED)


class PixelDataLocation(NamedTuple):
    """Where the pixel data element of a file lies; offsets are from the start of the file.

    ``offset``/``length`` delimit the element's value: for native pixel data the pixel bytes; for
    encapsulated pixel data everything from the Basic Offset Table item through the sequence delimiter.
    ``fragments`` are the ``(offset, length)`` of each fragment's bytes (item headers excluded) and
    ``basic_offset_table`` the table's entries; both are empty for native pixel data.
    """

    tag: int
    element_offset: int
    offset: int
    length: int
    encapsulated: bool
    basic_offset_table: tuple[int, ...] = ()
    fragments: tuple[tuple[int, int], ...] = ()


class ScannedInstance(NamedTuple):
    """One file described: what the catalog indexes and where the store may cut it.

    ``buf[:header_end]`` is the header (preamble, file meta and every element before the pixel value,
    the pixel data element's own tag and length included), ``buf[header_end:trailer_start]`` the pixel
    value and ``buf[trailer_start:]`` whatever follows it (trailing padding, private elements). Without a
    located pixel value both cut points are the file's size.
    """

    transfer_syntax: str
    values: AttributeValues
    pixel_data: PixelDataLocation | None
    dataset_offset: int
    header_end: int
    trailer_start: int
    size: int
    parsed_by: ParsedBy

    def cut(self, buf: bytes | bytearray | memoryview) -> tuple[memoryview, memoryview, memoryview]:
        """The header, pixel value and trailer of ``buf`` (the file this instance describes)."""
        if len(buf) != self.size:
            raise ValueError(f"buffer of {len(buf)} bytes is not the {self.size}-byte file described")
        view = memoryview(buf)
        return view[:self.header_end], view[self.header_end:self.trailer_start], view[self.trailer_start:]



# Field-by-field construction without argument binding: scan_native runs per ingested file.
_make_instance: Final = ScannedInstance._make
_make_pixel: Final = PixelDataLocation._make


def scan_native(buf: bytes | bytearray | memoryview) -> ScannedInstance | None:
    """Describe a Part 10 file with the native scanner, or None when it declines the file."""
    found = _SCANNER.scan(buf)
    if found is None:
        return None
    transfer_syntax, dataset_offset, size, values, pixel_tuple = found
    if pixel_tuple is None:
        return _make_instance((transfer_syntax, values, None, dataset_offset, size, size, size, "native"))
    tag, element_offset, offset, length, table, fragments = pixel_tuple
    if fragments is None:
        pixel = _make_pixel((tag, element_offset, offset, length, False, (), ()))
    else:
        pixel = _make_pixel((tag, element_offset, offset, length, True, table or (), fragments))
    return _make_instance((transfer_syntax, values, pixel, dataset_offset, offset, offset + length, size,
                           "native"))


def describe(buf: bytes | bytearray | memoryview) -> ScannedInstance:
    """Describe a Part 10 file: the native scanner, pydicom when it declines.

    Raises :class:`DicomInputError` when the bytes are not DICOM, are truncated or malformed, lack one of
    :data:`REQUIRED_IDENTIFIERS`, or have a :data:`KEY_IDENTIFIERS` value that cannot key the catalog.
    Lenient on purpose (systems in the field write UIDs with letters or leading zeros): such a UID must be
    1-64 printable ASCII characters without a backslash.
    """
    scanned = scan_native(buf)
    if scanned is None:
        scanned = describe_with_pydicom(buf)
    values = scanned.values
    for keyword in REQUIRED_IDENTIFIERS:
        value = values.get(keyword)
        if value and "" not in value:
            continue
        missing = [k for k in REQUIRED_IDENTIFIERS if not values.get(k) or "" in values[k]]
        raise DicomInputError(
            f"the DICOM file lacks {', '.join(missing)} (absent or empty), so the archive cannot index "
            "it; fix the file at its source or re-export it with these identifiers")
    for keyword in KEY_IDENTIFIERS:
        uid = str(values[keyword][0])
        if not (0 < len(uid) <= 64 and uid.isascii() and uid.isprintable() and "\\" not in uid):
            raise DicomInputError(f"{keyword} {uid[:80]!r} is not a usable UID (1-64 printable ASCII "
                                  "characters); fix the file at its source")
    return scanned


def describe_with_pydicom(buf: bytes | bytearray | memoryview) -> ScannedInstance:
    """Describe a Part 10 file with pydicom: the reference the native scanner is held to, and its fallback.

    Reads files the native scanner declines (big endian, deflated, no preamble or file meta, other
    character sets, unusual encodings). For a deflated dataset no pixel data location is given (its
    offsets are not file offsets), so a caller stores such a file whole. Raises :class:`DicomInputError`
    for bytes that are not DICOM, truncated or that pydicom cannot read. pydicom is imported on the
    first call (:mod:`mmarchive.dicom.scan_pydicom`).
    """
    from mmarchive.dicom.scan_pydicom import read_instance

    return read_instance(buf)


def file_meta(data: bytes) -> tuple[dict[int, str], int]:
    """The UI values of a Part 10 file's meta group (by element number) and where its dataset starts.

    The meta group is explicit VR little endian after the preamble and ``DICM`` (a file without them may
    start with the group directly, or with the dataset: no meta, offset 0). Each element is walked by its
    own length, so a group length that is missing or wrong does not matter. (For a deflated dataset the
    offset is the last meaningful file offset: what follows is compressed.)
    """
    pos = 132 if data[128:132] == b"DICM" else 0
    meta: dict[int, str] = {}
    while len(data) - pos >= 8 and data[pos:pos + 2] == b"\x02\x00":
        element = int.from_bytes(data[pos + 2:pos + 4], "little")
        vr = data[pos + 4:pos + 6].decode("latin-1")
        if vr in LONG_HEADER_VRS:
            start, length = pos + 12, int.from_bytes(data[pos + 8:pos + 12], "little")
        else:
            start, length = pos + 8, int.from_bytes(data[pos + 6:pos + 8], "little")
        if vr == "UI":
            meta[element] = data[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return meta, min(pos, len(data))
