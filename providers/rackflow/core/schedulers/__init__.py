"""Batch scheduler adapters: one interface, one small pure class per scheduler.

``get_adapter("slurm" | "pbspro" | "lsf" | "sge")`` returns the adapter; see
:class:`~rackflow.core.schedulers.base.SchedulerAdapter` for the protocol the caller follows.
"""

from __future__ import annotations

from rackflow.core.schedulers.base import (
    JobDetail,
    JobState,
    JobStatus,
    SchedulerAdapter,
    SchedulerError,
)
from rackflow.core.schedulers.lsf import LsfAdapter
from rackflow.core.schedulers.pbspro import PbsProAdapter
from rackflow.core.schedulers.sge import SgeAdapter
from rackflow.core.schedulers.slurm import SlurmAdapter

ADAPTERS: dict[str, type[SchedulerAdapter]] = {
    "slurm": SlurmAdapter,
    "pbspro": PbsProAdapter,
    "lsf": LsfAdapter,
    "sge": SgeAdapter,
}
_ALIASES = {"pbs": "pbspro", "openpbs": "pbspro", "gridengine": "sge", "uge": "sge"}


def get_adapter(kind: str) -> SchedulerAdapter:
    """A fresh adapter for ``kind``; raises ``ValueError`` naming the known kinds."""
    key = _ALIASES.get(kind.lower(), kind.lower())
    try:
        return ADAPTERS[key]()
    except KeyError:
        raise ValueError(f"unknown scheduler {kind!r}; known: {', '.join(sorted(ADAPTERS))}") from None


__all__ = [
    "ADAPTERS",
    "JobDetail",
    "JobState",
    "JobStatus",
    "LsfAdapter",
    "PbsProAdapter",
    "SchedulerAdapter",
    "SchedulerError",
    "SgeAdapter",
    "SlurmAdapter",
    "get_adapter",
]
