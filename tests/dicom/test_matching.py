"""DICOM matching (PS3.4 C.2.2.2): the compiled matchers against a plain reference of the rules.

The reference below is written apart from :mod:`mmarchive.dicom.matching`: wildcards by recursion, dates
with ``datetime.date``, times by padding text to ``HHMMSS.FFFFFF`` bounds, names by splitting groups. The
properties check compiled == reference on generated values and constraints; the examples cover every
matching kind and every refusal.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmarchive.dicom.attributes import Attribute, Level
from mmarchive.dicom.matching import compile_constraint, compile_query
from mmarchive.errors import InvalidInputError

# -- the reference ------------------------------------------------------------------------------------


def ref_wildcard(pattern: str, text: str) -> bool:
    @cache
    def at(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(text)
        if pattern[i] == "*":
            return at(i + 1, j) or (j < len(text) and at(i, j + 1))
        if j < len(text) and (pattern[i] == "?" or pattern[i] == text[j]):
            return at(i + 1, j + 1)
        return False

    return at(0, 0)


def ref_name_groups(value: str) -> list[str]:
    groups = [g.rstrip("^ ").lower() for g in value.split("=")]
    while groups and groups[-1] == "":
        groups.pop()
    return groups


def ref_time_bounds(text: str) -> tuple[str, str]:
    """Lower and upper bounds of a TM value as fixed-width ``HHMMSS.FFFFFF`` text."""
    hh, rest = text[:2], text[2:]
    mm, rest = (rest[:2], rest[2:]) if rest else ("", "")
    ss, frac = (rest[:2], rest[3:]) if rest else ("", "")
    lo = hh + (mm or "00") + (ss or "00") + "." + frac.ljust(6, "0")
    hi = hh + (mm or "59") + (ss or "59") + "." + frac.ljust(6, "9")
    return lo, hi


def ref_range(lo: str | None, hi: str | None, value: str, vr: str) -> bool:
    if vr == "DA":
        day = dt.datetime.strptime(value, "%Y%m%d").date()
        return (lo is None or day >= dt.datetime.strptime(lo, "%Y%m%d").date()) and \
            (hi is None or day <= dt.datetime.strptime(hi, "%Y%m%d").date())
    point = ref_time_bounds(value)[0]
    return (lo is None or point >= ref_time_bounds(lo)[0]) and (hi is None or point <= ref_time_bounds(hi)[1])


# -- properties ---------------------------------------------------------------------------------------

text_values = st.text(alphabet="abAB ^", max_size=6).map(str.strip)
patterns = st.text(alphabet="ab*?", min_size=1, max_size=6)


@given(values=st.lists(text_values, max_size=3), pattern=patterns)
def test_wildcards_match_as_the_reference(values: list[str], pattern: str) -> None:
    compiled = compile_constraint("StudyDescription", pattern)
    if set(pattern) == {"*"}:
        assert compiled is None  # a lone "*" is universal matching
        return
    assert compiled is not None
    assert compiled.matches(tuple(values)) == any(ref_wildcard(pattern, v) for v in values)


@given(values=st.lists(st.text(alphabet="aAbB^=", max_size=8), min_size=1, max_size=2),
       pattern=st.text(alphabet="aAbB^*?", min_size=1, max_size=6).filter(lambda p: bool(p.strip("*"))))
def test_person_names_match_case_insensitively_in_any_group(values: list[str], pattern: str) -> None:
    compiled = compile_constraint("PatientName", pattern)
    assert compiled is not None
    want = pattern.rstrip("^ ").lower()
    expected = any(ref_wildcard(want, g) for v in values for g in ref_name_groups(v))
    assert compiled.matches(tuple(values)) == expected


dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31)).map(
    lambda d: d.strftime("%Y%m%d"))


@given(value=dates, lo=st.one_of(st.none(), dates), hi=st.one_of(st.none(), dates))
def test_date_ranges_match_as_the_reference(value: str, lo: str | None, hi: str | None) -> None:
    if lo is None and hi is None:
        return
    text = f"{lo or ''}-{hi or ''}"
    if lo is not None and hi is not None and lo > hi:
        with pytest.raises(InvalidInputError, match="StudyDate"):
            compile_constraint("StudyDate", text)
        return
    compiled = compile_constraint("StudyDate", text)
    assert compiled is not None
    assert compiled.matches((value,)) == ref_range(lo, hi, value, "DA")


@st.composite
def times(draw: st.DrawFn) -> str:
    text = f"{draw(st.integers(0, 23)):02d}"
    if draw(st.booleans()):
        text += f"{draw(st.integers(0, 59)):02d}"
        if draw(st.booleans()):
            text += f"{draw(st.integers(0, 59)):02d}"
            if draw(st.booleans()):
                text += "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=6)))
    return text


@given(value=times(), lo=st.one_of(st.none(), times()), hi=st.one_of(st.none(), times()),
       single=st.booleans())
def test_time_ranges_and_partial_times_match_as_the_reference(value: str, lo: str | None, hi: str | None,
                                                              single: bool) -> None:
    if single and lo is not None:  # a single partial time is the range of its own precision
        compiled = compile_constraint("StudyTime", lo)
        assert compiled is not None
        assert compiled.matches((value,)) == ref_range(lo, lo, value, "TM")
        return
    if lo is None and hi is None:
        return
    text = f"{lo or ''}-{hi or ''}"
    if lo is not None and hi is not None and ref_time_bounds(lo)[0] > ref_time_bounds(hi)[1]:
        with pytest.raises(InvalidInputError, match="StudyTime"):
            compile_constraint("StudyTime", text)
        return
    compiled = compile_constraint("StudyTime", text)
    assert compiled is not None
    assert compiled.matches((value,)) == ref_range(lo, hi, value, "TM")


uids = st.lists(st.integers(0, 30), min_size=1, max_size=4).map(lambda parts: ".".join(map(str, parts)))


@given(wanted=st.lists(uids, min_size=1, max_size=4), values=st.lists(uids, max_size=3))
def test_uid_lists_match_any_listed_uid(wanted: list[str], values: list[str]) -> None:
    compiled = compile_constraint("StudyInstanceUID", "\\".join(wanted))
    assert compiled is not None
    assert compiled.matches(tuple(values)) == bool(set(values) & set(wanted))
    assert set(compiled.exact or ()) == set(wanted)


# -- every kind, by example ---------------------------------------------------------------------------


def matches(keyword: str | Attribute, constraint: str, *values: str | int | float,
            fuzzy: bool = False) -> bool:
    compiled = compile_constraint(keyword, constraint, fuzzy=fuzzy)
    assert compiled is not None
    return compiled.matches(values)


def test_universal_matching() -> None:
    assert compile_constraint("PatientID", "") is None
    assert compile_constraint("PatientID", "*") is None
    assert compile_constraint("PatientName", "**") is None
    assert compile_constraint("StudyDate", " ") is None
    assert not compile_query({"PatientID": "", "StudyDate": ""})


def test_empty_value_matching() -> None:
    assert matches("StudyDescription", '""')
    assert not matches("StudyDescription", '""', "HEAD")


def test_single_value_matching_is_exact_and_case_sensitive() -> None:
    assert matches("PatientID", "ab12", "ab12")
    assert not matches("PatientID", "ab12", "AB12")
    assert not matches("PatientID", "ab12", "ab123")
    assert not matches("PatientID", "ab12")  # absent: only universal matching accepts it
    assert matches("Modality", "CT\\MR", "MR")  # multiple value matching: any alternative


def test_wildcards_and_their_index_hints() -> None:
    assert matches("AccessionNumber", "AC?1*", "ACX1", "no")
    assert not matches("AccessionNumber", "AC?1*", "AC1")
    wild = compile_constraint("AccessionNumber", "AC?1*")
    exact = compile_constraint("AccessionNumber", "AC1")
    assert wild is not None and wild.prefixes == ("AC",) and wild.exact is None
    assert exact is not None and exact.exact == ("AC1",)


def test_multi_valued_attributes_match_if_any_value_matches() -> None:
    assert matches("ModalitiesInStudy", "MR", "CT", "MR")
    assert not matches("ModalitiesInStudy", "US", "CT", "MR")
    assert matches("PatientName", "doe*", "Smith^J", "Doe^Jane")


def test_dates() -> None:
    assert matches("StudyDate", "20200102", "20200102")
    assert not matches("StudyDate", "20200102", "20200103")
    assert matches("StudyDate", "-20200102", "19991231")
    assert matches("StudyDate", "20200102-", "20991231")
    assert not matches("StudyDate", "20200102-20200105", "20200106")
    assert not matches("StudyDate", "20200102-", "garbage")
    compiled = compile_constraint("StudyDate", "20200102-")
    assert compiled is not None and compiled.text_range == ("20200102", "\uffff")


def test_partial_times_and_fractions() -> None:
    assert matches("StudyTime", "10", "100000", "1059")
    assert matches("StudyTime", "10", "105959.999999")
    assert not matches("StudyTime", "10", "110000")
    assert matches("StudyTime", "1030", "103059.5")
    assert not matches("StudyTime", "1030", "1031")
    assert matches("StudyTime", "103000.5-103000.7", "103000.6")
    assert matches("StudyTime", "103000.5-103000.7", "103000.79")  # .7 runs to .799999
    assert not matches("StudyTime", "103000.5-103000.7", "103000.8")
    assert matches("StudyTime", "-09", "0959")
    assert matches("StudyTime", "10:30-", "11:00:00")  # the older colon form is accepted


ACQUISITION_DATETIME = Attribute("AcquisitionDateTime", 0x0008002A, "DT", Level.INSTANCE)


def test_datetimes_partial_and_with_offsets() -> None:
    a = ACQUISITION_DATETIME
    assert matches(a, "2020", "20201231235959.999999")
    assert not matches(a, "2020", "2021")
    assert matches(a, "202002", "20200229")
    assert matches(a, "202012", "20201231")
    assert matches(a, "20200101103000-20200101110000", "202001011045")
    assert matches(a, "20200101120000+0100-", "20200101110000")  # 12:00 at +01:00 is 11:00 UTC
    assert not matches(a, "20200101120000+0100-", "20200101105959")
    assert matches(a, "-2019", "2019")
    for bad in ("2020-2019", "2020**", "20201301"):
        with pytest.raises(InvalidInputError, match="AcquisitionDateTime"):
            compile_constraint(a, bad)
    with pytest.raises(InvalidInputError, match="unknown attribute"):
        compile_constraint("AcquisitionDateTime", "2020")


def test_person_names() -> None:
    assert matches("PatientName", "smith^john", "SMITH^JOHN^^^")
    assert matches("PatientName", "SMITH*", "Smith^John")
    assert not matches("PatientName", "SMITH", "Smith^John")  # single value matching is whole-name
    assert matches("PatientName", "yamada^tarou", "Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert matches("PatientName", "山田*", "Yamada^Tarou=山田^太郎")  # any group, without "="
    assert matches("PatientName", "=山田^太郎", "Yamada^Tarou=山田^太郎")  # group by group, with "="
    assert not matches("PatientName", "=山田^花子", "Yamada^Tarou=山田^太郎")
    assert matches("PatientName", "joh smi", "SMITH^JOHN", fuzzy=True)
    assert matches("PatientName", "sm", "SMITH^JOHN", fuzzy=True)
    assert not matches("PatientName", "mith", "SMITH^JOHN", fuzzy=True)


def test_numbers() -> None:
    assert matches("SeriesNumber", "3", 3)
    assert matches("SeriesNumber", "3\\4", 4)
    assert matches("SeriesNumber", " 3 ", "3")
    assert not matches("SeriesNumber", "3", 30)


@pytest.mark.parametrize(("keyword", "text", "words"), [
    ("StudyDate", "2020-13", "YYYYMMDD"),
    ("StudyDate", "20200230", "YYYYMMDD"),
    ("StudyDate", "20200201-20200101", "ends before it starts"),
    ("StudyDate", "-", "YYYYMMDD"),
    ("StudyDate", "2020*", "YYYYMMDD"),
    ("StudyTime", "2500", "HHMMSS"),
    ("StudyTime", "1100-1000", "ends before it starts"),
    ("StudyInstanceUID", "1.2.*", "wildcards are not allowed in a UID"),
    ("StudyInstanceUID", "1.02.3", "digits and dots"),
    ("SeriesNumber", "1*", "wildcards and ranges are not allowed"),
    ("SeriesNumber", "one", "a number"),
    ("PatientBirthDate", "1950?101", "YYYYMMDD"),
])
def test_malformed_constraints_are_refused_with_the_keyword_value_and_what_is_accepted(
        keyword: str, text: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        compile_constraint(keyword, text)
    message = str(info.value)
    assert keyword in message and repr(text) in message and words in message


def test_unknown_keywords_are_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInputError, match="PatientID"):
        compile_query({"PatientId": "x"})
    with pytest.raises(InvalidInputError, match="cannot be matched in a study-level query"):
        compile_query({"SOPInstanceUID": "1.2"}, allowed={"PatientID"}, where="a study-level query")


def test_tags_name_attributes_too() -> None:
    query = compile_query({"00100020": "P1", "0020000D": "1.2"})
    assert set(query.constraints) == {"PatientID", "StudyInstanceUID"}
    assert query.matches({"PatientID": ("P1",), "StudyInstanceUID": ("1.2",)})
    assert not query.matches({"PatientID": ("P1",), "StudyInstanceUID": ("1.3",)})
