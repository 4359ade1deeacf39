"""A throwaway PostgreSQL cluster on loopback, for the production-topology test."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass

from rackflow_devfleet.servers import Server, ServerStartError

PG_USER = "postgres"  # initdb and postgres refuse to run as root


def pg_bin(name: str) -> str:
    """A PostgreSQL binary from PATH, else from Debian's versioned directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:
        raise ServerStartError(f"PostgreSQL's {name} is not installed (scripts/install-apt.sh installs it)")
    return found


@dataclass
class Postgres(Server):
    """``initdb`` into the work directory and ``postgres`` on a loopback port; databases made on demand."""

    name = "postgres"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return argv if os.geteuid() != 0 else ["runuser", "-u", PG_USER, "--", *argv]

    def start(self) -> Postgres:
        data = self.workdir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.workdir, PG_USER)
        if not data.exists():
            subprocess.run(
                self._as_postgres(
                    [pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER, "-E", "UTF8"]
                ),
                check=True,
                capture_output=True,
            )
        self._spawn(
            self._as_postgres(
                [
                    pg_bin("postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.workdir),
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=off",
                ]
            )
        )
        self._await_port()
        return self

    def create_database(self, database: str) -> str:
        """Create ``database`` (idempotent) and return its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        return self.url(database)
