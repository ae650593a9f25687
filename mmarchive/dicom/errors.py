"""The errors the DICOM layer raises on purpose, each a refinement of one in :mod:`mmarchive.errors`.

They keep the library's exit codes and message style: a message says what is wrong with the input and
what to do about it. Only the DICOM layer raises them; adapters map them through their parent classes.
"""

from __future__ import annotations

from mmarchive.errors import InvalidInputError


class DicomInputError(InvalidInputError):
    """The bytes offered as a DICOM Part 10 file cannot be archived as one: they are not DICOM, they are
    truncated or malformed, or they lack an identifier the catalog needs (SOP Class UID, SOP Instance UID,
    Study Instance UID, Series Instance UID)."""
