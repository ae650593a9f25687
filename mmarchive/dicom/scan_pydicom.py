"""The pydicom reading of a DICOM Part 10 file: the reference the native scanner is held to, and its fallback.

:func:`read_instance` describes a file (transfer syntax, indexed values, dataset offset, pixel data
location) with pydicom, normalised to the value model of :mod:`mmarchive.dicom.attributes`, for the files
the native scanner declines (big endian, deflated, no preamble or file meta, other character sets,
unusual encodings). It lives apart from :mod:`mmarchive.dicom.scan` so that the fast path, and every
command that only reads the catalog, never imports pydicom: :func:`mmarchive.dicom.scan.describe_with_pydicom`
imports this module when it is first needed. pydicom's warnings and log records are silenced while it
reads (log records per thread; warnings with ``warnings.catch_warnings``, which is process-wide: a warning
another thread raises meanwhile may be silenced too).
"""

from __future__ import annotations

import logging
import struct
import threading
import warnings
from io import BytesIO
from typing import Final

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import parse_basic_offsets, parse_fragments
from pydicom.multival import MultiValue
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import PersonName

from mmarchive.dicom.attributes import (
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    INDEXED,
    PIXEL_DATA,
    AttributeValues,
    ScalarValue,
)
from mmarchive.dicom.errors import DicomInputError
from mmarchive.dicom.scan import (
    LONG_HEADER_VRS,
    PYDICOM_DEFER_SIZE,
    REQUIRED_IDENTIFIERS,
    ParsedBy,
    PixelDataLocation,
    ScannedInstance,
    file_meta,
)

_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_SEQUENCE_DELIMITER: Final = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_INTEGER_VRS: Final = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS: Final = frozenset({"DS", "FL", "FD"})


class _QuietWhileReading(logging.Filter):
    """Drops pydicom's log records (it logs each warning too) emitted by a thread inside
    :func:`read_instance`; other threads' records pass."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.reading, "active", False)


_QUIET = _QuietWhileReading()
logging.getLogger("pydicom").addFilter(_QUIET)


def _instance(transfer_syntax: str, values: AttributeValues, pixel: PixelDataLocation | None,
              dataset_offset: int, size: int, parsed_by: ParsedBy) -> ScannedInstance:
    if pixel is None:
        return ScannedInstance(transfer_syntax, values, None, dataset_offset, size, size, size, parsed_by)
    return ScannedInstance(transfer_syntax, values, pixel, dataset_offset, pixel.offset,
                           pixel.offset + pixel.length, size, parsed_by)


def read_instance(buf: bytes | bytearray | memoryview) -> ScannedInstance:
    """Describe a Part 10 file with pydicom (see :func:`mmarchive.dicom.scan.describe_with_pydicom`).

    Reads files the native scanner declines (big endian, deflated, no preamble or file meta, other
    character sets, unusual encodings). For a deflated dataset no pixel data location is given (its
    offsets are not file offsets), so a caller stores such a file whole. Raises :class:`DicomInputError`
    for bytes that are not DICOM, truncated or that pydicom cannot read.
    """
    data = bytes(buf)
    has_prefix = len(data) >= 132 and data[128:132] == b"DICM"
    # pydicom is a third-party parser fed untrusted bytes: whatever it raises means "cannot read this".
    _QUIET.reading.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data), force=True, defer_size=PYDICOM_DEFER_SIZE)
            transfer_syntax = _transfer_syntax_of(ds)
            deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
            values = _values_of(ds)
            if not deflated:
                _check_not_truncated(ds, len(data))
            pixel = None if deflated else _pixel_location(ds, data)
            dataset_offset = file_meta(data)[1]
    except DicomInputError as e:
        if not has_prefix:
            raise DicomInputError(f"not a DICOM file: no 'DICM' prefix and no readable dataset ({e}); check "
                                  "the file") from e
        raise
    except Exception as e:
        if not has_prefix:
            raise DicomInputError(
                "not a DICOM file: no 'DICM' prefix and no readable dataset "
                f"({type(e).__name__}: {e}); check the file") from e
        raise DicomInputError(
            f"malformed DICOM file: pydicom cannot read it ({type(e).__name__}: {e}); check the file "
            "or re-export it from its source") from e
    finally:
        _QUIET.reading.active = False
    if has_prefix and not ds.keys() and dataset_offset < len(data):
        raise DicomInputError(
            f"malformed or truncated DICOM file: no element could be read after the file meta (offset "
            f"{dataset_offset} of {len(data)} bytes); send the complete file or re-export it")
    if not has_prefix and not any(values.get(k) for k in REQUIRED_IDENTIFIERS):
        raise DicomInputError("not a DICOM file: no 'DICM' prefix and no readable dataset (no SOP, study "
                              "or series UID found); check the file")
    return _instance(transfer_syntax, values, pixel, dataset_offset, len(data), "pydicom")


def _transfer_syntax_of(ds: Dataset) -> str:
    """The declared transfer syntax, else the encoding pydicom found the dataset in."""
    meta = getattr(ds, "file_meta", None)
    declared = meta.get("TransferSyntaxUID") if meta is not None else None
    if declared is not None and str(declared):
        return str(declared)
    implicit, little = ds.original_encoding
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _values_of(ds: Dataset) -> AttributeValues:
    """The indexed attributes in the value model; an element pydicom cannot read or present is left out."""
    values: AttributeValues = {}
    for attribute in INDEXED:
        if attribute.tag not in ds:
            continue
        try:
            value = ds[attribute.tag].value
        except (ValueError, TypeError, KeyError, OverflowError):  # a value pydicom cannot convert
            continue
        normalised = _normalised(value, attribute.vr)
        if normalised is not None:
            values[attribute.keyword] = normalised
    return values


def _normalised(value: object, vr: str) -> tuple[ScalarValue, ...] | None:
    """pydicom's value as a tuple of the value model, or None when it cannot be presented so."""
    if value is None:
        return ()
    items: list[object]
    if isinstance(value, MultiValue | list | tuple):
        items = list(value)
    elif isinstance(value, str | int | float | PersonName):
        items = [value]
    else:  # bytes of an element pydicom could not interpret, a sequence, ...
        return None
    out: list[ScalarValue] = []
    for item in items:
        if vr in _INTEGER_VRS or vr in _FLOAT_VRS:
            if isinstance(item, str) and not item.strip():
                continue  # pydicom gives '' for an empty number
            if isinstance(item, bool) or not isinstance(item, int | float):
                return None
            if vr in _INTEGER_VRS:
                if isinstance(item, float) and not item.is_integer():
                    return None  # IS "1.5": not an integer
                out.append(int(item))
            else:
                out.append(float(item))
        elif isinstance(item, PersonName | str):
            out.append(str(item))
        else:
            return None
    if out == [""]:
        return ()
    return tuple(out)


def _top_level(ds: Dataset) -> list[DataElement | RawDataElement]:
    """The dataset's top-level elements without reading deferred values."""
    return [ds.get_item(tag, keep_deferred=True) for tag in sorted(ds.keys())]


def _header_size(elem: DataElement | RawDataElement, implicit_dataset: bool) -> int:
    implicit = elem.is_implicit_VR if isinstance(elem, RawDataElement) else implicit_dataset
    if implicit or elem.VR is None:
        return 8
    return 12 if elem.VR in LONG_HEADER_VRS else 8


def _check_not_truncated(ds: Dataset, size: int) -> None:
    for elem in _top_level(ds):
        if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED_LENGTH \
                and elem.value_tell + elem.length > size:
            raise DicomInputError(
                f"truncated DICOM file: element {elem.tag} needs {elem.length} bytes at offset "
                f"{elem.value_tell} but the file has {size} bytes; send the complete file")


def _pixel_location(ds: Dataset, data: bytes) -> PixelDataLocation | None:
    """Where the pixel data lies, from the raw element pydicom recorded and pydicom's encapsulation parser.

    None when there is none to cut out: no pixel data, more than one pixel data element, pixel data read
    as a sequence, or encapsulated pixel data whose items do not parse (the file is then stored whole).
    """
    present = [t for t in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA) if t in ds]
    if len(present) != 1:
        return None
    tag = present[0]
    elem = ds.get_item(tag, keep_deferred=True)
    if not isinstance(elem, RawDataElement):
        return None
    element_offset = elem.value_tell - _header_size(elem, bool(ds.original_encoding[0]))
    if elem.length != _UNDEFINED_LENGTH:
        return PixelDataLocation(tag, element_offset, elem.value_tell, elem.length, False)

    start = elem.value_tell
    fp = BytesIO(data)
    fp.seek(start)
    try:
        table = tuple(parse_basic_offsets(fp))
        _, item_offsets = parse_fragments(fp)
    except (ValueError, struct.error) as e:  # struct.error: a cut-off item header
        if fp.tell() >= len(data) or len(data) - start < 8:
            raise DicomInputError(
                f"truncated DICOM file: the encapsulated pixel data at offset {start} is cut off; send the "
                "complete file") from e
        return None
    fragments = []
    items_end = fp.tell()  # parse_fragments rewinds to the first fragment: the end of the table
    for item_offset in item_offsets:
        length = int.from_bytes(data[item_offset + 4:item_offset + 8], "little")
        items_end = item_offset + 8 + length
        fragments.append((item_offset + 8, length))
    if items_end + 8 > len(data):
        raise DicomInputError(
            f"truncated DICOM file: the encapsulated pixel data at offset {start} has no sequence "
            "delimiter; send the complete file")
    if data[items_end:items_end + 8] != _SEQUENCE_DELIMITER:
        return None
    if elem.value is not None and start + len(elem.value) != items_end:
        return None  # pydicom found its end elsewhere (a delimiter inside a fragment): not cut
    return PixelDataLocation(tag, element_offset, start, items_end + 8 - start, True, table,
                             tuple(fragments))


def header_dataset(head: bytes, what: str) -> Dataset:
    """The dataset pydicom reads from a stored instance's header piece (pixel data left out), its warnings
    silenced; :class:`DicomInputError` naming ``what`` when it cannot be read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(BytesIO(head), stop_before_pixels=True, force=True)
        except Exception as e:  # pydicom raises many kinds
            raise DicomInputError(f"{what} cannot be read back ({e})") from e
