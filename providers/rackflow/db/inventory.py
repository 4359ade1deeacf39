"""Keep the host inventory in step with the fleet file."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from rackflow.core.fleet import Fleet, HostSpec
from rackflow.db.models import Host

# Columns the fleet file owns; power mode/status and history belong to rackflow and survive a sync.
_FILE_FIELDS = (
    "group",
    "rack",
    "cpus",
    "memory_mib",
    "libvirt_conn_id",
    "bmc_kind",
    "bmc_conn_id",
    "bmc_system",
)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: dict[str, list[str]] = field(default_factory=dict)  # host -> changed fields
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def __str__(self) -> str:
        if not self.changed:
            return "inventory already matches the fleet file"
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        for name, fields in self.updated.items():
            parts.append(f"updated {name} ({', '.join(fields)})")
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        return "; ".join(parts)


def _file_values(spec: HostSpec) -> dict[str, object]:
    return {
        "group": spec.group,
        "rack": spec.rack,
        "cpus": spec.cpus,
        "memory_mib": spec.memory_mib,
        "libvirt_conn_id": spec.libvirt_conn_id,
        "bmc_kind": spec.bmc.kind if spec.bmc else None,
        "bmc_conn_id": spec.bmc.conn_id if spec.bmc else None,
        "bmc_system": (spec.bmc.system or spec.name) if spec.bmc else None,
    }


def sync_fleet(session: Session, fleet: Fleet) -> SyncReport:
    """Add, update and remove hosts so the inventory matches ``fleet``; running it twice changes nothing."""
    report = SyncReport()
    existing = {h.name: h for h in session.scalars(select(Host))}
    for spec in fleet.hosts:
        values = _file_values(spec)
        host = existing.pop(spec.name, None)
        if host is None:
            session.add(Host(name=spec.name, mode="on", **values))
            report.added.append(spec.name)
            continue
        changed = [f for f in _FILE_FIELDS if getattr(host, f) != values[f]]
        for f in changed:
            setattr(host, f, values[f])
        if changed:
            report.updated[spec.name] = changed
    for name, host in existing.items():
        session.delete(host)
        report.removed.append(name)
    session.flush()
    return report


def migrate_and_sync() -> SyncReport | None:
    """Migrate the rackflow DB and sync it from the configured fleet file, if that file exists."""
    from rackflow import settings
    from rackflow.db.session import session_scope, upgrade

    upgrade()
    path = settings.fleet_file()
    if not path.exists():
        return None
    with session_scope() as session:
        return sync_fleet(session, Fleet.load(path))


if __name__ == "__main__":  # `python -m rackflow.db.inventory`: what a deployment's init step runs
    report = migrate_and_sync()
    print(f"rackflow inventory: {report if report is not None else 'no fleet file; schema migrated only'}")
