"""The DICOM attributes the catalog indexes and matches on, by query level.

One table, :data:`INDEXED`, names each attribute once with its tag, value representation and the level of
the patient / study / series / instance hierarchy it belongs to. The scanner extracts exactly these (plus
the file meta it needs to store a file), the catalog keeps them per level, and queries may match on them.
The list covers what PS3.18 (QIDO-RS, Tables 10.6.1-5 to 10.6.1-7) and the PS3.4 C-FIND query models
require at each level; attributes computed by the catalog (counts, modalities in a study) are listed in
:data:`COMPUTED`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Level(StrEnum):
    """A level of the DICOM information model, as QIDO-RS and C-FIND name them."""

    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class Attribute(NamedTuple):
    """One indexed attribute: its keyword, tag (group << 16 | element), VR and level."""

    keyword: str
    tag: int
    vr: str
    level: Level


_P, _ST, _SE, _I = Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE

INDEXED: tuple[Attribute, ...] = (
    # Needed to decode and describe the rest.
    Attribute("SpecificCharacterSet", 0x00080005, "CS", _I),
    # Patient
    Attribute("PatientName", 0x00100010, "PN", _P),
    Attribute("PatientID", 0x00100020, "LO", _P),
    Attribute("IssuerOfPatientID", 0x00100021, "LO", _P),
    Attribute("PatientBirthDate", 0x00100030, "DA", _P),
    Attribute("PatientSex", 0x00100040, "CS", _P),
    # Study
    Attribute("StudyDate", 0x00080020, "DA", _ST),
    Attribute("StudyTime", 0x00080030, "TM", _ST),
    Attribute("AccessionNumber", 0x00080050, "SH", _ST),
    Attribute("ReferringPhysicianName", 0x00080090, "PN", _ST),
    Attribute("TimezoneOffsetFromUTC", 0x00080201, "SH", _ST),
    Attribute("StudyDescription", 0x00081030, "LO", _ST),
    Attribute("StudyInstanceUID", 0x0020000D, "UI", _ST),
    Attribute("StudyID", 0x00200010, "SH", _ST),
    # Series
    Attribute("Modality", 0x00080060, "CS", _SE),
    Attribute("SeriesDescription", 0x0008103E, "LO", _SE),
    Attribute("SeriesInstanceUID", 0x0020000E, "UI", _SE),
    Attribute("SeriesNumber", 0x00200011, "IS", _SE),
    Attribute("BodyPartExamined", 0x00180015, "CS", _SE),
    Attribute("PerformedProcedureStepStartDate", 0x00400244, "DA", _SE),
    Attribute("PerformedProcedureStepStartTime", 0x00400245, "TM", _SE),
    # Instance
    Attribute("SOPClassUID", 0x00080016, "UI", _I),
    Attribute("SOPInstanceUID", 0x00080018, "UI", _I),
    Attribute("InstanceNumber", 0x00200013, "IS", _I),
    Attribute("ContentDate", 0x00080023, "DA", _I),
    Attribute("ContentTime", 0x00080033, "TM", _I),
    Attribute("NumberOfFrames", 0x00280008, "IS", _I),
    Attribute("Rows", 0x00280010, "US", _I),
    Attribute("Columns", 0x00280011, "US", _I),
    Attribute("BitsAllocated", 0x00280100, "US", _I),
)

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in INDEXED}
BY_TAG: dict[int, Attribute] = {a.tag: a for a in INDEXED}

# Attributes the catalog computes from what it holds rather than reads from one instance.
COMPUTED: tuple[Attribute, ...] = (
    Attribute("ModalitiesInStudy", 0x00080061, "CS", _ST),
    Attribute("SOPClassesInStudy", 0x00080062, "UI", _ST),
    Attribute("NumberOfStudyRelatedSeries", 0x00201206, "IS", _ST),
    Attribute("NumberOfStudyRelatedInstances", 0x00201208, "IS", _ST),
    Attribute("NumberOfSeriesRelatedInstances", 0x00201209, "IS", _SE),
    Attribute("NumberOfPatientRelatedStudies", 0x00201200, "IS", _P),
    Attribute("NumberOfPatientRelatedSeries", 0x00201202, "IS", _P),
    Attribute("NumberOfPatientRelatedInstances", 0x00201204, "IS", _P),
    Attribute("AvailableTransferSyntaxUID", 0x00083002, "UI", _I),
)

# The file meta attributes (group 0002) a stored file is described by.
TRANSFER_SYNTAX_UID = 0x00020010
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003

# Bulk data: the value of these is stored as its own content, apart from the header.
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009

# How extracted values travel between the scanner, the store adapter and the catalog: keyword -> the
# element's values in order. Text VRs (AE, AS, CS, DA, DT, LO, LT, PN, SH, ST, TM, UC, UI, UR, UT) give
# str, decoded with the dataset's character set and stripped of padding as pydicom strips it; a PN keeps
# its "Family^Given" components and "=" groups. US, UL, SS, SL, IS give int; DS, FL, FD give float. An
# element present with an empty value maps to (); an absent element has no key.
ScalarValue = str | int | float
AttributeValues = dict[str, tuple[ScalarValue, ...]]
