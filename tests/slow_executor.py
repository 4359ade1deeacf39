"""A LocalExecutor that reports a deferred try's process exit late: the fault behind Airflow's defer-exit
race (apache/airflow#72716, #71580), on demand.

When a task defers, its worker process exits cleanly and the executor reports ``success`` for that try.
If the task's trigger fires and the resumed try (the same try number, so the same executor key) is
already running when the scheduler drains that stale ``success``, Airflow 3.3's
``process_executor_events`` takes it for the resumed try's end ("state mismatch": the task was
"killed externally") and fails the resumed try. On a real server this needs an executor slow to report
a process exit -- a loaded scheduler, a busy result queue -- which happens in bursts but cannot be
produced on demand. This executor is the test's one mock: it injects exactly that delay, nothing else.

``sync()`` reads the workers' results as LocalExecutor does, except a ``success`` of a try whose task
instance had deferred (the metadata DB says ``deferred``, or resumed: ``next_method`` set and not
finished) is held back. A held event is handed to the scheduler (through ``get_event_buffer``) as soon
as the resumed try has been handed to a worker -- the scheduler drains the buffer in the same loop, so
it finds the task instance queued or running: the race's moment -- (an exit read only after that is late
already and handed over at once), or once the task instance has ended (its trigger ended it: the event
comes too late to matter, as it would on a loaded server), or after ``RACKFLOW_TEST_DEFER_EXIT_HOLD_S``
seconds (default 120) at the latest. Each hold and release is logged (``defer-exit event
held``/``released``, with why and the task instance's state at release), so a test can tell from the
scheduler's log what happened.

Select it with ``AIRFLOW__CORE__EXECUTOR=tests.slow_executor.DeferExitDelayingExecutor`` (the
repository root on the scheduler's ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from airflow.executors.local_executor import LocalExecutor
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.utils.state import State, TaskInstanceState

HOLD_ENV = "RACKFLOW_TEST_DEFER_EXIT_HOLD_S"
# States of a task instance whose try deferred: waiting on its trigger, or resumed by it.
_DEFERRED_OR_RESUMED = {
    TaskInstanceState.DEFERRED,
    TaskInstanceState.SCHEDULED,
    TaskInstanceState.QUEUED,
    TaskInstanceState.RUNNING,
}


class DeferExitDelayingExecutor(LocalExecutor):
    """LocalExecutor holding back the ``success`` event of a try that deferred (see the module)."""

    def start(self) -> None:
        super().start()
        self.hold_s = float(os.environ.get(HOLD_ENV, "120"))
        # key -> (state, info, monotonic time held)
        self.held: dict[TaskInstanceKey, tuple[Any, Any, float]] = {}
        # Tries handed to a worker and tries whose process ended, per key (a resumed try has the key
        # of the try that deferred); held keys whose resumed try has been handed to a worker.
        self.handed: Counter[Any] = Counter()
        self.ended: Counter[Any] = Counter()
        self.rehanded: set[TaskInstanceKey] = set()

    def _ti_row(self, key: TaskInstanceKey) -> tuple[str | None, str | None] | None:
        """``(state, next_method)`` of the task instance of ``key`` in the metadata DB."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.execute(
                select(TaskInstance.state, TaskInstance.next_method).where(
                    TaskInstance.dag_id == key.dag_id,
                    TaskInstance.task_id == key.task_id,
                    TaskInstance.run_id == key.run_id,
                    TaskInstance.map_index == key.map_index,
                )
            ).first()
        return (row[0], row[1]) if row is not None else None

    def _deferred(self, key: TaskInstanceKey) -> bool:
        row = self._ti_row(key)
        if row is None:
            return False
        state, next_method = row
        return state == TaskInstanceState.DEFERRED or (
            next_method is not None and state in _DEFERRED_OR_RESUMED
        )

    def _read_results(self) -> None:
        while not self.result_queue.empty():
            key, state, _exc = self.result_queue.get()
            if state not in (TaskInstanceState.RUNNING, TaskInstanceState.QUEUED):
                self.ended[key] += 1
            if (
                isinstance(key, TaskInstanceKey)
                and state == TaskInstanceState.SUCCESS
                and key not in self.held
                and self._deferred(key)
            ):
                if self.handed[key] > self.ended[key]:
                    # Late already: the resumed try was handed to a worker before this exit was read.
                    self.log.warning(
                        "defer-exit event released at once (resumed try handed already): %s", key
                    )
                else:
                    self.held[key] = (state, None, time.monotonic())
                    self.log.warning("defer-exit event held: %s", key)
                    continue
            self.change_state(key, state)

    def _process_workloads(self, workload_list: Any) -> None:
        for workload in workload_list:
            self.handed[workload.key] += 1
            if workload.key in self.held:
                self.rehanded.add(workload.key)
        super()._process_workloads(workload_list)

    def get_event_buffer(self, dag_ids: Any = None) -> dict[Any, Any]:
        now = time.monotonic()
        for key, (state, info, since) in list(self.held.items()):
            row = self._ti_row(key)
            ti_state = row[0] if row else None
            # Handed over right after the resumed try went to a worker (the scheduler drains the buffer
            # in the same loop), while the task instance is queued or running: the race's worst moment.
            if key in self.rehanded:
                why = "resumed try handed to a worker"
            elif ti_state == TaskInstanceState.RUNNING:  # the deferring try has exited: a resumed try
                why = "resumed try running"
            elif ti_state in State.finished:
                why = "task ended while held"
            elif now - since >= self.hold_s:
                why = "hold expired"
            else:
                continue
            del self.held[key]
            self.rehanded.discard(key)
            self.log.warning(
                "defer-exit event released after %.1fs (%s): %s; task instance now %s",
                now - since,
                why,
                key,
                ti_state,
            )
            self.change_state(key, state, info)
        return super().get_event_buffer(dag_ids)
