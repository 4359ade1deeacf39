"""VM claims: a launch reserves its VMs' names and capacity in the rackflow DB before libvirt sees them.

:func:`claim_vms` runs in one transaction that first writes the row of every host it touches
(``rackflow_host.launch_serial``, in name order, so two launches over overlapping hosts cannot
deadlock). On Postgres that write takes the rows' locks; on SQLite it takes the database's write
lock (waiting up to the connection's ``busy_timeout``). Either way a second launch on the same host,
from any worker on any machine, waits at that write until the first has committed its claims, and
then sees them: names and capacity are decided by one launch at a time per host.

The caller's ``plan`` runs inside that transaction with the claims other launches hold on those
hosts (lapsed ones and this launch's own earlier ones are dropped first) and returns the claims to
record, or raises to record nothing. A launch releases its claims once libvirt has its VMs defined
(from then on libvirt's listing counts them) or when it gives up; one whose process died leaves
claims that lapse at their ``expires_at`` (a live launch renews them from a thread while it
works, :func:`keeping_claims`), and a retry of the same task takes its predecessor's claims over
at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from rackflow.db.models import Host, VmClaim, utcnow
from rackflow.db.session import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """One VM reserved on a host (``launch`` is the launch tag of whoever holds it)."""

    host: str
    name: str
    vcpus: int
    memory_mib: int
    launch: str = ""


class UnknownHost(KeyError):
    """A host to claim on is not in the inventory."""


def _lock_hosts(session: Session, hosts: Iterable[str]) -> None:
    for host in sorted(set(hosts)):
        result = session.execute(
            update(Host)
            .where(Host.name == host)
            # updated_at stays: this write is a lock, not a change of the inventory.
            .values(launch_serial=Host.launch_serial + 1, updated_at=Host.updated_at)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise UnknownHost(host)


def claim_vms(
    hosts: Sequence[str],
    launch: str,
    plan: Callable[[list[Claim]], Sequence[Claim]],
    *,
    lease: timedelta,
    url: str | None = None,
    now: datetime | None = None,
) -> list[Claim]:
    """Record the claims ``plan`` returns, deciding alone among launches on ``hosts``.

    ``plan`` gets the claims other launches hold on ``hosts`` and returns this launch's claims
    (each on one of ``hosts``); an exception from it records nothing and is raised as it is.
    """
    with session_scope(url) as session:
        _lock_hosts(session, hosts)
        at = now or utcnow()
        # Lapsed claims on these hosts go, and so do this launch's own (an earlier try's, anywhere).
        session.execute(
            delete(VmClaim).where(
                or_(
                    and_(VmClaim.host.in_(list(hosts)), VmClaim.expires_at <= at),
                    VmClaim.launch == launch,
                )
            )
        )
        held = [
            Claim(c.host, c.name, c.vcpus, c.memory_mib, c.launch)
            for c in session.scalars(
                select(VmClaim).where(VmClaim.host.in_(list(hosts))).order_by(VmClaim.host, VmClaim.name)
            )
        ]
        wanted = list(plan(held))
        outside = sorted({c.host for c in wanted} - set(hosts))
        if outside:
            raise ValueError(f"claims on hosts {outside} that were not locked")
        expires = at + lease
        session.add_all(
            VmClaim(
                host=c.host,
                name=c.name,
                launch=launch,
                vcpus=c.vcpus,
                memory_mib=c.memory_mib,
                created_at=at,
                expires_at=expires,
            )
            for c in wanted
        )
    return [Claim(c.host, c.name, c.vcpus, c.memory_mib, launch) for c in wanted]


def renew_claims(launch: str, *, lease: timedelta, url: str | None = None) -> int:
    """Push the expiry of ``launch``'s claims to now + ``lease``; how many it holds."""
    with session_scope(url) as session:
        result = session.execute(
            update(VmClaim).where(VmClaim.launch == launch).values(expires_at=utcnow() + lease)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


@contextlib.contextmanager
def keeping_claims(launch: str, *, lease: timedelta, url: str | None = None) -> Iterator[None]:
    """Renew ``launch``'s claims every third of ``lease`` while the block runs (a slow image clone
    must not let them lapse); when the process dies the renewals stop and the claims lapse."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                renew_claims(launch, lease=lease, url=url)
            except Exception as err:  # the next renewal tries again; the lease is the margin
                log.warning("could not renew the VM claims of %s: %s", launch, err)

    thread = threading.Thread(target=renew, name=f"rackflow-claims-{launch}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def release_claims(launch: str, *, url: str | None = None) -> int:
    """Drop ``launch``'s claims; how many there were."""
    with session_scope(url) as session:
        result = session.execute(delete(VmClaim).where(VmClaim.launch == launch))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def held_claims(
    hosts: Iterable[str] | None = None, *, url: str | None = None, now: datetime | None = None
) -> list[Claim]:
    """Claims not lapsed (on ``hosts``, or everywhere), by host and name."""
    query = select(VmClaim).where(VmClaim.expires_at > (now or utcnow()))
    if hosts is not None:
        query = query.where(VmClaim.host.in_(list(hosts)))
    with session_scope(url) as session:
        return [
            Claim(c.host, c.name, c.vcpus, c.memory_mib, c.launch)
            for c in session.scalars(query.order_by(VmClaim.host, VmClaim.name))
        ]
