"""Alembic environment for the rackflow database (run through rackflow.db.session.upgrade)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from rackflow.db.models import Base
from rackflow.db.session import VERSION_TABLE

url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url is not set"

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
