"""Power routes: node status and history, power on/off with refusals, reservations, the planner's plan.

Reading needs read access to the ``rackflow_power`` DAG; acting (power on/off, reservations) needs the
right to trigger it (with rackflow's auth manager: the op role or a grant, never the plain user role).
A reservation's owner is the user who made it (``created_by``); only the owner or an admin cancels
it, anyone else gets the same 404 as for a reservation that does not exist.

Power on/off is checked here first — a refused power off answers 409 with the reason and the VM names,
and nothing is changed or recorded — then carried out as a ``rackflow_power`` DAG run triggered as the
caller, so every action is a run with its log and its user.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep
from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator
from sqlalchemy import select

from rackflow.core.placement import MAX_MEMORY_MIB_PER_VM, MAX_VCPUS_PER_VM, MAX_VMS_PER_RESERVATION
from rackflow.dag_factories.power import CONTROL_DAG_ID
from rackflow.db.models import Host, HostTransition
from rackflow.db.models import Reservation as ReservationRow
from rackflow.db.session import session_scope
from rackflow_plugin.limits import LINE_PATTERN, DbId, PathName
from rackflow_plugin.runs import trigger_run
from rackflow_plugin.security import CurrentUser, can_read, can_trigger, is_admin, may_trigger

router = APIRouter(prefix="/power", tags=["power"])


class TransitionOut(BaseModel):
    at: datetime
    field: str
    from_value: str | None
    to_value: str
    actor: str
    reason: str | None


class NodeOut(BaseModel):
    name: str
    group: str
    rack: str | None
    bmc_kind: str | None
    mode: str
    status: str | None
    status_since: datetime | None
    last_seen: datetime | None
    last_error: str | None
    last_transition: TransitionOut | None


class PowerRequest(BaseModel):
    migrate: bool = Field(default=False, description="Power off: migrate running VMs within the group first.")
    hard: bool = Field(default=False, description="Power off: force off instead of a graceful shutdown.")
    reason: str = Field(
        default="", max_length=500, pattern=LINE_PATTERN, description="Recorded in the node's history."
    )


class PowerAccepted(BaseModel):
    node: str
    action: str
    run_id: str
    dag_id: str = CONTROL_DAG_ID
    decision: str
    migrations: dict[str, str] = {}


# Reservations live in this calendar: far enough for any plan, and every offset converts to UTC.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class ReservationIn(BaseModel):
    name: str = Field(min_length=1, max_length=250, pattern=LINE_PATTERN)
    start: AwareDatetime
    end: AwareDatetime
    vm_count: int = Field(gt=0, le=MAX_VMS_PER_RESERVATION)
    vcpus_per_vm: int = Field(gt=0, le=MAX_VCPUS_PER_VM)
    memory_mib_per_vm: int = Field(gt=0, le=MAX_MEMORY_MIB_PER_VM)
    group: str | None = Field(default=None, min_length=1, max_length=128, pattern=LINE_PATTERN)

    @field_validator("start", "end")
    @classmethod
    def _in_calendar(cls, value: datetime) -> datetime:
        # Compared in UTC; 0001-01-01T00:00+14:00 would overflow that conversion, so check naive first.
        if not EARLIEST.replace(tzinfo=None) < value.replace(tzinfo=None) < LATEST.replace(tzinfo=None):
            raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        value = value.astimezone(UTC)
        if not EARLIEST <= value < LATEST:
            raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
        return value

    @model_validator(mode="after")
    def _order(self) -> ReservationIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ReservationOut(ReservationIn):
    id: int
    key: str
    state: str
    created_by: str = Field(description="The owner: only they (or an admin) may cancel it.")
    created_at: datetime
    canceled_by: str | None = None
    canceled_at: datetime | None = None


class PlanActionOut(BaseModel):
    node: str
    action: str
    reason: str


class PlanOut(BaseModel):
    now: datetime
    off_threshold_s: float
    on_threshold_s: float
    actions: list[PlanActionOut]
    skipped: list[PlanActionOut]
    notes: list[str]
    unplaced_reservations: list[str]


def _transition(t: HostTransition) -> TransitionOut:
    return TransitionOut(
        at=t.at,  # type: ignore[arg-type]
        field=t.field,
        from_value=t.from_value,
        to_value=t.to_value,
        actor=t.actor,
        reason=t.reason,
    )


def _reservation(r: ReservationRow) -> ReservationOut:
    from rackflow.services.power.control import reservation_id

    return ReservationOut(
        id=r.id,
        key=reservation_id(r),
        name=r.name,
        start=r.start,  # type: ignore[arg-type]
        end=r.end,  # type: ignore[arg-type]
        vm_count=r.vm_count,
        vcpus_per_vm=r.vcpus_per_vm,
        memory_mib_per_vm=r.memory_mib_per_vm,
        group=r.group,
        state=r.state,
        created_by=r.created_by,
        created_at=r.created_at,  # type: ignore[arg-type]
        canceled_by=r.canceled_by,
        canceled_at=r.canceled_at,
    )


def _config() -> Any:
    from rackflow.services.power.config import PowerConfigError, load_power_config

    try:
        return load_power_config()
    except PowerConfigError as err:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, str(err)) from err


@router.get(
    "/nodes",
    response_model=list[NodeOut],
    summary="Every node's power mode, status, last error and last transition",
    dependencies=[can_read(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def list_nodes() -> list[NodeOut]:
    out: list[NodeOut] = []
    with session_scope() as session:
        for host in session.scalars(select(Host).order_by(Host.name)):
            last = session.scalars(
                select(HostTransition)
                .where(HostTransition.host == host.name)
                .order_by(HostTransition.id.desc())
                .limit(1)
            ).first()
            out.append(
                NodeOut(
                    name=host.name,
                    group=host.group,
                    rack=host.rack,
                    bmc_kind=host.bmc_kind,
                    mode=host.mode,
                    status=host.status,
                    status_since=host.status_since,
                    last_seen=host.last_seen,
                    last_error=host.last_error,
                    last_transition=_transition(last) if last is not None else None,
                )
            )
    return out


@router.get(
    "/nodes/{node}/history",
    response_model=list[TransitionOut],
    summary="A node's mode/status transitions, newest first",
    dependencies=[can_read(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def node_history(node: PathName, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[TransitionOut]:
    with session_scope() as session:
        if session.get(Host, node) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node!r}")
        rows = session.scalars(
            select(HostTransition)
            .where(HostTransition.host == node)
            .order_by(HostTransition.id.desc())
            .limit(limit)
        )
        return [_transition(t) for t in rows]


def _trigger(user: Any, conf: dict[str, Any]) -> str:
    run_id = (
        f"power__{conf['node']}__{conf['action']}__{datetime.now(UTC):%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:8]}"
    )
    trigger_run(CONTROL_DAG_ID, run_id, conf, user)
    return run_id


@router.post(
    "/nodes/{node}/{action}",
    response_model=PowerAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Power a node on (always allowed) or off (refused while VMs run or boot, unless migrated)",
    responses={
        404: {"description": "No such node"},
        409: {"description": "Power off refused: the reason and the VMs"},
    },
    dependencies=[can_trigger(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def power(
    node: PathName,
    action: PathName,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    body: PowerRequest | None = None,
) -> PowerAccepted:
    from rackflow.services.power.control import check_power_off

    body = body or PowerRequest()
    if action not in ("on", "off"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown power action {action!r}; use on or off")
    with session_scope() as db:
        if db.get(Host, node) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node!r}")
    decision_text, migrations = "power on is always allowed", {}
    if action == "off":
        decision = check_power_off(node, migrate=body.migrate, config=_config())
        if not decision.allowed:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                {"message": decision.reason, "node": node, "vms": list(decision.blocking_vms)},
            )
        decision_text, migrations = decision.reason, dict(decision.migrations)
    conf = {"node": node, "action": action, "migrate": body.migrate, "hard": body.hard, "reason": body.reason}
    run_id = _trigger(user, conf)
    return PowerAccepted(
        node=node, action=action, run_id=run_id, decision=decision_text, migrations=migrations
    )


@router.get(
    "/reservations",
    response_model=list[ReservationOut],
    summary="Reservations of virtual clusters (active by default)",
    dependencies=[can_read(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def list_reservations(
    include_canceled: Annotated[bool, Query()] = False, include_past: Annotated[bool, Query()] = False
) -> list[ReservationOut]:
    now = datetime.now(UTC)
    with session_scope() as session:
        query = select(ReservationRow).order_by(ReservationRow.start, ReservationRow.id)
        if not include_canceled:
            query = query.where(ReservationRow.state == "active")
        if not include_past:
            query = query.where(ReservationRow.end > now)
        return [_reservation(r) for r in session.scalars(query)]


@router.post(
    "/reservations",
    response_model=ReservationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Reserve a virtual cluster (start, end, VM count and size, network group)",
    dependencies=[can_trigger(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def create_reservation(body: ReservationIn, user: CurrentUser) -> ReservationOut:
    with session_scope() as session:
        if (
            body.group is not None
            and session.scalars(select(Host).where(Host.group == body.group)).first() is None
        ):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"no node in network group {body.group!r}")
        row = ReservationRow(**body.model_dump(), state="active", created_by=user.get_name())
        session.add(row)
        session.flush()
        return _reservation(row)


@router.delete(
    "/reservations/{reservation_id}",
    response_model=ReservationOut,
    summary="Cancel your reservation (kept, state canceled); admins cancel anyone's",
    responses={404: {"description": "No such reservation (or not yours)"}},
    dependencies=[can_trigger(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def cancel_reservation(reservation_id: DbId, user: CurrentUser) -> ReservationOut:
    with session_scope() as session:
        row = session.get(ReservationRow, reservation_id)
        if row is None or (row.created_by != user.get_name() and not is_admin(user)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no reservation {reservation_id}")
        if row.state != "canceled":
            row.state = "canceled"
            row.canceled_by = user.get_name()
            row.canceled_at = datetime.now(UTC)
        session.flush()
        return _reservation(row)


@router.get(
    "/plan",
    response_model=PlanOut,
    summary="The planner's next actions with reasons (a dry run: nothing is changed)",
    dependencies=[can_read(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def plan() -> PlanOut:
    from rackflow.services.power.control import plan_cycle

    config = _config()
    report = plan_cycle(config=config, dry_run=True)
    p = report.plan
    return PlanOut(
        now=p.now,
        off_threshold_s=config.thresholds.off_threshold.total_seconds(),
        on_threshold_s=config.thresholds.on_threshold.total_seconds(),
        actions=[PlanActionOut(node=a.node, action=a.action.value, reason=a.reason) for a in p.actions],
        skipped=[PlanActionOut(node=s.node, action="skip", reason=s.reason) for s in p.skipped],
        notes=list(p.notes),
        unplaced_reservations=list(p.unplaced_reservations),
    )


MAX_TIMELINE_HOURS = 24 * 31
"""How far back (and ahead) the timeline may look: a month."""
MAX_TIMELINE_TRANSITIONS = 5000
"""Transitions read per node for one timeline; older ones in the window are summarised by the first."""


class BandOut(BaseModel):
    """A stretch of time in which a node's status (or mode) held one value."""

    field: str = Field(description="status or mode")
    value: str | None = Field(description="the value; None: not known (never polled in that stretch)")
    start: datetime
    end: datetime
    actor: str | None = Field(description="who or what set it (None when it was set before the window)")
    reason: str | None


class TimelineNodeOut(BaseModel):
    name: str
    group: str
    mode: str
    status: str | None
    last_error: str | None
    bands: list[BandOut] = Field(
        description="status then mode bands, each in time order, covering since..now"
    )


class TimelineOut(BaseModel):
    now: datetime
    since: datetime
    until: datetime = Field(
        description="the end of the look-ahead: the latest of now + ahead and the Off window"
    )
    on_threshold_s: float
    off_threshold_s: float
    on_window_end: datetime = Field(
        description="now + OnThreshold: reservations starting by then get nodes on"
    )
    off_window_end: datetime = Field(
        description="now + OffThreshold: power-off control weighs reservations to then"
    )
    can_act: bool
    nodes: list[TimelineNodeOut]
    reservations: list[ReservationOut] = Field(description="active reservations overlapping since..until")


def bands_of(
    field: str,
    transitions: list[HostTransition],
    *,
    before: HostTransition | None,
    current: str | None,
    since: datetime,
    now: datetime,
) -> list[BandOut]:
    """``field``'s bands over ``since..now`` from its transitions in that window (in order) and the last
    one before it (``before``): the value held at ``since`` is what ``before`` set, else what the first
    transition changed from; with no transition at all, the node's ``current`` value held throughout
    (every change is recorded). None: unknown."""
    rows = [t for t in transitions if t.field == field]
    if before is not None:
        value: str | None = before.to_value
    else:
        value = rows[0].from_value if rows else current
    actor = before.actor if before is not None else None
    reason = before.reason if before is not None else None
    start = since
    out: list[BandOut] = []
    for t in rows:
        at = max(t.at, since)
        if at > start:
            out.append(BandOut(field=field, value=value, start=start, end=at, actor=actor, reason=reason))
        start, value, actor, reason = at, t.to_value, t.actor, t.reason
    out.append(BandOut(field=field, value=value, start=start, end=now, actor=actor, reason=reason))
    return out


@router.get(
    "/timeline",
    response_model=TimelineOut,
    summary="Each node's status and mode bands over the last hours, reservations, the On/Off windows ahead",
    dependencies=[can_read(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def timeline(
    user: CurrentUser,
    hours: Annotated[float, Query(gt=0, le=MAX_TIMELINE_HOURS, description="how far back")] = 24,
    ahead_hours: Annotated[
        float, Query(ge=0, le=MAX_TIMELINE_HOURS, description="how far ahead (at least the Off window)")
    ] = 2,
    node: Annotated[
        str | None, Query(min_length=1, max_length=63, pattern=LINE_PATTERN, description="only this node")
    ] = None,
) -> TimelineOut:
    from datetime import timedelta

    thresholds = _config().thresholds
    now = datetime.now(UTC)
    since = now - timedelta(hours=hours)
    off_end = now + thresholds.off_threshold
    until = max(now + timedelta(hours=ahead_hours), off_end)
    nodes: list[TimelineNodeOut] = []
    with session_scope() as session:
        query = select(Host).order_by(Host.group, Host.name)
        if node is not None:
            query = query.where(Host.name == node)
        hosts = list(session.scalars(query))
        if node is not None and not hosts:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node!r}")
        for host in hosts:
            recent = list(
                session.scalars(
                    select(HostTransition)
                    .where(HostTransition.host == host.name, HostTransition.at > since)
                    .order_by(HostTransition.id.desc())
                    .limit(MAX_TIMELINE_TRANSITIONS)
                )
            )[::-1]
            bands: list[BandOut] = []
            for field in ("status", "mode"):
                before = session.scalars(
                    select(HostTransition)
                    .where(
                        HostTransition.host == host.name,
                        HostTransition.field == field,
                        HostTransition.at <= since,
                    )
                    .order_by(HostTransition.id.desc())
                    .limit(1)
                ).first()
                current = host.status if field == "status" else host.mode
                bands += bands_of(field, recent, before=before, current=current, since=since, now=now)
            nodes.append(
                TimelineNodeOut(
                    name=host.name,
                    group=host.group,
                    mode=host.mode,
                    status=host.status,
                    last_error=host.last_error,
                    bands=bands,
                )
            )
        reservations = [
            _reservation(r)
            for r in session.scalars(
                select(ReservationRow)
                .where(
                    ReservationRow.state == "active",
                    ReservationRow.end > since,
                    ReservationRow.start < until,
                )
                .order_by(ReservationRow.start, ReservationRow.id)
                .limit(500)
            )
        ]
    return TimelineOut(
        now=now,
        since=since,
        until=until,
        on_threshold_s=thresholds.on_threshold.total_seconds(),
        off_threshold_s=thresholds.off_threshold.total_seconds(),
        on_window_end=now + thresholds.on_threshold,
        off_window_end=off_end,
        can_act=may_trigger(user, CONTROL_DAG_ID),
        nodes=nodes,
        reservations=reservations,
    )


class CanAct(BaseModel):
    user: str
    can_act: bool


@router.get(
    "/can-act",
    response_model=CanAct,
    summary="Whether the caller may power nodes and manage reservations (trigger rackflow_power)",
    dependencies=[can_read(CONTROL_DAG_ID)],  # type: ignore[list-item]
)
def can_act(user: CurrentUser) -> CanAct:
    return CanAct(user=user.get_name(), can_act=may_trigger(user, CONTROL_DAG_ID))
