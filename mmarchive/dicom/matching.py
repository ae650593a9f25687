"""DICOM attribute matching (PS3.4 C.2.2.2) compiled once per query, on the value model of attributes.py.

A query is a mapping of attribute keyword (or 8-hex-digit tag) to the constraint text a C-FIND identifier
or a QIDO-RS query parameter carries. :func:`compile_query` parses it once into a :class:`CompiledQuery`
of :class:`CompiledConstraint`, which then test candidates without parsing again. The kinds, by VR:

- universal matching: an empty constraint (or a lone ``*`` where wildcards are allowed) constrains nothing;
- empty value matching: ``""`` (two quotation marks) matches an absent or empty element;
- single value matching, and multiple value matching with ``\\``-separated alternatives (any matches);
- list of UID matching for UI (``uid1\\uid2``); wildcards are refused there;
- wildcard matching (``*`` any run, ``?`` one character) for AE, CS, LO, LT, PN, SH, ST, UC, UR, UT;
- range matching for DA, TM and DT (``a-b``, ``-b``, ``a-``); a single DA/TM/DT value is the range of its
  own precision, so TM ``10`` matches 10:00:00 to 10:59:59.999999 and ``1030`` the minute 10:30; DT
  values with a ``&ZZXX`` offset are compared in UTC;
- numbers (IS, DS, US, UL, SS, SL, FL, FD) compare as numbers;
- person names (PN) compare case-insensitively on normalised component groups (trailing ``^`` and ``=``
  dropped); a constraint without ``=`` matches any group of the name, one with ``=`` matches group by
  group; with ``fuzzy`` every word of the constraint must start a word of the name.

A multi-valued element matches when any of its values matches. Malformed constraints raise
:class:`~mmarchive.errors.InvalidInputError` naming the keyword, the value and what is accepted. The
planner hints of a constraint (exact values, literal prefixes, text range) let the catalog pick an index;
this module knows nothing of the catalog.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from mmarchive.dicom.attributes import BY_KEYWORD, BY_TAG, COMPUTED, Attribute, ScalarValue
from mmarchive.errors import InvalidInputError

#: VRs whose values may be matched with ``*`` and ``?`` (PS3.4 C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: VRs matched as date/time ranges (PS3.4 C.2.2.2.5).
RANGE_VRS = frozenset({"DA", "TM", "DT"})
NUMBER_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"})
#: Text VRs whose one value may itself contain a backslash (no multiple value matching for them).
SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})

#: Every attribute a query may name: the indexed ones and the ones the catalog computes.
QUERYABLE: dict[str, Attribute] = {**BY_KEYWORD, **{a.keyword: a for a in COMPUTED}}
_QUERYABLE_BY_TAG: dict[int, Attribute] = {**BY_TAG, **{a.tag: a for a in COMPUTED}}

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_HEX_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_DA_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM_RE = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")
_FUZZY_SPLIT_RE = re.compile(r"[\^=\s,]+")

_DAY_US = 86_400_000_000
_EPOCH = dt.datetime(1, 1, 1)


def resolve_keyword(name: str) -> Attribute:
    """The attribute a query names by keyword or by 8 hex digits of tag; unknown names are refused."""
    attribute = QUERYABLE.get(name)
    if attribute is not None:
        return attribute
    if _HEX_TAG_RE.match(name):
        attribute = _QUERYABLE_BY_TAG.get(int(name, 16))
        if attribute is not None:
            return attribute
    close = difflib.get_close_matches(name, list(QUERYABLE), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InvalidInputError(
        f"unknown attribute {name!r}: use a keyword such as PatientID or StudyDate, or an 8-digit "
        f"hexadecimal tag, of the attributes the catalog indexes{hint}")


def _refuse(keyword: str, text: str, accepted: str) -> InvalidInputError:
    return InvalidInputError(f"{keyword}={text!r} is not a valid constraint: {accepted}")


# -- person names -------------------------------------------------------------------------------------

def person_name_groups(value: str) -> tuple[str, ...]:
    """The normalised component groups of a PN value: case-folded, trailing ``^``/spaces/groups dropped."""
    groups = [g.rstrip("^ ").casefold() for g in value.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return tuple(groups)


def person_name_words(value: str) -> tuple[str, ...]:
    """The case-folded words of a PN value (its components, split further on spaces and commas)."""
    return tuple(w for w in _FUZZY_SPLIT_RE.split(value.casefold()) if w)


# -- dates and times ----------------------------------------------------------------------------------

@lru_cache(maxsize=65536)
def _time_bounds(text: str) -> tuple[int, int] | None:
    """Microseconds since midnight of the first and last instant a (partial) TM value names."""
    m = _TM_RE.match(text)
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    h = int(hh)
    minute = int(mm) if mm is not None else None
    second = int(ss) if ss is not None else None
    if h > 23 or (minute is not None and minute > 59) or (second is not None and second > 60):
        return None
    lo = h * 3_600_000_000
    if minute is None:
        return lo, lo + 3_600_000_000 - 1
    lo += minute * 60_000_000
    if second is None:
        return lo, lo + 60_000_000 - 1
    lo += min(second, 59) * 1_000_000
    if frac is None:
        return lo, lo + 1_000_000 - 1
    step = 10 ** (6 - len(frac))
    lo += int(frac) * step
    return lo, lo + step - 1


@lru_cache(maxsize=65536)
def _date_bounds(text: str) -> tuple[int, int] | None:
    """Days (as microseconds since 0001-01-01) of the first and last instant of a DA value."""
    m = _DA_RE.match(text)
    if m is None:
        return None
    try:
        day = dt.datetime(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None
    lo = _micros(day)
    return lo, lo + _DAY_US - 1


def _micros(moment: dt.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@lru_cache(maxsize=65536)
def _datetime_bounds(text: str) -> tuple[int, int] | None:
    """First and last instant (microseconds since 0001-01-01, UTC if an offset is given) of a DT value."""
    m = _DT_RE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, offset = m.groups()
    parts = [month, day, hour, minute, second]
    # Components must be given from the left: a later one present after an absent one is malformed.
    given = [p is not None for p in parts]
    if any(g and not prev for prev, g in zip([True, *given], given, strict=False)):
        return None
    if frac is not None and second is None:
        return None
    try:
        lo_dt = dt.datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                            int(minute or 0), min(int(second or 0), 59))
    except ValueError:
        return None
    if second is not None:
        step = 10 ** (6 - len(frac)) if frac is not None else 1_000_000
        lo_dt = lo_dt.replace(microsecond=int(frac) * step if frac is not None else 0)
        hi_dt = lo_dt + dt.timedelta(microseconds=step - 1)
    elif minute is not None:
        hi_dt = lo_dt + dt.timedelta(minutes=1, microseconds=-1)
    elif hour is not None:
        hi_dt = lo_dt + dt.timedelta(hours=1, microseconds=-1)
    elif day is not None:
        hi_dt = lo_dt + dt.timedelta(days=1, microseconds=-1)
    elif month is not None:
        if lo_dt.month == 12:
            hi_dt = lo_dt.replace(day=31, hour=23, minute=59, second=59, microsecond=999_999)
        else:
            hi_dt = lo_dt.replace(month=lo_dt.month + 1) - dt.timedelta(microseconds=1)
    else:
        hi_dt = dt.datetime(int(year), 12, 31, 23, 59, 59, 999999)
    lo, hi = _micros(lo_dt), _micros(hi_dt)
    if offset is not None:
        sign = -1 if offset[0] == "-" else 1
        shift = sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60) * 1_000_000
        lo, hi = lo - shift, hi - shift
    return lo, hi


_BOUNDS: dict[str, Callable[[str], tuple[int, int] | None]] = {
    "DA": _date_bounds, "TM": _time_bounds, "DT": _datetime_bounds}
_RANGE_FORMS = {
    "DA": "a date YYYYMMDD, or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-",
    "TM": "a time HH, HHMM, HHMMSS or HHMMSS.FFFFFF, or a range of two of them (a-b, -b or a-)",
    "DT": "a date-time YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX], or a range of two of them (a-b, -b, a-)",
}


def point_of(vr: str, value: str) -> int | None:
    """Where a stored DA/TM/DT value lies on the axis its ranges use (its first instant), or None."""
    bounds = _BOUNDS[vr](value.strip())
    return None if bounds is None else bounds[0]


# -- compiled constraints -----------------------------------------------------------------------------

ValueTest = Callable[[ScalarValue], bool]


@dataclass(frozen=True)
class CompiledConstraint:
    """One attribute's constraint, parsed: ``matches(values)`` tests an element's values.

    The hints tell a planner how an index could serve it: ``exact`` (index keys that must equal one of
    these, PN normalised), ``prefixes`` (literal prefixes that every match starts with, one per
    alternative, PN normalised), ``text_range`` (inclusive first/last DA text for a DA range).
    """

    keyword: str
    vr: str
    text: str
    test: ValueTest | None
    """Tests one value; None for empty value matching."""
    exact: tuple[str, ...] | None = None
    prefixes: tuple[str, ...] | None = None
    text_range: tuple[str, str] | None = None
    fuzzy_words: tuple[str, ...] | None = None

    def matches(self, values: Sequence[ScalarValue] | None) -> bool:
        """Whether an element with these values (None: absent) satisfies the constraint."""
        test = self.test
        if test is None:
            return not values
        if not values:
            return False
        return any(test(v) for v in values)


def _wildcard_regex(pattern: str, flags: int = 0) -> re.Pattern[str]:
    parts = ["(?s:"]
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    parts.append(r")\Z")
    return re.compile("".join(parts), flags)


def _literal_prefix(pattern: str) -> str:
    cut = len(pattern)
    for i, ch in enumerate(pattern):
        if ch in "*?":
            cut = i
            break
    return pattern[:cut]


def _wildcard_value_test(pattern: str) -> ValueTest:
    rx = _wildcard_regex(pattern).match
    return lambda v: isinstance(v, str) and rx(v) is not None


def _equal_value_test(wanted: str) -> ValueTest:
    return lambda v: v == wanted


def _any_of(tests: list[ValueTest]) -> ValueTest:
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(t(v) for t in tests)


def _compile_uid(attribute: Attribute, text: str) -> CompiledConstraint:
    uids = [u.strip() for u in text.split("\\")]
    for uid in uids:
        if "*" in uid or "?" in uid:
            raise _refuse(attribute.keyword, text, "wildcards are not allowed in a UID; give one UID or "
                          "a list of UIDs separated by backslashes")
        if len(uid) > 64 or not _UID_RE.match(uid):
            raise _refuse(attribute.keyword, text, "a UID is digits and dots, at most 64 characters, "
                          "without leading zeros in a component (a list: uid1\\uid2)")
    wanted = frozenset(uids)
    return CompiledConstraint(attribute.keyword, attribute.vr, text, lambda v: v in wanted,
                              exact=tuple(sorted(wanted)))


def _compile_range(attribute: Attribute, text: str) -> CompiledConstraint:
    vr = attribute.vr
    bounds_of = _BOUNDS[vr]
    accepted = _RANGE_FORMS[vr]
    if "\\" in text or "*" in text or "?" in text:
        raise _refuse(attribute.keyword, text, accepted)
    body = text.strip()
    # A DT value's own "-" (a negative offset) would confuse a split on "-": split on the first "-" that
    # follows a digit run of a bound, i.e. the one that has a valid bound (or nothing) on both sides.
    candidates = [i for i, ch in enumerate(body) if ch == "-"]
    lo_text: str | None
    hi_text: str | None
    split: tuple[str | None, str | None] | None = None
    if not candidates:
        split = (body, body)
    else:
        for i in candidates:
            left, right = body[:i].strip(), body[i + 1:].strip()
            if (not left or bounds_of(left) is not None) and (not right or bounds_of(right) is not None):
                split = (left or None, right or None)
                break
        if split is None and bounds_of(body) is not None:  # a DT with a negative offset, no range
            split = (body, body)
    if split is None or split == (None, None):
        raise _refuse(attribute.keyword, text, accepted)
    lo_text, hi_text = split
    lo_bounds = bounds_of(lo_text) if lo_text is not None else None
    hi_bounds = bounds_of(hi_text) if hi_text is not None else None
    if (lo_text is not None and lo_bounds is None) or (hi_text is not None and hi_bounds is None):
        raise _refuse(attribute.keyword, text, accepted)
    lo = lo_bounds[0] if lo_bounds is not None else None
    hi = hi_bounds[1] if hi_bounds is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise _refuse(attribute.keyword, text, f"the range ends before it starts; {accepted}")

    def test(v: ScalarValue) -> bool:
        if not isinstance(v, str):
            return False
        b = bounds_of(v.strip())
        if b is None:
            return False
        p = b[0]
        return (lo is None or p >= lo) and (hi is None or p <= hi)

    text_range = None
    if vr == "DA":
        text_range = (lo_text or "", hi_text or "\uffff")
    return CompiledConstraint(attribute.keyword, vr, text, test, text_range=text_range)


def _compile_number(attribute: Attribute, text: str) -> CompiledConstraint:
    numbers: set[float] = set()
    for part in text.split("\\"):
        try:
            numbers.add(float(part.strip()))
        except ValueError:
            raise _refuse(attribute.keyword, text, f"a number ({attribute.vr}) or a list of numbers "
                          "separated by backslashes; wildcards and ranges are not allowed") from None
    wanted = frozenset(numbers)

    def test(v: ScalarValue) -> bool:
        if isinstance(v, str):
            try:
                return float(v) in wanted
            except ValueError:
                return False
        return float(v) in wanted

    return CompiledConstraint(attribute.keyword, attribute.vr, text, test)


def _text_alternatives(attribute: Attribute, text: str) -> list[str]:
    if attribute.vr in SINGLE_TEXT_VRS:
        return [text.rstrip(" ")]
    return [part.strip(" ") for part in text.split("\\")]


def _compile_text(attribute: Attribute, text: str) -> CompiledConstraint | None:
    vr = attribute.vr
    wildcards = vr in WILDCARD_VRS
    alternatives = _text_alternatives(attribute, text)
    if not wildcards and any("*" in a or "?" in a for a in alternatives):
        raise _refuse(attribute.keyword, text, f"wildcards are not allowed for {vr}; give the exact value")
    if wildcards and any(a.strip("*") == "" and a for a in alternatives):
        return None  # "*" alone is universal matching
    exact: list[str] = []
    prefixes: list[str] = []
    tests: list[ValueTest] = []
    for alt in alternatives:
        if wildcards and ("*" in alt or "?" in alt):
            tests.append(_wildcard_value_test(alt))
            prefixes.append(_literal_prefix(alt))
        else:
            tests.append(_equal_value_test(alt))
            exact.append(alt)
            prefixes.append(alt)
    has_wild = len(exact) < len(alternatives)
    return CompiledConstraint(attribute.keyword, vr, text, _any_of(tests),
                              exact=None if has_wild else tuple(sorted(set(exact))),
                              prefixes=tuple(prefixes))


def _name_group_test(pattern: str) -> Callable[[str], bool]:
    if "*" in pattern or "?" in pattern:
        rx = _wildcard_regex(pattern).match
        return lambda g: rx(g) is not None
    return lambda g: g == pattern


def _compile_person_name(attribute: Attribute, text: str, fuzzy: bool) -> CompiledConstraint | None:
    alternatives = [a.strip(" ") for a in text.split("\\")]
    if any(a.strip("*") == "" and a for a in alternatives):
        return None
    if fuzzy:
        word_sets = [tuple(w.rstrip("*") for w in person_name_words(a)) for a in alternatives]
        word_sets = [tuple(w for w in ws if w) for ws in word_sets]
        if not any(word_sets):
            return None
        word_tests = [[_wildcard_regex(w + "*").match for w in ws] for ws in word_sets]

        def fuzzy_test(v: ScalarValue) -> bool:
            if not isinstance(v, str):
                return False
            words = person_name_words(v)
            return any(all(any(rx(w) for w in words) for rx in tests) for tests in word_tests)

        longest = tuple(max(ws, key=len) for ws in word_sets if ws)
        literal = tuple(_literal_prefix(w) for w in longest)
        return CompiledConstraint(attribute.keyword, "PN", text, fuzzy_test,
                                  fuzzy_words=literal if all(literal) else None)
    tests: list[Callable[[tuple[str, ...]], bool]] = []
    exact: list[str] = []
    prefixes: list[str] = []
    grouped_query = any("=" in alt for alt in alternatives)
    any_wild = grouped_query
    for alt in alternatives:
        wanted = [g.rstrip("^ ").casefold() for g in alt.split("=")]
        if len(wanted) == 1:
            tests.append(_any_group_test(_name_group_test(wanted[0])))
            if "*" in wanted[0] or "?" in wanted[0]:
                any_wild = True
                prefixes.append(_literal_prefix(wanted[0]))
            else:
                exact.append(wanted[0])
                prefixes.append(wanted[0])
        else:
            tests.append(_group_by_group_test(
                [(i, _name_group_test(g)) for i, g in enumerate(wanted) if g.strip("*")]))

    def name_test(v: ScalarValue) -> bool:
        if not isinstance(v, str):
            return False
        groups = person_name_groups(v)
        return any(t(groups) for t in tests)

    return CompiledConstraint(attribute.keyword, "PN", text, name_test,
                              exact=None if any_wild else tuple(sorted(set(exact))),
                              prefixes=None if grouped_query else tuple(prefixes))


def _any_group_test(test: Callable[[str], bool]) -> Callable[[tuple[str, ...]], bool]:
    return lambda groups: any(test(g) for g in groups)


def _group_by_group_test(
        per_group: list[tuple[int, Callable[[str], bool]]]) -> Callable[[tuple[str, ...]], bool]:
    def grouped(groups: tuple[str, ...]) -> bool:
        return all(test(groups[i] if i < len(groups) else "") for i, test in per_group)
    return grouped


def compile_constraint(keyword: str | Attribute, text: str, *,
                       fuzzy: bool = False) -> CompiledConstraint | None:
    """Parse one constraint; None when it is universal matching (constrains nothing).

    ``keyword`` names a queryable attribute, or is an :class:`Attribute` (for attributes outside the
    catalog's tables, such as a DT one).
    """
    attribute = keyword if isinstance(keyword, Attribute) else resolve_keyword(keyword)
    if not isinstance(text, str):
        raise InvalidInputError(
            f"{attribute.keyword}: the constraint must be text, not {type(text).__name__}")
    if text.strip(" ") == "":
        return None
    if text == '""':
        return CompiledConstraint(attribute.keyword, attribute.vr, text, None)
    vr = attribute.vr
    if vr == "UI":
        return _compile_uid(attribute, text)
    if vr in RANGE_VRS:
        return _compile_range(attribute, text)
    if vr in NUMBER_VRS:
        return _compile_number(attribute, text)
    if vr == "PN":
        return _compile_person_name(attribute, text, fuzzy)
    return _compile_text(attribute, text)


@dataclass(frozen=True)
class CompiledQuery:
    """Every non-universal constraint of a query, keyed by keyword; ``matches`` tests a candidate."""

    constraints: Mapping[str, CompiledConstraint]
    fuzzy: bool = False

    def matches(self, values: Mapping[str, Sequence[ScalarValue]]) -> bool:
        get = values.get
        return all(c.matches(get(k)) for k, c in self.constraints.items())

    def get(self, keyword: str) -> CompiledConstraint | None:
        return self.constraints.get(keyword)

    def restricted_to(self, keywords: Collection[str]) -> CompiledQuery:
        """The constraints on these keywords only."""
        return CompiledQuery({k: c for k, c in self.constraints.items() if k in keywords}, self.fuzzy)

    def __bool__(self) -> bool:
        return bool(self.constraints)


def compile_query(constraints: Mapping[str, str] | Iterable[tuple[str, str]], *, fuzzy: bool = False,
                  allowed: Collection[str] | None = None, where: str = "this query") -> CompiledQuery:
    """Parse every constraint once; names outside ``allowed`` (keywords) are refused with a hint."""
    items = constraints.items() if isinstance(constraints, Mapping) else constraints
    compiled: dict[str, CompiledConstraint] = {}
    for name, text in items:
        attribute = resolve_keyword(name)
        if allowed is not None and attribute.keyword not in allowed:
            raise InvalidInputError(
                f"{attribute.keyword} cannot be matched in {where}: it is a {attribute.level.value}-level "
                f"attribute; allowed here: {', '.join(sorted(allowed))}")
        if attribute.keyword in compiled:
            raise InvalidInputError(f"{attribute.keyword} is constrained twice in {where}")
        one = compile_constraint(attribute.keyword, text, fuzzy=fuzzy)
        if one is not None:
            compiled[attribute.keyword] = one
    return CompiledQuery(compiled, fuzzy)
