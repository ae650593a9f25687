"""WADO-RS metadata is made once per stored object and then served from memory: the same DICOM JSON as
made fresh, with BulkDataURIs of the request at hand, and bounded in bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore
from mmarchive.dicom.web import app as app_module
from mmarchive.dicom.web import bulkdata
from mmarchive.dicom.web.app import create_app
from mmarchive.dicom.web.metadata_cache import MetadataCache
from tests.dicom.synthetic import ct_file


def test_the_cache_makes_each_object_once_and_keeps_within_its_bytes() -> None:
    cache = MetadataCache(max_bytes=300)
    made: list[str] = []

    def make(name: str) -> Any:
        def build(bulk_url: str) -> dict[str, Any]:
            made.append(name)
            return {"7FE00010": {"vr": "OW", "BulkDataURI": f"{bulk_url}/7FE00010"}, "pad": "x" * 50}
        return build

    first = cache.text("t", "a", make("a"))
    assert cache.text("t", "a", make("a")) == first and made == ["a"]
    assert cache.text("other-tenant", "a", make("a")) == first and made == ["a", "a"]
    for name in "bcd":
        cache.text("t", name, make(name))
    assert cache.held_bytes <= 300
    cache.text("t", "a", make("a"))  # the oldest went out: made again
    assert made.count("a") == 3
    shown = json.loads(cache.render(first, 'http://h/x"y\\z'))
    assert shown["7FE00010"]["BulkDataURI"] == 'http://h/x"y\\z/7FE00010'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DicomStore]:
    Archive.create(tmp_path / "archive").close()
    with DicomStore.open(tmp_path / "archive") as s:
        files = [ct_file(study_uid="1.2.3", series_uid="1.2.3.4", instance_number=i) for i in range(4)]
        list(s.ingest([(str(i), f) for i, f in enumerate(files)]))
        yield s


def _get(app: Starlette, *paths: str) -> list[httpx.Response]:
    async def fetch() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://archive.test") as client:
            return [await client.get(p) for p in paths]
    return asyncio.run(fetch())


def test_served_metadata_equals_the_uncached_and_is_made_once(store: DicomStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = bulkdata.instance_json

    def counted(*args: Any) -> dict[str, Any]:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(app_module, "instance_json", counted)
    web = create_app(store)  # one application (one cache) reached through two mounts
    both = Starlette(routes=[Mount("/a", app=web), Mount("/b", app=web)])
    url = "/dicom-web/studies/1.2.3/series/1.2.3.4/metadata"
    first, again, other = _get(both, "/a" + url, "/a" + url, "/b" + url)
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/dicom+json")
    assert len(calls) == 4  # made once, then served from memory
    [uncached] = _get(Starlette(routes=[Mount("/a", app=create_app(store, metadata_cache_bytes=0))]),
                      "/a" + url)
    assert len(calls) == 8
    assert again.json() == first.json() == uncached.json()
    uris = [i["7FE00010"]["BulkDataURI"] for i in first.json()]
    assert all(u.startswith("http://archive.test/a/dicom-web/studies/1.2.3/series/1.2.3.4/instances/")
               for u in uris)
    assert [i["7FE00010"]["BulkDataURI"] for i in other.json()] == [u.replace("/a/", "/b/", 1) for u in uris]
