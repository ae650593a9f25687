"""What the lifecycle knows about one stored object when it applies policies and holds: a plain record.

Facts are gathered by composers (the lifecycle runner asks the core index for size, ingest time, tier and
last access, and each layer above the store, such as DICOM, for what it knows: study date, modality, SOP
class, patient birth date). Policy rules and holds match on these records only, so they never import a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

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
