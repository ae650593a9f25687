"""WADO-RS frames: the stored bytes of chosen frames of one instance, without decoding and without
reading the other frames.

:func:`frame_list` parses a ``{list}`` path segment; :func:`open_frames` reads a stored instance's header
piece (the bytes before its pixel value, cut at ingest) with pydicom, works out the pixel layout and gives
a :class:`Frames` whose :meth:`Frames.read` seeks in the store to one frame: native pixel data at
``pixel_offset + (k - 1) * frame_size``, encapsulated pixel data through pydicom's ``get_frame`` (Basic or
Extended Offset Table, one fragment per frame, or JPEG-family frame boundaries). Native frames are served as
``application/octet-stream`` (little endian, as stored), encapsulated ones with the media type of their
transfer syntax (:data:`MEDIA_TYPES`). What cannot be served faithfully (packed 1-bit or big endian native
data, video transfer syntaxes) is refused rather than approximated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from mmarchive.dicom.scan_pydicom import header_dataset
from mmarchive.errors import InvalidInputError

OCTET_STREAM = "application/octet-stream"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
#: The native (uncompressed little endian) transfer syntaxes; their pixel data is served as explicit VR
#: little endian.
NATIVE = frozenset({"1.2.840.10008.1.2", EXPLICIT_LITTLE})
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_UNDEFINED = 0xFFFFFFFF
#: Pixel Data, Float Pixel Data, Double Float Pixel Data.
PIXEL_DATA = 0x7FE00010
PIXEL_TAGS = frozenset({PIXEL_DATA, 0x7FE00008, 0x7FE00009})
#: Encapsulated transfer syntax -> the media type its frames are served as (PS3.18 Table 8.7.3-5).
MEDIA_TYPES: Mapping[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: Video transfer syntaxes (MPEG-2, MPEG-4, HEVC): a stream, not frames.
_VIDEO_PREFIXES = ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.102",
                   "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
                   "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108")


def served_syntax(syntax: str) -> str:
    """The transfer syntax stored pixel data in ``syntax`` is served in: explicit VR little endian for
    native data, else ``syntax`` itself."""
    return EXPLICIT_LITTLE if syntax in NATIVE else syntax


def frame_list(text: str) -> list[int]:
    """The 1-based frame numbers of a ``{list}`` segment (``1,3,5``); InvalidInputError if malformed."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or not item.isascii():
            raise InvalidInputError(f"the frame list must be comma-separated frame numbers, not {text!r}")
        n = int(item)
        if n < 1:
            raise InvalidInputError(f"frame numbers start at 1, not {n}")
        numbers.append(n)
    return numbers


class Frames(NamedTuple):
    """How to read the frames of one stored instance."""

    transfer_syntax: str
    media_type: str  # what each frame is served as
    number_of_frames: int
    pixel_offset: int  # object offset of the pixel value (native bytes, or the Basic Offset Table item)
    frame_size: int  # native only; 0 for encapsulated
    extended_offsets: tuple[bytes, bytes] | None

    @property
    def served_syntax(self) -> str:
        """The transfer syntax the frames are served in."""
        return served_syntax(self.transfer_syntax)

    @property
    def part_type(self) -> str:
        """The Content-Type of one frame's part."""
        return f"{self.media_type}; transfer-syntax={self.served_syntax}"

    def check(self, numbers: list[int]) -> None:
        for n in numbers:
            if n > self.number_of_frames:
                raise InvalidInputError(f"frame {n} is past the last frame of the instance "
                                        f"({self.number_of_frames} frames)")

    def read(self, reader: Any, number: int) -> bytes:
        """Frame ``number`` (1-based) from ``reader``, a seekable reader over the stored object."""
        if self.frame_size:
            reader.seek(self.pixel_offset + (number - 1) * self.frame_size)
            data: bytes = reader.read(self.frame_size)
            if len(data) != self.frame_size:
                raise InvalidInputError(f"frame {number} is cut off in the stored pixel data")
            return data
        reader.seek(self.pixel_offset)
        try:
            return get_frame(reader, number - 1, number_of_frames=self.number_of_frames,
                             extended_offsets=self.extended_offsets)
        except (ValueError, IndexError, KeyError) as e:
            raise InvalidInputError(f"frame {number} cannot be found in the encapsulated pixel data "
                                    f"({e})") from e


def open_frames(reader: Any, header_end: int, size: int) -> Frames:
    """The frame layout of the stored instance ``reader`` reads; ``header_end`` is where its pixel
    value starts (the object's size when it has no cut-out pixel data)."""
    if header_end >= size:
        raise InvalidInputError("the instance has no pixel data (or none stored apart from its header)")
    head, ds = read_header(reader, header_end)
    return frame_layout(head, ds)


def frame_layout(head: bytes, ds: Dataset) -> Frames:
    """The frame layout of a stored instance from its header piece ``head`` (which ends where the pixel
    value starts) and the dataset read from it."""
    header_end = len(head)
    syntax = transfer_syntax(ds)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as e:
        raise InvalidInputError(f"the instance's image pixel attributes are missing or invalid ({e})") from e
    if frames < 1:
        raise InvalidInputError(f"the instance's Number of Frames is {frames}")
    if syntax in NATIVE:
        if bits % 8:
            raise InvalidInputError(f"frames of {bits}-bit packed pixel data are not served")
        length = int.from_bytes(head[-4:], "little")
        frame_size = rows * columns * samples * bits // 8
        if frame_size <= 0 or frame_size * frames > length:
            raise InvalidInputError(f"the pixel data ({length} bytes) does not hold {frames} frames of "
                                    f"{frame_size} bytes")
        return Frames(syntax, OCTET_STREAM, frames, header_end, frame_size, None)
    if syntax in (_BIG_ENDIAN, _DEFLATED) or syntax.startswith(_VIDEO_PREFIXES):
        raise InvalidInputError(f"frames of transfer syntax {syntax} are not served; retrieve the instance")
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
    return Frames(syntax, MEDIA_TYPES.get(syntax, OCTET_STREAM), frames, header_end, 0, extended)


def read_header(reader: Any, header_end: int) -> tuple[bytes, Dataset]:
    """The header piece of a stored instance (its first ``header_end`` bytes, or all of it when
    ``header_end`` is negative) and the dataset pydicom reads from it, pixel data left out."""
    reader.seek(0)
    head: bytes = reader.read(header_end)
    return head, header_dataset(head, "the instance's header")


def transfer_syntax(ds: Dataset) -> str:
    """The transfer syntax UID of a dataset read from a Part 10 file (explicit VR little endian if none)."""
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or EXPLICIT_LITTLE)


class PixelElement(NamedTuple):
    """The pixel data element whose header ends a stored instance's header piece."""

    tag: int
    vr: str
    length: int | None  # None: undefined length (encapsulated)


def pixel_element(head: bytes, syntax: str) -> PixelElement | None:
    """The pixel data element at the end of ``head`` (a header piece cut before a pixel value), from its
    tag, VR and length bytes; None when ``head`` does not end with one."""
    big = syntax == _BIG_ENDIAN
    order: Literal["little", "big"] = "big" if big else "little"
    if syntax == "1.2.840.10008.1.2":  # implicit VR: tag, 4-byte length
        if len(head) < 8:
            return None
        raw, vr, raw_length = head[-8:-4], "OW", head[-4:]
    else:  # explicit VR: tag, VR, 2 reserved bytes, 4-byte length
        if len(head) < 12:
            return None
        raw, vr, raw_length = head[-12:-8], head[-8:-6].decode("latin-1"), head[-4:]
    tag = (int.from_bytes(raw[:2], order) << 16) | int.from_bytes(raw[2:], order)
    if tag not in PIXEL_TAGS:
        return None
    length = int.from_bytes(raw_length, order)
    return PixelElement(tag, vr, None if length == _UNDEFINED else length)
