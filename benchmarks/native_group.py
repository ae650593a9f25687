"""The `native` benchmark group: each Cython hot path beside the plain code it replaces.

The project keeps Cython only where a per-byte loop is hot and the gain is measured. This group
measures, on the run's CT set, the gear-hash chunker (native, against the plain-Python reference in
tests/store/cdc_reference.py on a small slice: it is that slow) and the 16-bit byte shuffle and
unshuffle (native, against numpy's strided transpose, the previous implementation). Each row's limit is
the plain implementation, so the ratio is the speed-up. The DICOM row times describing a CT-like Part 10
file (each CT slice wrapped in a realistic CT header): the native scanner against pydicom, per file. The
content id rows hash the 4 KiB records with the vendored BLAKE3 C code (native/contentid.pyx, GIL held)
against the ``blake3`` binding fed in pieces under 2 KiB (what the write path did to keep the GIL) and in
one call (which lets the GIL go). The index record row builds the entries of 32,768 staged 4 KiB objects,
kept alive as the write path keeps them between staging and commit, then runs a full collection: records
from native/recordtuple.pyx (untracked by the GC) against the NamedTuple classes' own constructor.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import blake3
import numpy as np

from benchmarks.archive_timing import target_note
from benchmarks.harness import BenchmarkContext, BenchmarkGroup
from benchmarks.results import MIB, ResultRow
from mmarchive._native import byteshuffle, contentid
from mmarchive.config import StoreConfig
from mmarchive.index.schema import ObjectEntry, RecordLocation
from mmarchive.records import tuple_maker
from mmarchive.store.chunking import Chunker

GROUP_NAME = "native"
DESCRIBE_TARGET_US = 10.0
"""The native scan of a 0.5 MiB CT file should cost a few microseconds (it never reads pixel bytes)."""


def _numpy_shuffle2(data: bytes) -> bytes:
    return bytes(np.frombuffer(data, np.uint8).reshape(-1, 2).T.tobytes())


def _numpy_unshuffle2(data: bytes) -> bytes:
    return bytes(np.frombuffer(data, np.uint8).reshape(2, -1).T.tobytes())


def _throughput(fn: Callable[[bytes], object], objects: tuple[bytes, ...], runs: int) -> float:
    """Median bytes/s of applying ``fn`` to every object, over ``runs`` passes."""
    total = sum(len(o) for o in objects)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        for o in objects:
            fn(o)
        rates.append(total / (time.perf_counter() - started))
    return sorted(rates)[len(rates) // 2]


def run_native(context: BenchmarkContext) -> list[ResultRow]:
    from tests.store import cdc_reference  # the plain reference lives with the parity tests

    runs = context.settings.runs
    ct = context.dataset("ct").objects
    rows: list[ResultRow] = []
    shuffled = tuple(byteshuffle.shuffle2(o) for o in ct)
    for name, native, plain, data in (
        ("byte shuffle (16-bit)", byteshuffle.shuffle2, _numpy_shuffle2, ct),
        ("byte unshuffle (16-bit)", byteshuffle.unshuffle2, _numpy_unshuffle2, shuffled),
    ):
        context.progress(f"native: {name}")
        rows.append(ResultRow(
            group=GROUP_NAME, dataset="ct", name=f"{name}, Cython", unit="MiB/s",
            value=_throughput(native, data, runs) / MIB,
            limit_name=f"{name}, numpy transpose",
            limit_value=_throughput(plain, data, runs) / MIB,
            note="ratio = speed-up over numpy"))

    cfg = StoreConfig()
    chunker = Chunker(cfg)
    whole = b"".join(ct)
    context.progress("native: chunker")

    def native_cut(buf: bytes) -> object:
        return sum(1 for _ in chunker.cut_buffer(memoryview(buf)))

    sample = whole[: 4 * 1024 * 1024]

    def plain_cut(buf: bytes) -> object:
        return cdc_reference.cut_all(buf, cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max)

    rows.append(ResultRow(
        group=GROUP_NAME, dataset="ct", name="gear-hash chunking, Cython", unit="MiB/s",
        value=_throughput(native_cut, (whole,), runs) / MIB,
        limit_name="gear-hash chunking, plain Python (4 MiB sample)",
        limit_value=_throughput(plain_cut, (sample,), 1) / MIB,
        note="ratio = speed-up over the plain reference"))
    rows.append(describe_row(context))
    rows.extend(content_id_rows(context))
    rows.append(index_record_row(context))
    return rows


def index_record_row(context: BenchmarkContext) -> ResultRow:
    """Index entries of staged objects kept in flight, then a full collection: native against plain."""
    context.progress("native: index records")
    count = len(context.dataset("small").objects)
    new_location, new_entry = tuple_maker(RecordLocation), tuple_maker(ObjectEntry)

    def native(i: int) -> ObjectEntry:
        return new_entry((1, i, 4096, i, new_location((_PACK_ID, i * 64, 4096)), b"",
                          ((_CID, 4096),)))

    def plain(i: int) -> ObjectEntry:
        return ObjectEntry(1, i, 4096, i, RecordLocation(_PACK_ID, i * 64, 4096), b"", ((_CID, 4096),))

    def rate(make: Callable[[int], ObjectEntry]) -> float:
        rates = []
        for _ in range(context.settings.runs):
            gc.collect()
            started = time.perf_counter()
            in_flight = [make(i) for i in range(count)]
            gc.collect()
            rates.append(len(in_flight) / (time.perf_counter() - started))
        return sorted(rates)[len(rates) // 2]

    return ResultRow(
        group=GROUP_NAME, dataset="small", name="index records in flight + full GC, native records",
        unit="records/s", value=rate(native),
        limit_name="index records in flight + full GC, NamedTuple constructors", limit_value=rate(plain),
        note="ratio = speed-up; native records holding no container are untracked by the GC",
        details={"records": count})


_PACK_ID, _CID = bytes(16), bytes(32)


def _blake3_in_pieces(data: bytes) -> bytes:
    """The binding fed pieces of under 2 KiB, so that it keeps the GIL (the former content_id)."""
    view = memoryview(data)
    hasher = blake3.blake3()
    for start in range(0, len(data), 2047):
        hasher.update(view[start:start + 2047])
    return hasher.digest()


def content_id_rows(context: BenchmarkContext) -> list[ResultRow]:
    """BLAKE3 of every small record: native against the binding (in pieces, and in one call)."""
    context.progress("native: content ids")
    small = tuple(context.dataset("small").objects)
    runs = context.settings.runs
    native = _throughput(contentid.blake3_256, small, runs)
    rows = []
    for label, plain in (("in pieces under 2 KiB (keeps the GIL)", _blake3_in_pieces),
                         ("in one call (lets the GIL go)", lambda d: blake3.blake3(d).digest())):
        rows.append(ResultRow(
            group=GROUP_NAME, dataset="small", name="BLAKE3 content id, vendored C", unit="MiB/s",
            value=native / MIB, limit_name=f"BLAKE3 content id, blake3 binding {label}",
            limit_value=_throughput(plain, small, runs) / MIB,
            note="ratio = speed-up over the binding"))
    return rows


def ct_part10(pixels: bytes, index: int) -> bytes:
    """A CT image storage file around one 512x512 uint16 slice, with a header like a scanner's."""
    from io import BytesIO

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

    root = "1.2.826.0.1.3680043.9.7133"
    study, series = f"{root}.1.20240611.1", f"{root}.2.20240611.1.3"
    instance = f"{root}.3.20240611.1.3.{index + 1}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(f"{root}.99")
    meta.ImplementationVersionName = "MMARCHIVE_BENCH"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20240611", "101530.123456"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, instance
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240611"
    ds.StudyTime, ds.SeriesTime = "100512.000000", "101002.000000"
    ds.AcquisitionTime = ds.ContentTime = f"1010{index % 60:02d}.500000"
    ds.AccessionNumber = "A20240611-0042"
    ds.Modality = "CT"
    ds.Manufacturer, ds.ManufacturerModelName = "Example Medical", "Tomograph 128"
    ds.InstitutionName, ds.StationName = "Regional Hospital", "CT01"
    ds.ReferringPhysicianName = "Müller^Anna^^Dr."
    ds.StudyDescription, ds.SeriesDescription = "CT THORAX ABDOMEN", "Thorax 1.0 B30f"
    ds.ProcedureCodeSequence = Sequence([Dataset()])
    ds.ProcedureCodeSequence[0].CodeValue = "CTTHAB"
    ds.ProcedureCodeSequence[0].CodingSchemeDesignator = "99LOCAL"
    ds.ProcedureCodeSequence[0].CodeMeaning = "CT thorax and abdomen with contrast"
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-0012345"
    ds.IssuerOfPatientID = "HOSP-A"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19610305", "F", "063Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness, ds.KVP = "1.0", "120"
    ds.DataCollectionDiameter, ds.ReconstructionDiameter = "500", "380"
    ds.GantryDetectorTilt, ds.TableHeight = "0", "152"
    ds.RotationDirection, ds.ExposureTime, ds.XRayTubeCurrent, ds.Exposure = "CW", "500", "210", "105"
    ds.FilterType, ds.ConvolutionKernel, ds.PatientPosition = "FLAT", "B30f", "FFS"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "4711", 3, 1, index + 1
    ds.ImagePositionPatient = [-190.0, -190.0, -10.0 - index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = f"{root}.4.20240611.1"
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = -10.0 - index
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.PixelSpacing = [0.742, 0.742]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = ["40", "-600"], ["400", "1200"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.add_new(0x00290010, "LO", "EXAMPLE CT HEADER")
    ds.add_new(0x00291010, "OB", bytes(range(256)) * 4)
    ds.PixelData = pixels
    out = BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _per_call_us(fn: Callable[[bytes], object], objects: tuple[bytes, ...], runs: int,
                 min_seconds: float) -> float:
    """Median microseconds per call over ``runs`` passes, each repeating the objects for ``min_seconds``."""
    per_call = []
    for _ in range(runs):
        calls = 0
        started = time.perf_counter()
        while True:
            for o in objects:
                fn(o)
            calls += len(objects)
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        per_call.append(elapsed / calls * 1e6)
    return sorted(per_call)[len(per_call) // 2]


def describe_row(context: BenchmarkContext) -> ResultRow:
    """describe() of CT Part 10 files: the native scanner against pydicom (the fallback), per file."""
    from mmarchive.dicom import scan

    context.progress("native: DICOM describe")
    slices = context.dataset("ct").objects[:64]
    files = tuple(ct_part10(pixels, i) for i, pixels in enumerate(slices))
    if any(scan.scan_native(f) is None for f in files):
        raise RuntimeError("the native scanner declined a benchmark CT file")
    runs, min_seconds = context.settings.runs, min(context.settings.min_seconds, 0.5)
    native_us = _per_call_us(scan.describe, files, runs, min_seconds)
    pydicom_us = _per_call_us(scan.describe_with_pydicom, files[:16], runs, min_seconds)
    met = native_us <= DESCRIBE_TARGET_US
    return ResultRow(
        group=GROUP_NAME, dataset="ct", name="DICOM describe (CT Part 10 file), Cython scanner",
        unit="files/s", value=1e6 / native_us,
        limit_name="DICOM describe, pydicom (defer_size 16 KiB)", limit_value=1e6 / pydicom_us,
        note=f"{native_us:.1f} vs {pydicom_us:,.0f} us/file; ratio = speed-up over pydicom; "
             + target_note(met, f"<= {DESCRIBE_TARGET_US:.0f} us per file"),
        details={"file_bytes": len(files[0]), "files": len(files), "native_us_per_file": native_us,
                 "pydicom_us_per_file": pydicom_us, "target_us": DESCRIBE_TARGET_US, "met": met})


NATIVE_GROUP = BenchmarkGroup(
    name=GROUP_NAME,
    description="Cython hot paths (chunker, byte shuffle, DICOM scan, content ids, index records) beside the "
                "plain code they replace",
    run=run_native,
)
