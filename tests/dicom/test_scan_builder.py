"""Part 10 files built byte by byte, for the scanner tests, and the check that pydicom reads them as meant.

The scanner tests need files pydicom's writer will not produce: values with arbitrary bytes (padding,
backslashes, invalid UTF-8), sequences of undefined length nested hundreds deep, pixel data of every kind
and encoding. :func:`part10` assembles a file from raw elements in explicit or implicit VR little endian;
:func:`element`, :func:`sequence` and :func:`encapsulated` make the elements. The tests at the bottom hold
the builder to pydicom's reading, so a builder bug cannot hide a scanner bug.
"""

from __future__ import annotations

import struct
from io import BytesIO

import pydicom

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
BIG_ENDIAN = "1.2.840.10008.1.2.2"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def pad(value: bytes, vr: str) -> bytes:
    """The value padded to even length as PS3.5 6.2 says (NUL for UI and binary VRs, space for text)."""
    if len(value) % 2 == 0:
        return value
    return value + (b"\0" if vr in ("UI", "OB", "UN") else b" ")


def element(tag: int, vr: str, value: bytes, *, explicit: bool = True, length: int | None = None) -> bytes:
    """One element; ``length`` overrides the encoded length (UNDEFINED for undefined length)."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", n) + value
    if vr in _LONG_VRS:
        return head + vr.encode("ascii") + b"\0\0" + struct.pack("<I", n) + value
    if n > 0xFFFF:
        raise ValueError(f"{vr} value of {n} bytes does not fit a 2-byte length")
    return head + vr.encode("ascii") + struct.pack("<H", n) + value


def item(content: bytes, *, undefined: bool = True) -> bytes:
    if undefined:
        end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        return struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + content + end
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def sequence(tag: int, items: list[bytes], *, explicit: bool = True, undefined: bool = True,
             undefined_items: bool = True, vr: str = "SQ") -> bytes:
    body = b"".join(item(i, undefined=undefined_items) for i in items)
    if undefined:
        return element(tag, vr, body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), explicit=explicit,
                       length=UNDEFINED)
    return element(tag, vr, body, explicit=explicit)


def nested_sequence(tag: int, depth: int, leaf: bytes, *, explicit: bool = True) -> bytes:
    """A sequence of undefined length whose one item holds the same sequence, ``depth`` levels deep."""
    inner = leaf
    for _ in range(depth):
        inner = sequence(tag, [inner], explicit=explicit)
    return inner


def encapsulated(fragments: list[bytes], table: list[int] | None = None, *, tag: int = 0x7FE00010,
                 explicit: bool = True) -> bytes:
    """Encapsulated pixel data (PS3.5 A.4): the Basic Offset Table item, one item per fragment, delimiter."""
    bot = b"".join(struct.pack("<I", o) for o in (table or []))
    body = item(bot, undefined=False) + b"".join(item(f, undefined=False) for f in fragments)
    return element(tag, "OB", body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), explicit=explicit,
                   length=UNDEFINED)


def text(tag: int, vr: str, value: str | bytes, *, explicit: bool = True, encoding: str = "latin-1") -> bytes:
    raw = value.encode(encoding) if isinstance(value, str) else value
    return element(tag, vr, pad(raw, vr), explicit=explicit)


def us(tag: int, *values: int, explicit: bool = True) -> bytes:
    return element(tag, "US", b"".join(struct.pack("<H", v) for v in values), explicit=explicit)


def identity(*, explicit: bool = True, sop_instance: str = "1.2.3.4.5.6.7.8",
             study: str = "1.2.3.4.5", series: str = "1.2.3.4.5.6") -> dict[int, bytes]:
    """The four identifiers every archived instance needs, by tag."""
    return {
        0x00080016: text(0x00080016, "UI", CT_IMAGE_STORAGE, explicit=explicit),
        0x00080018: text(0x00080018, "UI", sop_instance, explicit=explicit),
        0x0020000D: text(0x0020000D, "UI", study, explicit=explicit),
        0x0020000E: text(0x0020000E, "UI", series, explicit=explicit),
    }


def file_meta(transfer_syntax: str, sop_instance: str = "1.2.3.4.5.6.7.8") -> bytes:
    body = (element(0x00020001, "OB", b"\0\1")
            + text(0x00020002, "UI", CT_IMAGE_STORAGE)
            + text(0x00020003, "UI", sop_instance)
            + text(0x00020010, "UI", transfer_syntax)
            + text(0x00020012, "UI", "1.2.826.0.1.3680043.9.9999"))
    return element(0x00020000, "UL", struct.pack("<I", len(body))) + body


def part10(elements: dict[int, bytes], transfer_syntax: str = EXPLICIT_LE, *, trailer: bytes = b"") -> bytes:
    """Preamble, "DICM", file meta, then the elements in tag order, then ``trailer`` as given."""
    dataset = b"".join(elements[t] for t in sorted(elements))
    return bytes(128) + b"DICM" + file_meta(transfer_syntax) + dataset + trailer


def is_explicit(transfer_syntax: str) -> bool:
    return transfer_syntax != IMPLICIT_LE


# --- the builder is read back by pydicom as intended ------------------------------------------------------


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(BytesIO(data), force=True)


def test_pydicom_reads_built_files_as_meant() -> None:
    for syntax in (EXPLICIT_LE, IMPLICIT_LE):
        explicit = is_explicit(syntax)
        elements = identity(explicit=explicit)
        elements[0x00100010] = text(0x00100010, "PN", "Doe^John", explicit=explicit)
        elements[0x00280010] = us(0x00280010, 512, explicit=explicit)
        elements[0x00400275] = nested_sequence(0x00400275, 5, text(0x00100020, "LO", "x", explicit=explicit),
                                               explicit=explicit)
        elements[0x7FE00010] = element(0x7FE00010, "OW", bytes(range(16)), explicit=explicit)
        ds = _read(part10(elements, syntax))
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert ds.SOPInstanceUID == "1.2.3.4.5.6.7.8"
        assert str(ds.PatientName) == "Doe^John"
        assert ds.Rows == 512
        depth, seq = 0, ds.RequestAttributesSequence
        while True:
            depth += 1
            inner = seq[0]
            if "RequestAttributesSequence" not in inner:
                assert inner.PatientID == "x"
                break
            seq = inner.RequestAttributesSequence
        assert depth == 5
        assert ds.PixelData == bytes(range(16))


def test_pydicom_reads_built_encapsulated_pixel_data() -> None:
    elements = identity()
    elements[0x7FE00010] = encapsulated([b"abcd", b"efghij"], [0, 12])
    ds = _read(part10(elements, JPEG_BASELINE))
    assert list(pydicom.encaps.generate_fragments(ds.PixelData))[1:] == [b"abcd", b"efghij"]  # after the BOT
    assert pydicom.encaps.parse_basic_offsets(ds.PixelData) == [0, 12]
