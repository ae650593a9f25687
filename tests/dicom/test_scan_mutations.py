"""The scanner on hostile input: mutated real files, deep nesting, arbitrary value bytes.

Real files are cut, flipped, given corrupt lengths and spliced; sequences of undefined length are nested
far past the scanner's depth limit; attribute values are drawn from bytes that exercise every decoding rule
(padding, backslashes, person name groups, Latin-1 and UTF-8, invalid UTF-8, integer strings). In every
case each call returns within a second and gives only None / a ScannedInstance (``scan_native``) or a
ScannedInstance / DicomInputError (``describe``), and whenever the native scanner accepts a file it agrees
with pydicom on it.
"""

from __future__ import annotations

import struct
import time

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mmarchive.dicom import scan
from mmarchive.dicom.errors import DicomInputError
from tests.dicom import test_scan_builder as build
from tests.dicom.testfiles import pydicom_test_files

SECONDS_PER_CALL = 1.0

_SEEDS = ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "test-SR.dcm",
          "rtplan.dcm", "rtdose.dcm", "priv_SQ.dcm", "reportsi.dcm", "MR_small_padded.dcm")
SEED_FILES: dict[str, bytes] = {p.name: p.read_bytes() for p in pydicom_test_files() if p.name in _SEEDS}


def test_seed_files_parse_natively() -> None:
    assert sorted(SEED_FILES) == sorted(_SEEDS)
    assert all(scan.scan_native(data) is not None for data in SEED_FILES.values())


def _check_consistent(scanned: scan.ScannedInstance, data: bytes) -> None:
    assert scanned.size == len(data)
    assert 0 <= scanned.dataset_offset <= scanned.header_end <= scanned.trailer_start <= len(data)
    pixel = scanned.pixel_data
    if pixel is not None:
        assert 0 <= pixel.element_offset < pixel.offset == scanned.header_end
        assert pixel.offset + pixel.length == scanned.trailer_start
        for offset, length in pixel.fragments:
            assert pixel.offset <= offset and offset + length <= pixel.offset + pixel.length


def check_hostile_input(data: bytes) -> str:
    """The property every input must satisfy (see the module docstring); returns what happened."""
    started = time.perf_counter()
    native = scan.scan_native(data)
    assert time.perf_counter() - started < SECONDS_PER_CALL
    assert native is None or isinstance(native, scan.ScannedInstance)
    if native is not None:
        _check_consistent(native, data)

    started = time.perf_counter()
    try:
        described = scan.describe(data)
    except DicomInputError:
        described = None
    assert time.perf_counter() - started < SECONDS_PER_CALL
    if described is not None:
        _check_consistent(described, data)

    if native is not None:
        started = time.perf_counter()
        reference = scan.describe_with_pydicom(data)  # pydicom reads whatever the native scanner accepts
        assert time.perf_counter() - started < SECONDS_PER_CALL
        assert native == reference._replace(parsed_by="native")
    return (f"native: {'accepted' if native is not None else 'declined'}; "
            f"describe: {'described' if described is not None else 'DicomInputError'}")


def _meta_element_with_vr(data: bytes, tag: tuple[int, int], vr: bytes) -> bytes:
    """``data`` with the VR of the file meta element ``tag`` replaced (its length field unchanged)."""
    at = data.index(struct.pack("<HH", *tag), 132)
    return data[:at + 4] + vr + data[at + 6:]


def test_file_meta_elements_with_another_vr_are_declined() -> None:
    """Found by the test above: a flipped byte made the Transfer Syntax UID's VR read UL. pydicom decodes a
    value by the VR written and fails on that one, so the native scanner must not accept the file either;
    the same holds for a group length written with a VR other than UL."""
    for name in ("JPEG2000.dcm", "CT_small.dcm"):
        data = SEED_FILES[name]
        for tag, vr in (((0x0002, 0x0010), b"UL"), ((0x0002, 0x0010), b"SH"), ((0x0002, 0x0000), b"UI")):
            changed = _meta_element_with_vr(data, tag, vr)
            assert scan.scan_native(changed) is None, (name, tag, vr)
            check_hostile_input(changed)  # describe() reads it with pydicom or rejects it, in time


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED_FILES[draw(st.sampled_from(sorted(SEED_FILES)))])
    for _ in range(draw(st.integers(1, 4))):
        # Most of the structure is in the first few KiB; pixel bytes are opaque to the scanner.
        limit = len(data) if draw(st.booleans()) else min(len(data), 4096)
        at = draw(st.integers(0, max(0, limit - 1)))
        kind = draw(st.sampled_from(["truncate", "flip", "length32", "length16", "insert", "delete"]))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "length32":
            value = draw(st.sampled_from([0, 1, 3, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, len(data),
                                          len(data) + 1]))
            data[at:at + 4] = struct.pack("<I", value)
        elif kind == "length16":
            data[at:at + 2] = struct.pack("<H", draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFE, 7])))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_mutated_real_files(data: bytes) -> None:
    event(check_hostile_input(data))


def test_every_truncation_of_a_small_file() -> None:
    data = SEED_FILES["MR_small_implicit.dcm"]
    whole = scan.scan_native(data)
    assert whole is not None and whole.pixel_data is not None
    accepted = 0
    for cut in [*range(0, whole.header_end, 3), *range(whole.header_end, len(data), 499)]:
        truncated = data[:cut]
        # A cut between two elements leaves a shorter, well-formed file; any other cut is declined.
        accepted += scan.scan_native(truncated) is not None
        if cut >= whole.header_end - 12:  # inside the pixel data element
            assert scan.scan_native(truncated) is None, cut
        check_hostile_input(truncated)
    assert 0 < accepted < 100


def _nested_file(depth: int, syntax: str, *, closed: bool = True) -> bytes:
    explicit = build.is_explicit(syntax)
    elements = build.identity(explicit=explicit)
    leaf = build.text(0x00100020, "LO", "leaf", explicit=explicit)
    elements[0x00400275] = build.nested_sequence(0x00400275, depth, leaf, explicit=explicit)
    elements[0x7FE00010] = build.element(0x7FE00010, "OW", bytes(64), explicit=explicit)
    data = build.part10(elements, syntax)
    if not closed:  # cut inside the innermost item: every level is left open
        data = data[:data.index(b"leaf") + 4]
    return data


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.sampled_from([build.EXPLICIT_LE, build.IMPLICIT_LE]), st.booleans())
def test_deeply_nested_sequences_of_undefined_length(depth: int, syntax: str, closed: bool) -> None:
    data = _nested_file(depth, syntax, closed=closed)
    native = scan.scan_native(data)
    if closed and depth <= 30:
        assert native is not None and native.pixel_data is not None
    if depth > 40 or not closed:
        assert native is None  # past the depth limit, or never closed
    event(check_hostile_input(data))


def test_depth_limit_is_where_documented() -> None:
    from mmarchive._native import dicomscan

    # A sequence and an item per nesting level, each a level of the walk's stack.
    deepest = dicomscan.MAX_DEPTH // 2
    assert scan.scan_native(_nested_file(deepest, build.EXPLICIT_LE)) is not None
    assert scan.scan_native(_nested_file(deepest + 1, build.EXPLICIT_LE)) is None


# --- values: every decoding rule against pydicom's --------------------------------------------------------

_PLAIN = st.text(st.sampled_from("ABCXYZabcxyz0189.^-_ "), max_size=12)
_TRICKY = st.binary(max_size=24) | st.lists(
    st.sampled_from([b"A", b"z", b"1", b" ", b"\0", b"\\", b"=", b"^", b".", b"+", b"-", b"\xe9", b"\xa0",
                     b"\x85", b"\t", "ü".encode(), "山".encode(), b"\xff", b"\xc3"]),
    max_size=12).map(b"".join)
_CHARSETS = st.sampled_from([None, b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 192", b"ISO 2022 IR 87"])
_VALUE_TAGS = [(0x00100010, "PN"), (0x00100020, "LO"), (0x00080060, "CS"), (0x00081030, "LO"),
               (0x00200011, "IS"), (0x00200013, "IS"), (0x00080050, "SH"), (0x00080020, "DA"),
               (0x00100021, "LO"), (0x00080090, "PN")]


@st.composite
def files_with_values(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A built file with drawn values; also whether every value is plain (the scanner must accept it)."""
    syntax = draw(st.sampled_from([build.EXPLICIT_LE, build.IMPLICIT_LE]))
    explicit = build.is_explicit(syntax)
    elements = build.identity(explicit=explicit)
    plain = True
    charset = draw(_CHARSETS)
    if charset is not None:
        elements[0x00080005] = build.text(0x00080005, "CS", charset, explicit=explicit)
        plain = charset != b"ISO 2022 IR 87"
    for tag, vr in _VALUE_TAGS:
        choice = draw(st.sampled_from(["absent", "plain", "tricky"]))
        if choice == "absent":
            continue
        if vr == "IS":
            value = str(draw(st.integers(-(10**11), 10**11))).encode() if choice == "plain" else draw(_TRICKY)
        else:
            value = draw(_PLAIN).strip().encode() if choice == "plain" else draw(_TRICKY)
        plain = plain and choice == "plain"
        elements[tag] = build.text(tag, vr, value, explicit=explicit)
    elements[0x00280010] = build.us(0x00280010, *draw(st.lists(st.integers(0, 65535), max_size=3)),
                                    explicit=explicit)
    return build.part10(elements, syntax), plain


@settings(max_examples=300, deadline=None)
@given(files_with_values())
def test_values_decode_as_pydicom_decodes_them(case: tuple[bytes, bool]) -> None:
    data, plain = case
    native = scan.scan_native(data)
    if plain:
        assert native is not None, "plain values must not make the scanner decline"
    event(check_hostile_input(data))


def test_value_model_examples() -> None:
    """A few values spelled out, so the model is visible here and not only in parity."""
    elements = build.identity()
    elements[0x00080005] = build.text(0x00080005, "CS", "ISO_IR 192")
    elements[0x00080060] = build.text(0x00080060, "CS", "MR\\CT ")
    elements[0x00100010] = build.text(0x00100010, "PN", "Müller^Jürgen=山田^太郎=", encoding="utf-8")
    elements[0x00100020] = build.text(0x00100020, "LO", " id-1 \\ id-2  ")
    elements[0x00100030] = build.element(0x00100030, "DA", b"")
    elements[0x00200013] = build.text(0x00200013, "IS", " +42 ")
    elements[0x00280010] = build.us(0x00280010, 512)
    data = build.part10(elements)
    native = scan.scan_native(data)
    assert native is not None
    assert native.values["Modality"] == ("MR", "CT")
    assert native.values["PatientName"] == ("Müller^Jürgen=山田^太郎",)
    assert native.values["PatientID"] == (" id-1", " id-2")
    assert native.values["PatientBirthDate"] == ()
    assert native.values["InstanceNumber"] == (42,)
    assert native.values["Rows"] == (512,)
    assert "StudyDate" not in native.values
    assert native == scan.describe_with_pydicom(data)._replace(parsed_by="native")
