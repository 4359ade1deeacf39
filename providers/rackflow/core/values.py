"""How rackflow reads durations and yes/no values from text: one grammar each, used everywhere.

A duration a person writes — a job's walltime, a power threshold, a ``[rackflow]`` setting — is
:func:`parse_duration`. A duration a scheduler prints (Slurm's ``Elapsed``/``TotalCPU``, PBS's
``cput``, Grid Engine's ``qacct``) is :func:`parse_clock`: schedulers print ``MM:SS`` where a person's
``HH:MM`` means hours, so the two cannot share one reading of ``12:34``. A yes/no a person writes (a
jobnet parameter, an operator argument rendered from a template) is :func:`parse_bool`. A moment in
time read from a store that may drop the zone (SQLite, an S3 listing) is :func:`as_utc`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

MAX_DURATION = timedelta(days=365)
"""The longest duration a person may write (walltimes, thresholds, retention)."""
MAX_DURATION_TEXT = 64

_UNITS = r"s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_STRING_PATTERN = (
    r"^\s*(\d+(\.\d+)?|(\d+-)?\d+:\d{1,2}(:\d{1,2})?|\d+(\.\d+)?\s*(" + _UNITS + r")"
    r"|P(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?)\s*$"
)
"""The duration grammar as a JSON-schema ``pattern`` (the job description's schema carries it)."""
_DURATION_RE = re.compile(
    r"^\s*(?:"
    r"(?P<seconds>\d+(?:\.\d+)?)"
    r"|(?:(?P<days>\d+)-)?(?P<h>\d+):(?P<m>\d{1,2})(?::(?P<s>\d{1,2}))?"
    r"|(?P<unit_value>\d+(?:\.\d+)?)\s*(?P<unit>" + _UNITS + r")"
    r"|P(?:(?P<iso_d>\d+)D)?(?:T(?:(?P<iso_h>\d+)H)?(?:(?P<iso_m>\d+)M)?(?:(?P<iso_s>\d+(?:\.\d+)?)S)?)?"
    r")\s*$",
    re.IGNORECASE,
)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken as UTC (rackflow stores and compares every time in UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_duration(value: object, *, maximum: timedelta = MAX_DURATION, what: str = "duration") -> timedelta:
    """A positive duration of at most ``maximum``, from what a person writes.

    Accepted: a timedelta; seconds (a number, or digits with an optional fraction); ``[D-]HH:MM[:SS]``;
    a number with a unit (``90s``, ``15 min``, ``2h``, ``2d``, psij's ``"600.0 s"``); ISO 8601
    (``PT1H30M``, ``P2D``). ``what`` names the value in error messages.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"{what} must be seconds or a duration string, not a boolean")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        if len(value) > MAX_DURATION_TEXT:
            raise ValueError(f"{what} text is longer than {MAX_DURATION_TEXT} characters")
        m = _DURATION_RE.match(value)
        if m is None or value.strip().upper() == "P":
            raise ValueError(
                f"cannot read {what} {value!r}: use seconds, 90s/15m/2h/2d, HH:MM:SS, D-HH:MM:SS "
                "or ISO 8601 (PT1H)"
            )
        g = m.groupdict()
        if g["seconds"] is not None:
            seconds = float(g["seconds"])
        elif g["h"] is not None:
            seconds = int(g["days"] or 0) * 86400 + int(g["h"]) * 3600 + int(g["m"]) * 60 + int(g["s"] or 0)
        elif g["unit"] is not None:
            seconds = float(g["unit_value"]) * _UNIT_SECONDS[g["unit"][0].lower()]
        else:
            seconds = (
                int(g["iso_d"] or 0) * 86400
                + int(g["iso_h"] or 0) * 3600
                + int(g["iso_m"] or 0) * 60
                + float(g["iso_s"] or 0)
            )
    else:
        raise ValueError(f"{what} must be seconds or a duration string, not {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be a finite number of seconds")
    if seconds <= 0:
        raise ValueError(f"{what} must be positive")
    if seconds > maximum.total_seconds():
        raise ValueError(f"{what} must be at most {maximum.days} days")
    return timedelta(seconds=seconds)


_CLOCK_RE = re.compile(r"(\d+-)?\d+(\.\d+)?(:\d+(\.\d+)?){0,2}")


def parse_clock(text: str) -> timedelta | None:
    """A duration a scheduler printed: ``[D-]HH:MM:SS``, ``MM:SS[.mmm]`` or seconds (a trailing ``s``
    allowed); None for anything else (``""``, ``N/A``, ``UNLIMITED``, ``INVALID``, ``Partition_Limit``)."""
    text = text.strip().removesuffix("s")
    if not _CLOCK_RE.fullmatch(text):
        return None
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        days = int(d)
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return timedelta(days=days, seconds=seconds)


def parse_bool(value: object, *, blank: bool | None = None) -> bool:
    """A yes/no: a bool, or ``true/yes/on/1`` / ``false/no/off/0`` in any case.

    ``blank`` is what an empty text (or ``None``/``"None"``, as a template renders a missing value)
    means; left None, a blank is an error like any other word.
    """
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if blank is not None and text in ("", "none"):
        return blank
    raise ValueError(f"expected a boolean (true/false/yes/no/on/off/1/0), got {value!r}")


__all__ = [
    "DURATION_STRING_PATTERN",
    "MAX_DURATION",
    "MAX_DURATION_TEXT",
    "parse_bool",
    "parse_clock",
    "parse_duration",
]
