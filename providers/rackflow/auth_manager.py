"""rackflow's auth manager: Airflow's simple auth manager with rackflow's rules of who may do what.

Turn it on with ``[core] auth_manager = rackflow.auth_manager.RackflowAuthManager`` (users, roles and
passwords stay those of the simple auth manager). Rules on top of the simple auth manager's roles
(viewer < user < op < admin):

* **Batch jobs belong to their owners.** The ``rackflow_job`` DAG is invisible to everyone but admins
  in Airflow's own API and UI: its runs (each holds a whole job description as conf), task instances,
  XComs and logs are neither listed nor changed there. End users work through rackflow's job API
  (``/rackflow/api/jobs``), which checks the custom view :data:`JOBS_RESOURCE` (read: viewer and up,
  submit and terminate: user and up) and then each job's owner.
* **Acting on the fleet needs the op role.** Every other DAG (power, power planner and monitor, VM launch
  and destroy, jobnets, build environments, S3 intakes and any DAG of the site) may be read by viewers,
  but triggering, clearing, marking, deleting or pausing needs op, or an explicit grant in
  ``[rackflow] dag_grants`` (``user:dag_id_glob`` entries) for that user and DAG.

Everything else (connections, variables, pools, configuration, assets) is the simple auth manager's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from functools import cached_property
from typing import TYPE_CHECKING

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import (
    SimpleAuthManager,
    SimpleAuthManagerRole,
)

from rackflow import settings
from rackflow.dag_factories.job import JOB_DAG_ID

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

JOBS_RESOURCE = "Rackflow Jobs"
"""The custom view (resource name) of rackflow's job API: GET to list and read one's jobs, POST to
submit and terminate them. With the FAB auth manager it is a resource of that name."""

OWNED_DAG_IDS = frozenset({JOB_DAG_ID})
"""DAGs whose runs belong to end users: only admins see or change them through Airflow's own API."""


def _role(user: SimpleAuthManagerUser) -> SimpleAuthManagerRole | None:
    try:
        return SimpleAuthManagerRole[str(user.role or "").upper()]
    except KeyError:
        return None


def _at_least(user: SimpleAuthManagerUser, role: SimpleAuthManagerRole) -> bool:
    mine = _role(user)
    return mine is not None and mine.order >= role.order


class RackflowAuthManager(SimpleAuthManager):
    """The simple auth manager, with the ``rackflow_job`` DAG kept to admins and DAG actions kept to op."""

    @cached_property
    def dag_grants(self) -> Mapping[str, Sequence[str]]:
        """``{user: [dag_id glob, ...]}`` from ``[rackflow] dag_grants``, read once per process."""
        return settings.dag_grants()

    def is_granted(self, user: SimpleAuthManagerUser, dag_id: str) -> bool:
        """Whether ``[rackflow] dag_grants`` lets ``user`` act on ``dag_id`` (never an owned DAG)."""
        if dag_id in OWNED_DAG_IDS:
            return False
        return any(fnmatchcase(dag_id, glob) for glob in self.dag_grants.get(user.get_name(), ()))

    def is_authorized_dag(
        self,
        *,
        method: ResourceMethod,
        user: SimpleAuthManagerUser,
        access_entity: DagAccessEntity | None = None,
        details: DagDetails | None = None,
    ) -> bool:
        if self._is_admin(user):
            return True
        dag_id = details.id if details is not None else None
        if dag_id in OWNED_DAG_IDS:
            return False
        if method != "GET" and not _at_least(user, SimpleAuthManagerRole.OP):
            if dag_id is None or not self.is_granted(user, dag_id):
                return False
            # A grant lifts the role needed to act on this DAG; teams still apply.
            return super().is_authorized_dag(
                method="GET", user=user, access_entity=access_entity, details=details
            )
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )

    def is_authorized_custom_view(
        self, *, method: ResourceMethod, resource_name: str, user: SimpleAuthManagerUser
    ) -> bool:
        if resource_name == JOBS_RESOURCE:
            needed = SimpleAuthManagerRole.VIEWER if method == "GET" else SimpleAuthManagerRole.USER
            return self._is_admin(user) or _at_least(user, needed)
        return bool(super().is_authorized_custom_view(method=method, resource_name=resource_name, user=user))
