"""The WADO-RS metadata of stored instances, kept in memory as DICOM JSON text once it has been made.

Making an instance's metadata means reading its header piece and converting every element with pydicom
(about 5 ms for a CT image); a viewer asks for a series' metadata each time it opens it. An object's
bytes never change (its id is their hash), so its metadata never goes stale: :class:`MetadataCache`
keeps the JSON text of each object it has made, least recently used first out beyond ``max_bytes``, with
the instance's bulk data URL left as a token that :meth:`MetadataCache.render` replaces with the URL of
the request at hand (the same instance is reached through other hosts, mount points and proxies).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Default bytes of JSON text the cache of one application keeps.
DEFAULT_MAX_BYTES = 64 << 20


class MetadataCache:
    """Instance metadata as JSON text by (tenant, object id), bounded in bytes; thread-safe."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        #: Stands for the instance's bulk data URL in the kept text (unguessable, so no value holds it).
        self.token = f"mmarchive-bulkdata-{secrets.token_hex(12)}"
        self._texts: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def text(self, tenant: str, object_id: str, make: Callable[[str], dict[str, Any]]) -> str:
        """The JSON text of one instance's metadata; ``make(bulk_url)`` builds it when it is not kept."""
        key = (tenant, object_id)
        with self._lock:
            found = self._texts.get(key)
            if found is not None:
                self._texts.move_to_end(key)
                return found
        made = json.dumps(make(self.token), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        if len(made) <= self.max_bytes:
            with self._lock:
                if key not in self._texts:
                    self._texts[key] = made
                    self._bytes += len(made)
                while self._bytes > self.max_bytes:
                    _key, dropped = self._texts.popitem(last=False)
                    self._bytes -= len(dropped)
        return made

    def render(self, text: str, bulk_url: str) -> str:
        """``text`` with its bulk data URL token replaced by ``bulk_url`` (escaped for JSON)."""
        return text.replace(self.token, json.dumps(bulk_url, ensure_ascii=False)[1:-1])

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return self._bytes
