"""EC2 filter values (service.common): exact values compare as text, wildcards as patterns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stockade.service.common import _wildcard, _wildcard_pattern, matches, parse_filters

SPEC = {"group-name": lambda item: [item["group_name"]]}


def names(filter_values: list[str], candidates: list[str]) -> list[str]:
    filters = parse_filters([{"name": "group-name", "values": filter_values}], SPEC)
    return [n for n in candidates if matches({"group_name": n}, filters, SPEC)]


def test_exact_wildcard_and_escaped_values():
    candidates = ["web", "web-1", "web-10", "Web", "we", "a*b", "axb", "a?b", ""]
    assert names(["web"], candidates) == ["web"]
    assert names(["web-?"], candidates) == ["web-1"]
    assert names(["web*"], candidates) == ["web", "web-1", "web-10"]
    assert names(["a\\*b"], candidates) == ["a*b"]
    assert names(["a?b"], candidates) == ["a*b", "axb", "a?b"]
    assert names(["a\\?b", "we"], candidates) == ["we", "a?b"]


@given(st.text(), st.text())
def test_an_exact_value_matches_as_its_pattern_would(value: str, other: str):
    plain = value.replace("*", "").replace("?", "").replace("\\", "")
    for candidate in (plain, other, plain + other, plain[:-1]):
        as_pattern = _wildcard_pattern(plain).fullmatch(candidate) is not None
        assert bool(_wildcard(plain).fullmatch(candidate)) == as_pattern
