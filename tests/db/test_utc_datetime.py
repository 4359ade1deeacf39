"""UtcDateTime: every rackflow timestamp column reads back timezone-aware in UTC, also on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from rackflow.db.models import Base, HostTransition


def test_sqlite_reads_back_aware_utc_for_any_offset_written() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    tokyo = datetime(2026, 12, 1, 18, 30, tzinfo=timezone(timedelta(hours=9)))
    with Session(engine) as session:
        session.add(HostTransition(host="n1", at=tokyo, field="mode", to_value="on", actor="t", reason=""))
        session.commit()
    with Session(engine) as session:
        at = session.scalar(select(HostTransition.at))
        naive_in_db = session.connection().exec_driver_sql("select at from rackflow_host_transition").scalar()
    assert at == tokyo and at.tzinfo == UTC and at.hour == 9
    assert str(naive_in_db).startswith("2026-12-01 09:30")  # stored as UTC


def test_queries_compare_in_utc() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    with Session(engine) as session:
        session.add(HostTransition(host="n1", at=at, field="mode", to_value="on", actor="t", reason=""))
        session.commit()
        later_elsewhere = datetime(2026, 12, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5)))  # 10:00 UTC
        assert session.scalar(select(HostTransition.host).where(HostTransition.at < later_elsewhere)) == "n1"
