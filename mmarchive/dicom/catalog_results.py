"""What a catalog query returns: the attributes of each level and their DICOM JSON form (PS3.18 F.2).

The default return attributes of each level follow QIDO-RS (PS3.18 Table 10.6.3-3 study, 10.6.3-4
series, 10.6.3-5 instance; the patient level follows the C-FIND patient root return keys), less what the
catalog does not hold (RetrieveURL and InstanceAvailability, which the web layer adds, and sequences). A
series query not scoped to a study also returns the study attributes, and an instance query not scoped
to a series the series (and study) attributes, as QIDO-RS does for ``/series`` and ``/instances``.
``include`` names extra attributes (keyword or tag) or ``"all"``: every attribute of the level and the
levels above. Values render as pydicom's ``Dataset.to_json_dict`` does: PN as ``{"Alphabetic": ...}``
component groups, IS/US and DS as JSON numbers, an empty element as ``{"vr": ...}`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from mmarchive.dicom.attributes import Level, ScalarValue
from mmarchive.dicom.matching import QUERYABLE, resolve_keyword
from mmarchive.errors import InvalidInputError

_LEVEL_ORDER: Final = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)

PATIENT_RESULT: Final = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
                         "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies",
                         "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")
STUDY_RESULT: Final = ("SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber",
                       "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC",
                       "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                       "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_RESULT: Final = ("SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
                        "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
                        "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime")
INSTANCE_RESULT: Final = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "TimezoneOffsetFromUTC",
                          "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames")

IncludeFields = Sequence[str] | Literal["all"]


def level_and_above(level: Level) -> tuple[Level, ...]:
    return _LEVEL_ORDER[:_LEVEL_ORDER.index(level) + 1]


def keywords_of(levels: Sequence[Level]) -> frozenset[str]:
    """Every queryable keyword of these levels (SpecificCharacterSet is kept at every level)."""
    return frozenset(k for k, a in QUERYABLE.items() if a.level in levels) | {"SpecificCharacterSet"}


def result_keywords(level: Level, include: IncludeFields, *, study_scoped: bool,
                    series_scoped: bool) -> tuple[str, ...]:
    """The keywords a query at ``level`` returns, in tag order."""
    wanted: set[str] = set()
    if level is Level.PATIENT:
        wanted.update(PATIENT_RESULT)
    elif level is Level.STUDY:
        wanted.update(STUDY_RESULT)
    elif level is Level.SERIES:
        wanted.update(SERIES_RESULT)
        wanted.add("StudyInstanceUID")
        if not study_scoped:
            wanted.update(STUDY_RESULT)
    else:
        wanted.update(INSTANCE_RESULT)
        wanted.update(("StudyInstanceUID", "SeriesInstanceUID"))
        if not series_scoped:
            wanted.update(SERIES_RESULT)
        if not study_scoped:
            wanted.update(STUDY_RESULT)
    allowed = keywords_of(level_and_above(level))
    if include == "all":
        wanted.update(allowed)
    else:
        if isinstance(include, str):
            raise InvalidInputError(f"include must be a sequence of keywords or \"all\", not {include!r}")
        for name in include:
            attribute = resolve_keyword(name)
            if attribute.keyword not in allowed:
                raise InvalidInputError(
                    f"includefield {attribute.keyword} is a {attribute.level.value}-level attribute and "
                    f"cannot be returned by a {level.value}-level query; use a query at that level")
            wanted.add(attribute.keyword)
    return tuple(sorted(wanted, key=lambda k: QUERYABLE[k].tag))


def _person_name(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for group, text in zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False):
        if text:
            out[group] = text
    return out


def _json_value(vr: str, value: ScalarValue) -> Any:
    if vr == "PN":
        return _person_name(str(value))
    if vr in ("IS", "US", "UL", "SS", "SL", "SV", "UV"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    if vr in ("DS", "FL", "FD"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value
        return int(number) if vr == "DS" and number.is_integer() and "." not in str(value) else number
    return value


_TEXT_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR",
                              "UT"})


def to_dicom_json(view: Mapping[str, Sequence[ScalarValue]], keywords: Sequence[str]) -> dict[str, Any]:
    """One result as a DICOM JSON object: ``{"0020000D": {"vr": "UI", "Value": [...]}, ...}``."""
    return ResultRenderer(keywords).render(view)


class ResultRenderer:
    """Renders views as DICOM JSON for one list of keywords (tags and VRs looked up once per query)."""

    def __init__(self, keywords: Sequence[str]) -> None:
        self._fields = [(keyword, f"{QUERYABLE[keyword].tag:08X}", QUERYABLE[keyword].vr,
                         QUERYABLE[keyword].vr in _TEXT_VRS) for keyword in keywords]

    def render(self, view: Mapping[str, Sequence[ScalarValue]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        get = view.get
        for keyword, tag, vr, text in self._fields:
            values = get(keyword)
            if not values:
                out[tag] = {"vr": vr}
            elif text:
                out[tag] = {"vr": vr, "Value": list(values)}
            else:
                out[tag] = {"vr": vr, "Value": [_json_value(vr, v) for v in values]}
        return out
