"""Authentication and authorization for rackflow's routes, through Airflow's auth manager.

Airflow applies no auth to plugin apps, so every route declares one of these dependencies. Rights map
onto Airflow's own: reading fleet data needs read access to the DAG that acts on it; acting on the fleet
needs the right to trigger that DAG (with :class:`rackflow.auth_manager.RackflowAuthManager`: the op
role or a grant). The job API has its own right, the custom view ``Rackflow Jobs``, because end users
must not reach the ``rackflow_job`` DAG through Airflow's own API. A request without a valid token
(header or the UI's cookie) gets 401; one without the right 403.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from rackflow.auth_manager import JOBS_RESOURCE
from rackflow.dag_factories.job import JOB_DAG_ID

CurrentUser = Annotated[BaseUser, Depends(get_user)]


def can_read(dag_id: str) -> object:
    """Dependency: the user may read ``dag_id`` (and so the rackflow data it works on)."""
    return Depends(requires_access_dag("GET", param_dag_id=dag_id))


def can_trigger(dag_id: str) -> object:
    """Dependency: the user may create runs of ``dag_id``."""
    return Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=dag_id))


def may_trigger(user: BaseUser, dag_id: str) -> bool:
    """Whether ``user`` may create runs of ``dag_id`` (what :func:`can_trigger` requires), for pages."""
    from airflow.api_fastapi.app import get_auth_manager

    return bool(
        get_auth_manager().is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        )
    )


def may_read_dag(user: BaseUser, dag_id: str) -> bool:
    """Whether ``user`` may read ``dag_id`` (what :func:`can_read` requires), to filter lists."""
    from airflow.api_fastapi.app import get_auth_manager

    return bool(get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=user))


def may_use_jobs(user: BaseUser, method: str) -> bool:
    """Whether ``user`` may read (``GET``) or submit and terminate (``POST``) their jobs.

    Asked of the auth manager as the custom view :data:`~rackflow.auth_manager.JOBS_RESOURCE`. Airflow's
    plain simple auth manager answers every custom view by the viewer role whatever the method, so with
    it the job API keeps the ``rackflow_job`` DAG's own rights (read it, trigger it).
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    manager = get_auth_manager()
    if type(manager) is SimpleAuthManager:
        return bool(
            manager.is_authorized_dag(
                method=method,  # type: ignore[arg-type]
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=JOB_DAG_ID),
                user=user,  # type: ignore[arg-type]
            )
        )
    return bool(
        manager.is_authorized_custom_view(
            method=method,  # type: ignore[arg-type]
            resource_name=JOBS_RESOURCE,
            user=user,
        )
    )


def can_use_jobs(method: str) -> object:
    """Dependency: the user may use the job API with ``method`` (GET: read, POST: submit/terminate)."""

    def check(user: CurrentUser) -> None:
        if not may_use_jobs(user, method):
            action = "read jobs" if method == "GET" else "submit or terminate jobs"
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{user.get_name()!r} may not {action}")

    return Depends(check)


def is_admin(user: BaseUser) -> bool:
    """Admins see every user's objects (jobs, reports); everyone else sees their own.

    With Airflow's simple auth manager that is the Admin role only (Op may edit config but is no
    admin); with another auth manager, whoever may change Airflow's configuration.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    manager = get_auth_manager()
    if isinstance(manager, SimpleAuthManager):
        return str(getattr(user, "role", None) or "").upper() == "ADMIN"
    return bool(manager.is_authorized_configuration(method="PUT", user=user))


class BasicAuth:
    """ASGI middleware: HTTP Basic credentials on TES routes, turned into the auth manager's own token.

    TES clients (py-tes, ``snakemake-executor-plugin-tes --tes-user/--tes-password``) may send
    ``Authorization: Basic``. Under ``path_prefix`` such a request is authenticated by Airflow's simple
    auth manager's own login (the service behind ``POST /auth/token``, which checks the password and
    issues the JWT); its header is then replaced by ``Bearer <that token>`` so every route dependency
    authenticates and authorizes it as usual. rackflow checks no password itself. Wrong credentials
    (or Basic with another auth manager, which has no such login here) get 401 with
    ``WWW-Authenticate: Basic``. Other routes and other schemes pass through unchanged.
    """

    TOKEN_SECONDS = 300

    def __init__(self, app: ASGIApp, *, path_prefix: str) -> None:
        self.app = app
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"]).removeprefix(str(scope.get("root_path", "")))
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if not path.startswith(self.path_prefix + "/") or scheme.lower() != "basic":
            await self.app(scope, receive, send)
            return
        token, problem = await run_in_threadpool(self._token, credentials.strip())
        if token is None:
            response = JSONResponse(
                {"detail": problem},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="rackflow TES"'},
            )
            await response(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
        headers.append((b"authorization", f"Bearer {token}".encode()))
        await self.app({**scope, "headers": headers}, receive, send)

    def _token(self, credentials: str) -> tuple[str | None, str]:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.datamodels.login import LoginBody
        from airflow.api_fastapi.auth.managers.simple.services.login import SimpleAuthManagerLogin
        from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

        if not isinstance(get_auth_manager(), SimpleAuthManager):
            return None, "Basic authentication needs Airflow's simple auth manager; send a Bearer token"
        try:
            username, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, "Basic credentials are not base64 of 'username:password'"
        if not sep or not username:
            return None, "Basic credentials are not base64 of 'username:password'"
        try:
            body = LoginBody(username=username, password=password)
            token = SimpleAuthManagerLogin.create_token(body, expiration_time_in_seconds=self.TOKEN_SECONDS)
        except (HTTPException, ValueError):
            return None, "Invalid credentials"
        return token, ""
