"""The lifecycle settings in force: the archive's policy, legal holds, audit log, and the deletion check.

:class:`LifecycleGuard` is what an open archive consults before it deletes an object and informs after: a
deletion that a legal hold or a retention rule forbids is refused with the error that names the hold or the
rule (and the refusal is audited); a deletion that happens is appended to the audit log with who asked and
why. The policy in force is the archive's own: ``[lifecycle] policy_file`` (relative to the archive
directory) or the ``[[lifecycle.rule]]`` tables of ``mmarchive.toml``; ``mmarchive lifecycle --policy FILE``
may plan with another one, but deletions are always checked against the archive's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmarchive.errors import InvalidInputError, RetentionError
from mmarchive.lifecycle.audit import AuditEntry, AuditLog, current_user
from mmarchive.lifecycle.facts import FactsReader, ObjectFacts
from mmarchive.lifecycle.holds import HoldRegistry
from mmarchive.lifecycle.policy import Policy

#: Keys of the ``[lifecycle]`` table of ``mmarchive.toml``.
LIFECYCLE_KEYS = ("rule", "policy_file", "move_grace_seconds")


def load_policy(archive_dir: Path, table: Mapping[str, Any], tiers: list[str],
                override: str | Path | None = None) -> Policy:
    """The policy to apply: ``override`` (a policy file), else the archive's own; checked against tiers."""
    unknown = set(table) - set(LIFECYCLE_KEYS)
    if unknown:
        raise InvalidInputError(f"{archive_dir / 'mmarchive.toml'} [lifecycle]: unknown keys "
                                f"{sorted(unknown)}; known keys are {', '.join(LIFECYCLE_KEYS)}")
    if override is not None:
        policy = Policy.from_toml(override)
    elif "policy_file" in table:
        if "rule" in table:
            raise InvalidInputError(f"{archive_dir / 'mmarchive.toml'} [lifecycle]: give rules or "
                                    "policy_file, not both")
        path = Path(str(table["policy_file"]))
        policy = Policy.from_toml(path if path.is_absolute() else archive_dir / path)
    else:
        policy = Policy.from_dict({"rule": table.get("rule", [])},
                                  source=f"{archive_dir / 'mmarchive.toml'} [lifecycle]")
    policy.validate_tiers(tiers)
    return policy


class LifecycleGuard:
    """The policy, holds and audit log of one archive, and the deletion check built from them."""

    def __init__(self, archive_dir: Path, table: Mapping[str, Any], tiers: list[str]) -> None:
        self.archive_dir = archive_dir
        self.policy = load_policy(archive_dir, table, tiers)
        self.audit = AuditLog(archive_dir)
        self.holds = HoldRegistry(archive_dir, self.audit)
        self.facts = FactsReader()

    def object_facts(self, tenant: str, object_id: str, size: int, created_ns: int, metadata_json: bytes,
                     tier: str, last_access: datetime | None = None) -> ObjectFacts:
        return self.facts.facts(tenant, object_id, size, created_ns, metadata_json, tier, last_access)

    @contextlib.contextmanager
    def deleting(self, facts: ObjectFacts, *, actor: str | None, reason: str | None,
                 action: str = "object.delete", details: Mapping[str, Any] | None = None
                 ) -> Iterator[None]:
        """Check, then let the caller delete inside the block (holds cannot change meanwhile); audit it.

        Raises :class:`RetentionError` (audited as ``delete.refused``) when a hold or retention forbids
        the deletion. The deletion is audited once the block has completed without error.
        """
        who = actor or current_user()
        with self.holds.frozen() as holds:
            refusal = holds.refusal(facts)
            if refusal is None:
                try:
                    self.policy.check_delete(facts, datetime.now(UTC))
                except RetentionError as e:
                    refusal = e
            if refusal is not None:
                self.audit.append(AuditEntry("delete.refused", who, facts.object_id, reason or "",
                                             facts.tenant, {"refusal": str(refusal)}))
                raise refusal
            yield
        self.audit.append(AuditEntry(action, who, facts.object_id, reason or "", facts.tenant,
                                     {"size": facts.size, "kind": facts.kind, **(details or {})}))

    def close(self) -> None:
        self.holds.close()
        self.audit.close()
