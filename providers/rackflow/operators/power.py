"""Power a physical node on or off through its BMC, with rackflow's refusal rules.

Thin over :mod:`rackflow.services.power`: power on is always allowed; power off is refused while VMs
run or boot on the node (the task fails with the reason and the VM names, nothing changed) unless
``migrate`` is set and the placement policy finds room for them on the other powered-on nodes of the
node's group, in which case they are migrated first. Every change is recorded in the node's history
with the triggering user as actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from rackflow.core.values import parse_bool

ACTIONS = ("on", "off")


class PowerControlOperator(BaseOperator):
    """
    Power a node of the rackflow inventory on or off.

    :param node: inventory host name (templated).
    :param action: ``on`` or ``off`` (templated).
    :param migrate: for ``off``: migrate running VMs within the node's group first (templated).
    :param hard: for ``off``: force off instead of a graceful shutdown (templated).
    :param reason: why, recorded in the node's history (templated).
    :param actor: who asked; default the DAG run's triggering user, else the DAG id.
    :param database_url: rackflow inventory DB; default ``[rackflow] database_url``.
    """

    template_fields: Sequence[str] = ("node", "action", "migrate", "hard", "reason")
    ui_color = "#f6c86b"

    def __init__(
        self,
        *,
        node: str,
        action: str,
        migrate: bool | str = False,
        hard: bool | str = False,
        reason: str = "",
        actor: str | None = None,
        database_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.node = node
        self.action = action
        self.migrate = migrate
        self.hard = hard
        self.reason = reason
        self.actor = actor
        self.database_url = database_url

    def _actor(self, context: Any) -> str:
        if self.actor:
            return self.actor
        dag_run = context.get("dag_run")
        user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
        return str(user or self.dag_id)

    def execute(self, context: Any) -> dict[str, Any]:
        from rackflow.services.power.control import PowerRefused, power_off, power_on

        action = str(self.action).strip().lower()
        if action not in ACTIONS:
            raise AirflowFailException(f"unknown power action {self.action!r}; use one of {ACTIONS}")
        actor = self._actor(context)
        try:
            if action == "on":
                result = power_on(self.node, actor=actor, reason=self.reason, url=self.database_url)
            else:
                result = power_off(
                    self.node,
                    actor=actor,
                    migrate=parse_bool(self.migrate, blank=False),
                    hard=parse_bool(self.hard, blank=False),
                    reason=self.reason,
                    url=self.database_url,
                )
        except PowerRefused as refused:
            vms = ", ".join(refused.decision.blocking_vms)
            raise AirflowFailException(
                f"power {action} of {self.node} refused: {refused.decision.reason}"
                + (f" [VMs: {vms}]" if vms else "")
            ) from refused
        except KeyError as err:
            raise AirflowFailException(str(err)) from err
        self.log.info(
            "power %s %s by %s: %s (status %s)", action, self.node, actor, result.reason, result.status
        )
        for vm, target in result.migrations.items():
            self.log.info("migrated %s -> %s", vm, target)
        return {
            "node": result.node,
            "action": result.action,
            "status": result.status,
            "reason": result.reason,
            "migrations": result.migrations,
        }
