"""Realistic synthetic DICOM studies, written as Part 10 files into a directory, for the ingest benchmarks.

This module owns the DICOM data of the `dicom_ingest` group (and of `benchmarks/orthanc_compare.sh`): a
seeded, deterministic plan of patients (names, IDs, birth dates, sex), their CT studies (StudyDate/Time,
AccessionNumber, StudyDescription, referring physician) and series (SeriesNumber/Description, slice
thickness), and the files themselves: 512x512 16-bit CT images in explicit VR little endian whose pixels are
`benchmarks.ctdata.ct_slices` (a phantom with noise, so they compress like CT), with the headers a scanner
writes (image position and orientation, pixel spacing, rescale slope and intercept, window, acquisition
parameters) and UIDs built from a fixed root and counters (at most 64 characters). It also writes a set of
small instances of about 3.5 KB (32x32 16-bit MR thumbnails with the same kind of header). Each file's
header is written by pydicom from a per-series template with the per-instance fields replaced, and its
pixel data element is appended as raw bytes (about 2,000 CT files per 10 s, most of it the phantom).
The same seed gives byte-identical files. Nothing here is timed by the benchmarks.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import os
import random
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from benchmarks import ctdata

UID_ROOT: Final = "1.2.826.0.1.3680043.10.543.7"
"""Root of every UID written here; a UID is this root, a kind digit, the seed and counters."""
IMPLEMENTATION_CLASS_UID: Final = UID_ROOT + ".0.1"
IMPLEMENTATION_VERSION: Final = "MMARCHIVE_BENCH"
MAX_UID_LENGTH: Final = 64
CT_SIDE: Final = ctdata.CT_SLICE_SIDE
SMALL_SIDE: Final = 32
SMALL_SERIES_SIZE: Final = 50
"""Small instances per series (one series per study)."""

_PIXEL_DATA_OW: Final = b"\xe0\x7f\x10\x00OW\x00\x00"
"""(7FE0,0010) OW with its two reserved bytes: the 4-byte length follows (explicit VR little endian)."""

_SURNAMES: Final = ("SMITH", "JONES", "WILLIAMS", "BROWN", "TAYLOR", "DAVIES", "EVANS", "THOMAS",
                    "ROBERTS", "WALKER", "WRIGHT", "HARRIS", "MARTIN", "KING", "LEE", "CLARKE",
                    "GREEN", "HALL", "WOOD", "HUGHES", "MULLER", "SCHMIDT", "NGUYEN", "GARCIA",
                    "DUBOIS", "ROSSI", "KOWALSKI", "JANSEN", "SILVA", "NOVAK")
_GIVEN_MALE: Final = ("JOHN", "DAVID", "JAMES", "LUCAS", "NOAH", "LIAM", "LEO", "OSCAR", "MAX", "TOM",
                      "PETER", "ANDREW", "PAUL", "MARK")
_GIVEN_FEMALE: Final = ("MARY", "SARAH", "EMMA", "OLIVIA", "AVA", "MIA", "ELLA", "ZOE", "ISLA", "ANNA",
                        "CLAIRE", "RUTH", "HELEN", "JANE")
_REFERRERS: Final = ("PATEL^ANIL^^DR", "OKAFOR^GRACE^^DR", "MEYER^HANS^^DR", "CHEN^LI^^DR",
                     "MORRIS^KATE^^DR", "", "ROSSI^MARCO^^DR")
_STUDY_KINDS: Final = (
    ("CT CHEST WITH CONTRAST", "CHEST"), ("CT ABDOMEN PELVIS WITH CONTRAST", "ABDOMEN"),
    ("CT THORAX LOW DOSE", "CHEST"), ("CT CHEST ABDOMEN PELVIS", "CHEST"),
    ("CT PULMONARY ANGIOGRAM", "CHEST"), ("CT UROGRAM", "ABDOMEN"),
)
#: (description, slice thickness mm, kernel, slices in a full series)
_SERIES_KINDS: Final = (
    ("AXIAL 5.0 SOFT TISSUE", 5.0, "STANDARD", 80),
    ("AXIAL 1.25 STANDARD", 1.25, "STANDARD", 240),
    ("AXIAL 1.25 LUNG", 1.25, "LUNG", 240),
    ("AXIAL 2.5 BONE", 2.5, "BONE", 160),
    ("AXIAL 0.625 CTA", 0.625, "STANDARD", 320),
)
_STATIONS: Final = (("GE MEDICAL SYSTEMS", "Revolution CT", "CTAWP7310"),
                    ("SIEMENS", "SOMATOM Definition AS+", "CT2RAD01"),
                    ("Canon Medical Systems", "Aquilion ONE", "CTER02"))
_INSTITUTIONS: Final = ("NORTH REGIONAL HOSPITAL", "ST MARY GENERAL", "CITY DIAGNOSTIC CENTRE")
_FIRST_STUDY_DAY: Final = datetime.date(2021, 1, 4).toordinal()
_STUDY_DAYS: Final = 4 * 365


@dataclass(frozen=True)
class Patient:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    pixel_seed: int
    """Seed of this patient's phantom (`ctdata.ct_slices`): every series of the patient shows it."""


@dataclass(frozen=True)
class Study:
    patient: Patient
    uid: str
    date: str
    time: str
    accession: str
    description: str
    body_part: str
    referrer: str
    study_id: str
    station: tuple[str, str, str]
    institution: str


@dataclass(frozen=True)
class Series:
    study: Study
    uid: str
    frame_of_reference_uid: str
    number: int
    description: str
    thickness: float
    kernel: str
    count: int
    first_index: int
    """Global number of its first instance (names the files and the SOP Instance UIDs)."""
    pixel_start: int
    """Slice index of its first image in the patient's phantom (distinct per series, so no two images
    of the set are the same bytes)."""


@dataclass(frozen=True)
class GeneratedSet:
    """A directory of generated files: their paths in order, their bytes in all, and the shape of the set."""

    directory: Path
    paths: tuple[Path, ...]
    total_bytes: int
    patients: int
    studies: int
    series: int
    seconds: float

    @property
    def instances(self) -> int:
        return len(self.paths)

    def describe(self) -> str:
        return (f"{self.instances:,} files, {self.total_bytes / 1e6:,.1f} MB ({self.patients} patients, "
                f"{self.studies} studies, {self.series} series)")


def _uid(*parts: int) -> str:
    uid = ".".join((UID_ROOT, *(str(p) for p in parts)))
    if len(uid) > MAX_UID_LENGTH:
        raise ValueError(f"UID {uid} is longer than {MAX_UID_LENGTH} characters; use a smaller seed")
    return uid


def _date(ordinal: int) -> str:
    return datetime.date.fromordinal(ordinal).strftime("%Y%m%d")


def _age(birth: str, on: str) -> str:
    years = int(on[:4]) - int(birth[:4]) - (1 if on[4:] < birth[4:] else 0)
    return f"{years:03d}Y"


def _patient(rng: random.Random, number: int, seed: int) -> Patient:
    sex = rng.choice("MF")
    given = rng.choice(_GIVEN_MALE if sex == "M" else _GIVEN_FEMALE)
    middle = rng.choice(("", "", "A", "J", "M"))
    name = f"{rng.choice(_SURNAMES)}^{given}" + (f"^{middle}" if middle else "")
    birth = _date(_FIRST_STUDY_DAY - rng.randint(18 * 365, 90 * 365))
    return Patient(f"MRN{seed:03d}{number:06d}", name, birth, sex, seed * 10_007 + number)


def _study(rng: random.Random, patient: Patient, number: int, seed: int) -> Study:
    seconds = rng.randrange(7 * 3600, 22 * 3600)
    description, body_part = rng.choice(_STUDY_KINDS)
    return Study(
        patient=patient, uid=_uid(1, seed, number),
        date=_date(_FIRST_STUDY_DAY + rng.randrange(_STUDY_DAYS)),
        time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{rng.randrange(10**6):06d}",
        accession=f"A{seed:02d}{number:07d}", description=description, body_part=body_part,
        referrer=rng.choice(_REFERRERS), study_id=str(rng.randrange(1000, 99999)),
        station=rng.choice(_STATIONS), institution=rng.choice(_INSTITUTIONS))


def plan_ct(instances: int, seed: int = 0) -> list[Series]:
    """The series of a CT set of exactly `instances` images: 1-2 series of 40-320 slices a study."""
    if instances < 0 or seed < 0:
        raise ValueError("instances and seed must be non-negative")
    rng = random.Random(seed)
    plan: list[Series] = []
    total = 0
    patients = studies = 0
    patient: Patient | None = None
    pixel_offset = 0
    while total < instances:
        if patient is None or rng.random() < 0.7:
            patients += 1
            patient = _patient(rng, patients, seed)
            pixel_offset = 0
        studies += 1
        study = _study(rng, patient, studies, seed)
        for k in range(rng.randint(1, 2)):
            description, thickness, kernel, full = rng.choice(_SERIES_KINDS)
            count = min(int(full * rng.uniform(0.5, 1.0)), instances - total)
            if count <= 0:
                break
            series_number = len(plan) + 1
            plan.append(Series(study, _uid(2, seed, series_number), _uid(4, seed, series_number), k + 2,
                               description, thickness, kernel, count, total, pixel_offset))
            total += count
            pixel_offset += count
    return plan


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = "BENCH_SCU"
    return meta


def _series_template(series: Series, sop_class: str, side: int, spacing: float) -> Dataset:
    """Everything of an image header that is the same for every instance of `series`."""
    study, patient = series.study, series.study.patient
    manufacturer, model, station = study.station
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = study.date
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = UID(series.uid + ".0")  # replaced per instance
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study.time[:6]
    ds.AccessionNumber = study.accession
    ds.Modality = "CT" if sop_class == CTImageStorage else "MR"
    ds.Manufacturer = manufacturer
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referrer
    ds.StationName = station
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = model
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "NRH"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth_date, study.date)
    ds.BodyPartExamined = study.body_part
    ds.SliceThickness = f"{series.thickness:g}"
    if ds.Modality == "CT":
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = "360"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "152.5"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "220"
        ds.Exposure = "110"
        ds.ConvolutionKernel = series.kernel
    ds.SoftwareVersions = "4.1.2"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = UID(study.uid)
    ds.SeriesInstanceUID = UID(series.uid)
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["-179.6484375", "-179.6484375", "0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = UID(series.frame_of_reference_uid)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = "0"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = side
    ds.Columns = side
    ds.PixelSpacing = [f"{spacing:.7g}", f"{spacing:.7g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40" if series.kernel != "LUNG" else "-600"
    ds.WindowWidth = "400" if series.kernel != "LUNG" else "1500"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


_LONG_VRS: Final = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                                b"UT", b"UV"})
_SOP_INSTANCE_TAGS: Final = (0x00020003, 0x00080018)
_INSTANCE_NUMBER: Final = 0x00200013
_IMAGE_POSITION: Final = 0x00200032
_SLICE_LOCATION: Final = 0x00201041
_CONTENT_TIME: Final = 0x00080033
_FIRST_INSTANCE_COUNTER: Final = 100_001
"""The last UID component of a series' first instance: six digits for the first 899,999 instances, so
every SOP Instance UID of a series has the same length and the template is patched in place."""
_POSITION_WIDTH: Final = 10
_POSITION_PLACEHOLDER: Final = "-10000.000"


class _HeaderTemplate:
    """A Part 10 header (file meta and dataset up to the pixel data) written once by pydicom, then patched.

    The per-instance values (SOP Instance UID, InstanceNumber, position, content time) are written with
    fixed widths (IS and DS values padded with spaces, which DICOM allows), so each instance only
    overwrites bytes in place and no length or group length changes.
    """

    def __init__(self, ds: Dataset, sop_class: str) -> None:
        ds.file_meta = _file_meta(sop_class, str(ds.SOPInstanceUID))
        out = io.BytesIO()
        dcmwrite(out, ds, enforce_file_format=True)
        self.header = bytearray(out.getvalue())
        self._where: dict[int, tuple[int, int]] = {}
        offset = 132  # preamble and "DICM"
        while offset < len(self.header):
            group, element = struct.unpack_from("<HH", self.header, offset)
            vr = bytes(self.header[offset + 4:offset + 6])
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<I", self.header, offset + 8)
                start = offset + 12
            else:
                (length,) = struct.unpack_from("<H", self.header, offset + 6)
                start = offset + 8
            self._where[(group << 16) | element] = (start, length)
            offset = start + length

    def set(self, tag: int, value: bytes) -> None:
        start, length = self._where[tag]
        if len(value) != length:
            raise ValueError(f"value {value!r} for tag {tag:08X} is not {length} bytes long")
        self.header[start:start + length] = value

    def write(self, path: Path, pixels: bytes) -> int:
        """Write the header as it stands, then the pixel data element; return the file size."""
        with open(path, "wb") as f:
            f.write(self.header)
            f.write(_PIXEL_DATA_OW + struct.pack("<I", len(pixels)))
            f.write(pixels)
        return len(self.header) + len(_PIXEL_DATA_OW) + 4 + len(pixels)


def _sop_uid(series: Series, i: int) -> str:
    return f"{series.uid}.{_FIRST_INSTANCE_COUNTER + i}"


def _series_header(series: Series, sop_class: str, side: int, spacing: float) -> _HeaderTemplate:
    ds = _series_template(series, sop_class, side, spacing)
    ds.SOPInstanceUID = UID(_sop_uid(series, 0))
    # Placeholders as wide as the values patched in (pydicom strips the padding of IS and DS).
    ds.InstanceNumber = 100_000
    ds.ImagePositionPatient = ["-179.6484375", "-179.6484375", _POSITION_PLACEHOLDER]
    ds.SliceLocation = _POSITION_PLACEHOLDER
    ds.ContentTime = "000000"
    return _HeaderTemplate(ds, sop_class)


def _set_instance(template: _HeaderTemplate, series: Series, i: int) -> None:
    """Patch the header for instance `i` of `series`: its UID, number, slice position and content time."""
    uid = _sop_uid(series, i).encode("ascii")
    uid += b"\0" * (len(uid) % 2)
    for tag in _SOP_INSTANCE_TAGS:
        template.set(tag, uid)
    template.set(_INSTANCE_NUMBER, str(i + 1).ljust(6).encode("ascii"))
    z = f"{-i * series.thickness:.3f}".rjust(_POSITION_WIDTH).encode("ascii")
    template.set(_IMAGE_POSITION, b"-179.6484375\\-179.6484375\\" + z)
    template.set(_SLICE_LOCATION, z)
    time_of_day = series.study.time
    seconds = int(time_of_day[:2]) * 3600 + int(time_of_day[2:4]) * 60 + int(time_of_day[4:6]) + i // 4
    template.set(_CONTENT_TIME, f"{seconds // 3600 % 24:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
                 .encode("ascii"))


def write_ct_set(directory: Path, instances: int, seed: int = 0) -> GeneratedSet:
    """Write `instances` CT images (512x512 uint16) into `directory`/STUDY/SERIES/NNNNNN.dcm files."""
    started = time.perf_counter()
    plan = plan_ct(instances, seed)
    paths: list[Path] = []
    total = 0
    spacing = 360.0 / CT_SIDE
    for series in plan:
        folder = directory / f"st{series.study.accession}" / f"se{series.number:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        template = _series_header(series, CTImageStorage, CT_SIDE, spacing)
        slices = ctdata.ct_slices(series.count, series.study.patient.pixel_seed, start=series.pixel_start)
        for i, pixels in enumerate(slices):
            _set_instance(template, series, i)
            path = folder / f"{series.first_index + i:06d}.dcm"
            total += template.write(path, pixels)
            paths.append(path)
    return GeneratedSet(directory, tuple(paths), total, len({s.study.patient for s in plan}),
                        len({s.study.uid for s in plan}), len(plan), time.perf_counter() - started)


def _thumbnails(count: int, seed: int) -> Iterator[bytes]:
    """32x32 uint16 images: a bright disc of varying size and place over noise, distinct per index."""
    y, x = np.mgrid[0:SMALL_SIDE, 0:SMALL_SIDE].astype(np.float32)
    for i in range(count):
        rng = np.random.default_rng([seed, 0x3A11, i])
        cx, cy, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 12)
        image = np.where((x - cx) ** 2 + (y - cy) ** 2 < r * r, 900.0, 80.0)
        image += rng.normal(0.0, 25.0, image.shape)
        yield np.clip(image, 0, 4095).astype("<u2").tobytes()


def write_small_set(directory: Path, instances: int, seed: int = 0) -> GeneratedSet:
    """Write `instances` small MR images (32x32 uint16, about 3.5 KB a file), 50 a series and study."""
    if instances < 0 or seed < 0:
        raise ValueError("instances and seed must be non-negative")
    started = time.perf_counter()
    rng = random.Random(seed + 0x5EED)
    paths: list[Path] = []
    total = 0
    patients: set[str] = set()
    series_count = 0
    pixels = _thumbnails(instances, seed)
    done = 0
    while done < instances:
        series_count += 1
        patient = _patient(rng, series_count, seed + 50)
        patients.add(patient.patient_id)
        study = _study(rng, patient, 500_000 + series_count, seed)
        study = dataclasses.replace(study, description="MR BRAIN", body_part="HEAD")
        count = min(SMALL_SERIES_SIZE, instances - done)
        series = Series(study, _uid(3, seed, series_count), _uid(5, seed, series_count), 1,
                        "LOCALIZER THUMBNAILS", 5.0, "STANDARD", count, done, 0)
        folder = directory / f"st{study.accession}"
        folder.mkdir(parents=True, exist_ok=True)
        template = _series_header(series, MRImageStorage, SMALL_SIDE, 7.5)
        for i in range(count):
            _set_instance(template, series, i)
            path = folder / f"{done + i:06d}.dcm"
            total += template.write(path, next(pixels))
            paths.append(path)
        done += count
    return GeneratedSet(directory, tuple(paths), total, len(patients), series_count, series_count,
                        time.perf_counter() - started)


def file_bytes(paths: Sequence[Path]) -> int:
    """Bytes of the files at `paths`, in all."""
    return sum(os.stat(p).st_size for p in paths)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.dicomdata DIR --ct N --small M [--seed S]`: write DIR/ct and DIR/small."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dicomdata",
                                     description="Write synthetic CT studies and small instances.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--ct", type=int, default=2000, help="CT instances (512x512 uint16)")
    parser.add_argument("--small", type=int, default=0, help="small instances (32x32 uint16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, count, write in (("ct", args.ct, write_ct_set), ("small", args.small, write_small_set)):
        if count > 0:
            generated = write(args.directory / name, count, args.seed)
            print(f"{args.directory / name}: {generated.describe()} in {generated.seconds:.1f} s",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
