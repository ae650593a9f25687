"""C-FIND identifiers translated to catalog queries, and catalog results back to response identifiers.

A C-FIND (or C-GET / C-MOVE) identifier names a Query/Retrieve Level and carries keys: an element with a
value is a matching key, an empty one a return key (PS3.4 C.2.2.1). :func:`parse_identifier` maps the
level to the catalog's (PATIENT, STUDY, SERIES, IMAGE -> patient, study, series, instance), turns every
key the catalog can match at that level (:data:`~mmarchive.dicom.matching.QUERYABLE`, the level and the
levels above) into constraint text in the catalog's syntax, which is the identifier's (wildcards, ranges,
``\\``-separated UID lists), and keeps the rest as return keys the catalog does not hold: they come back
empty, as PS3.4 C.2.2.1.2 allows for optional keys an SCP does not support. :func:`response_identifier`
builds one pending response from one catalog result with exactly the requested keys.

Study Root does not have the PATIENT level; a level the model lacks, or no level at all, is
:class:`IdentifierError` (0xA900, identifier does not match SOP class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from mmarchive.dicom.attributes import Level
from mmarchive.dicom.catalog_results import keywords_of, level_and_above
from mmarchive.dicom.matching import QUERYABLE

#: The C-FIND levels and the catalog's.
LEVELS: Final[dict[str, Level]] = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES,
                                   "IMAGE": Level.INSTANCE}
#: The unique key of each level (PS3.4 C.6.1.1 and C.6.2.1).
UNIQUE_KEYS: Final[dict[Level, str]] = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
                                        Level.SERIES: "SeriesInstanceUID", Level.INSTANCE: "SOPInstanceUID"}

VERIFICATION: Final = UID("1.2.840.10008.1.1")
PATIENT_ROOT_FIND: Final = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE: Final = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET: Final = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND: Final = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE: Final = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET: Final = UID("1.2.840.10008.5.1.4.1.2.2.3")

PATIENT_ROOT: Final = frozenset({PATIENT_ROOT_FIND, PATIENT_ROOT_GET, PATIENT_ROOT_MOVE})
STUDY_ROOT: Final = frozenset({STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE})

_QUERY_RETRIEVE_LEVEL: Final = 0x00080052
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_RETRIEVE_AE_TITLE: Final = 0x00080054


class IdentifierError(ValueError):
    """The identifier does not fit the information model (no level, a level the model lacks)."""


@dataclass(frozen=True)
class ParsedIdentifier:
    """What a request identifier asks: the level, the catalog constraints and the keys to return."""

    level: Level
    level_name: str
    constraints: Mapping[str, str]
    #: The keywords the catalog can return at this level (passed as ``include``).
    include: tuple[str, ...]


def _constraint_text(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def parse_identifier(identifier: Dataset, model: str) -> ParsedIdentifier:
    """The catalog query an identifier asks for, under the information model ``model`` (a SOP class UID)."""
    raw_level = identifier.get("QueryRetrieveLevel")
    level_name = str(raw_level or "").strip().upper()
    level = LEVELS.get(level_name)
    if level is None:
        raise IdentifierError(f"Query/Retrieve Level {level_name or '(missing)'} is not one of "
                              f"{', '.join(LEVELS)}")
    if level is Level.PATIENT and UID(model) in STUDY_ROOT:
        raise IdentifierError("the Study Root model has no PATIENT level; use Patient Root")
    allowed = keywords_of(level_and_above(level))
    constraints: dict[str, str] = {}
    include: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if elem.tag in (_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET) or not keyword:
            continue
        if keyword not in QUERYABLE or keyword not in allowed or elem.VR == "SQ":
            continue  # returned empty: the catalog does not hold it at this level
        include.append(keyword)
        text = _constraint_text(elem)
        if text.strip(" "):
            constraints[keyword] = text
    return ParsedIdentifier(level, level_name, constraints, tuple(include))


def _needs_unicode(values: Sequence[Any]) -> bool:
    for value in values:
        if isinstance(value, dict):
            if _needs_unicode(list(value.values())):
                return True
        elif isinstance(value, str) and not value.isascii():
            return True
    return False


def response_identifier(request: Dataset, result: Mapping[str, Any], level_name: str,
                        retrieve_ae_title: str | None = None) -> Dataset:
    """One pending C-FIND response: every key of ``request`` with the value of ``result`` (DICOM JSON)."""
    found = Dataset.from_json(dict(result))
    out = Dataset()
    unicode = any(_needs_unicode(v.get("Value", [])) for v in result.values() if isinstance(v, Mapping))
    if unicode:
        out.SpecificCharacterSet = "ISO_IR 192"
    elif _SPECIFIC_CHARACTER_SET in found:
        out.SpecificCharacterSet = found.SpecificCharacterSet
    for elem in request:
        if elem.tag in (_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET):
            continue
        if elem.tag in found:
            out.add(found[elem.tag])
        elif elem.tag == _RETRIEVE_AE_TITLE and retrieve_ae_title:
            out.RetrieveAETitle = retrieve_ae_title
        else:
            out.add_new(elem.tag, elem.VR, None)
    out.QueryRetrieveLevel = level_name
    return out
