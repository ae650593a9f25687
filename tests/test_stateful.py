"""A hypothesis state machine drives an archive and a dict model side by side, with reopen, gc and reindex."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import blake3
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from mmarchive.archive import Archive
from mmarchive.errors import NotFoundError
from tests.conftest import TINY

TENANTS = st.sampled_from(["alpha", "beta"])
# Payloads built from a few shared blocks, so that objects share chunks and dedup is exercised.
BLOCKS = [bytes([i]) * 3000 + bytes(range(256)) * 4 for i in range(6)]
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=12).map(b"".join),
    st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4).map(lambda bs: b"".join(bs) + b"!"),
)


class ArchiveMachine(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mma-state-"))
        self.archive = Archive.create(self.dir / "a", TINY)
        self.model: dict[tuple[str, str], bytes] = {}
        self.meta: dict[tuple[str, str], dict[str, int]] = {}

    def teardown(self) -> None:
        self.archive.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=ids, tenant=TENANTS, data=PAYLOADS, tag=st.none() | st.integers(0, 3))
    def put(self, tenant: str, data: bytes, tag: int | None) -> tuple[str, str]:
        meta = None if tag is None else {"tag": tag}
        info = self.archive.put(data, tenant=tenant, metadata=meta)
        key = (tenant, info.id)
        assert info.id == blake3.blake3(data).hexdigest()
        existed = key in self.model and (meta is None or self.meta.get(key) == meta)
        assert info.already_stored == existed
        self.model[key] = data
        if meta is not None or key not in self.meta:
            self.meta[key] = meta or {}
        return key

    @rule(target=ids, tenant=TENANTS, blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=6),
          head=st.binary(max_size=50))
    def put_cut(self, tenant: str, blocks: list[bytes], head: bytes) -> tuple[str, str]:
        """An object cut by the caller at its block edges: the blocks are shared pieces."""
        data = head + b"".join(blocks)
        cuts = tuple(len(head) + sum(len(b) for b in blocks[:i]) for i in range(len(blocks)))
        info = self.archive.put(data, tenant=tenant, cuts=cuts)
        key = (tenant, info.id)
        assert info.already_stored == (key in self.model)
        self.model[key] = data
        self.meta.setdefault(key, {})
        return key

    @rule(tenant=TENANTS, batch=st.lists(PAYLOADS, max_size=8))
    def put_many(self, tenant: str, batch: list[bytes]) -> None:
        infos = list(self.archive.put_many(batch, tenant=tenant))
        assert [i.size for i in infos] == [len(b) for b in batch]
        for data, info in zip(batch, infos, strict=True):
            self.model[(tenant, info.id)] = data
            self.meta.setdefault((tenant, info.id), {})

    @rule(key=ids)
    def delete(self, key: tuple[str, str]) -> None:
        tenant, oid = key
        if key in self.model:
            self.archive.delete(oid, tenant=tenant)
            del self.model[key]
            del self.meta[key]
        else:
            try:
                self.archive.delete(oid, tenant=tenant)
            except NotFoundError:
                pass
            else:
                raise AssertionError("deleting a deleted object succeeded")

    @rule(key=ids)
    def get(self, key: tuple[str, str]) -> None:
        tenant, oid = key
        if key in self.model:
            assert self.archive.get(oid, tenant=tenant) == self.model[key]
            assert self.archive.stat(oid, tenant=tenant).metadata == self.meta[key]
        else:
            assert not self.archive.exists(oid, tenant=tenant)

    @rule()
    def reopen(self) -> None:
        self.archive.close()
        self.archive = Archive.open(self.dir / "a")

    @rule()
    def gc(self) -> None:
        self.archive.gc(repack_below=0.99)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def reindex(self) -> None:
        before = self.archive.stats()
        listing = {t: sorted(i.id for i in self.archive.list(tenant=t)) for t in ("alpha", "beta")}
        self.archive.reindex()
        after = self.archive.stats()
        assert (after.objects, after.logical_bytes, after.unique_bytes, after.stored_bytes) == (
            before.objects, before.logical_bytes, before.unique_bytes, before.stored_bytes)
        assert {t: sorted(i.id for i in self.archive.list(tenant=t)) for t in ("alpha", "beta")} == listing

    @invariant()
    def listing_and_stats_match_model(self) -> None:
        for tenant in ("alpha", "beta"):
            listed = {i.id: i.size for i in self.archive.list(tenant=tenant)}
            expected = {oid: len(d) for (t, oid), d in self.model.items() if t == tenant}
            assert listed == expected
            stats = self.archive.stats(tenant=tenant)
            assert stats.objects == len(expected)
            assert stats.logical_bytes == sum(expected.values())


TestArchiveMachine = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")(
    ArchiveMachine.TestCase)
TestArchiveMachine.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)


def test_verify_is_clean_after_a_random_history(tmp_path: Path) -> None:
    with Archive.create(tmp_path / "a", TINY) as a:
        infos = [a.put(b"".join(BLOCKS[: i % 6 + 1]) + bytes([i])) for i in range(40)]
        for i in infos[::3]:
            a.delete(i.id)
        a.gc()
        report = a.verify()
        assert report.ok, report
        assert not report.orphaned
        assert report.objects_checked == len(infos) - len(infos[::3])
