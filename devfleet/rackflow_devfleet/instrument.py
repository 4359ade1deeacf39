"""Measuring what rackflow asks the batch scheduler, for the tests and the benchmarks: a wrapper around
the real ``BatchSchedulerHook.run`` that counts each command (by cluster and program) and runs it."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def count_scheduler_commands() -> Iterator[Counter[tuple[str, str]]]:
    """``{(cluster key, program): count}`` of the scheduler commands this process runs inside the block
    (``squeue``, ``sbatch``, ``scancel``, ``sacct``...; locally or over SSH)."""
    from rackflow.hooks.scheduler import BatchSchedulerHook

    counts: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    real_run = BatchSchedulerHook.run

    def counting_run(self: BatchSchedulerHook, argv: list[str], *args: Any, **kwargs: Any) -> Any:
        with lock:
            counts[(self.cluster_key, argv[0])] += 1
        return real_run(self, argv, *args, **kwargs)

    BatchSchedulerHook.run = counting_run  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        BatchSchedulerHook.run = real_run  # type: ignore[method-assign]
