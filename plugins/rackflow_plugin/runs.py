"""Start a DAG run on a user's behalf.

rackflow's routes (job submission, TES task creation, power actions) decide and check everything
themselves — authentication, authorization through the auth manager, ownership, the input — and then
create the run with Airflow's ``trigger_dag``, the function behind ``airflow dags trigger``, as the
calling user: the run's triggering user is the caller, which is what makes a job theirs. A user needs
no right on the DAG itself (the job DAG is hidden from non-admins in Airflow's own API).

In the api-server's process and its own transaction: a call back into Airflow's REST API from inside a
request was tried and, on SQLite (the demo), concurrent submissions waited on each other's database
locks until the scheduler itself failed with "database is locked".
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status


def trigger_run(dag_id: str, run_id: str, conf: dict[str, Any], user: Any) -> None:
    """Create run ``run_id`` of ``dag_id`` with ``conf`` as ``user``; a refusal is a 4xx naming why."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists, ParamValidationError
    from airflow.utils.types import DagRunTriggeredByType

    try:
        trigger_dag(
            dag_id,
            triggered_by=DagRunTriggeredByType.REST_API,
            triggering_user_name=user.get_name(),
            run_id=run_id,
            conf=conf,
            replace_microseconds=False,
        )
    except DagNotFound as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"{dag_id} is not parsed yet: {exc}"
        ) from exc
    except DagRunAlreadyExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run_id} of {dag_id} exists already") from exc
    except (ParamValidationError, ValueError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
