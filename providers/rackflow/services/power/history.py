"""Mode and status changes of nodes, recorded with who asked and why in ``HostTransition``."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from rackflow.core.power import PowerMode, PowerStatus
from rackflow.db.models import Host, HostTransition

log = logging.getLogger(__name__)


def record_status(
    session: Session,
    host: Host,
    status: PowerStatus,
    *,
    actor: str,
    reason: str,
    now: datetime,
    error: str | None = None,
) -> bool:
    """Set ``host.status``; a change is written to ``HostTransition``. Returns whether it changed."""
    old = host.status
    if error is not None:
        host.last_error = error
    if old == status.value:
        return False
    host.status = status.value
    host.status_since = now
    _record_transition(session, host, "status", old, status.value, actor=actor, reason=reason, now=now)
    return True


def record_mode(
    session: Session, host: Host, mode: PowerMode, *, actor: str, reason: str, now: datetime
) -> bool:
    """Set ``host.mode``; a change is written to ``HostTransition``. Returns whether it changed."""
    old = host.mode
    if old == mode.value:
        return False
    host.mode = mode.value
    _record_transition(session, host, "mode", old, mode.value, actor=actor, reason=reason, now=now)
    return True


def _record_transition(
    session: Session,
    host: Host,
    field: str,
    old: str | None,
    new: str,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> None:
    """One row of a host's history: who or what changed ``field`` from ``old`` to ``new``, and why."""
    session.add(
        HostTransition(
            host=host.name, at=now, field=field, from_value=old, to_value=new, actor=actor, reason=reason
        )
    )
    log.info("%s %s %s -> %s (%s: %s)", host.name, field, old, new, actor, reason)
