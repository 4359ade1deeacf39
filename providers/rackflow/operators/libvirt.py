"""Launch and destroy VMs on one chosen physical host."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from rackflow.core.placement import CapacityShortfall, LaunchRequest, VmRequest, plan_vm_placement
from rackflow.core.vm_naming import NamePattern, VmNamingError, expand_names
from rackflow.hooks.libvirt import DEFAULT_POOL, DomainInfo, DomainSpec, LibvirtHook
from rackflow.triggers.libvirt import FAILED_STATES, LibvirtDomainsRunningTrigger, format_states


def inventory_host(name: str) -> Any:
    """The inventory row of physical host ``name`` (capacity, libvirt connection, group)."""
    from sqlalchemy import select

    from rackflow.db.models import Host
    from rackflow.db.session import session_scope

    with session_scope() as session:
        host = session.get(Host, name)
        if host is None:
            known = sorted(session.scalars(select(Host.name)))
            raise AirflowFailException(f"host {name!r} is not in the inventory; known hosts: {known}")
        session.expunge(host)
        return host


def launch_tag(context: Any) -> str:
    """The tag marking VMs made by this task in this run: a retry finds them and makes no others."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    suffix = f"/{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}{suffix}"


class LaunchVMsOnHostOperator(BaseOperator):
    """
    Launch ``count`` VMs from an image on one physical host and wait until they all run.

    Names come from ``name_pattern`` (``hadoop-{seq:02d}``), continuing after the highest number the
    host already has, or from ``start``. Before creating anything the host's free capacity (inventory
    capacity minus every defined VM) is checked; a shortfall fails the task with the host and the
    missing vCPUs/MiB named. Each VM gets a fresh clone of the image and is tagged with the run
    (domain metadata), so a retry of the same run completes the VMs it already made and creates no
    extra ones. Waiting happens in the triggerer (deferrable) or in the task; when a VM does not run
    within ``timeout`` or is lost, the VMs of this run are destroyed (unless ``keep_on_failure``).

    Returns (XCom) a list of ``{"name", "host", "state", "addresses"}``; the names are also pushed
    under the key ``names``.

    :param host: physical host name from the rackflow inventory.
    :param image: base image volume to clone (e.g. ``debian-12.qcow2``) in ``storage_pool``.
    :param count: number of VMs (1-100).
    :param name_pattern: names with one ``{seq}`` field, e.g. ``web-{seq:02d}``.
    :param start: first sequence number; default continues after the highest existing one.
    :param vcpus: vCPUs per VM.
    :param memory_mib: memory per VM in MiB.
    :param network: libvirt network to attach each VM to (none if empty).
    :param storage_pool: libvirt storage pool holding the images and the clones.
    :param domain_type: ``<domain type>`` (default: the driver's, ``kvm`` for QEMU; ``qemu`` for TCG).
    :param timeout: how long the VMs may take to run.
    :param poll_interval: seconds between state polls (default ``[rackflow] vm_poll_interval``).
    :param keep_on_failure: leave the VMs of a failed launch in place for inspection.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    """

    template_fields: Sequence[str] = (
        "host",
        "image",
        "count",
        "name_pattern",
        "start",
        "vcpus",
        "memory_mib",
        "network",
        "storage_pool",
        "keep_on_failure",
    )
    ui_color = "#c6e2ff"

    def __init__(
        self,
        *,
        host: str,
        image: str,
        count: int | str,
        name_pattern: str,
        start: int | str | None = None,
        vcpus: int | str = 1,
        memory_mib: int | str = 512,
        network: str | None = None,
        storage_pool: str = DEFAULT_POOL,
        domain_type: str | None = None,
        timeout: timedelta | float = timedelta(minutes=10),
        poll_interval: float | None = None,
        keep_on_failure: bool | str = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.image = image
        self.count = count
        self.name_pattern = name_pattern
        self.start = start
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.network = network
        self.storage_pool = storage_pool
        self.domain_type = domain_type
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        self.poll_interval = poll_interval
        self.keep_on_failure = keep_on_failure
        self.deferrable = deferrable

    # Rendered templates arrive as strings unless the DAG renders native objects.
    @staticmethod
    def _int(value: Any, what: str) -> int:
        try:
            return int(value)
        except (TypeError, ValueError) as err:
            raise AirflowFailException(f"{what} must be an integer, got {value!r}") from err

    def _interval(self) -> float:
        if self.poll_interval is not None:
            return float(self.poll_interval)
        from rackflow import settings

        return settings.poll_interval("vm", 2.0)

    def execute(self, context: Any) -> Any:
        row = inventory_host(self.host)
        count = self._int(self.count, "count")
        vcpus = self._int(self.vcpus, "vcpus")
        memory_mib = self._int(self.memory_mib, "memory_mib")
        start = None if self.start in (None, "", "None") else self._int(self.start, "start")
        tag = launch_tag(context)
        self.libvirt_conn_id = row.libvirt_conn_id
        try:
            NamePattern.parse(self.name_pattern)
        except VmNamingError as err:
            raise AirflowFailException(str(err)) from err

        with LibvirtHook(row.libvirt_conn_id) as hook:
            existing = hook.list_domains(addresses=False)
            mine = [d for d in existing if d.launch == tag]
            names = self._plan_names(existing, mine, count, start)
            new = [n for n in names if n not in {d.name for d in mine}]
            others = [d for d in existing if d.launch != tag]
            check = plan_vm_placement(
                row,
                [VmRequest(d.name, d.vcpus, d.memory_mib) for d in others],
                LaunchRequest(count=count, cpus=vcpus, memory_mib=memory_mib),
            )
            try:
                check.require()
            except CapacityShortfall as err:
                raise AirflowFailException(f"refusing to launch on {self.host}: {err}") from err
            self.log.info(
                "launching %s on %s (%s); already made by this run: %s",
                new or "nothing new",
                self.host,
                check.message,
                [d.name for d in mine] or "none",
            )
            try:
                for name in names:
                    hook.launch_from_image(
                        DomainSpec(
                            name=name,
                            vcpus=vcpus,
                            memory_mib=memory_mib,
                            network=self.network or None,
                            domain_type=self.domain_type,
                            metadata={"launch": tag, "pattern": self.name_pattern},
                        ),
                        image=self.image,
                        pool=self.storage_pool,
                    )
            except Exception as err:
                self._rollback(hook, tag, f"launch failed: {err}")
                raise
        context["ti"].xcom_push(key="names", value=names)

        deadline = time.time() + self.timeout
        if self.deferrable:
            self.defer(
                trigger=LibvirtDomainsRunningTrigger(
                    libvirt_conn_id=row.libvirt_conn_id,
                    names=names,
                    deadline=deadline,
                    poll_interval=self._interval(),
                ),
                method_name="execute_complete",
            )
        return self._wait_in_task(row.libvirt_conn_id, names, tag, deadline)

    def _plan_names(
        self, existing: list[DomainInfo], mine: list[DomainInfo], count: int, start: int | None
    ) -> list[str]:
        """The run's names: the ones it already made first, then new ones up to ``count``."""
        mine_names = sorted(d.name for d in mine)
        if len(mine_names) >= count:
            return mine_names[:count]
        others = [d.name for d in existing if d not in mine]
        try:
            if start is not None:
                wanted = [NamePattern.parse(self.name_pattern).format(start + i) for i in range(count)]
                taken = sorted(set(wanted) & set(others))
                if taken:
                    raise VmNamingError(f"names already exist: {taken}; pick another start or leave it out")
                return wanted
            return mine_names + expand_names(
                self.name_pattern, count - len(mine_names), [d.name for d in existing]
            )
        except VmNamingError as err:
            raise AirflowFailException(f"{self.host}: {err}") from err

    def _wait_in_task(self, conn_id: str, names: list[str], tag: str, deadline: float) -> Any:
        with LibvirtHook(conn_id) as hook:
            while True:
                states = hook.domain_states(names)
                lost = {n: s for n, s in states.items() if s in FAILED_STATES}
                if lost:
                    return self._finish(
                        {"status": "failed", "message": f"VMs lost: {format_states(lost)}", "states": states},
                        names,
                        tag,
                    )
                if all(s == "running" for s in states.values()):
                    vms = [
                        {"name": n, "state": "running", "addresses": list(info.addresses) if info else []}
                        for n in names
                        for info in [hook.domain(n)]
                    ]
                    return self._finish({"status": "success", "vms": vms, "states": states}, names, tag)
                if time.time() >= deadline:
                    waiting = {n: s for n, s in states.items() if s != "running"}
                    return self._finish(
                        {
                            "status": "timeout",
                            "message": f"VMs not running by the deadline: {format_states(waiting)}",
                            "states": states,
                        },
                        names,
                        tag,
                    )
                time.sleep(self._interval())

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Resume after the trigger: hand the VMs on, or roll this run's VMs back."""
        self.libvirt_conn_id = inventory_host(self.host).libvirt_conn_id
        return self._finish(event, list(event.get("names") or []), launch_tag(context))

    def _finish(self, event: dict[str, Any], names: list[str], tag: str) -> Any:
        if event.get("status") == "success":
            vms = [{"host": self.host, **vm} for vm in event["vms"]]
            self.log.info("all running on %s: %s", self.host, vms)
            return vms
        message = f"launch on {self.host} {event.get('status')}: {event.get('message')}"
        with LibvirtHook(self.libvirt_conn_id) as hook:
            self._rollback(hook, tag, message)
        raise AirflowException(message)

    def _rollback(self, hook: LibvirtHook, tag: str, why: str) -> None:
        if self.keep_on_failure:
            self.log.warning("%s; keeping this run's VMs (keep_on_failure)", why)
            return
        made = hook.domains_of_launch(tag)
        self.log.warning("%s; destroying this run's VMs: %s", why, [d.name for d in made])
        for vm in made:
            hook.destroy_domain(vm.name)


class DestroyVMsOperator(BaseOperator):
    """
    Power off and undefine VMs on one physical host and delete the disks rackflow cloned for them.

    Names that do not exist are reported, not an error (destroying is idempotent). Returns the list
    of names destroyed and absent.

    :param host: physical host name from the rackflow inventory.
    :param names: VM names to destroy.
    :param keep_volumes: keep the cloned disks.
    """

    template_fields: Sequence[str] = ("host", "names")
    ui_color = "#ffd6cc"

    def __init__(
        self, *, host: str, names: list[str] | str, keep_volumes: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.names = names
        self.keep_volumes = keep_volumes

    def execute(self, context: Any) -> dict[str, list[str]]:
        names = [self.names] if isinstance(self.names, str) else list(self.names)
        row = inventory_host(self.host)
        destroyed, absent = [], []
        with LibvirtHook(row.libvirt_conn_id) as hook:
            for name in names:
                if hook.destroy_domain(name, delete_volumes=not self.keep_volumes):
                    destroyed.append(name)
                else:
                    absent.append(name)
        self.log.info("on %s destroyed %s; not there: %s", self.host, destroyed, absent)
        return {"destroyed": destroyed, "absent": absent}
