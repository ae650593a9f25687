"""What the lifecycle knows about one stored object when it applies policies and holds: a plain record.

Facts are gathered by composers (the lifecycle runner asks the core index for size, ingest time, tier and
last access, and each layer above the store, such as DICOM, for what it knows: study date, modality, SOP
class, patient birth date). Policy rules and holds match on these records only, so they never import a layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

#: The object kinds a policy rule can match on.
OBJECT_KINDS = ("dicom", "photo", "video", "pdf", "other")


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """One object as the lifecycle sees it. Times are timezone-aware UTC; absent facts are None."""

    tenant: str
    object_id: str
    #: One of :data:`OBJECT_KINDS`.
    kind: str
    size: int
    ingested: datetime
    #: The tier holding the object's data now (the tier of its manifest's pack).
    tier: str
    last_access: datetime | None = None
    study_date: date | None = None
    patient_birth_date: date | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    modality: str | None = None
    sop_class_uid: str | None = None


# -- facts kept in object metadata ---------------------------------------------------------------------
#: The metadata key under which a layer records, at ingest, what it knows of an object for the lifecycle
#: (``{"lifecycle": {"kind": "dicom", "study_date": "2024-05-01", ...}}``); field names are those of
#: :class:`ObjectFacts`, dates ISO 8601. Objects without it are of kind ``other`` with unknown facts
#: (or ``photo``/``video``/``pdf`` when their metadata has a ``content_type``).
FACTS_KEY = "lifecycle"
_TEXT_FIELDS = ("patient_id", "study_uid", "series_uid", "modality", "sop_class_uid")
_DATE_FIELDS = ("study_date", "patient_birth_date")


def facts_metadata(kind: str, *, study_date: date | None = None, patient_birth_date: date | None = None,
                   **text: str | None) -> dict[str, Any]:
    """The ``{"lifecycle": {...}}`` metadata entry a layer stores with an object (absent facts left out)."""
    if kind not in OBJECT_KINDS:
        raise ValueError(f"kind must be one of {OBJECT_KINDS}, not {kind!r}")
    unknown = set(text) - set(_TEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown lifecycle facts {sorted(unknown)}")
    out: dict[str, Any] = {"kind": kind}
    if study_date is not None:
        out["study_date"] = study_date.isoformat()
    if patient_birth_date is not None:
        out["patient_birth_date"] = patient_birth_date.isoformat()
    out.update((k, v) for k, v in text.items() if v)
    return {FACTS_KEY: out}


def dicom_date(value: str | None) -> date | None:
    """A DICOM DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` too) as a date, or None when not a date."""
    if not value:
        return None
    digits = value.strip().replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


_CONTENT_KINDS = (("image/", "photo"), ("video/", "video"), ("application/pdf", "pdf"))
_FACTS_MARK = b'"' + FACTS_KEY.encode() + b'":{'
_OTHER: dict[str, Any] = {"kind": "other"}


class FactsReader:
    """Builds :class:`ObjectFacts` from what the core index holds of each object, fast.

    Objects of one series carry the same lifecycle facts: the ``"lifecycle":{...}`` part of their
    canonical metadata JSON is found by a byte search and parsed once per distinct value, so a plan over
    a million objects parses a few thousand small JSON texts, not a million.
    """

    def __init__(self) -> None:
        self._parsed: dict[bytes, dict[str, Any]] = {}

    def partial(self, metadata_json: bytes) -> dict[str, Any]:
        """The lifecycle fields of one object's metadata (kind always present)."""
        i = metadata_json.find(_FACTS_MARK)
        if i >= 0:
            j = metadata_json.find(b"}", i)  # the facts table is flat: its first '}' closes it ...
            key = metadata_json[i + len(_FACTS_MARK) - 1:j + 1]
            got = self._parsed.get(key)
            if got is None:
                try:
                    got = self._parsed[key] = self._from_facts(json.loads(key))
                except ValueError:  # ... unless a value holds a '}': parse the whole metadata
                    return self._from_facts(json.loads(metadata_json).get(FACTS_KEY))
            return got
        if b'"content_type"' not in metadata_json:
            return _OTHER
        got = self._parsed.get(metadata_json)
        if got is None:
            try:
                ctype = str(json.loads(metadata_json).get("content_type", "")).lower()
            except (ValueError, AttributeError):
                ctype = ""
            kind = next((k for prefix, k in _CONTENT_KINDS if ctype.startswith(prefix)), "other")
            got = self._parsed[metadata_json] = {"kind": kind}
        return got

    def partial_in(self, buf: bytes, start: int, end: int) -> dict[str, Any]:
        """:meth:`partial` of ``buf[start:end]`` (the metadata inside an index entry), without copying
        it when its facts were parsed before."""
        i = buf.find(_FACTS_MARK, start, end)
        if i >= 0:
            j = buf.find(b"}", i, end)
            got = self._parsed.get(buf[i + len(_FACTS_MARK) - 1:j + 1])
            if got is not None:
                return got
        return self.partial(buf[start:end])

    @staticmethod
    def _from_facts(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            return _OTHER
        out: dict[str, Any] = {"kind": value.get("kind") if value.get("kind") in OBJECT_KINDS else "other"}
        for name in _DATE_FIELDS:
            try:
                out[name] = date.fromisoformat(value[name]) if name in value else None
            except (TypeError, ValueError):
                out[name] = None
        for name in _TEXT_FIELDS:
            v = value.get(name)
            out[name] = v if isinstance(v, str) and v else None
        return out

    def facts(self, tenant: str, object_id: str, size: int, created_ns: int, metadata_json: bytes,
              tier: str, last_access: datetime | None = None) -> ObjectFacts:
        return self.facts_for(self.partial(metadata_json), tenant, object_id, size,
                              datetime.fromtimestamp(created_ns / 1e9, tz=UTC), tier, last_access)

    @staticmethod
    def facts_for(part: dict[str, Any], tenant: str, object_id: str, size: int, ingested: datetime,
                  tier: str, last_access: datetime | None) -> ObjectFacts:
        """Facts from a :meth:`partial` result and the core's own fields."""
        return ObjectFacts(tenant, object_id, part["kind"], size, ingested, tier, last_access,
                           part.get("study_date"), part.get("patient_birth_date"), part.get("patient_id"),
                           part.get("study_uid"), part.get("series_uid"), part.get("modality"),
                           part.get("sop_class_uid"))
