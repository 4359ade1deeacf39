"""Engines, sessions and migrations for the rackflow database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "rackflow_alembic_version"  # apart from Airflow's, so both can share one Postgres DB


@cache
def get_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")  # readers (the UI) do not block the writer (a DAG run)
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _url(url: str | None) -> str:
    if url:
        return url
    from rackflow import settings

    return settings.database_url()


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None) -> None:
    """Bring the rackflow database to the newest schema (idempotent)."""
    command.upgrade(alembic_config(url), "head")


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker(get_engine(_url(url)), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
