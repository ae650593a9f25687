"""The lifecycle policy: parsing and refusals, matching on every dimension, retention, expiry, moves, dates.

The examples pin the behaviour the docs promise (docs/lifecycle.md, whose example policy is parsed here);
the properties check the safety rules on generated policies and objects: combining rules never shortens
retention, nothing may expire while retained, and :meth:`Policy.next_changes` agrees with
:meth:`Policy.decide` at every instant of the horizon.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmarchive.errors import InvalidInputError, RetentionError
from mmarchive.lifecycle.facts import OBJECT_KINDS, ObjectFacts
from mmarchive.lifecycle.policy import (
    FOREVER,
    Decision,
    Policy,
    TierOrder,
    add_months,
    age_on,
    anniversary,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def facts(**kw: Any) -> ObjectFacts:
    base: dict[str, Any] = dict(tenant="trust-a", object_id="ab" * 32, kind="dicom", size=1000,
                                ingested=datetime(2024, 5, 2, 10, 0, tzinfo=UTC), tier="ssd")
    base.update(kw)
    return ObjectFacts(**base)


def policy(*rules: dict[str, Any]) -> Policy:
    return Policy.from_dict({"rule": list(rules)}, source="p.toml")


def rule(name: str = "r", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    out.update(kw)
    if not any(k in out for k in ("move", "retain")):
        out["retain"] = {"days": 1, "since": "ingest"}
    return out


def docs_policy() -> Policy:
    text = DOCS.read_text()
    block = text.split("### A complete example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    return Policy.from_dict(tomllib.loads(block), source="docs/lifecycle.md")


def ct(**kw: Any) -> ObjectFacts:
    return facts(modality="CT", study_date=date(2024, 5, 1), **kw)


# -- parsing ------------------------------------------------------------------------------------------------


def test_docs_example_parses_and_reads_as_documented() -> None:
    p = docs_policy()
    assert [r.name for r in p.rules] == ["litigation", "ct-mr-10y-or-28", "children",
                                         "mammography-before-2015", "photos-and-videos", "dicom-default"]
    p.validate_tiers(["ssd", "disk", "cold"])
    adult = ct(patient_birth_date=date(1984, 3, 3))
    d = p.decide(adult, datetime(2024, 7, 29, 23, 59, tzinfo=UTC))
    assert d.tier is None
    d = p.decide(adult, datetime(2024, 7, 30, tzinfo=UTC))
    assert (d.tier, d.tier_rule) == ("disk", "ct-mr-10y-or-28")
    assert (d.retain_until, d.retain_rules, d.expires_on) == (date(2034, 5, 1), ("ct-mr-10y-or-28",),
                                                             date(2034, 5, 2))
    child = ct(patient_birth_date=date(2019, 1, 15))
    assert p.decide(child, NOW).retain_until == date(2047, 1, 15)
    mammo = facts(modality="MG", study_date=date(2012, 3, 4), patient_birth_date=date(1960, 1, 1))
    d = p.decide(mammo, NOW)
    assert (d.retain_until, d.retain_rules, d.expire_rule) == (date(2027, 3, 4), ("mammography-before-2015",),
                                                              "dicom-default")
    assert not d.may_expire and p.decide(mammo, datetime(2027, 3, 5, tzinfo=UTC)).may_expire


def test_docs_refusal_examples_are_the_real_messages() -> None:
    p = docs_policy()
    text = DOCS.read_text()
    with pytest.raises(RetentionError) as e:
        p.check_delete(ct(object_id="3f9c…", patient_birth_date=date(2002, 2, 12)), NOW)
    assert str(e.value) in text
    with pytest.raises(RetentionError) as e:
        p.check_delete(facts(object_id="51d0…", modality="US", study_date=date(2024, 5, 1)), NOW)
    assert str(e.value) in text


def test_the_issue_example_message() -> None:
    p = policy(rule("ct-10y-or-28", match={"modality": "CT"},
                    retain={"years": 10, "since": "study_date", "until_patient_age": 28, "combine": "later"}))
    d = p.decide(ct(patient_birth_date=date(2002, 2, 12)), NOW)
    assert d.holding_reason == ("retained until 2034-05-01 by rule 'ct-10y-or-28' (10 years after the study "
                                "date 2024-05-01, at least until the patient turns 28 on 2030-02-12)")


def test_toml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(DOCS.read_text().split("```toml", 1)[1].split("```", 1)[0])
    p = Policy.from_toml(path)
    assert p.source == str(path)
    again = tmp_path / "again.toml"
    again.write_text(p.to_toml())
    q = Policy.from_toml(again)
    assert q.to_dict() == p.to_dict() and q.digest == p.digest
    assert Policy.from_dict(p.to_dict()).to_dict() == p.to_dict()
    prov = p.provenance()
    assert prov["source"] == str(path) and prov["digest"] == p.digest and len(prov["rule"]) == 6
    assert p.tiers == {"disk", "cold"}
    # Dates are rendered as ISO strings whichever way they were written.
    assert p.to_dict()["rule"][3]["match"]["study_before"] == "2015-01-01"


def test_to_toml_escapes_strings() -> None:
    p = policy(rule("x", description='a "quoted"\\ line\nand\x7f more é'))
    assert Policy.from_dict(tomllib.loads(p.to_toml())).rules[0].description == p.rules[0].description


def test_empty_policy_decides_nothing() -> None:
    p = Policy.from_dict({})
    assert p.decide(facts(), NOW) == Decision() and p.next_changes(facts(), NOW, 365) == ()
    p.check_delete(facts(), NOW)


BAD: list[tuple[Any, str]] = [
    ({"rules": []}, "p.toml: unknown keys ['rules']"),
    ({"rule": {"name": "x"}}, "written [[rule]]"),
    ({"rule": [{"retain": {"forever": True}}]}, "rule #1: name: every rule needs a name"),
    ({"rule": [{"name": "a b", "retain": {"forever": True}}]}, "rule #1: name:"),
    ({"rule": [rule("x"), rule("y"), rule("x")]}, "rule #3: name 'x' is already the name of rule #1"),
    ({"rule": [rule("x", when={})]}, "rule 'x': when: unknown key"),
    ({"rule": [rule("x", description=3)]}, "rule 'x': description: must be a string"),
    ({"rule": [rule("x", match="CT")]}, "rule 'x': match: must be a table"),
    ({"rule": [rule("x", match={"modalities": "CT"})]}, "rule 'x': match.modalities: unknown key"),
    ({"rule": [rule("x", match={"tenant": 5})]}, "match.tenant: must be a non-empty string or a list"),
    ({"rule": [rule("x", match={"tenant": []})]}, "match.tenant: must be a non-empty string or a list"),
    ({"rule": [rule("x", match={"modality": ["CT", 3]})]}, "match.modality: must be"),
    ({"rule": [rule("x", match={"kind": "image"})]}, "match.kind: unknown kind 'image'; kinds are dicom"),
    ({"rule": [rule("x", match={"study_before": "2015-13-01"})]}, "match.study_before: must be a date"),
    ({"rule": [rule("x", match={"study_before": 2015})]}, "match.study_before: must be a date"),
    ({"rule": [rule("x", match={"ingested_from": datetime(2015, 1, 1, tzinfo=UTC)})]},
     "match.ingested_from: must be a date, not a date and time (2015-01-01T00:00:00+00:00); write "
     "ingested_from = 2015-01-01"),
    ({"rule": [rule("x", match={"study_from": "2015-01-01", "study_before": "2015-01-01"})]},
     "match.study_before: 2015-01-01 is not after study_from = 2015-01-01"),
    ({"rule": [rule("x", match={"accessed_older_than_days": -1})]},
     "match.accessed_older_than_days: must be between 0 and 36600 days, not -1"),
    ({"rule": [rule("x", match={"accessed_older_than_days": True})]}, "must be a whole number of days"),
    ({"rule": [rule("x", match={"patient_age_at_study_below": 18, "patient_age_at_study_at_least": 18})]},
     "match.patient_age_at_study_below: 18 is not above patient_age_at_study_at_least = 18"),
    ({"rule": [rule("x", match={"patient_age_at_study_below": 151})]}, "between 0 and 150 years"),
    ({"rule": [rule("x", move="disk")]}, "rule 'x': move: must be a list of steps"),
    ({"rule": [rule("x", move=[])]}, "rule 'x': move: must be a list of steps"),
    ({"rule": [rule("x", move=[{"to": "disk", "after_days": 9}])]}, "move[1].since: missing"),
    ({"rule": [rule("x", move=[{"to": "disk", "after_days": 9, "since": "ingest", "tier": 1}])]},
     "move[1].tier: unknown key"),
    ({"rule": [rule("x", move=[{"to": "disk", "after_days": 9, "since": "ingested"}])]},
     "rule 'x': move[1].since: must be one of 'study_date', 'ingest', 'last_access', not 'ingested'"),
    ({"rule": [rule("x", move=[{"to": "disk", "after_days": -9, "since": "ingest"}])]},
     "move[1].after_days: must be between 0 and 36600 days, not -9"),
    ({"rule": [rule("x", move=[{"to": "disk", "after_days": 1.5, "since": "ingest"}])]},
     "move[1].after_days: must be a whole number of days"),
    ({"rule": [rule("x", move=[{"to": "", "after_days": 1, "since": "ingest"}])]},
     "move[1].to: must be a tier"),
    ({"rule": [rule("x", move=[{"to": "disk", "after_days": 9, "since": "ingest"},
                               {"to": "cold", "after_days": 9, "since": "ingest"}])]},
     "move[2]: move[1] is also due 9 days after ingest"),
    ({"rule": [rule("x", retain={})]}, "rule 'x': retain: must be a table like"),
    ({"rule": [rule("x", retain={"year": 10, "since": "ingest"})]}, "retain.year: unknown key"),
    ({"rule": [rule("x", retain={"forever": False})]},
     "retain.forever: write forever = true, or leave it out"),
    ({"rule": [rule("x", retain={"forever": True, "years": 1})]},
     "forever = true stands alone; remove years"),
    ({"rule": [rule("x", retain={"years": 10})]}, "retain.since: a retention period counts from"),
    ({"rule": [rule("x", retain={"years": 10, "since": "last_access"})]}, "retain.since:"),
    ({"rule": [rule("x", retain={"until_patient_age": 28, "since": "ingest"})]}, "since needs a period"),
    ({"rule": [rule("x", retain={"since": "ingest"})]}, "since needs a period"),
    ({"rule": [rule("x", retain={"years": -1, "since": "ingest"})]}, "retain.years: must be between 0"),
    ({"rule": [rule("x", retain={"years": 10, "since": "ingest", "combine": "later"})]},
     "retain.combine: combine only applies when retain has both"),
    ({"rule": [rule("x", retain={"years": 10, "since": "ingest", "until_patient_age": 3, "combine": "max"})]},
     "retain.combine: must be \"later\""),
    ({"rule": [rule("x", expire="yes")]}, "rule 'x': expire: must be true or false"),
    ({"rule": [{"name": "x", "expire": True}]}, "rule 'x': expire: expire = true needs a retain table"),
    ({"rule": [{"name": "x", "expire": True, "move": [{"to": "d", "after_days": 1, "since": "ingest"}]}]},
     "needs a retain table in the same rule"),
    ({"rule": [{"name": "x", "expire": True, "retain": {"forever": True}}]}, "never expires"),
    ({"rule": [{"name": "x", "match": {"kind": "pdf"}}]},
     "rule 'x': move/retain/expire: the rule does nothing"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_policies_are_refused_naming_file_rule_and_key(data: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        Policy.from_dict(data, source="p.toml")
    assert message in str(e.value)
    assert str(e.value).startswith("p.toml: ")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such policy file"):
        Policy.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\nname = 'x'\n")
    with pytest.raises(InvalidInputError, match=re.escape(f"{bad}: not valid TOML")):
        Policy.from_toml(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('[[rule]]\nname = "x"\nretain = { years = 10, since = "studydate" }\n')
    with pytest.raises(InvalidInputError, match=re.escape(f"{typo}: rule 'x': retain.since:")):
        Policy.from_toml(typo)


def test_validate_tiers() -> None:
    p = policy(rule("x", move=[{"to": "cold", "after_days": 365, "since": "ingest"},
                               {"to": "disk", "after_days": 30, "since": "ingest"}]))
    p.validate_tiers(["ssd", "disk", "cold"])
    with pytest.raises(InvalidInputError, match=r"rule 'x': move\[1\].to: no tier named 'cold'; "
                                                r"the archive's tiers are ssd, disk"):
        p.validate_tiers(["ssd", "disk"])
    with pytest.raises(InvalidInputError, match=r"p.toml: rule 'x': move\[1\] sends data to 'cold' after 365 "
                                                r"days, but 'cold' is hotter than 'disk' \(move\[2\]"):
        p.validate_tiers(["ssd", "cold", "disk"])
    with pytest.raises(InvalidInputError, match="unique"):
        TierOrder(["a", "a"])


# -- matching on every dimension ----------------------------------------------------------------------------


def matches(match: dict[str, Any], f: ObjectFacts, now: datetime = NOW) -> bool | None:
    """True: matches; None: may match (a fact is missing); False: does not."""
    p = policy({"name": "m", "match": match, "retain": {"days": 0, "since": "ingest"}, "expire": True})
    d = p.decide(f, now)
    if d.retain_until is None:
        return False
    return True if d.expire_rule == "m" else None


@pytest.mark.parametrize(("match", "kw", "expected"), [
    ({"tenant": "trust-a"}, {}, True),
    ({"tenant": "trust-b"}, {}, False),
    ({"tenant": "trust-*"}, {}, True),
    ({"tenant": "Trust-*"}, {}, False),
    ({"tenant": ["x", "trust-?"]}, {}, True),
    ({"tenant": "trust-[bc]"}, {}, False),
    ({"kind": "dicom"}, {}, True),
    ({"kind": ["photo", "pdf"]}, {}, False),
    ({"kind": ["photo", "pdf"]}, {"kind": "pdf"}, True),
    ({"modality": "CT"}, {"modality": "CT"}, True),
    ({"modality": "ct"}, {"modality": "CT"}, True),
    ({"modality": "CT"}, {"modality": "ct"}, True),
    ({"modality": ["MR", "C*"]}, {"modality": "CR"}, True),
    ({"modality": "CT"}, {"modality": "MR"}, False),
    ({"modality": "CT"}, {}, None),
    ({"modality": "CT"}, {"kind": "photo"}, False),           # only DICOM objects have a modality
    ({"modality": "CT"}, {"kind": "photo", "modality": "CT"}, True),
    ({"sop_class": "1.2.840.10008.5.1.4.1.1.2*"}, {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2.1"}, True),
    ({"sop_class": "1.2.840.10008.5.1.4.1.1.2"}, {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2.1"}, False),
    ({"sop_class": "1.2.3"}, {}, None),
    ({"sop_class": "1.2.3"}, {"kind": "pdf"}, False),
    ({"study_from": "2024-05-01"}, {"study_date": date(2024, 5, 1)}, True),
    ({"study_from": date(2024, 5, 2)}, {"study_date": date(2024, 5, 1)}, False),
    ({"study_before": "2024-05-01"}, {"study_date": date(2024, 5, 1)}, False),
    ({"study_before": "2024-05-02"}, {"study_date": date(2024, 5, 1)}, True),
    ({"study_before": "2024-05-02"}, {}, None),
    ({"study_older_than_days": 396}, {"study_date": date(2024, 5, 1)}, True),   # 2025-06-01 is day 396
    ({"study_older_than_days": 397}, {"study_date": date(2024, 5, 1)}, False),
    ({"ingested_from": "2024-05-02"}, {}, True),
    ({"ingested_before": "2024-05-02"}, {}, False),
    ({"ingested_before": "2024-05-03"}, {}, True),
    ({"ingested_older_than_days": 395}, {}, True),    # ingested 2024-05-02 10:00, now 2025-06-01 12:00
    ({"ingested_older_than_days": 396}, {}, False),
    ({"accessed_older_than_days": 395}, {}, True),    # never read: counts as accessed at ingest
    ({"accessed_older_than_days": 30}, {"last_access": datetime(2025, 5, 10, tzinfo=UTC)}, False),
    ({"accessed_older_than_days": 20}, {"last_access": datetime(2025, 5, 10, tzinfo=UTC)}, True),
    ({"accessed_before": "2025-01-01"}, {"last_access": datetime(2025, 5, 10, tzinfo=UTC)}, False),
    ({"accessed_from": "2025-05-10"}, {"last_access": datetime(2025, 5, 10, tzinfo=UTC)}, True),
    ({"patient_age_at_study_below": 18},
     {"study_date": date(2024, 5, 1), "patient_birth_date": date(2006, 5, 2)}, True),
    ({"patient_age_at_study_below": 18},
     {"study_date": date(2024, 5, 1), "patient_birth_date": date(2006, 5, 1)}, False),
    ({"patient_age_at_study_at_least": 18},
     {"study_date": date(2024, 5, 1), "patient_birth_date": date(2006, 5, 1)}, True),
    ({"patient_age_at_study_at_least": 18}, {"study_date": date(2024, 5, 1)}, None),
    ({"patient_age_at_study_at_least": 18}, {"patient_birth_date": date(2006, 5, 1)}, None),
    ({"kind": "pdf", "modality": "CT"}, {}, False),           # a failing condition beats a missing fact
    ({"tenant": "trust-a", "modality": "CT", "study_before": "2030-01-01"},
     {"modality": "CT", "study_date": date(2024, 5, 1)}, True),
    ({}, {}, True),
])
def test_match_dimensions(match: dict[str, Any], kw: dict[str, Any], expected: bool | None) -> None:
    assert matches(match, facts(**kw)) is expected


def test_missing_fact_explained() -> None:
    p = policy(rule("ct", match={"modality": "CT", "patient_age_at_study_below": 18},
                    retain={"years": 2, "since": "ingest"}))
    d = p.decide(facts(), NOW)
    assert d.retention_reason == ("retained until 2026-05-02 by rule 'ct' (2 years after the ingest date "
                                  "2024-05-02; the rule may apply: the modality is unknown, the patient's "
                                  "birth date and study date are unknown)")


# -- retention and expiry -----------------------------------------------------------------------------------

CT_28 = rule("ct-10y-or-28", match={"modality": "CT"},
             retain={"years": 10, "since": "study_date", "until_patient_age": 28}, expire=True)


def test_issue_example_child_and_adult() -> None:
    p = policy(CT_28)
    child = ct(patient_birth_date=date(2019, 3, 10))       # 5 at the study
    assert p.decide(child, NOW).retain_until == date(2047, 3, 10)
    adult = ct(patient_birth_date=date(1984, 3, 10))       # 40 at the study
    assert p.decide(adult, NOW).retain_until == date(2034, 5, 1)
    earlier = policy(rule("e", retain={"years": 10, "since": "study_date", "until_patient_age": 28,
                                       "combine": "earlier"}))
    assert earlier.decide(child, NOW).retain_until == date(2034, 5, 1)
    assert earlier.decide(ct(patient_birth_date=date(2000, 1, 1)), NOW).retain_until == date(2028, 1, 1)


def test_expiry_boundary_is_the_day_after_retain_until_utc() -> None:
    p = policy(CT_28)
    adult = ct(patient_birth_date=date(1984, 3, 10))
    last = p.decide(adult, datetime(2034, 5, 1, 23, 59, 59, tzinfo=UTC))
    assert last.retained and not last.may_expire and last.holding_reason is not None
    first = p.decide(adult, datetime(2034, 5, 2, tzinfo=UTC))
    assert first.may_expire and not first.retained and first.holding_reason is None
    assert first.expire_rule == "ct-10y-or-28" and first.retention_reason is not None
    # Another offset is converted: 00:30 on May 2 at +02:00 is still May 1 in UTC.
    assert p.decide(adult, datetime(2034, 5, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))).retained


def test_check_delete() -> None:
    p = policy(CT_28)
    adult = ct(patient_birth_date=date(2002, 2, 12))
    with pytest.raises(RetentionError) as e:
        p.check_delete(adult, NOW)
    assert str(e.value) == (f"cannot delete trust-a/{'ab' * 32}: retained until 2034-05-01 by rule "
                            "'ct-10y-or-28' (10 years after the study date 2024-05-01, at least until the "
                            "patient turns 28 on 2030-02-12); it may be deleted from 2034-05-02")
    assert e.value.exit_code == 6 and isinstance(e.value, PermissionError)
    p.check_delete(adult, datetime(2034, 5, 2, tzinfo=UTC))
    p.check_delete(facts(kind="pdf"), NOW)  # no rule: nothing holds it


def test_forever_and_unknown_birth_date() -> None:
    p = policy(rule("keep", match={"kind": "pdf"}, retain={"forever": True}), CT_28)
    d = p.decide(facts(kind="pdf"), datetime(9000, 1, 1, tzinfo=UTC))
    assert d.retain_until == FOREVER and d.retained_forever and d.retained and d.retention_ends is None
    assert d.retention_reason == "retained indefinitely by rule 'keep' (kept forever)"
    no_birth = p.decide(ct(), datetime(2060, 1, 1, tzinfo=UTC))
    assert no_birth.retained_forever and not no_birth.may_expire and no_birth.expires_on is None
    assert no_birth.retention_reason is not None and "birth date is unknown" in no_birth.retention_reason
    with pytest.raises(RetentionError, match="it cannot be deleted while this policy applies"):
        p.check_delete(ct(), datetime(2060, 1, 1, tzinfo=UTC))
    age_only = policy(rule("a", retain={"until_patient_age": 18}))
    assert age_only.decide(ct(), NOW).retain_until == FOREVER
    assert age_only.decide(ct(patient_birth_date=date(2000, 1, 1)), NOW).retain_until == date(2018, 1, 1)
    earlier = policy(rule("e", retain={"years": 3, "since": "ingest", "until_patient_age": 18,
                                       "combine": "earlier"}))
    d = earlier.decide(ct(), NOW)
    assert d.retain_until == date(2027, 5, 2)
    assert d.retention_reason is not None and "the birth date is unknown" in d.retention_reason


def test_missing_study_date_counts_from_ingest() -> None:
    p = policy(rule("s", retain={"years": 1, "months": 2, "days": 3, "since": "study_date"}))
    d = p.decide(facts(), NOW)
    assert d.retain_until == date(2025, 7, 5)
    assert d.retention_reason == ("retained until 2025-07-05 by rule 's' (1 year, 2 months and 3 days after "
                                  "the ingest date 2024-05-02, standing in for the unknown study date)")
    assert p.decide(facts(study_date=date(2024, 1, 31)), NOW).retain_until == date(2025, 4, 3)


def test_latest_retention_wins_and_ties_name_all_rules() -> None:
    p = policy(rule("short", retain={"years": 1, "since": "study_date"}, expire=True),
               rule("long", match={"modality": "CT"}, retain={"years": 5, "since": "study_date"}),
               rule("same", match={"tenant": "trust-*"}, retain={"days": 1826, "since": "study_date"}))
    d = p.decide(ct(), NOW)
    assert d.retain_until == date(2029, 5, 1) and d.retain_rules == ("long", "same")
    assert d.retention_reason is not None and "rule 'long' (5 years" in d.retention_reason
    assert "and rule 'same' (1826 days" in d.retention_reason
    assert d.expire_rule == "short" and not d.may_expire
    assert p.decide(ct(), datetime(2029, 5, 2, tzinfo=UTC)).may_expire
    # Without the longer rules the short one expires the object much earlier.
    assert policy(rule("short", retain={"years": 1, "since": "study_date"}, expire=True)) \
        .decide(ct(), NOW).may_expire


def test_a_rule_that_may_match_retains_but_does_not_expire_or_move() -> None:
    p = policy(rule("mr", match={"modality": "MR"}, retain={"years": 30, "since": "ingest"},
                    move=[{"to": "cold", "after_days": 0, "since": "ingest"}], expire=True),
               rule("all", retain={"days": 0, "since": "ingest"}, expire=True,
                    move=[{"to": "disk", "after_days": 0, "since": "ingest"}]))
    d = p.decide(facts(), NOW)   # modality unknown
    assert d.retain_until == date(2054, 5, 2) and d.retain_rules == ("mr",)
    assert d.expire_rule == "all" and not d.may_expire
    assert (d.tier, d.tier_rule) == ("disk", "all")
    d = p.decide(facts(modality="CT"), NOW)
    assert d.may_expire and d.retain_rules == ("all",)


def test_expire_needs_a_certain_match() -> None:
    p = policy(rule("ct", match={"modality": "CT"}, retain={"days": 0, "since": "ingest"}, expire=True))
    assert not p.decide(facts(), NOW).may_expire
    assert p.decide(facts(modality="CT"), NOW).may_expire


# -- dates ------------------------------------------------------------------------------------------------


def test_feb_29() -> None:
    leap = date(2000, 2, 29)
    assert anniversary(leap, 18) == date(2018, 3, 1)
    assert anniversary(leap, 28) == date(2028, 2, 29)
    assert age_on(leap, date(2018, 2, 28)) == 17
    assert age_on(leap, date(2018, 3, 1)) == 18
    assert age_on(leap, date(2028, 2, 29)) == 28
    assert add_months(date(2024, 1, 31), 1) == date(2024, 3, 1)
    assert add_months(date(2024, 1, 29), 1) == date(2024, 2, 29)
    assert add_months(date(2023, 12, 31), 2) == date(2024, 3, 1)
    assert add_months(date(2024, 3, 31), -1) == date(2024, 3, 1)
    with pytest.raises(OverflowError):
        add_months(date(9999, 6, 1), 12)
    p = policy(rule("r", retain={"years": 10, "since": "study_date", "until_patient_age": 18}))
    d = p.decide(facts(study_date=date(2024, 2, 29), patient_birth_date=leap), NOW)
    assert d.retain_until == date(2034, 3, 1) and d.retain_rules == ("r",)
    assert "10 years after the study date 2024-02-29, at least until the patient turns 18 on 2018-03-01" \
        in (d.retention_reason or "")
    adults = policy(rule("adult", match={"patient_age_at_study_at_least": 18}, retain={"forever": True}))
    # Born Feb 29 2000, studied Feb 28 2018: still 17; on Mar 1: 18.
    d = adults.decide(facts(study_date=date(2018, 2, 28), patient_birth_date=leap), NOW)
    assert d.retain_until is None
    d = adults.decide(facts(study_date=date(2018, 3, 1), patient_birth_date=leap), NOW)
    assert d.retain_rules == ("adult",)


def test_far_dates_are_kept_forever_not_crashing() -> None:
    p = policy(rule("r", retain={"years": 200, "since": "study_date"},
                    move=[{"to": "cold", "after_days": 36600, "since": "study_date"}]))
    d = p.decide(facts(study_date=date(9900, 1, 1)), NOW)
    assert d.retain_until == FOREVER
    assert p.next_changes(facts(study_date=date(9999, 12, 31)), NOW, 3650) == ()


def test_naive_now_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        policy(CT_28).decide(ct(), datetime(2025, 1, 1))


# -- moves ------------------------------------------------------------------------------------------------


def test_first_rule_with_moves_decides_and_the_largest_due_step_wins() -> None:
    p = policy(rule("nomove", retain={"forever": True}),
               rule("ct", match={"modality": "CT"},
                    move=[{"to": "disk", "after_days": 30, "since": "study_date"},
                          {"to": "cold", "after_days": 365, "since": "study_date"},
                          {"to": "tape", "after_days": 365, "since": "ingest"}]),
               rule("all", move=[{"to": "cold", "after_days": 0, "since": "ingest"}]))
    assert p.decide(ct(), datetime(2024, 5, 30, tzinfo=UTC)).tier is None   # 'ct' decides: nothing due
    d = p.decide(ct(), datetime(2024, 5, 31, tzinfo=UTC))
    assert (d.tier, d.tier_rule) == ("disk", "ct")
    assert d.tier_reason == "on 'disk' by rule 'ct' (30 days after the study date)"
    assert p.decide(ct(), datetime(2025, 5, 1, tzinfo=UTC)).tier == "cold"
    # Both 365-day steps due: the one listed last wins the tie.
    assert p.decide(ct(), datetime(2025, 5, 2, 10, tzinfo=UTC)).tier == "tape"
    assert p.decide(facts(modality="MR"), NOW).tier_rule == "all"
    # An unknown modality: 'ct' may match, which is not enough to move.
    assert p.decide(facts(), NOW).tier_rule == "all"


def test_move_since_fallbacks() -> None:
    p = policy(rule("a", move=[{"to": "cold", "after_days": 10, "since": "last_access"}]))
    never_read = facts()
    assert p.decide(never_read, datetime(2024, 5, 12, 9, tzinfo=UTC)).tier is None
    assert p.decide(never_read, datetime(2024, 5, 12, 10, tzinfo=UTC)).tier == "cold"
    read = facts(last_access=datetime(2025, 5, 30, tzinfo=UTC))
    assert p.decide(read, NOW).tier is None
    s = policy(rule("s", move=[{"to": "cold", "after_days": 10, "since": "study_date"}]))
    assert s.decide(facts(), datetime(2024, 5, 11, 23, tzinfo=UTC)).tier is None
    assert s.decide(facts(), datetime(2024, 5, 12, tzinfo=UTC)).tier == "cold"


def test_tier_order_never_moves_up() -> None:
    order = TierOrder(["ssd", "disk", "cold"])
    d = policy(rule("a", move=[{"to": "disk", "after_days": 0, "since": "ingest"}])).decide(facts(), NOW)
    assert d.move_from("ssd", order) == "disk"
    assert d.move_from("disk", order) is None
    assert d.move_from("cold", order) is None
    assert Decision().move_from("ssd", order) is None
    assert order.is_colder("cold", "ssd") and not order.is_colder("ssd", "cold")
    with pytest.raises(InvalidInputError, match="no tier named 'tape'"):
        order.rank("tape")


# -- next_changes -----------------------------------------------------------------------------------------


def test_next_changes_lists_moves_rules_starting_and_expiry() -> None:
    p = policy(rule("old", match={"study_older_than_days": 400}, retain={"years": 3, "since": "study_date"}),
               rule("ct", match={"modality": "CT"}, retain={"days": 394, "since": "study_date"}, expire=True,
                    move=[{"to": "disk", "after_days": 396, "since": "study_date"},
                          {"to": "cold", "after_days": 410, "since": "ingest"}]))
    f = ct()
    start = datetime(2025, 5, 30, 12, tzinfo=UTC)
    changes = p.next_changes(f, start, 30)
    assert [c.at for c in changes] == [
        datetime(2025, 5, 31, tzinfo=UTC),            # retention (until day 394) ends: may expire
        datetime(2025, 6, 1, tzinfo=UTC),             # 396 days after the study: disk
        datetime(2025, 6, 5, tzinfo=UTC),             # 'old' starts to apply: retained again, 3 years
        datetime(2025, 6, 16, 10, tzinfo=UTC),        # 410 days after ingest: cold
    ]
    assert changes[0].after.may_expire and not changes[0].before.may_expire
    assert changes[1].after.tier == "disk"
    assert changes[2].after.retain_until == date(2027, 5, 1) and not changes[2].after.may_expire
    assert changes[3].after.tier == "cold" and changes[3].before == changes[2].after
    assert p.next_changes(f, start, 1) == changes[:1]
    assert p.next_changes(f, start, 0) == ()
    assert p.next_changes(facts(modality="MR", study_date=date(2025, 5, 1)), start, 30) == ()
    with pytest.raises(InvalidInputError):
        p.next_changes(f, start, -1)


# -- properties -------------------------------------------------------------------------------------------

DAY0 = date(2020, 1, 1)
days = st.integers(0, 4000)
day = days.map(lambda n: DAY0 + timedelta(days=n))
instant = st.integers(0, 4000 * 86400).map(lambda s: datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=s))
small_days = st.integers(0, 1500)


@st.composite
def match_tables(draw: st.DrawFn) -> dict[str, Any]:
    m: dict[str, Any] = {}
    if draw(st.booleans()):
        m["tenant"] = draw(st.sampled_from(["t1", "t*", ["t2", "x"]]))
    if draw(st.booleans()):
        m["kind"] = draw(st.sampled_from(["dicom", ["dicom", "pdf"], "photo"]))
    if draw(st.booleans()):
        m["modality"] = draw(st.sampled_from(["CT", ["MR", "C?"]]))
    if draw(st.integers(0, 3)) == 0:
        m["sop_class"] = "1.2.*"
    for dim in ("study", "ingested", "accessed"):
        if draw(st.integers(0, 3)) == 0:
            m[f"{dim}_older_than_days"] = draw(small_days)
        if draw(st.integers(0, 4)) == 0:
            lo = draw(days)
            m[f"{dim}_from"] = DAY0 + timedelta(days=lo)
            if draw(st.booleans()):
                m[f"{dim}_before"] = DAY0 + timedelta(days=lo + draw(st.integers(1, 3000)))
    if draw(st.integers(0, 3)) == 0:
        m[draw(st.sampled_from(["patient_age_at_study_below", "patient_age_at_study_at_least"]))] = \
            draw(st.integers(0, 90))
    return m


@st.composite
def retain_tables(draw: st.DrawFn) -> dict[str, Any] | None:
    form = draw(st.sampled_from(["none", "period", "age", "both", "forever"]))
    if form == "none":
        return None
    if form == "forever":
        return {"forever": True}
    r: dict[str, Any] = {}
    if form in ("period", "both"):
        r["since"] = draw(st.sampled_from(["study_date", "ingest"]))
        for key, top in (("years", 12), ("months", 30), ("days", 800)):
            if draw(st.booleans()):
                r[key] = draw(st.integers(0, top))
        if not any(k in r for k in ("years", "months", "days")):
            r["days"] = draw(st.integers(0, 800))
    if form in ("age", "both"):
        r["until_patient_age"] = draw(st.integers(0, 40))
    if form == "both" and draw(st.booleans()):
        r["combine"] = draw(st.sampled_from(["later", "earlier"]))
    return r


@st.composite
def rule_tables(draw: st.DrawFn, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "match": draw(match_tables())}
    retain = draw(retain_tables())
    if retain is not None:
        out["retain"] = retain
        if "forever" not in retain and draw(st.booleans()):
            out["expire"] = True
    if retain is None or draw(st.booleans()):
        steps = draw(st.lists(st.tuples(st.sampled_from(["disk", "cold"]), small_days,
                                        st.sampled_from(["study_date", "ingest", "last_access"])),
                              min_size=1, max_size=3, unique_by=lambda s: (s[1], s[2])))
        out["move"] = [{"to": to, "after_days": n, "since": since} for to, n, since in steps]
    return out


policies = st.integers(1, 4).flatmap(
    lambda n: st.tuples(*(rule_tables(f"r{i}") for i in range(n)))).map(lambda rules: policy(*rules))


@st.composite
def object_facts(draw: st.DrawFn) -> ObjectFacts:
    ingested = draw(instant)
    study = draw(st.none() | day.filter(lambda d: d <= ingested.date()))
    return ObjectFacts(
        tenant=draw(st.sampled_from(["t1", "t2", "x"])), object_id="00" * 32,
        kind=draw(st.sampled_from(OBJECT_KINDS)), size=1, ingested=ingested, tier="ssd",
        last_access=draw(st.none() | st.integers(0, 800 * 86400).map(
            lambda s: ingested + timedelta(seconds=s))),
        study_date=study,
        patient_birth_date=draw(st.none() | st.integers(0, 60 * 366).map(
            lambda n: (study or ingested.date()) - timedelta(days=n))),
        modality=draw(st.none() | st.sampled_from(["CT", "MR", "CR"])),
        sop_class_uid=draw(st.none() | st.sampled_from(["1.2.3", "9.9"])),
    )


@given(policies, object_facts(), instant)
def test_combining_never_shortens_retention_and_nothing_expires_while_retained(
        p: Policy, f: ObjectFacts, now: datetime) -> None:
    d = p.decide(f, now)
    for r in p.rules:
        alone = Policy([r]).decide(f, now)
        if alone.retain_until is not None:
            assert d.retain_until is not None and d.retain_until >= alone.retain_until
        # A rule that expires alone may be held by another, never the other way round.
        if d.may_expire and alone.retain_until is not None:
            assert alone.may_expire or alone.expire_rule is None
    if d.may_expire:
        assert d.retain_until is not None and now.astimezone(UTC).date() > d.retain_until
        assert d.expire_rule is not None and not d.retained and d.holding_reason is None
        p.check_delete(f, now)
    else:
        assert d.retain_until is None or d.expire_rule is None or d.retained
    if d.retained:
        with pytest.raises(RetentionError):
            p.check_delete(f, now)
    if d.retain_until is not None:
        assert d.retention and all(t.until == d.retain_until for t in d.retention)
        assert d.retention_reason is not None and all(f"rule '{n}'" in d.retention_reason
                                                      for n in d.retain_rules)


@given(policies, object_facts(), instant, st.integers(0, 400), st.lists(st.floats(0, 1), max_size=12))
def test_next_changes_agree_with_decide(p: Policy, f: ObjectFacts, now: datetime, horizon: int,
                                        samples: list[float]) -> None:
    changes = p.next_changes(f, now, horizon)
    ats = [c.at for c in changes]
    assert ats == sorted(set(ats)) and all(now < t <= now + timedelta(days=horizon) for t in ats)
    current = p.decide(f, now)
    for c in changes:
        assert c.before == current and c.after != c.before
        assert p.decide(f, c.at) == c.after
        assert p.decide(f, c.at - timedelta(microseconds=1)) == c.before
        current = c.after
    for x in samples:
        t = now + timedelta(seconds=x * horizon * 86400)
        expected = p.decide(f, now)
        for c in changes:
            if c.at <= t:
                expected = c.after
        assert p.decide(f, t) == expected
