"""One duration grammar and one yes/no grammar (core/values.py) behind every field that reads them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.power import PowerThresholds
from rackflow.core.values import parse_bool, parse_clock, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90.5", 90.5),
        ("90s", 90),
        ("15m", 900),
        ("15 min", 900),
        ("2h", 7200),
        ("2 hours", 7200),
        ("2d", 172800),
        ("600.0 s", 600),
        ("01:30", 5400),
        ("1-00:00:01", 86401),
        ("PT1H30M", 5400),
        ("P2D", 172800),
    ],
)
def test_one_grammar_for_walltimes_and_power_thresholds(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    job = parse_job_description({"executable": "/bin/true", "attributes": {"duration": text}})
    assert job.attributes.duration == timedelta(seconds=seconds)
    # the same text is a valid power threshold (it was not: "2d" and "01:30" failed there)
    thresholds = PowerThresholds(off_threshold=text, on_threshold="1s")
    assert thresholds.off_threshold == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "P", "2 weeks", "-5", "inf", "1e400", "1:2:3:4", "x" * 65])
def test_unreadable_durations_are_refused_with_the_field_named(text: str) -> None:
    with pytest.raises(ValueError, match="power threshold"):
        parse_duration(text, what="power threshold")


def test_bounds() -> None:
    with pytest.raises(ValueError, match="at most 365 days"):
        parse_duration("366d")
    with pytest.raises(ValueError, match="positive"):
        parse_duration(0)
    with pytest.raises(ValueError, match="at most 1 days"):
        parse_duration("25h", maximum=timedelta(days=1))


def test_scheduler_clock_reads_minutes_seconds() -> None:
    """Schedulers print MM:SS where a person's HH:MM means hours: the clock reader says so."""
    assert parse_clock("12:34") == timedelta(minutes=12, seconds=34)
    assert parse_duration("12:34") == timedelta(hours=12, minutes=34)
    assert parse_clock("00:02.708") == timedelta(seconds=2.708)
    assert parse_clock("7s") == timedelta(seconds=7)
    for word in ("", "N/A", "UNLIMITED", "INVALID", "Partition_Limit", "-"):
        assert parse_clock(word) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("off", False),
        ("0", False),
    ],
)
def test_one_yes_no_grammar(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_blank_is_an_error_unless_the_caller_says_what_it_means() -> None:
    with pytest.raises(ValueError, match="expected a boolean"):
        parse_bool("")
    with pytest.raises(ValueError, match="expected a boolean"):
        parse_bool("maybe", blank=False)
    assert parse_bool("", blank=False) is False
    assert parse_bool("None", blank=False) is False
