"""Authentication and authorization for rackflow's routes, through Airflow's auth manager.

Airflow applies no auth to plugin apps, so every route declares one of these dependencies. Rights map
onto Airflow's own: reading rackflow data needs read access to the DAG that acts on it; acting needs
the right to trigger that DAG. A request without a valid token (header or the UI's cookie) gets 401.
"""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import Depends

CurrentUser = Annotated[BaseUser, Depends(get_user)]


def can_read(dag_id: str) -> object:
    """Dependency: the user may read ``dag_id`` (and so the rackflow data it works on)."""
    return Depends(requires_access_dag("GET", param_dag_id=dag_id))


def can_trigger(dag_id: str) -> object:
    """Dependency: the user may create runs of ``dag_id``."""
    return Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=dag_id))


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
