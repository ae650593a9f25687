"""Keys and entry bodies of the DICOM catalog's LMDB databases (catalog schema version 1).

Every key starts with the tenant and a NUL (``T`` below, as :func:`mmarchive.index.schema.tenant_prefix`),
so tenants never share a key and one prefix scan lists one tenant. ``pkey`` (patient key) is
``PatientID NUL IssuerOfPatientID``; ``n8`` is a number as 8 big-endian bytes, ordered, absent last.

=============  ===========================================  =============================================
database       key                                          value
=============  ===========================================  =============================================
``meta``       ``mark`` / ``seq`` / ``schema``              caller's high-water mark / last sequence / 1
``patients``   ``T pkey``                                   patient entry (JSON)
``studies``    ``T StudyUID``                               study entry (JSON)
``series``     ``T SeriesUID NUL StudyUID``                 series entry (JSON)
``instances``  ``T SOPUID``                                 instance entry (JSON): current version
``versions``   ``T SOPUID NUL n4``                          version entry (JSON); n4 numbers from 1
``members``    ``T "P" pkey NUL StudyUID``                  StudyUID: a patient's studies
\\             ``T "S" StudyUID NUL n8(SeriesNumber) SeriesUID``  ``SeriesUID``: a study's series in order
\\             ``T "I" StudyUID NUL SeriesUID NUL n8(InstanceNumber) SOPUID``  ``SOPUID``
``lookup``     ``T kind value NUL target``                  target (study UID, pkey or series key)
=============  ===========================================  =============================================

Lookup kinds, each a secondary index of one attribute: studies by ``i`` PatientID, ``a``
AccessionNumber, ``n`` PatientName component group (case-folded), ``w`` PatientName word (case-folded,
for fuzzy matching), ``m`` ModalitiesInStudy, ``d`` StudyDate SP StudyTime (the study walk order and
the date range index); patients by ``N`` name group and ``W`` name word; series (key ``SeriesUID NUL
StudyUID``) by ``M`` Modality. Index values longer than :data:`MAX_INDEX_VALUE` bytes are cut, so an
exact look-up of such a value scans its cut prefix and the matcher decides. Entry bodies are compact
JSON: values as ``{keyword: [values]}``, counts as short fields (see :mod:`catalog_writes`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from mmarchive.dicom.attributes import INDEXED, AttributeValues, Level, ScalarValue
from mmarchive.dicom.matching import person_name_groups, person_name_words, point_of
from mmarchive.errors import InvalidInputError
from mmarchive.index.schema import check_tenant

CATALOG_SCHEMA_VERSION: Final = 1

DB_META: Final = b"meta"
DB_PATIENTS: Final = b"patients"
DB_STUDIES: Final = b"studies"
DB_SERIES: Final = b"series"
DB_INSTANCES: Final = b"instances"
DB_VERSIONS: Final = b"versions"
DB_MEMBERS: Final = b"members"
DB_LOOKUP: Final = b"lookup"
CATALOG_DBS: Final = (DB_META, DB_PATIENTS, DB_STUDIES, DB_SERIES, DB_INSTANCES, DB_VERSIONS,
                      DB_MEMBERS, DB_LOOKUP)

META_MARK: Final = b"mark"
META_SEQ: Final = b"seq"
META_SCHEMA: Final = b"schema"

MEMBER_PATIENT_STUDY: Final = b"P"
MEMBER_STUDY_SERIES: Final = b"S"
MEMBER_SERIES_INSTANCE: Final = b"I"

LOOKUP_PATIENT_ID: Final = b"i"
LOOKUP_ACCESSION: Final = b"a"
LOOKUP_NAME: Final = b"n"
LOOKUP_NAME_WORD: Final = b"w"
LOOKUP_MODALITIES: Final = b"m"
LOOKUP_STUDY_DATE: Final = b"d"
LOOKUP_PATIENT_NAME: Final = b"N"
LOOKUP_PATIENT_NAME_WORD: Final = b"W"
LOOKUP_SERIES_MODALITY: Final = b"M"

#: Longest attribute value a lookup key holds (LMDB keys are at most 511 bytes).
MAX_INDEX_VALUE: Final = 192

_N4 = struct.Struct(">I")
_N8 = struct.Struct(">Q")
_ABSENT_NUMBER = b"\xff" * 8

# Which attributes each level's entry keeps. SpecificCharacterSet (an instance attribute) is kept at
# every level so that each result can say how its text was encoded.
LEVEL_KEYWORDS: Final[dict[Level, tuple[str, ...]]] = {
    level: tuple(a.keyword for a in INDEXED if a.level is level) for level in Level
}
PATIENT_KEYWORDS: Final = LEVEL_KEYWORDS[Level.PATIENT]
STUDY_KEYWORDS: Final = (*LEVEL_KEYWORDS[Level.STUDY], "SpecificCharacterSet")
SERIES_KEYWORDS: Final = (*LEVEL_KEYWORDS[Level.SERIES], "SpecificCharacterSet")


def tenant_key(tenant: str) -> bytes:
    return check_tenant(tenant).encode() + b"\x00"


def first_text(values: Mapping[str, Sequence[ScalarValue]], keyword: str) -> str:
    """The first value of an element as text ("" when absent or empty)."""
    v = values.get(keyword)
    if not v:
        return ""
    return str(v[0])


def required_uid(values: Mapping[str, Sequence[ScalarValue]], keyword: str) -> str:
    uid = first_text(values, keyword).strip()
    if not uid or "\x00" in uid:
        raise InvalidInputError(f"the instance has no {keyword}; the catalog needs StudyInstanceUID, "
                                "SeriesInstanceUID and SOPInstanceUID")
    return uid


def patient_key(values: Mapping[str, Sequence[ScalarValue]]) -> str:
    return first_text(values, "PatientID").replace("\x00", " ") + "\x00" + \
        first_text(values, "IssuerOfPatientID").replace("\x00", " ")


def select(values: Mapping[str, Sequence[ScalarValue]], keywords: Sequence[str]) -> dict[str, list[Any]]:
    """The elements of ``keywords`` present in ``values``, as JSON-ready lists."""
    return {k: list(values[k]) for k in keywords if k in values}


def number_key(values: Mapping[str, Sequence[ScalarValue]], keyword: str) -> bytes:
    """An ordered 8-byte key of an integer element (SeriesNumber, InstanceNumber); absent sorts last."""
    v = values.get(keyword)
    if v:
        try:
            n = int(v[0])
        except (TypeError, ValueError):
            return _ABSENT_NUMBER
        return _N8.pack(max(0, min(n + (1 << 63), (1 << 64) - 2)))
    return _ABSENT_NUMBER


def version_key(tenant_prefix: bytes, sop_uid: str, number: int) -> bytes:
    return tenant_prefix + sop_uid.encode() + b"\x00" + _N4.pack(number)


def version_number(key: bytes) -> int:
    (n,) = _N4.unpack_from(key, len(key) - 4)
    return int(n)


def index_value(text: str) -> bytes:
    """An attribute value as a lookup key part: UTF-8 without NUL, cut to :data:`MAX_INDEX_VALUE`."""
    raw = text.replace("\x00", " ").encode()
    if len(raw) > MAX_INDEX_VALUE:
        raw = raw[:MAX_INDEX_VALUE].decode(errors="ignore").encode()
    return raw


def is_cut(text: str) -> bool:
    return len(text.encode()) > MAX_INDEX_VALUE


def lookup_key(tenant_prefix: bytes, kind: bytes, value: str, target: str) -> bytes:
    return tenant_prefix + kind + index_value(value) + b"\x00" + target.encode()


def study_order_value(values: Mapping[str, Sequence[ScalarValue]]) -> str:
    """``StudyDate SP StudyTime``: the ``d`` lookup value, ordered by date then time (absent first).

    The date is 8 digits or empty, the time 11 digits (microseconds since midnight) or empty; the space
    sorts below every digit, so absent dates come first and a date's keys all lie below ``date + 0xFF``.
    """
    date = first_text(values, "StudyDate")
    if len(date) != 8 or not date.isdigit():
        date = ""
    time_text = first_text(values, "StudyTime")
    point = point_of("TM", time_text) if time_text else None
    return date + " " + ("" if point is None else f"{point:011d}")


def study_lookup_keys(tp: bytes, study_uid: str, patient_values: Mapping[str, Sequence[ScalarValue]],
                      study_values: Mapping[str, Sequence[ScalarValue]],
                      modalities: Sequence[str]) -> set[bytes]:
    """Every lookup key that points at one study."""
    keys = {lookup_key(tp, LOOKUP_STUDY_DATE, study_order_value(study_values), study_uid)}
    for v in patient_values.get("PatientID", ()):
        keys.add(lookup_key(tp, LOOKUP_PATIENT_ID, str(v), study_uid))
    for v in study_values.get("AccessionNumber", ()):
        keys.add(lookup_key(tp, LOOKUP_ACCESSION, str(v), study_uid))
    for name in patient_values.get("PatientName", ()):
        for group in person_name_groups(str(name)):
            keys.add(lookup_key(tp, LOOKUP_NAME, group, study_uid))
        for word in person_name_words(str(name)):
            keys.add(lookup_key(tp, LOOKUP_NAME_WORD, word, study_uid))
    for modality in modalities:
        keys.add(lookup_key(tp, LOOKUP_MODALITIES, modality, study_uid))
    return keys


def patient_lookup_keys(tp: bytes, pkey: str, patient_values: Mapping[str, Sequence[ScalarValue]]
                        ) -> set[bytes]:
    keys: set[bytes] = set()
    for name in patient_values.get("PatientName", ()):
        for group in person_name_groups(str(name)):
            keys.add(lookup_key(tp, LOOKUP_PATIENT_NAME, group, pkey))
        for word in person_name_words(str(name)):
            keys.add(lookup_key(tp, LOOKUP_PATIENT_NAME_WORD, word, pkey))
    return keys


def series_lookup_keys(tp: bytes, series_key: str, series_values: Mapping[str, Sequence[ScalarValue]]
                       ) -> set[bytes]:
    return {lookup_key(tp, LOOKUP_SERIES_MODALITY, str(v), series_key)
            for v in series_values.get("Modality", ())}


def series_db_key(tp: bytes, series_uid: str, study_uid: str) -> bytes:
    return tp + series_uid.encode() + b"\x00" + study_uid.encode()


def series_member_key(tp: bytes, study_uid: str, series_uid: str,
                      series_values: Mapping[str, Sequence[ScalarValue]]) -> bytes:
    return (tp + MEMBER_STUDY_SERIES + study_uid.encode() + b"\x00"
            + number_key(series_values, "SeriesNumber") + series_uid.encode())


def instance_member_prefix(tp: bytes, study_uid: str, series_uid: str | None = None) -> bytes:
    head = tp + MEMBER_SERIES_INSTANCE + study_uid.encode() + b"\x00"
    return head if series_uid is None else head + series_uid.encode() + b"\x00"


def instance_member_key(tp: bytes, study_uid: str, series_uid: str, sop_uid: str,
                        values: Mapping[str, Sequence[ScalarValue]]) -> bytes:
    return (instance_member_prefix(tp, study_uid, series_uid) + number_key(values, "InstanceNumber")
            + sop_uid.encode())


def patient_member_key(tp: bytes, pkey: str, study_uid: str) -> bytes:
    return tp + MEMBER_PATIENT_STUDY + pkey.encode() + b"\x00" + study_uid.encode()


def patient_member_prefix(tp: bytes, pkey: str) -> bytes:
    return tp + MEMBER_PATIENT_STUDY + pkey.encode() + b"\x00"


# -- entry bodies -------------------------------------------------------------------------------------

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_DECODE = json.JSONDecoder().decode


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(entry).encode()


def decode_entry(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = _DECODE(raw.decode())
    return out


def as_values(raw: Mapping[str, Sequence[ScalarValue]]) -> AttributeValues:
    """JSON lists back to the value model's tuples."""
    return {k: tuple(v) for k, v in raw.items()}
