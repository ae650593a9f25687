"""The DICOM store over a real archive: ingest of real files, byte-exact retrieval, dedup of pixel data,
duplicate policies, corrections, catalog catch-up, tenants and export."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from mmarchive.archive import Archive
from mmarchive.dicom.store import DicomStore, DuplicatePolicy, IngestStatus
from mmarchive.errors import InvalidInputError, NotFoundError
from tests.dicom.synthetic import ct_file, ct_pixels
from tests.dicom.testfiles import all_test_files

KEPT = (IngestStatus.STORED, IngestStatus.NEW_VERSION, IngestStatus.ALREADY_STORED)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DicomStore]:
    Archive.create(tmp_path / "archive").close()
    with DicomStore.open(tmp_path / "archive") as s:
        yield s


def test_every_real_test_file_is_stored_byte_exact_or_refused_with_a_reason(store: DicomStore) -> None:
    files = all_test_files()
    results = list(store.ingest(files))
    assert [r.source for r in results] == [str(f) for f in files]
    counts = Counter(r.status for r in results)
    assert counts[IngestStatus.STORED] > 120, counts
    for f, r in zip(files, results, strict=True):
        if r.status in KEPT:
            assert r.object_id is not None
            got = store.archive.get(r.object_id)
            assert hashlib.sha256(got).digest() == hashlib.sha256(f.read_bytes()).digest(), f
        else:
            assert r.status is IngestStatus.FAILED and r.error, r
    failed = {Path(r.source).name for r in results if r.status is IngestStatus.FAILED}
    # truncated and non-DICOM files among the test files are refused, and so are files without the
    # identifiers the catalog needs (DICOMDIRs, datasets lacking a Study Instance UID)
    assert {"MR_truncated.dcm", "rtplan_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
            "README", "DICOMDIR", "UN_sequence.dcm"} <= failed
    assert len(failed) < 30
    stored_ids = {r.object_id for r in results if r.status in KEPT}
    assert store.archive.stats().objects == len(stored_ids)
    assert store.archive.verify().ok


def test_resend_costs_nothing_and_is_reported_as_already_stored(store: DicomStore) -> None:
    files = all_test_files()[:60]
    first = list(store.ingest(files))
    before = store.archive.stats()
    again = list(store.ingest(files))
    for a, b in zip(first, again, strict=True):
        if a.status in KEPT:
            assert b.status is IngestStatus.ALREADY_STORED and b.object_id == a.object_id
        else:
            assert b.status is a.status
    assert store.archive.stats() == before


def test_same_pixels_under_another_header_cost_only_the_header(store: DicomStore) -> None:
    pixels = ct_pixels(256, 256, seed=7)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    original = ct_file(patient_name="DOE^JOHN", study_uid=study, series_uid=series, sop_uid=sop,
                       pixels=pixels, rows=256, cols=256)
    deidentified = ct_file(patient_name="ANON^1", patient_id="RESEARCH-1", study_uid=study,
                           series_uid=series, sop_uid=generate_uid(), pixels=pixels, rows=256, cols=256)
    [r1] = store.ingest([("original", original)])
    before = store.archive.stats()
    [r2] = store.ingest([("deidentified", deidentified)])
    after = store.archive.stats()
    assert r1.status is r2.status is IngestStatus.STORED
    header = len(deidentified) - len(pixels)
    assert after.unique_bytes - before.unique_bytes <= header
    assert store.archive.get(r2.object_id or "") == deidentified


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_duplicate_policies(tmp_path: Path, policy: DuplicatePolicy) -> None:
    Archive.create(tmp_path / "a").close()
    sop, study, series = generate_uid(), generate_uid(), generate_uid()
    first = ct_file(sop_uid=sop, study_uid=study, series_uid=series, patient_name="FIRST^SEND")
    second = ct_file(sop_uid=sop, study_uid=study, series_uid=series, patient_name="SECOND^SEND")
    with DicomStore.open(tmp_path / "a", policy=policy) as store:
        [r1] = store.ingest([("first", first)])
        [r2] = store.ingest([("second", second)])
        versions = store.versions(sop)
        current = store.retrieve(sop)
        if policy is DuplicatePolicy.REJECT:
            assert r2.status is IngestStatus.REJECTED and r2.error and "reject" in r2.error
            assert current == first and len(versions) == 1
            # the file is not stored, but the refusal is, durably, in the archive
            [decision] = store.decisions(sop_uid=sop)
            assert decision["decision"] == "rejected" and decision["source"] == "second"
            assert decision["current"] == r1.object_id and decision["offered_size"] == len(second)
            assert store.archive.stats().objects == 2  # the first file and the decision record
            assert not store.archive.exists(decision["offered"])
            assert store.rebuild_catalog() == 1  # the record is not an instance
            assert store.catalog.counts("default")["instances"] == 1
        elif policy is DuplicatePolicy.VERSION:
            assert r2.status is IngestStatus.NEW_VERSION
            assert current == second
            assert [v.current for v in versions] == [False, True]
            assert store.retrieve(sop, version=1) == first  # the earlier version stays retrievable
        else:
            assert r2.status is IngestStatus.REPLACED
            assert current == second
            assert [v.reason for v in versions] == ["initial", "replace"]  # the decision is recorded
            assert not store.archive.exists(r1.object_id or "")
        found = store.query("instance", {"SOPInstanceUID": sop})
        assert len(found) == 1


def test_duplicates_within_one_call_follow_the_policy(store: DicomStore) -> None:
    sop = generate_uid()
    a = ct_file(sop_uid=sop, patient_name="A^A")
    b = ct_file(sop_uid=sop, patient_name="B^B")
    results = list(store.ingest([("a", a), ("b", b), ("a again", a)]))
    assert [r.status for r in results] == [IngestStatus.STORED, IngestStatus.NEW_VERSION,
                                           IngestStatus.ALREADY_STORED]
    assert store.retrieve(sop) == b


def test_correction_writes_new_header_versions_and_keeps_the_old(store: DicomStore) -> None:
    study, series = generate_uid(), generate_uid()
    files = [ct_file(patient_id="OLD-ID", study_uid=study, series_uid=series, instance_number=i,
                     rows=128, cols=128) for i in range(1, 6)]
    list(store.ingest([(f"f{i}", f) for i, f in enumerate(files)]))
    before = store.archive.stats()
    results = store.correct(study, {"PatientID": "NEW-ID", "PatientName": "MERGED^PATIENT"})
    assert [r.status for r in results] == [IngestStatus.NEW_VERSION] * 5
    after = store.archive.stats()
    # only headers were written: the pixel values are shared with the first versions
    assert after.unique_bytes - before.unique_bytes < 5 * 2000
    assert store.query("study", {"PatientID": "OLD-ID"}) == []
    [hit] = store.query("study", {"PatientID": "NEW-ID"})
    assert hit["0020000D"]["Value"] == [study]
    assert store.query("study", {"PatientName": "merged*"}, fuzzy=False)
    for entry in store.instances(study):
        versions = store.versions(entry.sop_instance_uid)
        assert [v.reason for v in versions] == ["initial", "correction"]
        old = store.retrieve(entry.sop_instance_uid, version=1)
        new = store.retrieve(entry.sop_instance_uid)
        assert old in files
        assert old[-128 * 128 * 2:] == new[-128 * 128 * 2:]
    with pytest.raises(InvalidInputError):
        store.correct(study, {"NotAKeyword": "x"})
    with pytest.raises(NotFoundError):
        store.correct(generate_uid(), {"PatientID": "x"})


def test_catalog_catches_up_from_the_archive_after_losing_updates(store: DicomStore, tmp_path: Path) -> None:
    files = all_test_files()[:50]
    list(store.ingest(files))
    expected = store.catalog.counts("default")
    studies = store.query("study", {}, include="all")
    store.catalog.clear()
    assert store.catalog.counts("default")["instances"] == 0
    assert store.sync_catalog() > 0
    assert store.catalog.counts("default") == expected
    assert store.query("study", {}, include="all") == studies
    assert store.sync_catalog() == 0


def test_objects_stored_through_the_plain_archive_api_reach_the_catalog(tmp_path: Path) -> None:
    Archive.create(tmp_path / "a").close()
    with DicomStore.open(tmp_path / "a") as store:
        [r] = store.ingest([("x", ct_file())])
        store.archive.delete(r.object_id or "")
        assert store.sync_catalog() == 1
        assert store.catalog.counts("default")["instances"] == 0


def test_tenants_never_see_each_other(store: DicomStore) -> None:
    sop = generate_uid()
    [r] = store.ingest([("x", ct_file(sop_uid=sop, patient_id="SECRET"))], tenant="trust-a")
    assert r.status is IngestStatus.STORED
    assert store.query("study", {"PatientID": "SECRET"}, tenant="trust-b") == []
    assert store.query("study", {"PatientID": "SECRET"}, tenant="trust-a")
    with pytest.raises(NotFoundError):
        store.retrieve(sop, tenant="trust-b")
    [again] = store.ingest([("x", ct_file(sop_uid=sop, patient_id="SECRET"))], tenant="trust-b")
    assert again.status is IngestStatus.STORED  # no dedup across tenants, no leak of existence


def test_export_writes_the_stored_files(store: DicomStore, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    files = [ct_file(study_uid=study, series_uid=series, instance_number=i) for i in range(3)]
    list(store.ingest([(str(i), f) for i, f in enumerate(files)]))
    written = store.export(tmp_path / "out", study_uid=study)
    assert sorted(p.read_bytes() for p in written) == sorted(files)
    assert all(p.parent.name == series and p.parent.parent.name == study for p in written)
    with pytest.raises(NotFoundError):
        store.export(tmp_path / "out", study_uid=generate_uid())


def test_current_finds_one_instance_only_in_its_own_study_and_series(store: DicomStore) -> None:
    study, series, other = generate_uid(), generate_uid(), generate_uid()
    files = [ct_file(study_uid=study, series_uid=series, instance_number=i) for i in range(3)]
    results = list(store.ingest([(str(i), f) for i, f in enumerate(files)]))
    sop = results[1].sop_instance_uid
    assert sop is not None
    assert [e.sop_instance_uid for e in store.current(study, series_uid=series, sop_uid=sop)] == [sop]
    assert [e.sop_instance_uid for e in store.current(study, sop_uid=sop)] == [sop]
    assert store.current(study, series_uid=other, sop_uid=sop) == []
    assert store.current(other, sop_uid=sop) == []
    assert store.current(study, sop_uid=sop, tenant="trust-b") == []
    assert len(store.current(study)) == 3 and len(store.current(study, series_uid=series)) == 3


def test_bad_input_is_reported_per_file_and_the_batch_goes_on(store: DicomStore, tmp_path: Path) -> None:
    good = ct_file()
    (tmp_path / "notes.txt").write_text("not dicom")
    results = list(store.ingest([("good", good), tmp_path / "notes.txt", tmp_path / "missing.dcm",
                                 ("truncated", good[:300]), ("empty", b"")]))
    assert [r.status for r in results] == [IngestStatus.STORED] + [IngestStatus.FAILED] * 4
    assert "cannot read" in (results[2].error or "")
    assert all(r.error for r in results[1:])
    assert store.archive.stats().objects == 1


def test_series_metadata_comes_from_headers_alone(store: DicomStore) -> None:
    study, series = generate_uid(), generate_uid()
    files = [ct_file(study_uid=study, series_uid=series, instance_number=i, rows=256, cols=256)
             for i in range(1, 4)]
    list(store.ingest([(str(i), f) for i, f in enumerate(files)]))
    reads: list[int] = []
    fetch = store.archive._fetch_chunk

    def counting_fetch(tenant: str, cid: bytes, n: int) -> bytes:
        reads.append(n)
        return fetch(tenant, cid, n)

    store.archive._fetch_chunk = counting_fetch  # type: ignore[method-assign,assignment]
    meta = store.metadata(study, series_uid=series)
    assert [m["00200013"]["Value"] for m in meta] == [[1], [2], [3]]
    assert all(m["0020000E"]["Value"] == [series] for m in meta)
    assert all("7FE00010" not in m for m in meta)  # no pixel data
    assert reads and max(reads) < 2000  # only header pieces were read, never the 128 KiB of pixels
    with pytest.raises(NotFoundError):
        store.metadata(generate_uid())
    sop = meta[1]["00080018"]["Value"][0]
    assert store.metadata(study, series_uid=series, sop_uid=sop) == [meta[1]]
    assert store.metadata(study, sop_uid=sop) == [meta[1]]
    with pytest.raises(NotFoundError, match="instance"):
        store.metadata(study, sop_uid=generate_uid())


def test_duplicate_policy_comes_from_the_archive_config(tmp_path: Path) -> None:
    from mmarchive.config import ArchiveConfig

    Archive.create(tmp_path / "a", ArchiveConfig(layers={"dicom": {"on_duplicate": "reject"}})).close()
    text = (tmp_path / "a" / "mmarchive.toml").read_text()
    assert '[layers.dicom]\non_duplicate = "reject"' in text
    sop = generate_uid()
    with DicomStore.open(tmp_path / "a") as store:
        assert store.policy is DuplicatePolicy.REJECT
        list(store.ingest([("a", ct_file(sop_uid=sop, patient_name="A^A"))]))
        [second] = store.ingest([("b", ct_file(sop_uid=sop, patient_name="B^B"))])
        assert second.status is IngestStatus.REJECTED
    with DicomStore.open(tmp_path / "a", policy=DuplicatePolicy.VERSION) as store:  # an override
        [third] = store.ingest([("b", ct_file(sop_uid=sop, patient_name="C^C"))])
        assert third.status is IngestStatus.NEW_VERSION
    Archive.create(tmp_path / "bad", ArchiveConfig(layers={"dicom": {"on_duplicat": "x"}})).close()
    with pytest.raises(InvalidInputError, match="unknown keys"):
        DicomStore.open(tmp_path / "bad")


def test_a_uid_that_cannot_key_the_catalog_is_refused_before_storing(store: DicomStore) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = ct_file(study_uid="1." * 40 + "1")  # 81 characters: longer than a UID may be
    [result] = store.ingest([("long-uid", bad)])
    assert result.status is IngestStatus.FAILED and "not a usable UID" in (result.error or "")
    assert store.archive.stats().objects == 0
