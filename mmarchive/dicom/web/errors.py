"""The errors the DICOMweb application raises on purpose, each a refinement of one in :mod:`mmarchive.errors`.

They name what the HTTP layer cannot do for a request (an ``Accept`` it cannot meet, a request body of a
type it does not take, pixel data it cannot decode for rendering) so that the application's one status
table (:data:`mmarchive.dicom.web.app.STATUS_FOR`) maps each to its status; messages say what happened
and what the client can ask for instead.
"""

from __future__ import annotations

from mmarchive.errors import ArchiveError


class NotAcceptableError(ArchiveError):
    """No representation the request's Accept header allows can be served (406)."""


class UnsupportedMediaTypeError(ArchiveError):
    """The request body's Content-Type is not one this resource takes (415)."""


class RangeNotSatisfiableError(ArchiveError):
    """The request's Range lies wholly outside the bulk data value (416); ``size`` is the value's length."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class PixelDecodeError(ArchiveError):
    """Stored pixel data that a decoder is installed for could not be decoded (500): the bytes are
    damaged, or use a variant of their transfer syntax the installed decoders do not support."""
