"""A tier in an S3 bucket (AWS or any S3-compatible store): whole sealed packs as objects under a prefix.

Owns the S3 side of packs: storing a pack from a stream of pieces (one PutObject for small packs, a multipart
upload in fixed-size parts for large ones, holding about one part in memory and aborting the upload on any
failure so that no partial object or dangling upload is left), verifying the stored size with a HEAD,
positional reads as ranged GETs (one HEAD per reader for the size, never a whole-pack download), listing
through ListObjectsV2 pages and idempotent removal. Objects are keyed ``{prefix}{name[:2]}/{name}.pack``, the
local tier's fan-out. Every failure becomes :class:`StorageError` with ``transient`` set when retrying later
may help (connection refused, timeouts, throttling, 5xx) and unset when an operator must act (access denied,
bad credentials, no such bucket); a missing pack is :class:`IntegrityError`. botocore retries requests
(standard mode, with backoff); this module retries only what botocore cannot (a response body cut off
mid-read). Credentials come from boto3's usual sources (environment, profile, instance role), never from
the archive's config. It knows nothing of records, objects or the index.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from mmarchive.config import parse_size
from mmarchive.errors import (
    ArchiveError,
    ArchiveStateError,
    IntegrityError,
    InvalidInputError,
    StorageError,
)
from mmarchive.tiers.base import StoredPack

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

PACK_SUFFIX = ".pack"
DEFAULT_PART_SIZE = 16 * MiB
#: S3's limits: every part but the last is at least 5 MiB, at most 5 GiB; at most 10,000 parts; a single
#: PutObject carries at most 5 GiB.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_PUT_SIZE = 5 * GiB

_PACK_NAME_RE = re.compile(r"^[0-9a-f]{32}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_BAD_RE = re.compile(r"(^/)|(//)|[\x00-\x1f\x7f\\]")
_ETAG_MULTIPART_RE = re.compile(r"^[0-9a-fA-F]+-(\d+)$")

#: Keys a ``[tiers.NAME]`` table of kind ``s3`` may hold (besides ``kind``).
CONFIG_KEYS = ("bucket", "prefix", "endpoint_url", "region", "part_size", "max_attempts")

_CREDENTIAL_HELP = ("check the credentials boto3 finds (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, ~/.aws/credentials or the instance role) and the bucket's policy")
_CONFIG_HELP = "check bucket, endpoint_url and region in the tier's config"
#: Errors retrying will not cure: what happened, and what to do.
_PERMANENT_CODES = {
    "AccessDenied": ("access was denied", _CREDENTIAL_HELP),
    "AllAccessDisabled": ("all access to the bucket is disabled", _CREDENTIAL_HELP),
    "AccountProblem": ("the account has a problem", "contact the service's support"),
    "InvalidAccessKeyId": ("the access key id is not known to the service", _CREDENTIAL_HELP),
    "SignatureDoesNotMatch": ("the request signature does not match (wrong secret key?)", _CREDENTIAL_HELP),
    "ExpiredToken": ("the session token has expired", _CREDENTIAL_HELP),
    "InvalidToken": ("the session token is not valid", _CREDENTIAL_HELP),
    "TokenRefreshRequired": ("the session token must be refreshed", _CREDENTIAL_HELP),
    "RequestTimeTooSkewed": ("this machine's clock differs too much from the service's",
                             "synchronise the clock (NTP)"),
    "InvalidBucketName": ("the service does not accept the bucket name", _CONFIG_HELP),
    "PermanentRedirect": ("the bucket is in another region or at another endpoint", _CONFIG_HELP),
    "AuthorizationHeaderMalformed": ("the request was signed for the wrong region", _CONFIG_HELP),
    "InvalidObjectState": ("the object is archived (e.g. in Glacier)", "restore it in the bucket first"),
    "EntityTooSmall": ("a multipart part is below the service's minimum size", "raise part_size"),
    "EntityTooLarge": ("the object or a part is above the service's maximum size", "lower part_size"),
}
_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "SlowDown", "RequestTimeout",
                    "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException", "InternalError",
                    "ServiceUnavailable", "BandwidthLimitExceeded", "RequestThrottled",
                    "PriorRequestNotComplete", "OperationAborted",
                    # an upload aborted under us (a lifecycle rule): storing again starts a new one
                    "NoSuchUpload"}


def _check_pack(pack: str) -> None:
    if not isinstance(pack, str) or not _PACK_NAME_RE.match(pack):
        raise InvalidInputError(f"{pack!r} is not a pack name (32 lowercase hex digits)")


def _client_error_fields(e: ClientError) -> tuple[str, int]:
    err = e.response.get("Error", {}) or {}
    meta = e.response.get("ResponseMetadata", {}) or {}
    return str(err.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


def _is_not_found(e: ClientError) -> bool:
    code, status = _client_error_fields(e)
    return code in ("NoSuchKey", "NotFound", "404") or (status == 404 and code != "NoSuchBucket")


class S3PackFile:
    """Random access to one pack in an S3 tier (:class:`mmarchive.pack.reader.PackBytes`).

    Its size comes from the caller (the index) or from one HEAD when it is opened; every
    :meth:`read_at` is one ranged GET of just the bytes asked for (clamped to the size: a read past the
    end returns fewer bytes, or none, as ``pread`` does on a local file). Threads may share it.
    """

    def __init__(self, tier: S3Tier, name: str, size: int) -> None:
        self.name = name
        self._tier = tier
        self._size = size
        self._closed = False

    def read_at(self, offset: int, length: int) -> bytes:
        if self._closed:
            raise ArchiveStateError(f"pack {self.name}: read after the reader was closed")
        if offset < 0 or length < 0:
            raise InvalidInputError(f"pack {self.name}: cannot read {length} bytes at offset {offset}")
        end = min(offset + length, self._size)
        if end <= offset:
            return b""
        return self._tier._get_range(self.name, offset, end)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> S3PackFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Tier:
    """Packs as objects in one bucket under one prefix (a :class:`mmarchive.tiers.base.Tier`).

    ``client`` is a ready boto3 S3 client used as given (its retries and timeouts are the caller's);
    otherwise one is built from ``session`` (default: a new ``boto3.session.Session()``, which reads the
    usual credential sources) with ``max_attempts`` tries per request in botocore's standard retry mode and
    the given timeouts. One client is shared by every thread (boto3 clients are thread-safe).
    """

    kind = "s3"

    def __init__(self, name: str, *, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, multipart_threshold: int | None = None,
                 part_size: int = DEFAULT_PART_SIZE, max_attempts: int = 5, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_connections: int = 32, client: Any = None,
                 session: Any = None) -> None:
        where = f"S3 tier {name}"
        if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise InvalidInputError(f"{where}: bucket {bucket!r} is not a valid S3 bucket name (3-63 "
                                    "lowercase letters, digits, '.' or '-')")
        if not isinstance(prefix, str) or _PREFIX_BAD_RE.search(prefix):
            raise InvalidInputError(f"{where}: prefix {prefix!r} must be a relative key prefix such as "
                                    "'archive/packs/' (no leading '/', no '//', no control characters)")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if endpoint_url is not None and (not isinstance(endpoint_url, str)
                                         or not endpoint_url.startswith(("http://", "https://"))):
            raise InvalidInputError(f"{where}: endpoint_url {endpoint_url!r} must be an http:// or "
                                    "https:// URL")
        if isinstance(part_size, bool) or not isinstance(part_size, int) \
                or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise InvalidInputError(f"{where}: part_size must be between 5MiB and 5GiB (S3's limits), "
                                    f"not {part_size!r}")
        threshold = part_size if multipart_threshold is None else multipart_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) \
                or not 0 <= threshold <= MAX_PUT_SIZE:
            raise InvalidInputError(f"{where}: multipart_threshold must be between 0 and 5GiB, "
                                    f"not {threshold!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 20:
            raise InvalidInputError(f"{where}: max_attempts must be 1..20, not {max_attempts!r}")
        self.name = name
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self.multipart_threshold = threshold
        self.max_attempts = max_attempts
        self.where = f"s3://{bucket}/{prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        self._owns_client = client is None
        if client is None:
            config = Config(retries={"mode": "standard", "max_attempts": max_attempts},
                            connect_timeout=connect_timeout, read_timeout=read_timeout,
                            max_pool_connections=max_connections,
                            s3={"addressing_style": "path"} if endpoint_url else None)
            try:
                session = session if session is not None else boto3.session.Session()
                client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
            except BotoCoreError as e:
                raise StorageError(f"{where}: cannot set up the S3 client for {self.where}: {e}; check "
                                   "region, endpoint_url and the AWS profile", transient=False) from e
        #: The boto3 S3 client (tests register event hooks on it).
        self.client: Any = client
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any], *, session: Any = None) -> S3Tier:
        """Build a tier from the keys of a ``[tiers.NAME]`` table of kind ``s3``.

        ``bucket`` is required; ``prefix``, ``endpoint_url``, ``region``, ``part_size`` (bytes or a size
        string such as ``"64MiB"``) and ``max_attempts`` are optional. Credentials are never read from here.
        """
        where = f"[tiers.{name}]"
        if not isinstance(options, Mapping):
            raise InvalidInputError(f"{where}: an s3 tier is a table of keys ({', '.join(CONFIG_KEYS)})")
        opts = dict(options)
        kind = opts.pop("kind", "s3")
        if kind != "s3":
            raise InvalidInputError(f"{where}: kind is {kind!r}, not 's3'")
        unknown = sorted(set(opts) - set(CONFIG_KEYS))
        if unknown:
            hint = ("; credentials are not taken from the config: use AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
                    if any("key" in k or "secret" in k or "token" in k for k in unknown) else "")
            raise InvalidInputError(f"{where}: unknown keys {unknown}; an s3 tier takes "
                                    f"{', '.join(CONFIG_KEYS)}{hint}")
        if "bucket" not in opts:
            raise InvalidInputError(f"{where}: an s3 tier needs bucket = \"NAME\"")
        for key in ("bucket", "prefix", "endpoint_url", "region"):
            if key in opts and not isinstance(opts[key], str):
                raise InvalidInputError(f"{where}: {key} must be a string, not {opts[key]!r}")
        kwargs: dict[str, Any] = {k: opts[k] for k in ("bucket", "prefix", "endpoint_url", "region")
                                  if k in opts}
        if "part_size" in opts:
            kwargs["part_size"] = parse_size(opts["part_size"])
        if "max_attempts" in opts:
            attempts = opts["max_attempts"]
            if isinstance(attempts, bool) or not isinstance(attempts, int):
                raise InvalidInputError(f"{where}: max_attempts must be a whole number, not {attempts!r}")
            kwargs["max_attempts"] = attempts
        try:
            return cls(name, session=session, **kwargs)
        except InvalidInputError as e:
            raise InvalidInputError(str(e).replace(f"S3 tier {name}", where, 1)) from None

    # -- keys -------------------------------------------------------------------------------------------

    def key(self, pack: str) -> str:
        return f"{self.prefix}{pack[:2]}/{pack}{PACK_SUFFIX}"

    def _pack_of(self, key: str) -> str | None:
        if not key.startswith(self.prefix) or not key.endswith(PACK_SUFFIX):
            return None
        rest = key[len(self.prefix):-len(PACK_SUFFIX)]
        fan, _, name = rest.partition("/")
        if _PACK_NAME_RE.match(name) and fan == name[:2]:
            return name
        return None

    # -- errors -----------------------------------------------------------------------------------------

    def _fail(self, e: BaseException, doing: str) -> NoReturn:
        """Raise the mmarchive error for a failed S3 request (``doing``: what was being done)."""
        if isinstance(e, ArchiveError):
            raise e
        head = f"S3 tier {self.name}: cannot {doing} in {self.where}"
        if isinstance(e, ClientError):
            code, status = _client_error_fields(e)
            label = code if code and not code.isdigit() else f"HTTP {status}"
            if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
                raise StorageError(f"{head}: the service is busy or failing ({label}); retry later",
                                   transient=True) from e
            if code == "NoSuchBucket":
                raise StorageError(f"{head}: bucket {self.bucket} does not exist; create it or fix bucket "
                                   f"in [tiers.{self.name}]", transient=False) from e
            if code in _PERMANENT_CODES or status in (401, 403):
                reason, advice = _PERMANENT_CODES.get(code, ("access was refused", _CREDENTIAL_HELP))
                raise StorageError(f"{head}: {reason} ({label}); {advice}", transient=False) from e
            raise StorageError(f"{head}: the service refused the request ({label}: {e}); this is not "
                               "expected to succeed on retry, check the tier's settings",
                               transient=False) from e
        if isinstance(e, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            raise StorageError(f"{head}: no usable credentials ({e}); {_CREDENTIAL_HELP}",
                               transient=False) from e
        if isinstance(e, SSLError):
            raise StorageError(f"{head}: the TLS handshake failed ({e}); check endpoint_url and the "
                               "certificates", transient=False) from e
        if isinstance(e, BotoConnectionError | HTTPClientError | IncompleteReadError | ConnectionError
                      | TimeoutError):
            raise StorageError(f"{head}: the endpoint did not answer or the connection broke ({e}); retry "
                               "later, and check endpoint_url and the network if it persists",
                               transient=True) from e
        if isinstance(e, BotoCoreError):
            raise StorageError(f"{head}: {e}; check the tier's settings", transient=False) from e
        raise e

    def _missing_bucket_check(self, doing: str) -> None:
        """After a HEAD answered 404 (which has no body to say why): fail if the bucket itself is missing."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code, status = _client_error_fields(e)
            if status == 404 or code in ("NoSuchBucket", "NotFound", "404"):
                raise StorageError(f"S3 tier {self.name}: cannot {doing} in {self.where}: bucket "
                                   f"{self.bucket} does not exist; create it or fix bucket in "
                                   f"[tiers.{self.name}]", transient=False) from e
            self._fail(e, doing)
        except Exception as e:
            self._fail(e, doing)

    def _head(self, pack: str, doing: str) -> dict[str, Any] | None:
        """HEAD the pack's object; None when it does not exist (the bucket does)."""
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(pack))
            return head
        except ClientError as e:
            if not _is_not_found(e):
                self._fail(e, doing)
        except Exception as e:
            self._fail(e, doing)
        self._missing_bucket_check(doing)
        return None

    # -- the Tier interface -----------------------------------------------------------------------------

    def reader(self, pack: str, size: int | None = None) -> S3PackFile:
        """Open a stored pack for ranged reads (one HEAD now for its size, unless ``size`` is given)."""
        _check_pack(pack)
        self._check_open()
        if size is not None:
            return S3PackFile(self, pack, size)
        head = self._head(pack, f"open pack {pack}")
        if head is None:
            raise IntegrityError(f"pack {pack} is missing from {self.where}; restore it from a replica or "
                                 "run `mmarchive verify`", pack=pack)
        return S3PackFile(self, pack, int(head["ContentLength"]))

    def size_of(self, pack: str) -> int | None:
        _check_pack(pack)
        self._check_open()
        head = self._head(pack, f"look up pack {pack}")
        return None if head is None else int(head["ContentLength"])

    def remove(self, pack: str) -> None:
        """Delete a pack's object; deleting one that is not there is not an error (S3 answers 204)."""
        _check_pack(pack)
        self._check_open()
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(pack))
        except Exception as e:
            self._fail(e, f"remove pack {pack}")

    def store(self, pack: str, pieces: Iterable[bytes | memoryview], size: int) -> None:
        """Upload a whole pack: one PutObject up to ``multipart_threshold``, else a multipart upload.

        Nothing is visible under the pack's key until the upload completes (S3 replaces an object
        atomically). Memory is bounded by about one part. If the pieces do not add up to ``size``, or
        anything fails (including the pieces' iterator), the multipart upload is aborted and nothing is
        stored; an existing object of that name stays as it was. The stored size is checked with a HEAD.
        """
        _check_pack(pack)
        self._check_open()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(f"pack {pack}: size must be a byte count, not {size!r}")
        if size <= self.multipart_threshold:
            etag, parts = self._put_single(pack, pieces, size), 0
        else:
            etag, parts = self._put_multipart(pack, pieces, size)
        self._verify_stored(pack, size, etag, parts)

    def list(self) -> Iterator[StoredPack]:
        """Every pack under the prefix, page by page (ListObjectsV2); other keys are ignored."""
        self._check_open()
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    name = self._pack_of(str(obj["Key"]))
                    if name is not None:
                        yield StoredPack(name, int(obj["Size"]))
        except Exception as e:
            self._fail(e, "list packs")

    def clean_incomplete(self, older_than_s: float) -> int:
        """Abort multipart uploads under the prefix that were started over ``older_than_s`` ago and
        never completed (a store a crash interrupted); return how many were aborted."""
        self._check_open()
        cutoff = time.time() - older_than_s
        aborted = 0
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            try:
                page = self.client.list_multipart_uploads(**params)
            except Exception as e:
                self._fail(e, "list unfinished uploads")
            for upload in page.get("Uploads", []):
                started = upload.get("Initiated")
                if started is not None and started.timestamp() < cutoff:
                    try:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                    except Exception as e:
                        self._fail(e, f"abort the unfinished upload of {upload['Key']}")
                    aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            params["KeyMarker"] = page.get("NextKeyMarker", "")
            params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            self.client.close()

    # -- internals --------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ArchiveStateError(f"S3 tier {self.name} is closed")

    def _too_much(self, pack: str, seen: int, size: int) -> InvalidInputError:
        return InvalidInputError(f"pack {pack}: the data given to store had "
                                 f"{'more than ' if seen > size else ''}{seen} bytes, not {size}; nothing "
                                 "was stored")

    def _put_single(self, pack: str, pieces: Iterable[bytes | memoryview], size: int) -> str:
        body = bytearray()
        for piece in pieces:
            body += piece
            if len(body) > size:
                raise self._too_much(pack, len(body), size)
        if len(body) != size:
            raise self._too_much(pack, len(body), size)
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self.key(pack), Body=body,
                                          ContentLength=size)
        except Exception as e:
            self._fail(e, f"store pack {pack}")
        return str(resp.get("ETag", ""))

    def _part_size_for(self, size: int) -> int:
        part = self.part_size
        if -(-size // part) > MAX_PARTS:  # a huge pack: grow the parts to fit S3's 10,000
            part = -(-size // MAX_PARTS)
            part = -(-part // MiB) * MiB
        return part

    def _put_multipart(self, pack: str, pieces: Iterable[bytes | memoryview], size: int) -> tuple[str, int]:
        key = self.key(pack)
        doing = f"store pack {pack}"
        part_size = self._part_size_for(size)
        try:
            upload_id = str(self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])
        except Exception as e:
            self._fail(e, doing)
        parts: list[dict[str, Any]] = []
        try:
            buf = bytearray(part_size)
            filled = 0
            seen = 0
            for piece in pieces:
                view = memoryview(piece).cast("B")
                seen += len(view)
                if seen > size:
                    raise self._too_much(pack, seen, size)
                while view:
                    take = min(len(view), part_size - filled)
                    buf[filled:filled + take] = view[:take]
                    filled += take
                    view = view[take:]
                    if filled == part_size:
                        parts.append(self._upload_part(pack, key, upload_id, len(parts) + 1, buf))
                        filled = 0
            if seen != size:
                raise self._too_much(pack, seen, size)
            if filled:
                del buf[filled:]  # the last part, shrunk in place (no copy)
                parts.append(self._upload_part(pack, key, upload_id, len(parts) + 1, buf))
            del buf
            try:
                resp = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                             MultipartUpload={"Parts": parts})
            except ClientError as e:
                # A completion whose answer was lost is retried by botocore and then finds no upload: the
                # object may be complete. The HEAD after the upload decides (size and part count).
                if _client_error_fields(e)[0] != "NoSuchUpload":
                    self._fail(e, doing)
                resp = {}
            except Exception as e:
                self._fail(e, doing)
        except BaseException as e:
            self._abort(upload_id, key, e)
            raise
        return str(resp.get("ETag", "")), len(parts)

    def _upload_part(self, pack: str, key: str, upload_id: str, number: int,
                     body: bytearray) -> dict[str, Any]:
        try:
            resp = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                           Body=body, ContentLength=len(body))
        except Exception as e:
            self._fail(e, f"store pack {pack} (part {number})")
        return {"ETag": resp["ETag"], "PartNumber": number}

    def _abort(self, upload_id: str, key: str, cause: BaseException) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:
            cause.add_note(f"the multipart upload {upload_id} of {key} could not be aborted ({e}); it holds "
                           "space until aborted (a bucket lifecycle rule AbortIncompleteMultipartUpload "
                           "removes such uploads)")

    def _verify_stored(self, pack: str, size: int, etag: str, parts: int) -> None:
        doing = f"check stored pack {pack}"
        head = self._head(pack, doing)
        if head is None:
            raise StorageError(f"S3 tier {self.name}: pack {pack} is not in {self.where} right after it was "
                               "stored; the store is not trusted: store it again", transient=True)
        stored = int(head["ContentLength"])
        if stored != size:
            raise StorageError(f"S3 tier {self.name}: pack {pack} was stored with {stored} bytes, not "
                               f"{size}; another writer may have replaced it: store it again", transient=True)
        got = str(head.get("ETag", "")).strip('"')
        m = _ETAG_MULTIPART_RE.match(got)
        if (parts and m is not None and int(m.group(1)) != parts) or (not parts and m is not None):
            raise StorageError(f"S3 tier {self.name}: pack {pack} has ETag {got}, which does not match the "
                               f"{parts or 'single'}-part upload just made; another writer may have "
                               "replaced it: store it again", transient=True)
        made = etag.strip('"')
        if made and got and made != got:
            raise StorageError(f"S3 tier {self.name}: pack {pack} has ETag {got}, not the {made} of the "
                               "upload just made; another writer may have replaced it: store it again",
                               transient=True)

    def _get_range(self, pack: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a pack (``end`` within its size) by ranged GET."""
        doing = f"read pack {pack} at offset {start}"
        for attempt in range(1, self.max_attempts + 1):
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self.key(pack),
                                              Range=f"bytes={start}-{end - 1}")
            except ClientError as e:
                code, status = _client_error_fields(e)
                if code == "InvalidRange" or status == 416:  # the object shrank under the reader
                    return b""
                if code == "NoSuchKey":
                    raise IntegrityError(f"pack {pack} is missing from {self.where} (it was removed while "
                                         "being read); restore it from a replica or run `mmarchive verify`",
                                         pack=pack, offset=start) from e
                self._fail(e, doing)
            except Exception as e:
                self._fail(e, doing)
            try:
                with closing(resp["Body"]) as body:
                    if int(resp.get("ContentLength", 0)) > end - start:
                        raise StorageError(f"S3 tier {self.name}: cannot {doing} in {self.where}: the "
                                           "endpoint ignored the Range header and sent more than was asked "
                                           "for; use an S3 service that supports ranged GETs",
                                           transient=False)
                    data: bytes = body.read()
                return data
            except (HTTPClientError, IncompleteReadError, ConnectionClosedError, ConnectionError,
                    TimeoutError) as e:
                # botocore retries requests, not a body that breaks off mid-read: retry those here.
                if attempt == self.max_attempts:
                    self._fail(e, doing)
                time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")
