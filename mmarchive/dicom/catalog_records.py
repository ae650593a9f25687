"""The plain records that go into the DICOM catalog and come out of it.

:class:`CatalogInstance` is what a caller (the store adapter) feeds :meth:`Catalog.add_many` for one stored
object: the tenant, the extracted attribute values, where the bytes are, and what the catalog should do
with it when the SOP Instance UID is already known (:class:`VersionRole`). :class:`CatalogEntry` is one
current instance as :meth:`Catalog.instances` yields it, :class:`InstanceVersion` one line of an
instance's version history. Records hold data only; the catalog modules give them meaning.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from mmarchive.dicom.attributes import AttributeValues


class VersionRole(StrEnum):
    """How a new object for a SOP Instance UID relates to the versions the catalog already holds.

    ``CURRENT``: it becomes the current version (queries and counts see it); the previous current version
    stays in the history. ``NON_CURRENT``: it is recorded in the history only; queries still see the
    current version (or nothing, for an instance that has no current version yet). The store adapter
    chooses the role from its policy (reject, keep both, replace) and says why in ``reason``.
    """

    CURRENT = "current"
    NON_CURRENT = "non-current"


class CatalogInstance(NamedTuple):
    """One stored DICOM object to index: its values, its object id in the store and how to add it."""

    tenant: str
    values: AttributeValues
    object_id: str
    size: int
    transfer_syntax: str
    stored_at: float
    #: A short word for the history: "initial", "replace", "version", "correction", ...
    reason: str = "initial"
    role: VersionRole = VersionRole.CURRENT


class AddOutcome(StrEnum):
    """What :meth:`Catalog.add_many` did with one :class:`CatalogInstance`."""

    #: A SOP Instance UID the catalog did not hold as current, now current.
    ADDED = "added"
    #: A new version that replaced the previous current version.
    REPLACED = "replaced"
    #: An earlier version (same object id) made current again.
    RESTORED = "restored"
    #: Recorded in the history only.
    RECORDED = "recorded"
    #: The same object was already there in that role: nothing changed.
    UNCHANGED = "unchanged"


class InstanceVersion(NamedTuple):
    """One version of a SOP instance, in the order the catalog received them (``number`` from 1)."""

    number: int
    object_id: str
    stored_at: float
    reason: str
    size: int
    transfer_syntax: str
    current: bool


class CatalogEntry(NamedTuple):
    """One current instance: where its bytes are and the values of its current version."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    object_id: str
    size: int
    transfer_syntax: str
    stored_at: float
    version: int
    values: AttributeValues
