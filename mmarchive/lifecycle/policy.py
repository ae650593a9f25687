"""The lifecycle policy: a declarative TOML file of rules, and the decisions it implies for one object.

A policy is a list of ``[[rule]]`` tables. Each rule matches objects on their :class:`ObjectFacts` (tenant,
kind, modality, SOP class, study date, ingest time, last access, the patient's age at the study) and says
what to do with them: move to a colder tier after some days, retain for a period (from the study date or
ingest) and/or until the patient reaches an age, expire once retention has ended. This module parses and
strictly validates such a file, compiles each rule's matchers once, and answers, for one object at a time
and without touching the archive, what the policy decides at a given instant (:meth:`Policy.decide`) and
when within a horizon that decision changes (:meth:`Policy.next_changes`). It never reads the index, never
moves or deletes anything and never sees holds: the lifecycle runner composes facts, decisions, holds and
the tier order, and acts. The combination rules, written for a records manager:

- **Retention**: every matching rule with ``retain`` counts and the *latest* end wins: a rule can only make
  retention longer. A rule that *may* match (it constrains a fact the object lacks: a DICOM object's
  modality or SOP class, any object's study or birth date; objects of other kinds have no modality or SOP
  class and never match those) counts for retention too. A missing study date is replaced by the ingest
  date (a study cannot be archived before it was made, so retention never gets shorter); a missing birth
  date makes an age-based retention end unknowable, so the object is kept indefinitely (until the birth
  date is known), and the explanation says so. We never delete when we cannot prove retention has ended.
- **Expiry**: allowed only when at least one rule that *certainly* matches says ``expire = true`` and
  retention (over *all* matching rules) has ended. Retention "until D" includes D: expiry is possible from
  the next day, 00:00 UTC.
- **Moves**: rules are ordered; the first certainly matching rule that has ``move`` steps decides; among its
  steps that are due, the one with the largest ``after_days`` wins (ties: the one listed last). A missing
  study date or last access is replaced by the ingest time. The decision names a target tier; the runner
  moves data only towards colder tiers (:class:`TierOrder`).
- **Dates**: "N years after D" and "when the patient turns N" are anniversaries; an anniversary of Feb 29 in
  a common year (and any day a month lacks, for ``months``) falls on the first day of the next month
  (Mar 1), the later of the usual conventions. All instants are UTC.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple

from mmarchive.errors import InvalidInputError, RetentionError
from mmarchive.lifecycle.facts import OBJECT_KINDS, ObjectFacts

#: ``retain_until`` of data kept indefinitely (``retain = { forever = true }``, or an age-based retention
#: of a patient whose birth date is unknown).
FOREVER: Final = date.max

#: What a move step may count its days from.
MOVE_SINCE: Final = ("study_date", "ingest", "last_access")
#: What a retention period may count from.
RETAIN_SINCE: Final = ("study_date", "ingest")
#: How a retention with both a period and a patient age combines them.
RETAIN_COMBINE: Final = ("later", "earlier")

#: Largest day count a policy may write (about 100 years), years, months and patient age.
MAX_DAYS: Final = 36_600
MAX_YEARS: Final = 200
MAX_AGE: Final = 150

_NO: Final = 0
_YES: Final = 1
_MAYBE: Final = 2

_RULE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RULE_KEYS = ("name", "description", "match", "move", "retain", "expire")
_NAME_KEYS = ("tenant", "kind", "modality", "sop_class")
_TIME_DIMENSIONS = ("study", "ingested", "accessed")
_MATCH_KEYS = (*_NAME_KEYS,
               *(f"{d}_{s}" for d in _TIME_DIMENSIONS for s in ("from", "before", "older_than_days")),
               "patient_age_at_study_below", "patient_age_at_study_at_least")
_MOVE_KEYS = ("to", "after_days", "since")
_RETAIN_KEYS = ("forever", "years", "months", "days", "since", "until_patient_age", "combine")
_ONE_DAY = timedelta(days=1)


# -- date conventions -------------------------------------------------------------------------------------


def add_months(d: date, months: int) -> date:
    """Return the date ``months`` months after ``d``; a day the target month lacks gives the 1st of the next.

    So Feb 29 + 12 months is Mar 1 in a common year, and Jan 31 + 1 month is Mar 1. Raises OverflowError
    past year 9999.
    """
    m0 = d.month - 1 + months
    year, month = d.year + m0 // 12, m0 % 12 + 1
    if not 1 <= year <= 9999:
        raise OverflowError(f"{d} + {months} months is out of range")
    try:
        return date(year, month, d.day)  # (date.replace is several times slower)
    except ValueError:  # the day does not exist in that month (never December: it has 31)
        return date(year, month + 1, 1)


def anniversary(d: date, years: int) -> date:
    """The ``years``-th anniversary of ``d`` (Feb 29 -> Mar 1 in a common year)."""
    return add_months(d, 12 * years)


def age_on(birth: date, day: date) -> int:
    """Completed years of a person born on ``birth`` at ``day`` (a Feb 29 birth ages on Mar 1 in common
    years, consistently with :func:`anniversary`)."""
    before_birthday = (day.month, day.day) < (birth.month, birth.day)
    return day.year - birth.year - before_birthday


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(), UTC)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


# -- tier order -------------------------------------------------------------------------------------------


class TierOrder:
    """The archive's tiers, hottest first: which of two tiers is colder.

    The policy names target tiers; the runner moves an object only when the target is colder than the tier
    it is on (policy never moves data back up; recall is the runner's business).
    """

    __slots__ = ("_rank", "names")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._rank = {name: i for i, name in enumerate(self.names)}
        if len(self._rank) != len(self.names):
            raise InvalidInputError(f"tier names must be unique, got {list(self.names)}")

    def rank(self, name: str) -> int:
        """0 for the hottest tier, increasing towards the coldest."""
        try:
            return self._rank[name]
        except KeyError:
            raise InvalidInputError(f"no tier named {name!r}; the tiers are "
                                    f"{', '.join(self.names)}") from None

    def is_colder(self, target: str, current: str) -> bool:
        """True when ``target`` is a colder tier than ``current`` (so moving there is a move down)."""
        return self.rank(target) > self.rank(current)


# -- the parsed policy ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoveStep:
    """``{ to = "disk", after_days = 90, since = "ingest" }``: move to ``to`` once ``after_days`` have
    passed since ``since``."""

    to: str
    after_days: int
    since: str

    def describe(self) -> str:
        what = {"study_date": "the study date", "ingest": "ingest", "last_access": "the last access"}
        return f"{_plural(self.after_days, 'day')} after {what[self.since]}"


@dataclass(frozen=True, slots=True)
class Retain:
    """A rule's ``retain`` table: forever, or a period since a date, and/or until the patient's age."""

    forever: bool = False
    years: int = 0
    months: int = 0
    days: int = 0
    #: ``study_date`` or ``ingest`` when the rule has a period; None when it has none.
    since: str | None = None
    until_patient_age: int | None = None
    combine: str = "later"

    def period(self) -> str:
        parts = [_plural(n, unit) for n, unit in ((self.years, "year"), (self.months, "month"),
                                                   (self.days, "day")) if n]
        if not parts:
            return "0 days"
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    def basis(self, facts: ObjectFacts) -> tuple[date | None, date | None]:
        """The facts this retention counts from: (the period's start day, the birth date), None if unused.

        A missing study date is replaced by the ingest date (see the module's charter).
        """
        start = None
        if self.since is not None:
            start = facts.study_date if self.since == "study_date" else None
            if start is None:
                start = facts.ingested.date()
        return start, facts.patient_birth_date if self.until_patient_age is not None else None

    def until(self, facts: ObjectFacts) -> date:
        """The last day this retention keeps ``facts``'s object (:data:`FOREVER` when it cannot end)."""
        start, birth = self.basis(facts)
        return self.until_from(start, birth)

    def until_from(self, start: date | None, birth: date | None) -> date:
        """:meth:`until` given :meth:`basis`."""
        if self.forever:
            return FOREVER
        try:
            period_end: date | None = None
            if start is not None:
                period_end = add_months(start, 12 * self.years + self.months) + timedelta(days=self.days)
            if self.until_patient_age is None:
                return period_end if period_end is not None else FOREVER
            age_end = anniversary(birth, self.until_patient_age) if birth is not None else None
        except OverflowError:
            return FOREVER
        if period_end is None:
            return age_end if age_end is not None else FOREVER
        if age_end is None:  # later: cannot end; earlier: the period is an upper bound that holds
            return FOREVER if self.combine == "later" else period_end
        if self.combine == "later":
            return max(period_end, age_end)
        return min(period_end, age_end)

    def describe(self, facts: ObjectFacts) -> str:
        """Why this retention keeps ``facts``'s object as long as :meth:`until` says, in words."""
        if self.forever:
            return "kept forever"
        period = None
        if self.since is not None:
            if self.since == "study_date" and facts.study_date is not None:
                period = f"{self.period()} after the study date {facts.study_date.isoformat()}"
            elif self.since == "study_date":
                period = (f"{self.period()} after the ingest date {facts.ingested.date().isoformat()}, "
                          "standing in for the unknown study date")
            else:
                period = f"{self.period()} after the ingest date {facts.ingested.date().isoformat()}"
        if self.until_patient_age is None:
            assert period is not None
            return period
        n = self.until_patient_age
        birth = facts.patient_birth_date
        if birth is not None:
            try:
                age = f"until the patient turns {n} on {anniversary(birth, n).isoformat()}"
            except OverflowError:
                age = f"until the patient turns {n} (after year 9999)"
            if period is None:
                return age
            if self.combine == "later":
                return f"{period}, at least {age}"
            return f"{period} or {age}, whichever comes first"
        unknown = (f"until the patient turns {n}, but the birth date is unknown, so retention cannot be "
                   "shown to end; kept until the birth date is known")
        if period is None:
            return unknown
        if self.combine == "later":
            return f"{period}, at least {unknown}"
        return (f"{period} (or until the patient turns {n} if that comes first, but the birth date is "
                "unknown)")


# -- matchers ---------------------------------------------------------------------------------------------


class _Names:
    """Names with fnmatch-style wildcards, compiled: literal names in a set, patterns in one regex."""

    __slots__ = ("literals", "regex")

    def __init__(self, patterns: Iterable[str]) -> None:
        literals: set[str] = set()
        wild: list[str] = []
        for p in patterns:
            if any(c in p for c in "*?["):
                wild.append(fnmatch.translate(p))
            else:
                literals.add(p)
        self.literals = frozenset(literals)
        self.regex = re.compile("|".join(wild)) if wild else None

    def __call__(self, value: str) -> bool:
        if value in self.literals:
            return True
        return self.regex is not None and self.regex.match(value) is not None


class _Clock:
    """One instant ``now`` with the cut-offs every day count of the policy needs, computed once."""

    __slots__ = ("dates", "instants", "now", "today")

    def __init__(self, now: datetime, day_counts: Iterable[int]) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidInputError(f"now must be a timezone-aware time (UTC), not {now!r}")
        self.now = now
        self.today = now.astimezone(UTC).date()
        #: N -> the instant N days before now: "N days after T" is due when T <= instants[N].
        self.instants: dict[int, datetime] = {}
        #: N -> the day N days before today: "N days after day D" is due when D <= dates[N].
        self.dates: dict[int, date] = {}
        for n in day_counts:
            try:
                self.instants[n] = now - timedelta(days=n)
                self.dates[n] = self.today - timedelta(days=n)
            except OverflowError:
                self.instants[n] = datetime.min.replace(tzinfo=UTC)
                self.dates[n] = date.min


#: The clock handed to conditions on names, which never read it.
_NO_CLOCK: Final = _Clock(datetime(2000, 1, 1, tzinfo=UTC), ())


class _Condition:
    """One compiled part of a rule's ``match`` table. ``test`` answers _YES, _NO or _MAYBE (fact missing)."""

    __slots__ = ()

    #: True when the condition looks only at tenant, kind, modality and SOP class (never at time).
    on_names: ClassVar[bool] = False

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        raise NotImplementedError

    def missing(self, f: ObjectFacts) -> str | None:
        """The fact this condition lacks on ``f`` (when ``test`` says _MAYBE), in words."""
        return None

    def threshold(self, f: ObjectFacts) -> datetime | date | None:
        """When this condition starts to hold for ``f`` if that depends on time (an instant, or a day
        meaning its midnight UTC), else None."""
        return None


class _Tenant(_Condition):
    __slots__ = ("names",)
    on_names = True

    def __init__(self, names: _Names) -> None:
        self.names = names

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        return _YES if self.names(f.tenant) else _NO


class _Kind(_Condition):
    __slots__ = ("kinds",)
    on_names = True

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        return _YES if f.kind in self.kinds else _NO


class _Modality(_Condition):
    __slots__ = ("names",)
    on_names = True

    def __init__(self, names: _Names) -> None:
        self.names = names

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        m = f.modality
        if m is None:  # unknown for a DICOM object; other kinds have none
            return _MAYBE if f.kind == "dicom" else _NO
        return _YES if self.names(m) or self.names(m.upper()) else _NO

    def missing(self, f: ObjectFacts) -> str | None:
        return "the modality is unknown" if f.modality is None else None


class _SopClass(_Condition):
    __slots__ = ("names",)
    on_names = True

    def __init__(self, names: _Names) -> None:
        self.names = names

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        s = f.sop_class_uid
        if s is None:  # unknown for a DICOM object; other kinds have none
            return _MAYBE if f.kind == "dicom" else _NO
        return _YES if self.names(s) else _NO

    def missing(self, f: ObjectFacts) -> str | None:
        return "the SOP class is unknown" if f.sop_class_uid is None else None


class _StudyDate(_Condition):
    __slots__ = ("before", "older", "start")

    def __init__(self, start: date | None, before: date | None, older: int | None) -> None:
        self.start, self.before, self.older = start, before, older

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        d = f.study_date
        if d is None:
            return _MAYBE
        if self.start is not None and d < self.start:
            return _NO
        if self.before is not None and d >= self.before:
            return _NO
        if self.older is not None and d > clock.dates[self.older]:
            return _NO
        return _YES

    def missing(self, f: ObjectFacts) -> str | None:
        return "the study date is unknown" if f.study_date is None else None

    def threshold(self, f: ObjectFacts) -> datetime | date | None:
        if self.older is None or f.study_date is None:
            return None
        try:
            return f.study_date + timedelta(days=self.older)
        except OverflowError:
            return None


class _Instant(_Condition):
    """Ingest time (``accessed=False``) or last access, falling back to ingest (``accessed=True``)."""

    __slots__ = ("accessed", "before", "older", "start")

    def __init__(self, accessed: bool, start: date | None, before: date | None, older: int | None) -> None:
        self.accessed = accessed
        self.start = _midnight(start) if start is not None else None
        self.before = _midnight(before) if before is not None else None
        self.older = older

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        t = f.ingested if not self.accessed or f.last_access is None else f.last_access
        if self.start is not None and t < self.start:
            return _NO
        if self.before is not None and t >= self.before:
            return _NO
        if self.older is not None and t > clock.instants[self.older]:
            return _NO
        return _YES

    def threshold(self, f: ObjectFacts) -> datetime | date | None:
        if self.older is None:
            return None
        t = f.ingested if not self.accessed or f.last_access is None else f.last_access
        try:
            return t + timedelta(days=self.older)
        except OverflowError:
            return None


class _AgeAtStudy(_Condition):
    __slots__ = ("at_least", "below")

    def __init__(self, below: int | None, at_least: int | None) -> None:
        self.below, self.at_least = below, at_least

    def test(self, f: ObjectFacts, clock: _Clock) -> int:
        birth, study = f.patient_birth_date, f.study_date
        if birth is None or study is None:
            return _MAYBE
        age = age_on(birth, study)
        if self.below is not None and age >= self.below:
            return _NO
        if self.at_least is not None and age < self.at_least:
            return _NO
        return _YES

    def missing(self, f: ObjectFacts) -> str | None:
        gaps = [what for what, v in (("birth date", f.patient_birth_date), ("study date", f.study_date))
                if v is None]
        if not gaps:
            return None
        return f"the patient's {' and '.join(gaps)} {'is' if len(gaps) == 1 else 'are'} unknown"


# -- rules ------------------------------------------------------------------------------------------------


class Rule:
    """One ``[[rule]]``, validated and compiled. Treat as immutable (it memoises retention ends)."""

    __slots__ = ("_by_precedence", "_untils", "conditions", "description", "expire", "moves", "name",
                 "retain", "table", "timed")

    #: Memoised retention ends per rule are dropped when they reach this many entries.
    MEMO_LIMIT: Final = 65_536

    def __init__(self, name: str, description: str, conditions: Sequence[_Condition],
                 moves: Sequence[MoveStep], retain: Retain | None, expire: bool,
                 table: Mapping[str, Any]) -> None:
        self.name = name
        self.description = description
        #: Compiled ``match`` conditions (all must hold; none: the rule matches every object).
        self.conditions = tuple(conditions)
        #: The conditions on dates and ages (the others, on names, are decided once per combination of
        #: tenant, kind, modality and SOP class: see :meth:`Policy.decide`).
        self.timed = tuple(c for c in self.conditions if not c.on_names)
        #: ``move`` steps as written.
        self.moves = tuple(moves)
        self.retain = retain
        self.expire = expire
        #: The rule as a plain table (normalised: dates as ISO strings), for rendering the policy back.
        self.table = table
        #: Move steps in the order they win when due: largest after_days first, then listed last first.
        self._by_precedence = tuple(s for _, s in sorted(enumerate(self.moves),
                                                         key=lambda e: (-e[1].after_days, -e[0])))
        self._untils: dict[tuple[date | None, date | None], date] = {}

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"

    def match_names(self, f: ObjectFacts) -> int:
        """_YES, _NO, or _MAYBE (none fails but one lacks its fact) over the conditions on names (tenant,
        kind, modality, SOP class); :meth:`Policy.decide` then tests the rest, :attr:`timed`."""
        result = _YES
        for cond in self.conditions:
            if cond.on_names:
                r = cond.test(f, _NO_CLOCK)
                if r == _NO:
                    return _NO
                if r == _MAYBE:
                    result = _MAYBE
        return result

    def until(self, f: ObjectFacts) -> date:
        """``retain.until(f)``, memoised on the dates it depends on (objects of a study share them)."""
        retain = self.retain
        assert retain is not None
        key = retain.basis(f)
        until = self._untils.get(key)
        if until is None:
            if len(self._untils) >= self.MEMO_LIMIT:
                self._untils.clear()
            until = self._untils[key] = retain.until_from(*key)
        return until

    def missing(self, f: ObjectFacts) -> tuple[str, ...]:
        return tuple(m for c in self.conditions if (m := c.missing(f)) is not None)

    def due_step(self, f: ObjectFacts, clock: _Clock) -> MoveStep | None:
        for step in self._by_precedence:
            n = step.after_days
            if step.since == "study_date" and f.study_date is not None:
                if f.study_date <= clock.dates[n]:
                    return step
            elif step.since == "last_access" and f.last_access is not None:
                if f.last_access <= clock.instants[n]:
                    return step
            elif step.since == "study_date":  # unknown study date: the ingest date stands in
                if f.ingested.date() <= clock.dates[n]:
                    return step
            elif f.ingested <= clock.instants[n]:
                return step
        return None

    def due_times(self, f: ObjectFacts) -> list[datetime | date]:
        """When each move step becomes due for ``f`` (an instant, or a day meaning its midnight UTC)."""
        out: list[datetime | date] = []
        for step in self.moves:
            try:
                if step.since == "study_date":
                    day = f.study_date if f.study_date is not None else f.ingested.date()
                    out.append(day + timedelta(days=step.after_days))
                else:
                    t = f.last_access if step.since == "last_access" and f.last_access else f.ingested
                    out.append(t + timedelta(days=step.after_days))
            except OverflowError:
                pass
        return out


# -- decisions --------------------------------------------------------------------------------------------


class RetentionTerm(NamedTuple):
    """One rule's retention of one object: until when, and (in words) why."""

    rule: str
    until: date
    retain: Retain
    facts: ObjectFacts
    #: When the rule only *may* match: the facts it lacks ("the modality is unknown").
    missing: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"rule '{self.rule}' ({self.retain.describe(self.facts)}"
        if self.missing:
            text += f"; the rule may apply: {', '.join(self.missing)}"
        return text + ")"


class Decision(NamedTuple):
    """What the policy decides for one object at one instant. A plain immutable record (a named tuple:
    built in a fraction of a frozen dataclass's time, which matters at a million objects per plan)."""

    #: The tier the object should be on now, or None when no move applies (stay where it is).
    tier: str | None = None
    #: The rule and the step that send it to ``tier``.
    tier_rule: str | None = None
    move_step: MoveStep | None = None
    #: The last day retention keeps the object (:data:`FOREVER`: indefinitely); None: no retention rule.
    retain_until: date | None = None
    #: The retention terms that set ``retain_until`` (several when rules tie), in rule order.
    retention: tuple[RetentionTerm, ...] = ()
    #: Whether retention still runs at the decision's instant (its UTC date is on or before retain_until).
    retained: bool = False
    #: The first rule that certainly matches and says ``expire = true``; None when none does.
    expire_rule: str | None = None
    #: True when the object may be deleted now: ``expire_rule`` is set and retention has ended.
    may_expire: bool = False

    @property
    def retain_rules(self) -> tuple[str, ...]:
        return tuple(t.rule for t in self.retention)

    @property
    def retained_forever(self) -> bool:
        return self.retain_until == FOREVER

    @property
    def retention_ends(self) -> date | None:
        """The first day the object is no longer retained (None: no retention, or it never ends)."""
        if self.retain_until is None or self.retain_until == FOREVER:
            return None
        return self.retain_until + _ONE_DAY

    @property
    def expires_on(self) -> date | None:
        """The day expiry becomes allowed, if an expire rule matches and retention can end."""
        return self.retention_ends if self.expire_rule is not None else None

    @property
    def retention_reason(self) -> str | None:
        """``retained until 2034-05-01 by rule 'ct-10y' (10 years after the study date 2024-05-01)``."""
        if self.retain_until is None:
            return None
        until = "indefinitely" if self.retain_until == FOREVER else f"until {self.retain_until.isoformat()}"
        return f"retained {until} by " + " and ".join(t.describe() for t in self.retention)

    @property
    def holding_reason(self) -> str | None:
        """The retention reason while retention runs (why a deletion is refused now), else None."""
        return self.retention_reason if self.retained else None

    @property
    def tier_reason(self) -> str | None:
        """``on 'disk' by rule 'cold' (90 days after ingest)``, or None when no move applies."""
        if self.move_step is None:
            return None
        return f"on '{self.tier}' by rule '{self.tier_rule}' ({self.move_step.describe()})"

    def move_from(self, current: str, order: TierOrder) -> str | None:
        """The tier to move to from ``current``: ``tier`` if it is colder, else None (never up)."""
        if self.tier is None or not order.is_colder(self.tier, current):
            return None
        return self.tier


_NOTHING: Final = Decision()


def _term(rule: Rule, match: int, until: date, f: ObjectFacts) -> RetentionTerm:
    assert rule.retain is not None
    return RetentionTerm(rule.name, until, rule.retain, f, rule.missing(f) if match == _MAYBE else ())


@dataclass(frozen=True, slots=True)
class Change:
    """The decision for an object changes at ``at`` from ``before`` to ``after``."""

    at: datetime
    before: Decision
    after: Decision


# -- the policy -------------------------------------------------------------------------------------------


class Policy:
    """A validated, compiled lifecycle policy. Immutable after construction (its memos aside, which only
    ever hold computed values); safe to share across threads."""

    def __init__(self, rules: Sequence[Rule], *, source: str = "policy") -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.source = source
        self._day_counts = frozenset(
            [s.after_days for r in self.rules for s in r.moves]
            + [c.older for r in self.rules for c in r.conditions
               if isinstance(c, (_StudyDate, _Instant)) and c.older is not None])
        self._clock: _Clock | None = None
        self._end_clock: _Clock | None = None  # the end of next_changes's horizon
        #: (tenant, kind, modality, SOP class) -> the rules whose conditions on names do not fail, with
        #: _YES or _MAYBE: a policy has few such combinations in practice and many objects share each.
        self._by_names: dict[tuple[str, str, str | None, str | None], tuple[tuple[Rule, int], ...]] = {}

    #: The memo of rules by names is dropped when it reaches this many combinations.
    MEMO_LIMIT: Final = 65_536

    def __repr__(self) -> str:
        return f"Policy({self.source!r}, {len(self.rules)} rules)"

    # -- loading ----------------------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> Policy:
        """Load a policy file (``--policy FILE``); any problem is an InvalidInputError naming the file."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise InvalidInputError(f"{path}: no such policy file") from None
        except OSError as e:
            raise InvalidInputError(f"{path}: cannot read the policy file ({e.strerror or e})") from e
        except tomllib.TOMLDecodeError as e:
            raise InvalidInputError(f"{path}: not valid TOML ({e}); fix the file") from e
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "policy") -> Policy:
        """A policy from its parsed TOML: ``{"rule": [{...}, ...]}`` and nothing else.

        ``source`` names where it came from in messages (a file, or ``mmarchive.toml [lifecycle]``: a
        caller holding a larger table passes ``{"rule": table.get("rule", [])}``).
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{source}: a policy is a table of [[rule]] tables")
        unknown = [k for k in data if k != "rule"]
        if unknown:
            raise InvalidInputError(f"{source}: unknown keys {sorted(unknown)}; a policy holds only "
                                    "[[rule]] tables")
        tables = data.get("rule", [])
        if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
            raise InvalidInputError(f"{source}: rule must be an array of tables, written [[rule]]")
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for i, table in enumerate(tables, 1):
            rule = _parse_rule(table, source, i)
            if rule.name in seen:
                raise InvalidInputError(f"{source}: rule #{i}: name {rule.name!r} is already the name of "
                                        f"rule #{seen[rule.name]}; rule names must be unique")
            seen[rule.name] = i
            rules.append(rule)
        return cls(rules, source=source)

    def validate_tiers(self, tiers: Sequence[str]) -> None:
        """Check every move target against the archive's tiers (hottest first) and that, within a rule, a
        step that wins later (larger after_days) never sends data to a hotter tier than one before it."""
        order = TierOrder(tiers)
        for rule in self.rules:
            for i, step in enumerate(rule.moves, 1):
                if step.to not in order.names:
                    raise InvalidInputError(
                        f"{self.source}: rule '{rule.name}': move[{i}].to: no tier named {step.to!r}; "
                        f"the archive's tiers are {', '.join(order.names)}")
            steps = sorted(enumerate(rule.moves, 1), key=lambda s: (s[1].after_days, s[0]))
            for (i, a), (j, b) in itertools.pairwise(steps):
                if order.rank(b.to) < order.rank(a.to):
                    raise InvalidInputError(
                        f"{self.source}: rule '{rule.name}': move[{j}] sends data to {b.to!r} after "
                        f"{b.after_days} days, but {b.to!r} is hotter than {a.to!r} (move[{i}], after "
                        f"{a.after_days} days) and data never moves up; order the steps from hot to cold")

    @property
    def tiers(self) -> frozenset[str]:
        """Every tier a move step names."""
        return frozenset(s.to for r in self.rules for s in r.moves)

    # -- rendering --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (JSON- and TOML-able; ``from_dict`` reads it back to the same policy)."""
        return {"rule": [json.loads(json.dumps(r.table)) for r in self.rules]}

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict`: names this exact policy in plans and logs."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def provenance(self) -> dict[str, Any]:
        """What ``plan --json`` records about the policy it applied."""
        return {"source": self.source, "digest": self.digest, **self.to_dict()}

    def to_toml(self) -> str:
        """The policy as a TOML file."""
        lines = [f"# lifecycle policy (from {self.source}); see docs/lifecycle.md"]
        for rule in self.rules:
            lines += ["", "[[rule]]"]
            lines += [f"{key} = {_toml(value)}" for key, value in rule.table.items()]
        return "\n".join(lines) + "\n"

    # -- decisions --------------------------------------------------------------------------------------

    def _clock_for(self, now: datetime) -> _Clock:
        clock = self._clock
        if clock is None or (clock.now is not now and clock.now != now):
            clock = _Clock(now, self._day_counts)
            self._clock = clock  # one reference swap: threads with other instants just rebuild theirs
        return clock

    def decide(self, facts: ObjectFacts, now: datetime) -> Decision:
        """What the policy decides for ``facts``'s object at ``now`` (timezone-aware)."""
        return self._decide(facts, self._clock_for(now))

    def _candidates(self, f: ObjectFacts) -> tuple[tuple[Rule, int], ...]:
        key = (f.tenant, f.kind, f.modality, f.sop_class_uid)
        found = self._by_names.get(key)
        if found is None:
            if len(self._by_names) >= self.MEMO_LIMIT:
                self._by_names.clear()
            found = tuple((rule, m) for rule in self.rules if (m := rule.match_names(f)) != _NO)
            self._by_names[key] = found
        return found

    def _decide(self, f: ObjectFacts, clock: _Clock) -> Decision:
        step: MoveStep | None = None
        step_rule: str | None = None
        moves_decided = False
        expire_rule: str | None = None
        until: date | None = None
        held_by: Rule | None = None  # the first rule reaching ``until``, and how it matched
        held_match = _NO
        ties: list[tuple[Rule, int]] | None = None  # later rules reaching the same ``until``
        for rule, m in self._candidates(f):
            for cond in rule.timed:
                r = cond.test(f, clock)
                if r == _NO:
                    m = _NO
                    break
                if r == _MAYBE:
                    m = _MAYBE
            if m == _NO:
                continue
            if m == _YES:
                if not moves_decided and rule.moves:
                    moves_decided = True
                    step = rule.due_step(f, clock)
                    if step is not None:
                        step_rule = rule.name
                if rule.expire and expire_rule is None:
                    expire_rule = rule.name
            if rule.retain is not None:
                u = rule.until(f)
                if until is None or u > until:
                    until, held_by, held_match, ties = u, rule, m, None
                elif u == until:
                    if ties is None:
                        ties = []
                    ties.append((rule, m))
        if held_by is None or until is None:
            if step is None:
                return _NOTHING
            return Decision(step.to, step_rule, step, None, (), False, None, False)
        terms: tuple[RetentionTerm, ...] = (_term(held_by, held_match, until, f),)
        if ties is not None:
            terms += tuple(_term(r, m, until, f) for r, m in ties)
        retained = clock.today <= until
        return Decision(step.to if step is not None else None, step_rule, step, until, terms, retained,
                        expire_rule, expire_rule is not None and not retained)

    def check_delete(self, facts: ObjectFacts, now: datetime) -> None:
        """Raise RetentionError, naming the rule that holds it, if retention forbids deleting the object now.

        Legal holds are not the policy's business: the caller checks them too.
        """
        d = self.decide(facts, now)
        reason = d.holding_reason
        if reason is None:
            return
        ends = d.retention_ends
        after = (f"; it may be deleted from {ends.isoformat()}" if ends is not None else
                 "; it cannot be deleted while this policy applies")
        raise RetentionError(f"cannot delete {facts.tenant}/{facts.object_id}: {reason}{after}")

    def next_changes(self, facts: ObjectFacts, now: datetime, horizon_days: int) -> tuple[Change, ...]:
        """Every instant in (now, now + horizon_days] at which the decision for ``facts`` changes, in order.

        Decisions only change at a few instants (a move becomes due, retention ends, an ``older_than_days``
        condition starts to hold), so this evaluates the decision there only, never day by day.
        """
        if horizon_days < 0:
            raise InvalidInputError(f"horizon_days must be >= 0, not {horizon_days}")
        start = self._clock_for(now)
        end_clock = self._end_clock
        if end_clock is None or end_clock.now != now + timedelta(days=horizon_days):
            end_clock = self._end_clock = _Clock(now + timedelta(days=horizon_days), self._day_counts)
        end, first_day, last_day = end_clock.now, start.today, end_clock.today
        window: set[datetime] = set()

        def consider(t: datetime | date | None) -> None:
            if t is None:
                return
            if isinstance(t, datetime):
                if now < t <= end:
                    window.add(t)
            elif first_day < t <= last_day:  # its midnight is in (now, end]
                window.add(_midnight(t))

        for rule, _ in self._candidates(facts):
            # Conditions only ever turn from false to true as time passes: a rule that does not match
            # at the end of the horizon matches nowhere in it.
            if any(cond.test(facts, end_clock) == _NO for cond in rule.timed):
                continue
            for cond in rule.timed:
                consider(cond.threshold(facts))
            for t in rule.due_times(facts):
                consider(t)
            if rule.retain is not None:
                until = rule.until(facts)
                if until < FOREVER:
                    consider(until + _ONE_DAY)
        if not window:
            return ()
        changes: list[Change] = []
        before = self._decide(facts, start)
        for t in sorted(window):
            after = self._decide(facts, _Clock(t, self._day_counts))
            if after != before:
                changes.append(Change(t, before, after))
                before = after
        return tuple(changes)


# -- parsing ----------------------------------------------------------------------------------------------


class _Where:
    """Where in the policy a value sits, for messages: ``FILE: rule 'name': match.kind: ...``."""

    __slots__ = ("label", "source")

    def __init__(self, source: str, label: str) -> None:
        self.source, self.label = source, label

    def error(self, key: str, message: str) -> InvalidInputError:
        return InvalidInputError(f"{self.source}: rule {self.label}: {key}: {message}")


def _parse_rule(table: Mapping[str, Any], source: str, index: int) -> Rule:
    name = table.get("name")
    where = _Where(source, f"#{index}")
    if not isinstance(name, str) or not _RULE_NAME_RE.match(name):
        raise where.error("name", "every rule needs a name of 1-64 letters, digits, '.', '_' or '-' "
                          f"(like name = \"ct-10y\"), not {name!r}")
    where = _Where(source, f"'{name}'")
    unknown = [k for k in table if k not in _RULE_KEYS]
    if unknown:
        raise where.error(", ".join(sorted(unknown)), f"unknown key; a rule has {', '.join(_RULE_KEYS)}")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise where.error("description", f"must be a string, not {description!r}")
    out: dict[str, Any] = {"name": name}
    if description:
        out["description"] = description
    conditions, match_table = _parse_match(table.get("match", {}), where)
    if match_table:
        out["match"] = match_table
    moves = _parse_moves(table.get("move"), where)
    if moves:
        out["move"] = [{"to": s.to, "after_days": s.after_days, "since": s.since} for s in moves]
    retain, retain_table = _parse_retain(table.get("retain"), where)
    if retain is not None:
        out["retain"] = retain_table
    expire = table.get("expire", False)
    if not isinstance(expire, bool):
        raise where.error("expire", f"must be true or false, not {expire!r}")
    if expire:
        if retain is None:
            raise where.error("expire", "expire = true needs a retain table in the same rule (how long to "
                              "keep the data first); to expire without waiting write "
                              "retain = { days = 0, since = \"ingest\" }")
        if retain.forever:
            raise where.error("expire", "expire = true with retain = { forever = true } never expires; "
                              "remove one of them")
        out["expire"] = True
    if not moves and retain is None:
        raise where.error("move/retain/expire", "the rule does nothing; give it move steps, a retain "
                          "table and/or expire = true")
    return Rule(name, description, conditions, moves, retain, expire, out)


def _names(value: Any, where: _Where, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise where.error(key, "must be a non-empty string or a list of them (like "
                          f"{_leaf(key)} = [\"a\", \"b\"]), not {value!r}")
    return list(items)


def _day(value: Any, where: _Where, key: str) -> date:
    if isinstance(value, datetime):
        raise where.error(key, f"must be a date, not a date and time ({value.isoformat()}); write "
                          f"{_leaf(key)} = {value.date().isoformat()}")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise where.error(key, f"must be a date written YYYY-MM-DD (like {_leaf(key)} = 2015-01-01), not "
                      f"{value!r}")


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _count(value: Any, where: _Where, key: str, limit: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(key, f"must be a whole number of {unit}, not {value!r}")
    if not 0 <= value <= limit:
        raise where.error(key, f"must be between 0 and {limit} {unit}, not {value}")
    return value


def _parse_match(value: Any, where: _Where) -> tuple[list[_Condition], dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise where.error("match", f"must be a table (like match = {{ kind = \"dicom\" }}), not {value!r}")
    unknown = [k for k in value if k not in _MATCH_KEYS]
    if unknown:
        raise where.error(f"match.{sorted(unknown)[0]}", f"unknown key; match keys are "
                          f"{', '.join(_MATCH_KEYS)}")
    table: dict[str, Any] = {}
    conditions: list[_Condition] = []
    for key in _NAME_KEYS:
        if key not in value:
            continue
        names = _names(value[key], where, f"match.{key}")
        table[key] = value[key] if isinstance(value[key], str) else names
        if key == "tenant":
            conditions.append(_Tenant(_Names(names)))
        elif key == "kind":
            bad = [n for n in names if n not in OBJECT_KINDS]
            if bad:
                raise where.error("match.kind", f"unknown kind {bad[0]!r}; kinds are "
                                  f"{', '.join(OBJECT_KINDS)}")
            conditions.append(_Kind(frozenset(names)))
        elif key == "modality":
            conditions.append(_Modality(_Names(n.upper() for n in names)))
        else:
            conditions.append(_SopClass(_Names(names)))
    for dim in _TIME_DIMENSIONS:
        start = before = older = None
        if f"{dim}_from" in value:
            start = _day(value[f"{dim}_from"], where, f"match.{dim}_from")
            table[f"{dim}_from"] = start.isoformat()
        if f"{dim}_before" in value:
            before = _day(value[f"{dim}_before"], where, f"match.{dim}_before")
            table[f"{dim}_before"] = before.isoformat()
        if f"{dim}_older_than_days" in value:
            older = _count(value[f"{dim}_older_than_days"], where, f"match.{dim}_older_than_days",
                           MAX_DAYS, "days")
            table[f"{dim}_older_than_days"] = older
        if start is not None and before is not None and start >= before:
            raise where.error(f"match.{dim}_before", f"{before} is not after {dim}_from = {start}; "
                              "the range would match nothing")
        if start is None and before is None and older is None:
            continue
        if dim == "study":
            conditions.append(_StudyDate(start, before, older))
        else:
            conditions.append(_Instant(dim == "accessed", start, before, older))
    below = at_least = None
    if "patient_age_at_study_below" in value:
        below = _count(value["patient_age_at_study_below"], where, "match.patient_age_at_study_below",
                       MAX_AGE, "years")
        table["patient_age_at_study_below"] = below
    if "patient_age_at_study_at_least" in value:
        at_least = _count(value["patient_age_at_study_at_least"], where,
                          "match.patient_age_at_study_at_least", MAX_AGE, "years")
        table["patient_age_at_study_at_least"] = at_least
    if below is not None and at_least is not None and at_least >= below:
        raise where.error("match.patient_age_at_study_below",
                          f"{below} is not above patient_age_at_study_at_least = {at_least}; the range "
                          "would match nothing")
    if below is not None or at_least is not None:
        conditions.append(_AgeAtStudy(below, at_least))
    return conditions, table


def _parse_moves(value: Any, where: _Where) -> list[MoveStep]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
        raise where.error("move", "must be a list of steps like move = [{ to = \"disk\", after_days = 90, "
                          f"since = \"ingest\" }}], not {value!r}")
    steps: list[MoveStep] = []
    for i, item in enumerate(value, 1):
        key = f"move[{i}]"
        unknown = [k for k in item if k not in _MOVE_KEYS]
        if unknown:
            raise where.error(f"{key}.{sorted(unknown)[0]}", f"unknown key; a move step has "
                              f"{', '.join(_MOVE_KEYS)}")
        for required in _MOVE_KEYS:
            if required not in item:
                raise where.error(f"{key}.{required}", "missing; write a step like { to = \"disk\", "
                                  "after_days = 90, since = \"ingest\" }")
        to = item["to"]
        if not isinstance(to, str) or not to:
            raise where.error(f"{key}.to", f"must be a tier name, not {to!r}")
        after = _count(item["after_days"], where, f"{key}.after_days", MAX_DAYS, "days")
        since = item["since"]
        if since not in MOVE_SINCE:
            raise where.error(f"{key}.since", f"must be one of {', '.join(map(repr, MOVE_SINCE))}, "
                              f"not {since!r}")
        for j, other in enumerate(steps, 1):
            if (other.after_days, other.since) == (after, since):
                raise where.error(f"{key}", f"move[{j}] is also due {after} days after {since}; one of "
                                  "the two steps would never apply")
        steps.append(MoveStep(to, after, since))
    return steps


def _parse_retain(value: Any, where: _Where) -> tuple[Retain | None, dict[str, Any]]:
    if value is None:
        return None, {}
    if not isinstance(value, Mapping) or not value:
        raise where.error("retain", "must be a table like retain = { years = 10, since = \"study_date\" }, "
                          "retain = { until_patient_age = 28 } or retain = { forever = true }, not "
                          f"{value!r}")
    unknown = [k for k in value if k not in _RETAIN_KEYS]
    if unknown:
        raise where.error(f"retain.{sorted(unknown)[0]}", f"unknown key; retain has "
                          f"{', '.join(_RETAIN_KEYS)}")
    if "forever" in value:
        if value["forever"] is not True:
            raise where.error("retain.forever", "write forever = true, or leave it out")
        if len(value) > 1:
            raise where.error("retain.forever", "forever = true stands alone; remove "
                              f"{', '.join(sorted(k for k in value if k != 'forever'))}")
        return Retain(forever=True), {"forever": True}
    table: dict[str, Any] = {}
    years = months = days = 0
    has_period = False
    for key, limit in (("years", MAX_YEARS), ("months", 12 * MAX_YEARS), ("days", MAX_DAYS)):
        if key in value:
            n = _count(value[key], where, f"retain.{key}", limit, key)
            table[key] = n
            has_period = True
            if key == "years":
                years = n
            elif key == "months":
                months = n
            else:
                days = n
    since = value.get("since")
    if has_period:
        if since not in RETAIN_SINCE:
            raise where.error("retain.since", "a retention period counts from since = \"study_date\" or "
                              f"since = \"ingest\"; got {since!r}")
        table["since"] = since
    elif since is not None:
        raise where.error("retain.since", "since needs a period (years, months and/or days); add one, or "
                          "remove since")
    age = None
    if "until_patient_age" in value:
        age = _count(value["until_patient_age"], where, "retain.until_patient_age", MAX_AGE, "years")
        table["until_patient_age"] = age
    if not has_period and age is None:
        raise where.error("retain", "give a period (years, months, days with since), until_patient_age, "
                          "both, or forever = true")
    combine = value.get("combine", "later")
    if "combine" in value:
        if not has_period or age is None:
            raise where.error("retain.combine", "combine only applies when retain has both a period and "
                              "until_patient_age; remove it")
        if combine not in RETAIN_COMBINE:
            raise where.error("retain.combine", "must be \"later\" (keep until both have passed) or "
                              f"\"earlier\" (until the first), not {combine!r}")
        table["combine"] = combine
    return Retain(False, years, months, days, since if has_period else None, age, combine), table


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML escapes DEL too
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
