"""What a batch job may stage: paths inside its job directory, and remote ends the site allow-listed.

Pure rules, no I/O (DNS included), shared by the job description's validation (submit time: 400 naming
the field) and by :mod:`rackflow.services.staging` (staging time, where hostnames are resolved and every
resolved address goes through :func:`address_problem` before a connection is made to it).

* A **job path** (``stage_in[i].target``, ``stage_out[i].source``) is relative, inside the job
  directory: no leading ``/``, no ``.``/``..``/empty components, no control characters or
  backslashes, components of at most 255 bytes (:func:`job_path_problem`, :data:`JOB_PATH_PATTERN`).
* A **remote end** (``stage_in[i].source``, ``stage_out[i].target``) is ``s3://bucket/key``,
  ``sftp://<ssh_conn_id>/path`` or (stage-in only) ``http(s)://host/...``. Keys and remote paths have
  no ``.``/``..``/empty components; a web host that is a literal address (also the legacy forms
  ``127.1`` or ``2130706433``) must be a public one, and ``localhost`` is refused
  (:func:`remote_problem`).
* The site's :class:`StagingPolicy` says which buckets and SSH connections (optionally narrowed to a
  key or path prefix) stage-in may read and stage-out may write, whether http(s) downloads are allowed
  at all, and the largest file one staging copy may move.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

_NAME_MAX_BYTES = 255
JOB_PATH_MAX_CHARS = 1024
# One component: never "", "." or ".."; no "/", backslash or control character. No look-arounds, so the
# same pattern works in Python's re, pydantic's Rust regex and a JSON-schema (ECMA) validator.
_C = r"[^/\\\x00-\x1f\x7f]"
_CND = r"[^/\\\x00-\x1f\x7f.]"
_FIRST = r"[^/\\\x00-\x1f\x7f.~]"  # the path's first character is not '~' either


def _component(head: str) -> str:
    return rf"(?:{head}{_C}{{0,254}}|\.{_CND}{_C}{{0,253}}|\.\.{_C}{{1,253}})"


JOB_PATH_PATTERN = rf"^{_component(_FIRST)}(?:/{_component(_CND)})*/?$"
REMOTE_URI_PATTERN = r"^(?:[sS]3|[sS][fF][tT][pP]|[hH][tT][tT][pP][sS]?)://"
STAGE_OUT_URI_PATTERN = r"^(?:[sS]3|[sS][fF][tT][pP])://"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _component_problem(part: str, what: str) -> str | None:
    if part == "":
        return f"empty path component ('//') in the {what}"
    if part in (".", ".."):
        return f"'{part}' path component in the {what}"
    if "\\" in part:
        return f"backslash in the {what}"
    if len(part.encode("utf-8", errors="surrogateescape")) > _NAME_MAX_BYTES:
        return f"a path component of the {what} is longer than {_NAME_MAX_BYTES} bytes"
    return None


def job_path_problem(value: str) -> str | None:
    """Why ``value`` is not a relative path inside the job directory; None when it is one."""
    if not value:
        return "empty path"
    if "://" in value:
        return f"must be a local path (relative, inside the job directory), got {value[:80]!r}"
    if value.startswith("/"):
        return f"{value[:80]!r} is an absolute path; staging paths are relative to the job directory"
    if value.startswith("~"):
        return f"{value[:80]!r} starts with '~'; staging paths are relative to the job directory"
    if _CONTROL_RE.search(value):
        return "control character (NUL, newline, ...) in the path"
    if len(value) > JOB_PATH_MAX_CHARS:
        return f"path longer than {JOB_PATH_MAX_CHARS} characters"
    for part in value.removesuffix("/").split("/"):
        problem = _component_problem(part, "path")
        if problem:
            return problem + " (staging paths stay inside the job directory)"
    return None


def job_path_parts(value: str) -> tuple[str, ...]:
    """The components of a checked job path (ValueError when :func:`job_path_problem` has one)."""
    problem = job_path_problem(value)
    if problem:
        raise ValueError(problem)
    return tuple(value.removesuffix("/").split("/"))


# -- addresses ----------------------------------------------------------------------------------------


def address_problem(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why staging must not connect to ``address``; None for a public unicast address.

    Refused: loopback, private (RFC 1918, unique local), link-local, shared (100.64/10), multicast,
    unspecified, reserved and documentation ranges -- everything Python's ``ipaddress`` does not call
    global -- and IPv6 forms carrying such an IPv4 address (mapped, 6to4, Teredo, NAT64).
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return f"{str(address)[:80]!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} has a scope id (link-local)"
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in ipaddress.IPv6Network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            if inner:
                return f"{ip} carries {embedded}: {inner}"
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{name}"):
            return f"{ip} is a {name.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` spells without DNS (``10.0.0.1``, ``[::1]``, ``127.1``, ``0x7f.1``,
    ``2130706433``); None for a name that needs resolving."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))  # the legacy forms getaddrinfo accepts
    except OSError:
        return None


def host_problem(host: str) -> str | None:
    """Submit-time check of a web host: a literal address must be public; ``localhost`` is refused."""
    if not host:
        return "no host"
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host!r} is the loopback host"
    if _CONTROL_RE.search(host) or any(c in host for c in " /\\@"):
        return f"{host[:80]!r} is not a host name"
    literal = literal_address(host)
    if literal is not None:
        return address_problem(literal)
    return None


def remote_problem(uri: str, *, stage_out: bool) -> str | None:
    """Why ``uri`` cannot be a remote end of staging, whatever the site allows; None when it can."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    allowed = ("s3", "sftp") if stage_out else ("s3", "sftp", "http", "https")
    kinds = ", ".join(f"{s}://" for s in allowed)
    if "://" in uri and scheme not in ("s3", "sftp", "http", "https", "file"):
        return f"unsupported URI scheme {scheme!r} (use {kinds})"
    if "://" not in uri or scheme not in allowed:
        return f"must be a {kinds} URI (files of the execution host outside the job are not staged)"
    if _CONTROL_RE.search(uri):
        return "control character (NUL, newline, ...) in the URI"
    if scheme in ("http", "https"):
        try:
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as exc:
            return f"unreadable host or port: {exc}"
        if parts.username is not None or parts.password is not None:
            return "credentials in a web URI are refused"
        problem = host_problem(host)
        return f"web host refused: {problem}" if problem else None
    path = parts.path.lstrip("/") if scheme == "s3" else parts.path
    what = "key" if scheme == "s3" else "remote path"
    if parts.query or parts.fragment:
        return f"'?' or '#' in the {what}"
    for part in path.removesuffix("/").split("/")[(0 if scheme == "s3" else 1) :]:
        problem = _component_problem(part, what)
        if problem:
            return problem
    return None


# -- the site's allow-lists ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowEntry:
    """``name`` (a bucket or SSH connection id), optionally narrowed to keys or paths under ``prefix``."""

    name: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        name, _sep, rest = text.partition("/")
        if not name:
            raise ValueError(f"staging allow-list entry {text!r} names no bucket or connection")
        prefix = rest.strip("/")
        return cls(name=name, prefix=prefix + "/" if prefix else "")

    def allows(self, name: str, path: str) -> bool:
        return name == self.name and path.lstrip("/").startswith(self.prefix)

    def __str__(self) -> str:
        return f"{self.name}/{self.prefix}" if self.prefix else self.name


def parse_allow_list(text: str) -> tuple[AllowEntry, ...]:
    """Entries separated by commas or white space (``rackflow-results, archive/jobs/``)."""
    return tuple(AllowEntry.parse(item) for item in re.split(r"[,\s]+", text or "") if item)


def parse_size(value: str | int) -> int:
    """Bytes from ``1048576``, ``512M``, ``10GiB``, ``2T`` (binary units); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _SIZE_RE.match(str(value))
        if m is None:
            raise ValueError(f"cannot read size {value!r}: use bytes or a K/M/G/T suffix")
        size = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "")[:1].upper()]
    if size <= 0:
        raise ValueError(f"size {value!r} must be positive")
    return size


# The ``[rackflow]`` option behind each allow-list, named in refusals.
OPTION_NAMES = {
    "s3_sources": "staging_s3_sources",
    "s3_targets": "staging_s3_targets",
    "sftp_sources": "staging_sftp_sources",
    "sftp_targets": "staging_sftp_targets",
    "allow_http": "staging_allow_http",
    "max_file_bytes": "staging_max_file_size",
}


@dataclass(frozen=True)
class StagingPolicy:
    """The site's staging allow-lists (``[rackflow] staging_*``; see :mod:`rackflow.settings`)."""

    s3_sources: tuple[AllowEntry, ...] = ()
    s3_targets: tuple[AllowEntry, ...] = ()
    sftp_sources: tuple[AllowEntry, ...] = ()
    sftp_targets: tuple[AllowEntry, ...] = ()
    allow_http: bool = False
    max_file_bytes: int = 1 << 30

    def remote_problem(self, uri: str, *, stage_out: bool) -> str | None:
        """Why this site refuses ``uri`` as a remote end; None when it is allowed."""
        fixed = remote_problem(uri, stage_out=stage_out)
        if fixed:
            return fixed
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if not self.allow_http:
                return f"{scheme}:// staging is off on this site ([rackflow] {OPTION_NAMES['allow_http']})"
            return None
        direction = "targets" if stage_out else "sources"
        key = f"{scheme}_{direction}"
        entries: Iterable[AllowEntry] = getattr(self, key)
        if any(e.allows(parts.netloc, parts.path) for e in entries):
            return None
        what = "bucket" if scheme == "s3" else "SSH connection"
        verb = "written by stage_out" if stage_out else "read by stage_in"
        return (
            f"{what} {parts.netloc!r} (at this {'key' if scheme == 's3' else 'path'}) may not be {verb}: "
            f"not on the site's allow-list ([rackflow] {OPTION_NAMES[key]})"
        )

    def problems(
        self, stage_in: Iterable[tuple[str, str]], stage_out: Iterable[tuple[str, str]]
    ) -> list[str]:
        """``field: problem`` for each (source, target) pair of ``stage_in`` and ``stage_out``."""
        found: list[str] = []
        for i, (source, _target) in enumerate(stage_in):
            problem = self.remote_problem(source, stage_out=False)
            if problem:
                found.append(f"stage_in[{i}].source: {problem}")
        for i, (_source, target) in enumerate(stage_out):
            problem = self.remote_problem(target, stage_out=True)
            if problem:
                found.append(f"stage_out[{i}].target: {problem}")
        return found


__all__ = [
    "JOB_PATH_PATTERN",
    "OPTION_NAMES",
    "REMOTE_URI_PATTERN",
    "STAGE_OUT_URI_PATTERN",
    "AllowEntry",
    "StagingPolicy",
    "address_problem",
    "host_problem",
    "job_path_parts",
    "job_path_problem",
    "literal_address",
    "parse_allow_list",
    "parse_size",
    "remote_problem",
]
