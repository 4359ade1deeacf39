"""Start a DAG run on a user's behalf through Airflow's public REST API.

rackflow's routes (job submission, TES task creation, power actions) decide and check everything
themselves, then create the run with ``POST /api/v2/dags/{dag_id}/dagRuns`` on Airflow's own API
server, as the calling user: the run's triggering user is the caller, which is what makes a job theirs.
The request carries a short-lived token for that one run from rackflow's auth manager
(:meth:`rackflow.auth_manager.RackflowAuthManager.delegated_run_token`), so a user needs no right on the
DAG itself; with another auth manager it carries the user's own token and their own rights apply.

The API server is reached at ``[api] base_url`` (the address Airflow's own workers use), else at
``http://localhost:<[api] port>``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests
from fastapi import HTTPException, status

from rackflow.hooks.retrying import retry_blocking

log = logging.getLogger(__name__)
TIMEOUT_S = 30
ATTEMPTS = 6


def api_base_url() -> str:
    from airflow.configuration import conf

    base = (
        conf.get("api", "base_url", fallback="")
        or f"http://localhost:{conf.get('api', 'port', fallback='8080')}"
    )
    return base.rstrip("/")


def _token_for(user: Any, dag_id: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    delegated = getattr(manager, "delegated_run_token", None)
    if delegated is not None:
        return str(delegated(user, dag_id))
    return str(manager.generate_jwt(user, expiration_time_in_seconds=60))


class _ServerError(Exception):
    """Airflow's API answered 5xx (on SQLite, typically "database is locked" under a burst)."""

    def __init__(self, detail: Any) -> None:
        super().__init__(str(detail))
        self.detail = detail


def _detail(resp: requests.Response) -> Any:
    try:
        return resp.json().get("detail", resp.text)
    except ValueError:
        return resp.text


def trigger_run(dag_id: str, run_id: str, conf: dict[str, Any], user: Any) -> None:
    """Create run ``run_id`` of ``dag_id`` with ``conf`` as ``user``; Airflow's refusal (e.g. 400 for a
    conf its params reject) is passed on with Airflow's message.

    A 5xx or an unanswered request is tried again (a few times, half a second apart): the run id is
    fresh, so a 409 after a failed attempt means that attempt did create the run.
    """
    url = f"{api_base_url()}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns"
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    attempted = False

    def post() -> requests.Response:
        nonlocal attempted
        retry = attempted
        attempted = True
        resp = requests.post(
            url, json=body, headers={"Authorization": f"Bearer {_token_for(user, dag_id)}"}, timeout=TIMEOUT_S
        )
        if resp.status_code >= 500:
            raise _ServerError(_detail(resp))
        if resp.status_code == 409 and retry:
            resp.status_code = 200  # our earlier attempt created it
        return resp

    try:
        resp = retry_blocking(
            post,
            attempts=ATTEMPTS,
            delay=0.5,
            retry_on=lambda err: isinstance(err, _ServerError | requests.RequestException),
            log=log,
            what=f"creating run {run_id} of {dag_id} through {url}",
        )
    except requests.RequestException as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"Airflow's API at {api_base_url()} did not answer: {exc}"
        ) from exc
    except _ServerError as exc:
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, f"Airflow's API could not start the run: {exc.detail}"
        ) from exc
    if resp.status_code not in (200, 201):
        raise HTTPException(resp.status_code, _detail(resp))
