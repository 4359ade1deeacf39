"""VM names from a pattern with a sequence number, so jobnets can address ``hadoop-03`` by number.

A pattern is a Python format string with exactly one ``seq`` field, e.g. ``hadoop-{seq:02d}``. New
names continue after the highest number already taken by a name of the same pattern, so growing a
cluster never renumbers or reuses a live VM's name. Every generated name must be a valid libvirt
domain and DNS label: ``^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""A VM name: one DNS label (lower case), as libvirt domains and host names of the fleet use."""
NAME_RE = re.compile(NAME_PATTERN)
MAX_COUNT = 100
FIRST_SEQ = 1
# Only integer padding is allowed: "", "d", "03", "03d". Signs, spaces, hex or alignment would give
# names that cannot be parsed back to their number (or are not valid names at all).
_SPEC_RE = re.compile(r"^(0[1-9][0-9]?)?d?$")


class VmNamingError(ValueError):
    """The pattern, count or start cannot give usable VM names; the message says why."""


@dataclass(frozen=True)
class NamePattern:
    """A validated pattern: literal text around one ``{seq}`` field."""

    pattern: str
    prefix: str
    spec: str
    suffix: str

    @classmethod
    def parse(cls, pattern: str) -> NamePattern:
        try:
            parts = list(string.Formatter().parse(pattern))
        except ValueError as err:
            raise VmNamingError(f"pattern {pattern!r} is not a valid format string: {err}") from err
        fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
        if len(fields) != 1:
            raise VmNamingError(
                f"pattern {pattern!r} must contain exactly one {{seq}} field, found {len(fields)}"
            )
        name, spec, conv = fields[0]
        if name != "seq":
            raise VmNamingError(
                f"pattern {pattern!r} has field {{{name}}}; the only field allowed is {{seq}}"
            )
        if conv is not None:
            raise VmNamingError(f"pattern {pattern!r}: conversion !{conv} is not allowed on {{seq}}")
        spec = spec or ""
        if not _SPEC_RE.match(spec):
            raise VmNamingError(
                f"pattern {pattern!r}: format spec {spec!r} not allowed; "
                "use none, 'd' or zero padding like '02d'"
            )
        # Exactly one field, so the literal text splits into the text before it and the text after it.
        prefix, suffix = _split_literals(parts)
        result = cls(pattern=pattern, prefix=prefix, spec=spec, suffix=suffix)
        sample = result.format(FIRST_SEQ)
        if not NAME_RE.match(sample):
            raise VmNamingError(
                f"pattern {pattern!r} gives {sample!r}, which is not a valid VM name "
                f"(lowercase letters, digits and '-', 1-63 characters, no '-' at either end)"
            )
        return result

    def format(self, seq: int) -> str:
        return f"{self.prefix}{format(seq, self.spec)}{self.suffix}"

    def seq_of(self, name: str) -> int | None:
        """The sequence number ``name`` was made from, or None if this pattern cannot produce it."""
        if not (name.startswith(self.prefix) and name.endswith(self.suffix)):
            return None
        middle = name[len(self.prefix) : len(name) - len(self.suffix)]
        if not middle.isascii() or not middle.isdigit():
            return None
        seq = int(middle)
        # "web-1" is not "web-{seq:02d}" at 1: only names the pattern would print count as its own.
        return seq if self.format(seq) == name else None


def _split_literals(parts: list[tuple[str, str | None, str | None, str | None]]) -> tuple[str, str]:
    before: list[str] = []
    after: list[str] = []
    seen_field = False
    for text, field, _, _ in parts:
        (after if seen_field else before).append(text)
        if field is not None:
            seen_field = True
    return "".join(before), "".join(after)


def sequence_number(pattern: str, name: str) -> int | None:
    """The ``seq`` of ``name`` under ``pattern`` (``web-{seq:02d}``, ``web-07`` -> 7), else None."""
    return NamePattern.parse(pattern).seq_of(name)


def expand_names(
    pattern: str, count: int, existing_names: Iterable[str], start: int | None = None
) -> list[str]:
    """``count`` new names from ``pattern``, after the highest taken number or from ``start``.

    Without ``start`` numbering continues after the highest number among ``existing_names`` that the
    pattern could have produced (``FIRST_SEQ`` if none). With ``start`` the caller picks the numbers,
    and any collision with an existing name is refused rather than silently skipped, because a jobnet
    that says ``start=4`` expects exactly ``web-04``.
    """
    parsed = NamePattern.parse(pattern)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise VmNamingError(f"count must be an integer from 1 to {MAX_COUNT}, got {count!r}")
    existing = set(existing_names)
    if start is None:
        taken = [seq for seq in (parsed.seq_of(n) for n in existing) if seq is not None]
        first = max(taken) + 1 if taken else FIRST_SEQ
    else:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise VmNamingError(f"start must be a non-negative integer, got {start!r}")
        first = start
    names = [parsed.format(seq) for seq in range(first, first + count)]
    invalid = [n for n in names if not NAME_RE.match(n)]
    if invalid:
        raise VmNamingError(f"pattern {pattern!r} gives invalid VM names: {invalid}")
    collisions = sorted(existing.intersection(names))
    if collisions:
        raise VmNamingError(f"names already exist: {collisions}; pick another start or leave it out")
    return names
