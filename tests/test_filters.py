"""EC2 filter values (service.common): exact values compare as text, wildcards as patterns
matched in linear time."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stockade.errors import ApiError
from stockade.service.common import MAX_FILTER_VALUES, _wildcard, matches, parse_filters

SPEC = {"group-name": lambda item: [item["group_name"]]}


def names(filter_values: list[str], candidates: list[str]) -> list[str]:
    filters = parse_filters([{"name": "group-name", "values": filter_values}], SPEC)
    return [n for n in candidates if matches({"group_name": n}, filters, SPEC)]


def reference(pattern: str) -> re.Pattern[str]:
    """EC2's wildcards as a (backtracking) regex: the meaning, for small inputs only."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def test_exact_wildcard_and_escaped_values():
    candidates = ["web", "web-1", "web-10", "Web", "we", "a*b", "axb", "a?b", ""]
    assert names(["web"], candidates) == ["web"]
    assert names(["web-?"], candidates) == ["web-1"]
    assert names(["web*"], candidates) == ["web", "web-1", "web-10"]
    assert names(["a\\*b"], candidates) == ["a*b"]
    assert names(["a?b"], candidates) == ["a*b", "axb", "a?b"]
    assert names(["a\\?b", "we"], candidates) == ["we", "a?b"]
    assert names(["*"], candidates) == candidates
    assert names(["*-1*"], candidates) == ["web-1", "web-10"]
    assert names(["w*b*"], candidates) == ["web", "web-1", "web-10"]
    assert names(["??"], candidates) == ["we"]


# small alphabets, so that the wildcards meet text that nearly matches them
PATTERNS = st.text(alphabet="ab*?", max_size=8) | st.text(alphabet="ab*?\\", max_size=10)
VALUES = st.text(alphabet="ab", max_size=8) | st.text(alphabet="ab*?\\", max_size=12)


@settings(max_examples=3000, deadline=None)
@given(PATTERNS, VALUES)
@example("*ab*ba*", "aba")
@example("a*a", "a")
def test_the_matcher_agrees_with_the_wildcards_meaning(pattern: str, value: str):
    expected = reference(pattern).fullmatch(value) is not None
    assert bool(_wildcard(pattern).fullmatch(value)) == expected


@given(st.text(), st.text())
def test_an_exact_value_matches_as_its_pattern_would(value: str, other: str):
    plain = value.replace("*", "").replace("?", "").replace("\\", "")
    for candidate in (plain, other, plain + other, plain[:-1]):
        as_pattern = reference(plain).fullmatch(candidate) is not None
        assert bool(_wildcard(plain).fullmatch(candidate)) == as_pattern


def test_pathological_patterns_answer_at_once():
    """``*a*a*...*b`` against a long run of ``a``: a backtracking regex takes seconds (and
    with a few more stars, forever); the segment matcher does a few ``find`` calls."""
    value = "a" * 255
    started = time.perf_counter()
    for stars in range(2, 60):
        pattern = "*a" * stars + "*b"
        assert not _wildcard(pattern).fullmatch(value)
        assert _wildcard(pattern[:-1] + "a").fullmatch(value)
        assert not _wildcard("?a" * stars + "*?b").fullmatch(value)
    assert time.perf_counter() - started < 1.0


def test_filter_limits_are_ec2s():
    too_many = [{"name": "group-name", "values": ["x"] * (MAX_FILTER_VALUES // 2 + 1)}] * 2
    with pytest.raises(ApiError) as err:
        parse_filters(too_many, SPEC)
    assert err.value.code == "FilterLimitExceeded" and str(MAX_FILTER_VALUES) in err.value.message
    parse_filters([{"name": "group-name", "values": ["x"] * MAX_FILTER_VALUES}], SPEC)
    with pytest.raises(ApiError) as err:
        parse_filters([{"name": "group-name", "values": ["x" * 256]}], SPEC)
    assert err.value.code == "InvalidParameterValue" and "255" in err.value.message
