"""rackflow's own tables: the fleet inventory, power history, reservations, VM claims and jobs.

They live in the rackflow database (``[rackflow] database_url``), apart from Airflow's metadata, so
external applications can read the inventory without Airflow's schema. Changes go through Alembic
migrations in ``migrations/``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from rackflow.core.values import as_utc


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (UTC).

    Postgres keeps the zone; SQLite keeps none and hands back naive values, which are UTC because every
    value is converted to UTC on the way in (a naive value on the way in is taken as UTC).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    pass


class Host(Base):
    """A physical host: where it sits, what it can hold, how to reach it, and its power."""

    __tablename__ = "rackflow_host"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    group: Mapped[str] = mapped_column(String(128), index=True)
    rack: Mapped[str | None] = mapped_column(String(128))
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    libvirt_conn_id: Mapped[str] = mapped_column(String(250))
    bmc_kind: Mapped[str | None] = mapped_column(String(16))
    bmc_conn_id: Mapped[str | None] = mapped_column(String(250))
    bmc_system: Mapped[str | None] = mapped_column(String(250))
    # Power: mode is what was asked (on/off), status what the BMC last said (None: never polled).
    mode: Mapped[str] = mapped_column(String(8), default="on")
    status: Mapped[str | None] = mapped_column(String(16))
    status_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    launch_serial: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped by every VM claim on this host: the write that makes concurrent launches take turns
    (see :mod:`rackflow.db.vm_claims`)."""


class VmClaim(Base):
    """A VM name and its vCPUs/memory, reserved on a host by a launch before libvirt defines it.

    Claims are made under the host's row lock (:mod:`rackflow.db.vm_claims`), so two launches never
    pick the same name or both spend the same free capacity. A claim lasts until its launch has
    defined the VM (libvirt's listing counts it from then on), gives up, or is killed; a launch
    whose process dies leaves claims that lapse at ``expires_at`` (the launch renews them while it
    works) or that the retry of the same task takes over. ``launch`` is the launch tag
    (``dag_id/run_id/task_id``) that VMs carry in their libvirt metadata.
    """

    __tablename__ = "rackflow_vm_claim"

    host: Mapped[str] = mapped_column(ForeignKey("rackflow_host.name", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    launch: Mapped[str] = mapped_column(String(800), index=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class HostTransition(Base):
    """History of a host's mode and status: who or what asked, when, from what to what, and why."""

    __tablename__ = "rackflow_host_transition"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(ForeignKey("rackflow_host.name", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    field: Mapped[str] = mapped_column(String(8))  # "mode" or "status"
    from_value: Mapped[str | None] = mapped_column(String(16))
    to_value: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(250))
    reason: Mapped[str | None] = mapped_column(Text)


class Reservation(Base):
    """A virtual cluster reserved for a time window; the power planner keeps its nodes on for it."""

    __tablename__ = "rackflow_reservation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(250))
    start: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    end: Mapped[datetime] = mapped_column(UtcDateTime)
    vm_count: Mapped[int] = mapped_column(Integer)
    vcpus_per_vm: Mapped[int] = mapped_column(Integer)
    memory_mib_per_vm: Mapped[int] = mapped_column(Integer)
    group: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="active")  # active / canceled
    created_by: Mapped[str] = mapped_column(String(250), index=True)
    """The owner: the authenticated user who made it. Only the owner or an admin cancels it."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    canceled_by: Mapped[str | None] = mapped_column(String(250))
    canceled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Job(Base):
    """A batch job run by a DAG run (job id = run id): where it went, how it ended, who asked to stop it.

    An S3 intake job (``source = "s3"``) is keyed by its intake DAG and its job key instead (one intake
    run carries many jobs): ``run_id`` is the key, ``dag_run_id`` the run, ``owner`` the intake's
    ``run_as`` account and ``viewers`` the users its ``visible_to`` names.

    Ownership is the run's ``triggering_user_name`` in Airflow; ``owner`` is a copy for listing.
    ``job_name`` (the scheduler job name) and ``workdir`` come from a uuid rackflow generates when the
    job is first recorded, never from the run id; ``account`` is the Unix account it runs as.
    ``workdir_remove_after`` is when a directory kept by ``[rackflow] job_directory_retention`` may
    go, ``workdir_removed_at`` when it went.
    """

    __tablename__ = "rackflow_job"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(250), index=True)
    scheduler: Mapped[str | None] = mapped_column(String(16))
    cluster: Mapped[str | None] = mapped_column(String(250))
    scheduler_job_id: Mapped[str | None] = mapped_column(String(64))
    job_name: Mapped[str | None] = mapped_column(String(250))
    workdir: Mapped[str | None] = mapped_column(Text)
    account: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="QUEUED")
    message: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    cpu_time_s: Mapped[int | None] = mapped_column(Integer)
    wall_time_s: Mapped[int | None] = mapped_column(Integer)
    max_memory: Mapped[int | None] = mapped_column(BigInteger)  # bytes: past 2 GiB routinely
    nodes: Mapped[str | None] = mapped_column(Text)
    terminate_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    terminate_requested_by: Mapped[str | None] = mapped_column(String(250))
    cancel_issued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    workdir_remove_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    workdir_removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # An S3 intake job (source "s3"): run_id is its job key, dag_run_id the intake run carrying it.
    source: Mapped[str | None] = mapped_column(String(16), index=True)
    dag_run_id: Mapped[str | None] = mapped_column(String(250))
    s3_bucket: Mapped[str | None] = mapped_column(String(255))
    s3_prefix: Mapped[str | None] = mapped_column(String(128))
    viewers: Mapped[str | None] = mapped_column(Text)
    """Users besides admins who may see the job (the intake's ``visible_to``), comma-separated."""
    s3_staged: Mapped[str | None] = mapped_column(Text)
    """What the job's stage-in left (JSON: job directory, manifest); a retried accept goes on from it."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class JobEvent(Base):
    """One entry of a job's chronological history: a state change or a stage's note."""

    __tablename__ = "rackflow_job_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(250))
    run_id: Mapped[str] = mapped_column(String(250))
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    scheduler_job_id: Mapped[str | None] = mapped_column(String(64))
    node: Mapped[str | None] = mapped_column(Text)


class JobOutput(Base):
    """The kept copy of one stream (``stdout`` or ``stderr``) of a job: the file's last bytes, copied
    from the job directory when the job ends, so that it outlives the directory.

    ``content`` is bytes as the job wrote them (a job may write NULs, which a Postgres TEXT refuses);
    ``size`` is the file's whole size then, and ``truncated`` says the file was longer than the kept
    tail (``[rackflow] job_output_tail_size``). ``note`` says why nothing was kept (no such file, not
    a regular file, outside the job directory).
    """

    __tablename__ = "rackflow_job_output"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    stream: Mapped[str] = mapped_column(String(8), primary_key=True)
    path: Mapped[str | None] = mapped_column(Text)
    content: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    size: Mapped[int | None] = mapped_column(BigInteger)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)
    captured_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
