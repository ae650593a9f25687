"""The DICOMweb application: QIDO-RS search, WADO-RS retrieval, metadata, frames, rendered images and bulk
data, STOW-RS store, over one tenant.

:func:`create_app` wraps an :class:`~mmarchive.archive.Archive` or a
:class:`~mmarchive.dicom.store.DicomStore` in a starlette application serving PS3.18 resources under
``base`` (``/dicom-web``), for one tenant; an embedding service can mount it. The store's calls block
(LMDB, file reads), so they run on starlette's thread pool; retrieval streams each instance's stored
Part 10 bytes chunk by chunk, one instance at a time; frames, rendered images and bulk data read only
the header piece and the bytes they need (:mod:`~mmarchive.dicom.web.frames`,
:mod:`~mmarchive.dicom.web.rendered`, :mod:`~mmarchive.dicom.web.bulkdata`). A STOW-RS body is parsed
as it arrives (the parts beyond an in-memory budget wait in temporary files) and ingested only once it is
complete and well formed, so a malformed or interrupted request stores nothing; it is then ingested in
slices of about 32 MiB, so that the memory a large body takes stays bounded. Errors map to HTTP statuses in
one table (:data:`STATUS_FOR`), each with a short JSON reason.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

from pydicom.datadict import keyword_for_tag
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from mmarchive.archive import DEFAULT_TENANT, Archive
from mmarchive.dicom.catalog_records import CatalogEntry
from mmarchive.dicom.scan import describe
from mmarchive.dicom.store import DicomStore, IngestResult, IngestSource, IngestStatus
from mmarchive.dicom.web.bulkdata import BulkValue, byte_range, instance_json, locate, stream
from mmarchive.dicom.web.errors import (
    NotAcceptableError,
    PixelDecodeError,
    RangeNotSatisfiableError,
    UnsupportedMediaTypeError,
)
from mmarchive.dicom.web.frames import (
    OCTET_STREAM,
    PIXEL_DATA,
    Frames,
    frame_layout,
    frame_list,
    open_frames,
    pixel_element,
    read_header,
    served_syntax,
    transfer_syntax,
)
from mmarchive.dicom.web.metadata_cache import DEFAULT_MAX_BYTES, MetadataCache
from mmarchive.dicom.web.multipart import (
    MultipartReader,
    SpooledPart,
    SpooledParts,
    accepted,
    closing,
    media_type,
    part_header,
    split_list,
)
from mmarchive.dicom.web.rendered import Rendering, check_decodable, render, rendering
from mmarchive.errors import (
    ArchiveError,
    ArchiveLockedError,
    ArchiveStateError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RetentionError,
    StorageError,
)
from mmarchive.index.schema import check_tenant

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
DICOM = "application/dicom"
#: Query parameters QIDO-RS gives a meaning of their own; every other one is a matching key.
_RESERVED = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
#: FailureReason values of the store response (PS3.4 storage statuses).
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_PROCESSING = 0x0110
FAILURE_STUDY_MISMATCH = 0xA900
FAILURE_REFUSED = 0x0111  # the duplicate policy refused other bytes for a stored instance
#: A STOW-RS body's parts wait for ingest in memory while they come to at most this many bytes together;
#: the parts beyond wait in temporary files.
SPOOL_BYTES = 8 << 20
#: A STOW-RS body's parts are ingested in calls of about this many bytes each: the store holds the bytes
#: of the objects a call has staged until they are committed and indexed, so one call for a whole large
#: body would hold well over a hundred megabytes at once.
INGEST_SLICE_BYTES = 32 << 20


#: Exception class -> HTTP status; the first class the error is an instance of wins.
STATUS_FOR: tuple[tuple[type[BaseException], int], ...] = (
    (NotAcceptableError, 406),
    (UnsupportedMediaTypeError, 415),
    (RangeNotSatisfiableError, 416),
    (NotFoundError, 404),
    (InvalidInputError, 400),
    (RetentionError, 409),
    (ArchiveLockedError, 409),
    (ArchiveStateError, 409),
    (IntegrityError, 500),
    (PixelDecodeError, 500),
    (StorageError, 503),
    (ArchiveError, 500),
)


def status_for(exc: BaseException) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(exc, cls):
            return status
    return 500


def _error_response(exc: BaseException) -> Response:
    status = status_for(exc)
    reason = str(exc).strip("'\"") if isinstance(exc, ArchiveError) else "internal error"
    if status >= 500:
        log.error("DICOMweb request failed: %s", exc, exc_info=not isinstance(exc, ArchiveError))
    headers = {"Content-Range": f"bytes */{exc.size}"} if isinstance(exc, RangeNotSatisfiableError) else None
    return JSONResponse({"error": reason, "status": status}, status_code=status, headers=headers)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _mapped(handler: Callable[[DicomWeb, Request], Coroutine[Any, Any, Response]],
            web: DicomWeb) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(web, request)
        except ArchiveError as e:
            return _error_response(e)
    return endpoint


def create_app(target: Archive | DicomStore, *, tenant: str = DEFAULT_TENANT,
               base: str = "/dicom-web", spool_bytes: int = SPOOL_BYTES,
               metadata_cache_bytes: int = DEFAULT_MAX_BYTES) -> Starlette:
    """A starlette application serving DICOMweb for ``tenant`` under ``base``.

    ``target`` is an open archive (wrapped in a DicomStore) or a DicomStore; the caller keeps it open
    while the application serves and closes it afterwards. STOW-RS needs it open for writing; a STOW-RS
    body's parts wait for ingest in memory up to ``spool_bytes`` together, in temporary files beyond.
    Instance metadata, once made, is kept in memory up to ``metadata_cache_bytes`` of JSON text (0: none).
    """
    check_tenant(tenant)
    store = target if isinstance(target, DicomStore) else DicomStore(target)
    web = DicomWeb(store, tenant, base, spool_bytes, metadata_cache_bytes)
    routes = [
        Route("/studies", _mapped(DicomWeb.search_or_store, web), methods=["GET", "POST"]),
        Route("/series", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/instances", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}", _mapped(DicomWeb.retrieve_or_store, web), methods=["GET", "POST"]),
        Route("/studies/{study}/metadata", _mapped(DicomWeb.metadata, web), methods=["GET"]),
        Route("/studies/{study}/series", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}/instances", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}", _mapped(DicomWeb.retrieve, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/metadata", _mapped(DicomWeb.metadata, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", _mapped(DicomWeb.search, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}", _mapped(DicomWeb.retrieve, web),
              methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/metadata", _mapped(DicomWeb.metadata, web),
              methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
              _mapped(DicomWeb.frames, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/rendered", _mapped(DicomWeb.rendered, web),
              methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
              _mapped(DicomWeb.rendered, web), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}",
              _mapped(DicomWeb.bulkdata, web), methods=["GET"]),
    ]
    return Starlette(routes=[Mount(base.rstrip("/"), routes=routes)] if base.strip("/") else routes)


class DicomWeb:
    """The resources' handlers over one store and tenant."""

    def __init__(self, store: DicomStore, tenant: str, base: str, spool_bytes: int = SPOOL_BYTES,
                 metadata_cache_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.store = store
        self.spool_bytes = spool_bytes
        self.metadata_cache = MetadataCache(metadata_cache_bytes)
        self.tenant = tenant
        self.base = "/" + base.strip("/") if base.strip("/") else ""

    # -- QIDO-RS ------------------------------------------------------------------------------------

    async def search_or_store(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.store_instances(request)
        return await self.search(request)

    async def search(self, request: Request) -> Response:
        _accept_json(request)
        path = request.url.path.rstrip("/")
        level = "study" if path.endswith("/studies") else "series" if path.endswith("/series") \
            else "instance"
        study = request.path_params.get("study")
        series = request.path_params.get("series")
        constraints: dict[str, str] = {}
        include: list[str] = []
        for key, value in request.query_params.multi_items():
            if key == "includefield":
                include += [_keyword(v) if v != "all" else "all" for v in value.split(",") if v]
            elif key not in _RESERVED:
                keyword = _keyword(key)
                # QIDO-RS lists UIDs with commas (PS3.18 8.3.4.1); the catalog, as C-FIND, with backslashes
                constraints[keyword] = value.replace(",", "\\") if keyword.endswith("UID") else value
        params = request.query_params
        limit = _count(params.get("limit"), "limit") if "limit" in params else None
        offset = _count(params.get("offset"), "offset") if "offset" in params else 0
        fuzzy = params.get("fuzzymatching", "false").lower() == "true"
        results = await run_in_threadpool(
            self.store.query, level, constraints, tenant=self.tenant, limit=limit, offset=offset,
            include="all" if "all" in include else tuple(include), fuzzy=fuzzy, study_uid=study,
            series_uid=series)
        if not results:
            return Response(status_code=204)  # PS3.18 8.3.4.4.1: no match is 204 with no payload
        return JSONResponse(results, media_type=DICOM_JSON)

    # -- WADO-RS ------------------------------------------------------------------------------------

    async def retrieve_or_store(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.store_instances(request)
        return await self.retrieve(request)

    async def retrieve(self, request: Request) -> Response:
        study = request.path_params["study"]
        series = request.path_params.get("series")
        sop = request.path_params.get("sop")
        entries = await run_in_threadpool(self._entries, study, series, sop)
        syntaxes = {e.transfer_syntax for e in entries}
        _accept_dicom(request.headers.get("accept", "*/*"), syntaxes)
        boundary = secrets.token_hex(16)
        body = iterate_in_threadpool(coalesced(self._parts(entries, boundary)))
        return StreamingResponse(
            body, media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}')

    def _entries(self, study: str, series: str | None, sop: str | None) -> list[CatalogEntry]:
        entries = self.store.current(study, tenant=self.tenant, series_uid=series, sop_uid=sop)
        if not entries:
            what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
            raise NotFoundError(f"{what} is not in this archive")
        return entries

    def _parts(self, entries: list[CatalogEntry], boundary: str) -> Iterator[bytes]:
        """The response body: one part per instance, each streamed from the store chunk by chunk."""
        for i, e in enumerate(entries):
            yield part_header(boundary, f"{DICOM}; transfer-syntax={e.transfer_syntax}", first=i == 0)
            with self.store.archive.open_object(e.object_id, tenant=self.tenant) as reader:
                yield from reader.read_chunkwise()
        yield closing(boundary)

    async def frames(self, request: Request) -> Response:
        """WADO-RS frames: one part per requested frame, its stored bytes (PS3.18 10.4)."""
        numbers = frame_list(request.path_params["frames"])
        params = request.path_params
        entries = await run_in_threadpool(self._entries, params["study"], params["series"], params["sop"])
        layout = await run_in_threadpool(self._frame_layout, entries[0])
        layout.check(numbers)
        _accept_frames(request.headers.get("accept", "*/*"), layout)
        boundary = secrets.token_hex(16)
        body = iterate_in_threadpool(self._frame_parts(entries[0], layout, numbers, boundary))
        return StreamingResponse(
            body, media_type=f'multipart/related; type="{layout.media_type}"; boundary={boundary}')

    @contextmanager
    def _opened(self, entry: CatalogEntry) -> Iterator[tuple[Any, int, int]]:
        """A reader over the stored instance, where its header piece ends (its pixel value starts; its
        size if it has none cut out) and its size."""
        with self.store.archive.open_object(entry.object_id, tenant=self.tenant) as reader:
            size = int(reader.size)
            yield reader, self.store.header_end(entry.object_id, size, tenant=self.tenant), size

    def _frame_layout(self, entry: CatalogEntry) -> Frames:
        with self._opened(entry) as (reader, header_end, size):
            return open_frames(reader, header_end, size)

    def _frame_parts(self, entry: CatalogEntry, layout: Frames, numbers: list[int],
                     boundary: str) -> Iterator[bytes]:
        with self.store.archive.open_object(entry.object_id, tenant=self.tenant) as reader:
            for i, n in enumerate(numbers):
                yield part_header(boundary, layout.part_type, first=i == 0)
                yield layout.read(reader, n)
        yield closing(boundary)

    async def rendered(self, request: Request) -> Response:
        """WADO-RS rendered: one frame (the first, or the one of ``frames/{n}``) as JPEG or PNG
        (PS3.18 9.5)."""
        params = request.path_params
        numbers = frame_list(params["frames"]) if "frames" in params else [1]
        if len(numbers) != 1:
            raise InvalidInputError(f"a rendered request takes one frame number, not {len(numbers)}; ask for "
                                    "each frame on its own")
        asked = rendering(request.headers.get("accept", "*/*"), request.query_params)
        entries = await run_in_threadpool(self._entries, params["study"], params["series"], params["sop"])
        image = await run_in_threadpool(self._render, entries[0], numbers[0], asked)
        return Response(image, media_type=asked.media_type)

    def _render(self, entry: CatalogEntry, number: int, asked: Rendering) -> bytes:
        with self._opened(entry) as (reader, header_end, size):
            if header_end >= size:
                raise InvalidInputError("the instance has no pixel data to render")
            head, header = read_header(reader, header_end)
            pixel = pixel_element(head, transfer_syntax(header))
            if pixel is None or pixel.tag != PIXEL_DATA:
                raise InvalidInputError("only Pixel Data (7FE0,0010) is rendered, not float pixel data")
            layout = frame_layout(head, header)
            layout.check([number])
            check_decodable(layout)
            return render(header, layout, layout.read(reader, number), asked)

    async def metadata(self, request: Request) -> Response:
        """WADO-RS metadata: the DICOM JSON of each instance's header, bulk data as BulkDataURIs."""
        _accept_json(request)
        study = request.path_params["study"]
        series = request.path_params.get("series")
        sop = request.path_params.get("sop")
        root = _root(request)
        found = await run_in_threadpool(self._metadata, root, study, series, sop)
        return Response(found, media_type=DICOM_JSON)

    def _metadata(self, root: str, study: str, series: str | None, sop: str | None) -> bytes:
        """The JSON array of the instances' metadata, each made once and then kept (see metadata_cache)."""
        cache = self.metadata_cache
        texts = []
        for e in self._entries(study, series, sop):
            uri = (f"{root}/studies/{e.study_instance_uid}/series/{e.series_instance_uid}"
                   f"/instances/{e.sop_instance_uid}/bulkdata")
            text = cache.text(self.tenant, e.object_id, partial(self._instance_json, e))
            texts.append(cache.render(text, uri))
        return ("[" + ",".join(texts) + "]").encode()

    def _instance_json(self, entry: CatalogEntry, bulk_url: str) -> dict[str, Any]:
        with self._opened(entry) as (reader, header_end, size):
            return instance_json(reader, header_end, size, bulk_url)

    async def bulkdata(self, request: Request) -> Response:
        """WADO-RS bulk data: one value, as one multipart/related part (the default) or as the whole
        body when the client asks for application/octet-stream; a Range selects bytes of it."""
        params = request.path_params
        single = _accept_bulk(request.headers.get("accept", "*/*"))
        entries = await run_in_threadpool(self._entries, params["study"], params["series"], params["sop"])
        entry = entries[0]
        value, syntax = await run_in_threadpool(self._locate, entry, params["path"])
        chosen = byte_range(request.headers.get("range"), value.length)
        start, stop = chosen if chosen is not None else (0, value.length)
        status = 206 if chosen is not None else 200
        content_range = f"bytes {start}-{stop - 1}/{value.length}"
        part_type = f"{OCTET_STREAM}; transfer-syntax={syntax}" if value.pixel else OCTET_STREAM
        if single:
            headers = {"Accept-Ranges": "bytes", "Content-Length": str(stop - start)}
            if chosen is not None:
                headers["Content-Range"] = content_range
            body = iterate_in_threadpool(self._bulk_bytes(entry, value, start, stop))
            return StreamingResponse(body, status_code=status, media_type=part_type, headers=headers)
        boundary = secrets.token_hex(16)
        extra = {"Content-Range": content_range} if chosen is not None else {}
        body = iterate_in_threadpool(self._bulk_part(entry, value, start, stop, boundary, part_type, extra))
        return StreamingResponse(body, status_code=status, headers={"Accept-Ranges": "bytes"},
                                 media_type=f'multipart/related; type="{OCTET_STREAM}"; boundary={boundary}')

    def _locate(self, entry: CatalogEntry, path: str) -> tuple[BulkValue, str]:
        with self._opened(entry) as (reader, header_end, size):
            value = locate(reader, header_end, size, path)
        return value, served_syntax(entry.transfer_syntax)

    def _bulk_bytes(self, entry: CatalogEntry, value: BulkValue, start: int,
                    stop: int) -> Iterator[bytes]:
        if value.data is not None:
            yield from stream(None, value, start, stop)
            return
        with self.store.archive.open_object(entry.object_id, tenant=self.tenant) as reader:
            yield from stream(reader, value, start, stop)

    def _bulk_part(self, entry: CatalogEntry, value: BulkValue, start: int, stop: int,
                   boundary: str, part_type: str, extra: dict[str, str]) -> Iterator[bytes]:
        yield part_header(boundary, part_type, first=True, extra=extra)
        yield from self._bulk_bytes(entry, value, start, stop)
        yield closing(boundary)

    # -- STOW-RS ------------------------------------------------------------------------------------

    async def store_instances(self, request: Request) -> Response:
        study = request.path_params.get("study")
        mtype, params = media_type(request.headers.get("content-type", ""))
        if mtype != "multipart/related":
            raise UnsupportedMediaTypeError(
                f"STOW-RS takes multipart/related; type=\"{DICOM}\", not {mtype or 'no Content-Type'}")
        if params.get("type", DICOM).lower() != DICOM:
            raise UnsupportedMediaTypeError(f"only {DICOM} parts are stored (the metadata and bulk data "
                                            f"form is not implemented), not {params['type']}")
        reader = MultipartReader(params.get("boundary", ""))
        with SpooledParts(self.spool_bytes) as spooled:
            try:
                async for chunk in request.stream():
                    spooled.add(reader.feed(chunk))
            except ClientDisconnect:
                log.info("STOW-RS client went away before the end of its request; nothing stored")
                return Response(status_code=400)
            reader.finish()
            if not spooled.parts:
                raise InvalidInputError("the multipart body holds no part")
            outcome = await run_in_threadpool(self._store_parts, spooled.parts, study)
        return self._store_response(request, outcome)

    def _store_parts(self, parts: list[SpooledPart], study: str | None) -> list[_Stored]:
        """Check each part, then ingest the acceptable ones; one outcome per part."""
        outcome: list[_Stored] = []
        batch: list[SpooledPart] = []
        for n, part in enumerate(parts):
            ptype, _ = media_type(part.headers.get("content-type", DICOM))
            if ptype != DICOM:
                outcome.append(_Stored(None, None, None, FAILURE_CANNOT_UNDERSTAND,
                                       f"part {n + 1} is {ptype}, not {DICOM}"))
                continue
            try:
                scanned = describe(part.read())
            except InvalidInputError as e:
                outcome.append(_Stored(None, None, None, FAILURE_CANNOT_UNDERSTAND, f"part {n + 1}: {e}"))
                continue
            sop_class = _value(scanned.values, "SOPClassUID")
            sop = _value(scanned.values, "SOPInstanceUID")
            part_study = _value(scanned.values, "StudyInstanceUID")
            if study is not None and part_study != study:
                outcome.append(_Stored(sop_class, sop, part_study, FAILURE_STUDY_MISMATCH,
                                       f"part {n + 1} belongs to study {part_study}, not {study}"))
                continue
            outcome.append(_Stored(sop_class, sop, part_study, None, ""))
            batch.append(part)
        results = iter(self._ingest(batch))
        for i, o in enumerate(outcome):
            if o.failure is None:
                outcome[i] = o.with_result(next(results))
        for o in outcome:
            if o.failure is not None:
                log.info("STOW-RS refused %s: %s", o.sop or "a part", o.reason)
        return outcome

    def _ingest(self, parts: list[SpooledPart]) -> list[IngestResult]:
        """Ingest the checked parts (every one already received and parsed), one result per part in order,
        in slices of about :data:`INGEST_SLICE_BYTES`, so that the bytes the store holds at once stay
        bounded whatever the body's size."""
        results: list[IngestResult] = []
        start = size = 0
        for n, part in enumerate(parts):
            size += part.size
            if size >= INGEST_SLICE_BYTES or n == len(parts) - 1:
                sources: list[IngestSource] = [
                    p.path if p.path is not None else (f"part {start + i + 1}", p.read())
                    for i, p in enumerate(parts[start:n + 1])]
                results += self.store.ingest(sources, tenant=self.tenant, reason="stow-rs")
                start, size = n + 1, 0
        return results

    def _store_response(self, request: Request, outcome: list[_Stored]) -> Response:
        root = _root(request)
        referenced: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        studies = set()
        for o in outcome:
            item = {"00081150": _ui(o.sop_class), "00081155": _ui(o.sop)}
            if o.failure is None:
                url = f"{root}/studies/{o.study}/series/{o.series}/instances/{o.sop}"
                item["00081190"] = {"vr": "UR", "Value": [url]}
                referenced.append(item)
                studies.add(o.study)
            else:
                item["00081197"] = {"vr": "US", "Value": [o.failure]}
                failed.append(item)
        body: dict[str, Any] = {}
        if len(studies) == 1:
            body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{next(iter(studies))}"]}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": failed}
        if referenced:
            body["00081199"] = {"vr": "SQ", "Value": referenced}
        status = 200 if not failed else 202 if referenced else 409
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


class _Stored:
    """What became of one STOW-RS part: stored (``failure`` None) or a FailureReason and why."""

    __slots__ = ("failure", "reason", "series", "sop", "sop_class", "study")

    def __init__(self, sop_class: str | None, sop: str | None, study: str | None, failure: int | None,
                 reason: str, series: str | None = None) -> None:
        self.sop_class = sop_class
        self.sop = sop
        self.study = study
        self.series = series
        self.failure = failure
        self.reason = reason

    def with_result(self, result: IngestResult) -> _Stored:
        if result.ok:
            return _Stored(self.sop_class, result.sop_instance_uid, result.study_instance_uid, None, "",
                           result.series_instance_uid)
        code = FAILURE_REFUSED if result.status is IngestStatus.REJECTED else FAILURE_PROCESSING
        return _Stored(self.sop_class, self.sop, self.study, code, result.error or str(result.status))


# -- request parsing ----------------------------------------------------------------------------------


#: A retrieval body is handed from the thread pool to the event loop in pieces of at least this size:
#: each hand-over wakes the loop, and an instance arrives as several small pieces (part header, header,
#: pixel data, trailer).
BODY_PIECE = 1 << 20


def coalesced(pieces: Iterator[bytes], at_least: int = BODY_PIECE) -> Iterator[bytes]:
    """``pieces`` joined into pieces of at least ``at_least`` bytes (the last may be shorter); memory is
    bounded by ``at_least`` plus the largest piece."""
    pending: list[bytes] = []
    held = 0
    for piece in pieces:
        pending.append(piece)
        held += len(piece)
        if held >= at_least:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def _keyword(key: str) -> str:
    """A query key or includefield value as a keyword: ``PatientID`` stays, ``00100020`` becomes it."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        keyword = keyword_for_tag(int(key, 16))
        if not keyword:
            raise InvalidInputError(f"tag {key} is not a known DICOM attribute")
        return str(keyword)
    return key


def _count(text: str | None, name: str) -> int:
    try:
        n = int(text or "")
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, not {text!r}") from None
    if n < 0:
        raise InvalidInputError(f"{name} must be 0 or more, not {n}")
    return n


def _accept_json(request: Request) -> None:
    ranges = [media_type(r)[0] for r in split_list(request.headers.get("accept", "*/*"))]
    if not any(r in (DICOM_JSON, "application/json", "application/*", "*/*", "*") for r in ranges):
        raise NotAcceptableError(f"this resource is served as {DICOM_JSON} only")


def _accepts_multipart(accept: str, default_type: str, types: tuple[str, ...],
                       syntax_ok: Callable[[str], bool]) -> bool:
    """Whether an entry of ``accept`` (q > 0) takes ``multipart/related`` parts of one of ``types``
    (``default_type`` when it names none) in a transfer syntax ``syntax_ok`` allows (``*`` when absent)."""
    for mtype, params in accepted(accept):
        if mtype in ("*/*", "*", "multipart/*"):
            return True
        if mtype != "multipart/related" or params.get("type", default_type).lower() not in types:
            continue
        if syntax_ok(params.get("transfer-syntax", "*")):
            return True
    return False


def _accept_dicom(accept: str, syntaxes: set[str]) -> None:
    """Raise NotAcceptableError unless ``accept`` allows multipart application/dicom in ``syntaxes``."""
    if _accepts_multipart(accept, DICOM, (DICOM, "application/*", "*/*"),
                          lambda wanted: wanted == "*" or {wanted} == syntaxes):
        return
    stored = ", ".join(sorted(syntaxes))
    raise NotAcceptableError(f'only multipart/related; type="{DICOM}" in the stored transfer syntax '
                             f"({stored}) or transfer-syntax=* is served")


def _accept_frames(accept: str, layout: Frames) -> None:
    """Raise NotAcceptableError unless ``accept`` allows multipart frames of ``layout``'s media type in
    its stored transfer syntax (explicit VR little endian for native data)."""
    served = layout.media_type
    syntax = layout.served_syntax
    if _accepts_multipart(accept, OCTET_STREAM, (served, served.split("/")[0] + "/*", "*/*"),
                          lambda wanted: wanted in ("*", syntax)):
        return
    raise NotAcceptableError(f'the frames are served only as multipart/related; type="{served}" '
                             f"(transfer syntax {syntax})")


def _accept_bulk(accept: str) -> bool:
    """Whether ``accept`` asks for bulk data as a single-part application/octet-stream body (True) or
    allows the multipart/related form (False); NotAcceptableError if it allows neither."""
    for mtype, params in accepted(accept):
        if mtype in ("*/*", "*", "multipart/*"):
            return False
        if mtype == "multipart/related" and params.get("type", OCTET_STREAM).lower() in (
                OCTET_STREAM, "application/*", "*/*"):
            return False
        if mtype in (OCTET_STREAM, "application/*"):
            return True
    raise NotAcceptableError(f'bulk data is served as multipart/related; type="{OCTET_STREAM}" or as '
                             f"{OCTET_STREAM}, not {accept!r}")


def _root(request: Request) -> str:
    """The URL of the DICOMweb root the request came through: its scheme and Host, then the path the
    application's routes are mounted at (``root_path``: the embedding service's mount prefixes, a proxy's
    root path and ``base``), for the URLs handed out (RetrieveURLs, BulkDataURIs)."""
    scope = {**request.scope, "path": request.scope.get("root_path", ""), "query_string": b""}
    return str(URL(scope=scope)).rstrip("/")


def _value(values: Mapping[str, tuple[Any, ...]], keyword: str) -> str | None:
    got = values.get(keyword)
    return str(got[0]) if got else None


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}

