"""Small synthetic Part 10 files for the DICOM store tests, written with pydicom (CT-like, little endian)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid


def ct_pixels(rows: int = 64, cols: int = 64, seed: int = 0) -> bytes:
    """A smooth disc plus noise, 16-bit: compresses like CT."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    inside = ((x - cols / 2) / (cols / 2.5)) ** 2 + ((y - rows / 2) / (rows / 3)) ** 2 < 1.0
    img = np.where(inside, 1040.0, 24.0) + rng.normal(0, 12, (rows, cols))
    return bytes(np.clip(img, 0, 4095).astype("<u2").tobytes())


def ct_file(*, patient_id: str = "P1", patient_name: str = "DOE^JOHN", study_uid: str | None = None,
            series_uid: str | None = None, sop_uid: str | None = None, pixels: bytes | None = None,
            rows: int = 64, cols: int = 64, study_date: str = "20240115", accession: str = "A1",
            instance_number: int = 1, modality: str = "CT", implicit: bool = False) -> bytes:
    """One CT image as a Part 10 file."""
    sop_uid = sop_uid or str(generate_uid())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.ReferringPhysicianName = "WHO^REFERRED"
    ds.StudyDescription = "CT HEAD"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels if pixels is not None else ct_pixels(rows, cols, seed=instance_number)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
