from __future__ import annotations

import pytest

from rackflow.core.vm_naming import VmNamingError, expand_names, sequence_number


def test_continues_after_highest_existing_number() -> None:
    existing = ["web-01", "web-02", "web-03", "db-09"]
    assert expand_names("web-{seq:02d}", 3, existing) == ["web-04", "web-05", "web-06"]


def test_continues_after_highest_even_with_gaps() -> None:
    assert expand_names("web-{seq:02d}", 1, ["web-01", "web-07"]) == ["web-08"]


def test_starts_at_one_when_nothing_matches() -> None:
    assert expand_names("hadoop-{seq:02d}", 2, ["web-01", "hadoop-x"]) == ["hadoop-01", "hadoop-02"]


def test_names_the_pattern_would_not_print_do_not_count() -> None:
    # "web-1" and "web-001" are not what "web-{seq:02d}" prints for 1, so they are not this series.
    assert expand_names("web-{seq:02d}", 1, ["web-1", "web-001", "web-05x"]) == ["web-01"]


def test_padding_grows_past_its_width() -> None:
    assert expand_names("n{seq:02d}", 2, ["n98"]) == ["n99", "n100"]


def test_unpadded_and_suffix_patterns() -> None:
    assert expand_names("{seq}-worker", 2, ["3-worker"]) == ["4-worker", "5-worker"]
    assert expand_names("rack1-node{seq:d}", 1, []) == ["rack1-node1"]


def test_explicit_start_without_collision() -> None:
    assert expand_names("web-{seq:02d}", 2, ["web-01"], start=10) == ["web-10", "web-11"]


def test_explicit_start_colliding_is_refused_and_names_the_collision() -> None:
    with pytest.raises(VmNamingError, match=r"already exist: \['web-03'\]"):
        expand_names("web-{seq:02d}", 3, ["web-01", "web-03"], start=2)


@pytest.mark.parametrize("count", [0, -1, 101, True])
def test_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(VmNamingError, match="count must be an integer from 1 to 100"):
        expand_names("web-{seq}", count, [])


def test_count_of_one_hundred_is_allowed() -> None:
    names = expand_names("w{seq:03d}", 100, [])
    assert names[0] == "w001" and names[-1] == "w100" and len(set(names)) == 100


def test_negative_start_is_refused() -> None:
    with pytest.raises(VmNamingError, match="start must be a non-negative integer"):
        expand_names("web-{seq}", 1, [], start=-1)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{seq}{seq}", "exactly one {seq} field, found 2"),
        ("web", "exactly one {seq} field, found 0"),
        ("web-{x}", r"has field {x}; the only field allowed is {seq}"),
        ("web-{}", "the only field allowed is {seq}"),
        ("web-{seq.real}", "the only field allowed is {seq}"),
        ("WEB-{seq}", "'WEB-1', which is not a valid VM name"),
        ("web_{seq}", "not a valid VM name"),
        ("-{seq}", "not a valid VM name"),
        ("web-{seq!r}", "conversion !r is not allowed"),
        ("web-{seq:x}", "format spec 'x' not allowed"),
        ("web-{seq:3d}", "format spec '3d' not allowed"),
        ("web-{seq:+d}", "format spec '\\+d' not allowed"),
        ("web-{", "not a valid format string"),
        ("a" * 63 + "{seq}", "not a valid VM name"),
    ],
)
def test_invalid_patterns_are_rejected_with_a_message(pattern: str, message: str) -> None:
    with pytest.raises(VmNamingError, match=message):
        expand_names(pattern, 1, [])


def test_names_that_outgrow_63_characters_are_refused() -> None:
    pattern = "a" * 61 + "{seq}"
    assert expand_names(pattern, 1, [], start=99) == ["a" * 61 + "99"]
    with pytest.raises(VmNamingError, match="invalid VM names"):
        expand_names(pattern, 2, [], start=99)


def test_sequence_number_reads_back_the_number() -> None:
    assert sequence_number("hadoop-{seq:02d}", "hadoop-07") == 7
    assert sequence_number("hadoop-{seq:02d}", "hadoop-7") is None
    assert sequence_number("hadoop-{seq:02d}", "web-07") is None
