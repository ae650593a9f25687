"""Mutated real files through the whole ingest: no crash, no hang, nothing partial, the index stays whole."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore, IngestStatus
from tests.dicom.testfiles import pydicom_test_files

# Native and pydicom paths: explicit/implicit little endian, encapsulated, big endian, deflated.
_NAMES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb_rle_32bit.dcm",
          "ExplVR_BigEnd.dcm", "image_dfl.dcm", "waveform_ecg.dcm")
SAMPLES = list({p.name: p.read_bytes() for p in pydicom_test_files() if p.name in _NAMES}.values())


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    kind = draw(st.sampled_from(["truncate", "flip", "length", "splice"]))
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "length":  # overwrite 4 bytes somewhere after the preamble with a huge or odd length
        i = draw(st.integers(132, len(data) - 4))
        data[i:i + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x01\x00\x00\x00",
                                              b"\xfe\xff\xdd\xe0"]))
        return bytes(data)
    start = draw(st.integers(0, len(data)))
    return bytes(data[:start]) + draw(st.binary(max_size=64)) + bytes(data[start:])


def test_mutated_files_never_break_ingest_or_the_index() -> None:
    assert len(SAMPLES) == len(_NAMES)
    with tempfile.TemporaryDirectory() as tmp:
        Archive.create(Path(tmp) / "a").close()
        with DicomStore.open(Path(tmp) / "a") as store:
            kept: dict[str, str] = {}
            seen: set[IngestStatus] = set()

            @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
            @given(batch=st.lists(mutated(), min_size=1, max_size=4))
            def ingest_batch(batch: list[bytes]) -> None:
                t = time.monotonic()
                results = list(store.ingest([(f"m{i}", data) for i, data in enumerate(batch)]))
                assert time.monotonic() - t < 10
                assert [r.source for r in results] == [f"m{i}" for i in range(len(batch))]
                for data, r in zip(batch, results, strict=True):
                    seen.add(r.status)
                    if r.status is IngestStatus.FAILED:
                        assert r.error and r.object_id is None
                    else:
                        assert r.status is not IngestStatus.REJECTED and r.object_id
                        kept[r.object_id] = hashlib.sha256(data).hexdigest()

            ingest_batch()
            assert IngestStatus.FAILED in seen and IngestStatus.STORED in seen, seen
            for oid, sha in kept.items():
                assert hashlib.sha256(store.archive.get(oid)).hexdigest() == sha
            assert store.archive.stats().objects == len(kept)
            assert store.archive.verify().ok
            # the catalog holds exactly what was stored, and queries still run
            assert sum(len(store.versions(str(c.metadata["dicom"]["sop"])) and [1])
                       for c in store.archive.changes(limit=10**6)) == len(kept)
            store.query("study", {"PatientName": "*"})
            assert store.sync_catalog() == 0
