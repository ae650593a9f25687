"""The DICOM scanner: compiled, held to pydicom on every test file, locates pixel data exactly, and describe
accepts what it should and rejects the rest with DicomInputError.

Parity is per file: each of the 236 real test files either parses natively and then agrees with
:func:`describe_with_pydicom` on the transfer syntax, every extracted value, the dataset offset and the
pixel data location, or is one of :data:`EXPECTED_DECLINES`, each with the reason it is declined. A file
that starts being declined, or a declined one that starts parsing, fails the run.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_fragments, parse_basic_offsets

from mmarchive._native import dicomscan
from mmarchive.dicom import scan
from mmarchive.dicom.attributes import DOUBLE_FLOAT_PIXEL_DATA, FLOAT_PIXEL_DATA, PIXEL_DATA
from mmarchive.dicom.errors import DicomInputError
from mmarchive.errors import InvalidInputError
from tests.dicom import test_scan_builder as build
from tests.dicom.testfiles import all_test_files

BIG_ENDIAN = "explicit VR big endian"
DEFLATED = "deflated dataset"
NO_META = "no preamble, 'DICM' or file meta"
TRUNCATED = "truncated"
OTHER_CHARSET = "character set outside default / ISO_IR 100 / ISO_IR 192 (ISO 2022)"
WRONG_ENCODING = "dataset encoded otherwise than its transfer syntax says (pydicom switches VR mode)"
MALFORMED = "malformed (unknown VR, tags out of order or in group 0001, no transfer syntax)"

EXPECTED_DECLINES: dict[str, str] = {
    "test_files/ExplVR_BigEnd.dcm": BIG_ENDIAN,
    "test_files/MR_small_bigendian.dcm": BIG_ENDIAN,
    "test_files/MR_small_expb.dcm": BIG_ENDIAN,
    "test_files/SC_rgb_small_odd_big_endian.dcm": BIG_ENDIAN,
    "dicomdirtests/DICOMDIR-bigEnd": BIG_ENDIAN,
    "test_files/liver_expb_1frame.dcm": BIG_ENDIAN,
    "test_files/rtdose_expb.dcm": BIG_ENDIAN,
    "test_files/rtdose_expb_1frame.dcm": BIG_ENDIAN,
    "data/OBXXXX1A_expb.dcm": BIG_ENDIAN,
    "data/OBXXXX1A_expb_2frame.dcm": BIG_ENDIAN,
    "data/SC_rgb_expb.dcm": BIG_ENDIAN,
    "data/SC_rgb_expb_16bit.dcm": BIG_ENDIAN,
    "data/SC_rgb_expb_16bit_2frame.dcm": BIG_ENDIAN,
    "data/SC_rgb_expb_2frame.dcm": BIG_ENDIAN,
    "data/SC_rgb_expb_32bit.dcm": BIG_ENDIAN,
    "data/SC_rgb_expb_32bit_2frame.dcm": BIG_ENDIAN,
    "data/emri_small_big_endian.dcm": BIG_ENDIAN,
    "data/gdcm-US-ALOKA-16_big.dcm": BIG_ENDIAN,
    "data/liver_expb.dcm": BIG_ENDIAN,
    "test_files/image_dfl.dcm": DEFLATED,
    "test_files/ExplVR_BigEndNoMeta.dcm": NO_META,
    "test_files/ExplVR_LitEndNoMeta.dcm": NO_META,
    "test_files/no_meta.dcm": NO_META,
    "test_files/rtstruct.dcm": NO_META,
    "data/OT-PAL-8-face.dcm": NO_META,
    "TINY_ALPHA/README": NO_META,  # a text file among the DICOMDIR test files
    "test_files/MR_truncated.dcm": TRUNCATED,
    "test_files/rtplan_truncated.dcm": TRUNCATED,
    "data/emri_small_jpeg_2k_lossless_too_short.dcm": TRUNCATED,
    "test_files/J2K_pixelrep_mismatch.dcm": OTHER_CHARSET,
    "test_files/SC_rgb_jpeg.dcm": WRONG_ENCODING,  # JPEG transfer syntax, implicit VR dataset
    "test_files/badVR.dcm": MALFORMED,
    "test_files/meta_missing_tsyntax.dcm": MALFORMED,
    "test_files/nested_priv_SQ.dcm": MALFORMED,  # group 0001 elements
}

# Files describe() rejects, with why: pydicom reads them, but they cannot be archived as instances.
EXPECTED_REJECTIONS: dict[str, str] = {
    **{name: TRUNCATED for name, why in EXPECTED_DECLINES.items() if why == TRUNCATED},
    "test_files/no_meta.dcm": "a stray byte before the dataset: not readable as DICOM",
    "TINY_ALPHA/README": "not DICOM",
    **{f"{folder}/{name}": "a DICOMDIR, no SOP instance" for folder, name in [
        ("dicomdirtests", "DICOMDIR"), ("dicomdirtests", "DICOMDIR-bigEnd"),
        ("dicomdirtests", "DICOMDIR-empty.dcm"), ("dicomdirtests", "DICOMDIR-implicit"),
        ("dicomdirtests", "DICOMDIR-nooffset"), ("dicomdirtests", "DICOMDIR-nopatient"),
        ("dicomdirtests", "DICOMDIR-reordered"), ("TINY_ALPHA", "DICOMDIR")]},
    **{f"test_files/{name}": "a stripped test file without study / series / SOP UIDs" for name in [
        "JPEGLSNearLossless_08.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm", "UN_sequence.dcm", "empty_charset_LEI.dcm", "meta_missing_tsyntax.dcm",
        "nested_priv_SQ.dcm", "no_meta_group_length.dcm", "priv_SQ.dcm"]},
}

FILES: list[Path] = all_test_files()


def file_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


_BY_ID = {file_id(p): p for p in FILES}


def test_installed_package_uses_compiled_scanner() -> None:
    assert dicomscan.__file__ is not None
    assert dicomscan.__file__.endswith(".so"), dicomscan.__file__
    assert type(dicomscan.Scanner.scan).__name__ in ("method_descriptor", "cython_function_or_method")


def test_the_test_files_are_all_there() -> None:
    assert len(FILES) == 236
    assert len(_BY_ID) == len(FILES), "file ids must be unique"
    assert set(EXPECTED_DECLINES) <= set(_BY_ID)
    assert set(EXPECTED_REJECTIONS) <= set(_BY_ID)


def _reference(data: bytes) -> scan.ScannedInstance | DicomInputError:
    try:
        return scan.describe_with_pydicom(data)
    except DicomInputError as e:
        return e


@pytest.mark.parametrize("path", FILES, ids=file_id)
def test_native_agrees_with_pydicom_or_declines_as_expected(path: Path) -> None:
    data = path.read_bytes()
    native = scan.scan_native(data)
    expected_decline = EXPECTED_DECLINES.get(file_id(path))
    if expected_decline is not None:
        assert native is None, f"expected a decline ({expected_decline})"
        return
    assert native is not None, "the native scanner declined a file it should parse"
    assert native.parsed_by == "native"
    reference = _reference(data)
    assert isinstance(reference, scan.ScannedInstance), reference
    assert reference.parsed_by == "pydicom"
    assert native.transfer_syntax == reference.transfer_syntax
    assert native.values == reference.values
    assert native.pixel_data == reference.pixel_data
    assert native.dataset_offset == reference.dataset_offset
    assert (native.header_end, native.trailer_start, native.size) == (
        reference.header_end, reference.trailer_start, reference.size)


def test_declines_are_few_and_of_the_expected_kinds() -> None:
    declined = {file_id(p) for p in FILES if scan.scan_native(p.read_bytes()) is None}
    print(f"native: {len(FILES) - len(declined)} files, declined: {len(declined)}")
    assert declined == set(EXPECTED_DECLINES)
    assert len(declined) <= 36
    kinds = {EXPECTED_DECLINES[d] for d in declined}
    assert kinds <= {BIG_ENDIAN, DEFLATED, NO_META, TRUNCATED, OTHER_CHARSET, WRONG_ENCODING, MALFORMED}


@pytest.mark.parametrize("path", [p for p in FILES if file_id(p) not in EXPECTED_DECLINES], ids=file_id)
def test_pixel_location_holds_pydicoms_pixel_data(path: Path) -> None:
    data = path.read_bytes()
    scanned = scan.scan_native(data)
    assert scanned is not None
    ds = pydicom.dcmread(path, force=True)  # read whole: no offsets involved
    pixel = scanned.pixel_data
    if pixel is None:
        assert not {PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA} & set(ds.keys())
        assert scanned.header_end == scanned.trailer_start == len(data)
        return
    value: bytes = ds[pixel.tag].value
    header, pixel_value, trailer = scanned.cut(data)
    assert bytes(header) + bytes(pixel_value) + bytes(trailer) == data
    header_size = 8 if scanned.transfer_syntax == build.IMPLICIT_LE else 12  # tag, (VR, 0000,) length
    assert header.nbytes == pixel.offset == pixel.element_offset + header_size
    assert struct.unpack_from("<HH", data, pixel.element_offset) == (pixel.tag >> 16, pixel.tag & 0xFFFF)
    if not pixel.encapsulated:
        assert bytes(pixel_value) == value
        assert (pixel.basic_offset_table, pixel.fragments) == ((), ())
        return
    assert bytes(pixel_value) == value + b"\xfe\xff\xdd\xe0\0\0\0\0"
    fragments = [data[o:o + n] for o, n in pixel.fragments]
    assert fragments == list(generate_fragments(value))[1:]  # the first item is the Basic Offset Table
    assert b"".join(fragments) == b"".join(list(generate_fragments(value))[1:])
    assert list(pixel.basic_offset_table) == parse_basic_offsets(value)


def test_trailing_elements_after_pixel_data_are_the_trailer() -> None:
    data = _BY_ID["test_files/MR_small_padded.dcm"].read_bytes()
    scanned = scan.scan_native(data)
    assert scanned is not None and scanned.pixel_data is not None
    _, _, trailer = scanned.cut(data)
    assert trailer.nbytes > 0
    assert struct.unpack_from("<HH", trailer) == (0xFFFC, 0xFFFC)  # Data Set Trailing Padding


def test_native_pixel_data_is_never_read() -> None:
    """A CT slice whose pixel bytes are garbage DICOM scans the same: the scanner does not look at them."""
    elements = build.identity()
    elements[0x7FE00010] = build.element(0x7FE00010, "OW", bytes(range(256)) * 2048)
    first = scan.scan_native(build.part10(elements))
    elements[0x7FE00010] = build.element(0x7FE00010, "OW", b"\xfe\xff\xdd\xe0" * 128 * 1024)
    second = scan.scan_native(build.part10(elements))
    assert first is not None and second is not None
    assert first.pixel_data == second.pixel_data
    assert first.pixel_data is not None and first.pixel_data.length == 512 * 1024


@pytest.mark.parametrize("path", FILES, ids=file_id)
def test_describe_accepts_or_rejects_with_dicom_input_error(path: Path) -> None:
    data = path.read_bytes()
    why = EXPECTED_REJECTIONS.get(file_id(path))
    if why is not None:
        with pytest.raises(DicomInputError):
            scan.describe(data)
        return
    described = scan.describe(data)
    assert described.parsed_by == ("pydicom" if file_id(path) in EXPECTED_DECLINES else "native")
    for keyword in scan.REQUIRED_IDENTIFIERS:
        assert described.values[keyword] and all(described.values[keyword])


def test_describe_big_endian_and_deflated_fall_back_to_pydicom() -> None:
    big = scan.describe(_BY_ID["test_files/MR_small_bigendian.dcm"].read_bytes())
    little = scan.describe(_BY_ID["test_files/MR_small.dcm"].read_bytes())
    assert (big.parsed_by, little.parsed_by) == ("pydicom", "native")
    assert big.transfer_syntax == "1.2.840.10008.1.2.2"
    assert big.values == little.values
    assert big.pixel_data is not None and little.pixel_data is not None
    assert big.pixel_data.length == little.pixel_data.length
    deflated_bytes = _BY_ID["test_files/image_dfl.dcm"].read_bytes()
    deflated = scan.describe(deflated_bytes)
    assert deflated.transfer_syntax == "1.2.840.10008.1.2.1.99"
    assert deflated.pixel_data is None  # offsets inside a deflated stream are not file offsets
    assert deflated.header_end == deflated.trailer_start == len(deflated_bytes)
    assert "SOPInstanceUID" in deflated.values


@pytest.mark.parametrize("data", [
    b"",
    b"DICM",
    os.urandom(4096),
    bytes(random.Random(3).getrandbits(8) for _ in range(100_000)),
    b"\x89PNG\r\n\x1a\n" + bytes(24) + b"IHDR" + bytes(200),
    b"Patient notes\nName: Doe, John\nThis is a text file, not an image.\n" * 20,
    bytes(128) + b"DICM",
    bytes(128) + b"DICM" + bytes(100),
], ids=["empty", "DICM", "random-4k", "random-100k", "png", "text", "preamble-only", "preamble-zeros"])
def test_non_dicom_bytes_raise_dicom_input_error(data: bytes) -> None:
    assert scan.scan_native(data) is None
    with pytest.raises(DicomInputError) as info:
        scan.describe(data)
    assert isinstance(info.value, InvalidInputError) and info.value.exit_code == 2
    message = str(info.value)
    assert "DICOM" in message
    assert "check the file" in message or "send the complete file" in message or "re-export" in message


def test_missing_identifier_is_rejected_by_name() -> None:
    for missing in scan.REQUIRED_IDENTIFIERS:
        elements = build.identity()
        tag = {"SOPClassUID": 0x00080016, "SOPInstanceUID": 0x00080018, "StudyInstanceUID": 0x0020000D,
               "SeriesInstanceUID": 0x0020000E}[missing]
        for variant in (None, b""):
            if variant is None:
                del elements[tag]
            else:
                elements[tag] = build.element(tag, "UI", variant)
            data = build.part10(elements)
            assert scan.scan_native(data) is not None  # it scans; it just cannot be archived
            with pytest.raises(DicomInputError, match=missing):
                scan.describe(data)


def test_float_pixel_data_and_trailer_in_built_files() -> None:
    for syntax in (build.EXPLICIT_LE, build.IMPLICIT_LE):
        explicit = build.is_explicit(syntax)
        elements = build.identity(explicit=explicit)
        elements[FLOAT_PIXEL_DATA] = build.element(FLOAT_PIXEL_DATA, "OF", struct.pack("<4f", 1, 2, 3, 4),
                                                   explicit=explicit)
        trailer = build.element(0xFFFCFFFC, "OB", bytes(6), explicit=explicit)
        data = build.part10(elements, syntax, trailer=trailer)
        native = scan.scan_native(data)
        assert native is not None
        assert native.pixel_data is not None and native.pixel_data.tag == FLOAT_PIXEL_DATA
        assert native == scan.describe_with_pydicom(data)._replace(parsed_by="native")
        assert bytes(native.cut(data)[2]) == trailer


def test_two_pixel_data_elements_are_declined() -> None:
    elements = build.identity()
    elements[FLOAT_PIXEL_DATA] = build.element(FLOAT_PIXEL_DATA, "OF", bytes(8))
    elements[PIXEL_DATA] = build.element(PIXEL_DATA, "OW", bytes(8))
    data = build.part10(elements)
    assert scan.scan_native(data) is None
    described = scan.describe(data)
    assert described.parsed_by == "pydicom" and described.pixel_data is None


def test_scanner_takes_bytes_bytearray_and_memoryview() -> None:
    data = _BY_ID["test_files/CT_small.dcm"].read_bytes()
    as_bytes = scan.scan_native(data)
    assert as_bytes is not None
    assert scan.scan_native(bytearray(data)) == as_bytes
    assert scan.scan_native(memoryview(data)) == as_bytes
    assert scan.describe(memoryview(data)) == as_bytes
    with pytest.raises(TypeError):
        scan.scan_native("not bytes")  # type: ignore[arg-type]


def test_scanner_rejects_attributes_it_cannot_extract() -> None:
    with pytest.raises(ValueError, match="VR"):
        dicomscan.Scanner([("SliceThickness", 0x00180050, "DS")])
    with pytest.raises(ValueError, match="tag"):
        dicomscan.Scanner([("PixelData", PIXEL_DATA, "US")])


def test_value_longer_than_pydicoms_defer_size_agrees() -> None:
    elements = build.identity()
    elements[0x00100020] = build.element(0x00100020, "LO", b"x" * (scan.PYDICOM_DEFER_SIZE + 2))
    data = build.part10(elements)
    native = scan.scan_native(data)
    assert native is not None and native.values["PatientID"] == ("x" * (scan.PYDICOM_DEFER_SIZE + 2),)
    assert native == scan.describe_with_pydicom(data)._replace(parsed_by="native")
