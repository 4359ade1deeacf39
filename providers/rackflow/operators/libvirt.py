"""Launch VMs on one chosen physical host or over a network group, and destroy them."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from rackflow.core.placement import (
    CapacityShortfall,
    LaunchRequest,
    NodeCapacity,
    PlacementError,
    VmRequest,
    load_placement_policy,
    place_in_group,
    plan_vm_placement,
)
from rackflow.core.power import UP
from rackflow.core.vm_naming import NamePattern, VmNamingError, expand_names
from rackflow.db.vm_claims import Claim, claim_vms, keeping_claims, release_claims
from rackflow.hooks.libvirt import DEFAULT_POOL, DomainInfo, DomainSpec, LibvirtHook
from rackflow.triggers.libvirt import FAILED_STATES, LibvirtDomainsRunningTrigger, format_states

PLAN_KEY = "plan"
"""XCom key of a launch's plan: ``{vm name: host}``."""


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


def powered_on(host: Any) -> bool:
    """Whether a host may take VMs: its BMC says on or booting (never polled: its mode says on)."""
    if host.status is None:
        return bool(host.mode == "on")
    return host.status in {s.value for s in UP}


def group_hosts(group: str) -> list[Any]:
    """The inventory rows of network group ``group``, by name; an unknown group names the known ones."""
    from sqlalchemy import select

    from rackflow.db.models import Host
    from rackflow.db.session import session_scope

    with session_scope() as session:
        rows = list(session.scalars(select(Host).where(Host.group == group).order_by(Host.name)))
        if not rows:
            known = sorted(set(session.scalars(select(Host.group))))
            raise AirflowFailException(f"group {group!r} is not in the inventory; known groups: {known}")
        for row in rows:
            session.expunge(row)
        return rows


def launch_tag(context: Any) -> str:
    """The tag marking VMs made by this task in this run: a retry finds them and makes no others."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    suffix = f"/{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}{suffix}"


class LaunchVMsOperator(BaseOperator):
    """
    Launch ``count`` VMs from an image on one physical host, or over a network group, and wait
    until they all run.

    Names come from ``name_pattern`` (``hadoop-{seq:02d}``), continuing after the highest number the
    host (or any host of the group) already has, or from ``start``. Names and capacity are claimed in
    the rackflow DB before anything is defined in libvirt (:mod:`rackflow.db.vm_claims`): concurrent
    launches on a host, from any worker, take turns there, so they never pick the same names nor
    spend the same free capacity. Free capacity is the inventory's allocatable vCPUs/memory minus
    every defined VM and every VM other launches have claimed; a shortfall fails the task before
    anything is created, naming the host (or the group's hosts) and what is missing.

    With ``group`` the VMs go over the powered-on hosts of that group as the placement policy
    (``[rackflow] placement_policy``, the one the power planner asks) places them; the plan
    (VM -> host) is logged and pushed under the XCom key ``plan``, and each host gets its VMs.

    Each VM gets a fresh clone of the image and is tagged with the run (domain metadata), so a retry
    of the same run completes the VMs it already made and creates no extra ones. Claims are released
    once the VMs are defined (libvirt's listing counts them from then on), when the launch fails, or
    when its task is killed; a launch whose process dies leaves claims that lapse after
    ``claim_lease`` (a live launch renews them every third of it) or that the task's retry takes
    over. Waiting happens in the triggerer (deferrable) or in the task; when a VM does not run
    within ``timeout`` or is lost, the VMs of this run are destroyed (unless ``keep_on_failure``).

    Returns (XCom) a list of ``{"name", "host", "state", "addresses"}``; the names are also pushed
    under the key ``names``.

    :param host: physical host name from the rackflow inventory (ignored when ``group`` is given).
    :param group: network group to launch over instead of one host.
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
    :param claim_lease: how long the claims of a launch whose process died block their names and
        capacity (a live launch renews them every third of it while it defines its VMs).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    """

    template_fields: Sequence[str] = (
        "host",
        "group",
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
        host: str | None = None,
        group: str | None = None,
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
        claim_lease: timedelta | float = timedelta(minutes=2),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.group = group
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
        self.claim_lease = (
            claim_lease if isinstance(claim_lease, timedelta) else timedelta(seconds=claim_lease)
        )
        self.deferrable = deferrable
        self._tag: str | None = None

    # Rendered templates arrive as strings unless the DAG renders native objects.
    @staticmethod
    def _int(value: Any, what: str) -> int:
        try:
            return int(value)
        except (TypeError, ValueError) as err:
            raise AirflowFailException(f"{what} must be an integer, got {value!r}") from err

    @staticmethod
    def _given(value: Any) -> str | None:
        return None if value in (None, "", "None") else str(value)

    def _interval(self) -> float:
        if self.poll_interval is not None:
            return float(self.poll_interval)
        from rackflow import settings

        return settings.poll_interval("vm", 2.0)

    @property
    def _where(self) -> str:
        group = self._given(self.group)
        return f"group {group}" if group else str(self.host)

    def _targets(self) -> list[Any]:
        """The hosts this launch may use: the one host, or the powered-on hosts of the group."""
        group = self._given(self.group)
        if group is None:
            if self._given(self.host) is None:
                raise AirflowFailException("a launch needs a host or a group")
            return [inventory_host(str(self.host))]
        rows = group_hosts(group)
        on = [row for row in rows if powered_on(row)]
        if not on:
            states = ", ".join(f"{r.name} ({r.status or r.mode})" for r in rows)
            raise AirflowFailException(
                f"refusing to launch over group {group}: no host is powered on ({states})"
            )
        return on

    def execute(self, context: Any) -> Any:
        count = self._int(self.count, "count")
        vcpus = self._int(self.vcpus, "vcpus")
        memory_mib = self._int(self.memory_mib, "memory_mib")
        start = None if self._given(self.start) is None else self._int(self.start, "start")
        tag = self._tag = launch_tag(context)
        try:
            NamePattern.parse(self.name_pattern)
        except VmNamingError as err:
            raise AirflowFailException(str(err)) from err
        rows = {row.name: row for row in self._targets()}
        plan = self._claim(list(rows.values()), tag, count, vcpus, memory_mib, start)
        names = list(plan)
        self.log.info("plan (VM -> host) for %s: %s", self._where, plan)
        context["ti"].xcom_push(key=PLAN_KEY, value=plan)
        try:
            with keeping_claims(tag, lease=self.claim_lease):
                for host in sorted(set(plan.values())):
                    with LibvirtHook(rows[host].libvirt_conn_id) as hook:
                        for name in [n for n, h in plan.items() if h == host]:
                            hook.launch_from_image(
                                DomainSpec(
                                    name=name,
                                    vcpus=vcpus,
                                    memory_mib=memory_mib,
                                    network=self._given(self.network),
                                    domain_type=self.domain_type,
                                    metadata={"launch": tag, "pattern": self.name_pattern},
                                ),
                                image=self.image,
                                pool=self.storage_pool,
                            )
        except Exception as err:
            self._rollback(plan, tag, f"launch failed: {err}")
            raise
        finally:
            # Defined VMs are in libvirt's listing now; the rest was rolled back: no claim is needed.
            release_claims(tag)
        context["ti"].xcom_push(key="names", value=names)

        deadline = time.time() + self.timeout
        conns = self._conns(plan)
        if self.deferrable:
            self.defer(
                trigger=LibvirtDomainsRunningTrigger(
                    hosts=conns, deadline=deadline, poll_interval=self._interval()
                ),
                method_name="execute_complete",
            )
        return self._wait_in_task(conns, plan, tag, deadline)

    def on_kill(self) -> None:
        """A killed launch (run marked failed, task cleared) gives its claims back at once."""
        if self._tag is not None:
            released = release_claims(self._tag)
            self.log.info("launch killed: released %d VM claims of %s", released, self._tag)

    def _claim(
        self, rows: list[Any], tag: str, count: int, vcpus: int, memory_mib: int, start: int | None
    ) -> dict[str, str]:
        """Decide names and hosts under the hosts' DB locks and claim the new VMs; the whole plan."""
        plan: dict[str, str] = {}
        order: list[str] = []  # the names in sequence order (what a jobnet's launch index counts)

        def decide(held: list[Claim]) -> list[Claim]:
            domains = self._domains(rows)
            mine = {d.name: host for host, ds in domains.items() for d in ds if d.launch == tag}
            defined = {host: {d.name for d in ds} for host, ds in domains.items()}
            taken = sorted({n for names in defined.values() for n in names} | {c.name for c in held})
            pattern = NamePattern.parse(self.name_pattern)
            made_before = sorted(mine, key=lambda n: (pattern.seq_of(n) or 0, n))
            names = self._plan_names(taken, made_before, count, start)
            order[:] = names
            new = [n for n in names if n not in mine]
            # What other launches hold on each host: their defined VMs, and their claims not yet defined.
            others = {
                host: [VmRequest(d.name, d.vcpus, d.memory_mib) for d in ds if d.launch != tag]
                + [
                    VmRequest(c.name, c.vcpus, c.memory_mib)
                    for c in held
                    if c.host == host and c.name not in defined[host]
                ]
                for host, ds in domains.items()
            }
            made = {
                host: [VmRequest(d.name, d.vcpus, d.memory_mib) for d in ds if d.launch == tag]
                for host, ds in domains.items()
            }
            plan.update(self._place(rows, others, made, mine, names, new, count, vcpus, memory_mib))
            return [Claim(plan[n], n, vcpus, memory_mib) for n in new]

        try:
            claim_vms([r.name for r in rows], tag, decide, lease=self.claim_lease)
        except PlacementError as err:
            raise AirflowFailException(f"refusing to launch over {self._where}: {err}") from err
        return {n: plan[n] for n in order}

    def _domains(self, rows: list[Any]) -> dict[str, list[DomainInfo]]:
        """Every defined VM per host; in a group a host whose libvirt cannot be asked is left out."""
        found: dict[str, list[DomainInfo]] = {}
        for row in rows:
            try:
                with LibvirtHook(row.libvirt_conn_id) as hook:
                    found[row.name] = hook.list_domains(addresses=False)
            except Exception as err:
                if self._given(self.group) is None:
                    raise
                self.log.warning("leaving %s out of the placement: %s", row.name, err)
        return found

    def _place(
        self,
        rows: list[Any],
        others: Mapping[str, list[VmRequest]],
        made: Mapping[str, list[VmRequest]],
        mine: Mapping[str, str],
        names: list[str],
        new: list[str],
        count: int,
        vcpus: int,
        memory_mib: int,
    ) -> dict[str, str]:
        group = self._given(self.group)
        if group is None:
            (row,) = rows
            check = plan_vm_placement(
                row, others[row.name], LaunchRequest(count=count, cpus=vcpus, memory_mib=memory_mib)
            )
            try:
                check.require()
            except CapacityShortfall as err:
                raise AirflowFailException(f"refusing to launch on {row.name}: {err}") from err
            self.log.info(
                "launching %s on %s (%s); already made by this run: %s",
                new or "nothing new",
                row.name,
                check.message,
                sorted(mine) or "none",
            )
            return dict.fromkeys(names, row.name)
        nodes = [
            NodeCapacity(
                name=row.name,
                group=group,
                cpus=row.cpus,
                memory_mib=row.memory_mib,
                # Everything on the host counts, this run's own VMs too: only the new ones are placed.
                used_cpus=sum(v.cpus for v in [*others[row.name], *made[row.name]]),
                used_memory_mib=sum(v.memory_mib for v in [*others[row.name], *made[row.name]]),
            )
            for row in rows
            if row.name in others
        ]
        from rackflow import settings

        policy = load_placement_policy(settings.placement_policy())
        placed: dict[str, str] = {}
        if new:
            requests = [VmRequest(n, vcpus, memory_mib, cluster=self._tag) for n in new]
            try:
                placed = place_in_group(policy, group, requests, nodes)
            except CapacityShortfall as err:
                raise AirflowFailException(f"refusing to launch over group {group}: {err}") from err
        self.log.info(
            "launching %s over group %s (policy %s); already made by this run: %s",
            placed or "nothing new",
            group,
            getattr(policy, "name", type(policy).__name__),
            dict(mine) or "none",
        )
        return {**{n: mine[n] for n in names if n in mine}, **placed}

    def _plan_names(self, taken: list[str], mine: list[str], count: int, start: int | None) -> list[str]:
        """The run's names: the ones it already made first, then new ones up to ``count``."""
        if len(mine) >= count:
            return mine[:count]
        others = [n for n in taken if n not in mine]
        try:
            if start is not None:
                wanted = [NamePattern.parse(self.name_pattern).format(start + i) for i in range(count)]
                clash = sorted(set(wanted) & set(others))
                if clash:
                    raise VmNamingError(f"names already exist: {clash}; pick another start or leave it out")
                return wanted
            return mine + expand_names(self.name_pattern, count - len(mine), taken)
        except VmNamingError as err:
            raise AirflowFailException(f"{self._where}: {err}") from err

    def _conns(self, plan: Mapping[str, str]) -> dict[str, list[str]]:
        """libvirt connection id -> the plan's VM names on that host."""
        conns: dict[str, list[str]] = {}
        for host in sorted(set(plan.values())):
            conn_id = inventory_host(host).libvirt_conn_id
            conns[conn_id] = [n for n, h in plan.items() if h == host]
        return conns

    def _wait_in_task(
        self, conns: Mapping[str, list[str]], plan: Mapping[str, str], tag: str, deadline: float
    ) -> Any:
        names = list(plan)
        hooks = [(LibvirtHook(conn_id), there) for conn_id, there in conns.items()]
        try:
            while True:
                states: dict[str, str] = {}
                for hook, there in hooks:
                    states.update(hook.domain_states(there))
                lost = {n: s for n, s in states.items() if s in FAILED_STATES}
                if lost:
                    event = {
                        "status": "failed",
                        "message": f"VMs lost: {format_states(lost)}",
                        "states": states,
                    }
                    return self._finish(event, plan, tag)
                if all(s == "running" for s in states.values()):
                    vms = [
                        {"name": n, "state": "running", "addresses": list(info.addresses) if info else []}
                        for hook, there in hooks
                        for n in there
                        for info in [hook.domain(n)]
                    ]
                    return self._finish({"status": "success", "vms": vms, "states": states}, plan, tag)
                if time.time() >= deadline:
                    waiting = {n: s for n, s in states.items() if s != "running"}
                    event = {
                        "status": "timeout",
                        "message": f"VMs not running by the deadline: {format_states(waiting)}",
                        "states": states,
                        "names": names,
                    }
                    return self._finish(event, plan, tag)
                time.sleep(self._interval())
        finally:
            for hook, _ in hooks:
                hook.close()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Resume after the trigger: hand the VMs on, or roll this run's VMs back."""
        plan = context["ti"].xcom_pull(task_ids=self.task_id, key=PLAN_KEY)
        if not plan:  # a launch deferred before plans were pushed: one host
            plan = dict.fromkeys(event.get("names") or [], str(self.host))
        return self._finish(event, dict(plan), launch_tag(context))

    def _finish(self, event: dict[str, Any], plan: Mapping[str, str], tag: str) -> Any:
        if event.get("status") == "success":
            # In sequence order (web-9 before web-10), whatever order the hosts were asked in: a
            # jobnet's launched server #i is the i-th of this list.
            pattern = NamePattern.parse(self.name_pattern)
            vms = sorted(
                ({"host": plan.get(vm["name"], self.host), **vm} for vm in event["vms"]),
                key=lambda vm: (pattern.seq_of(str(vm["name"])) or 0, str(vm["name"])),
            )
            self.log.info("all running on %s: %s", self._where, vms)
            return vms
        message = f"launch on {self._where} {event.get('status')}: {event.get('message')}"
        self._rollback(plan, tag, message)
        raise AirflowException(message)

    def _rollback(self, plan: Mapping[str, str], tag: str, why: str) -> None:
        if self.keep_on_failure:
            self.log.warning("%s; keeping this run's VMs (keep_on_failure)", why)
            return
        for host in sorted(set(plan.values())) or [str(self.host)]:
            with LibvirtHook(inventory_host(host).libvirt_conn_id) as hook:
                made = hook.domains_of_launch(tag)
                self.log.warning("%s; destroying this run's VMs on %s: %s", why, host, [d.name for d in made])
                for vm in made:
                    hook.destroy_domain(vm.name)


class DestroyVMsOperator(BaseOperator):
    """
    Power off and undefine VMs and delete the disks rackflow cloned for them.

    The VMs are ``names`` on ``host``, or, for a launch over a group, ``plan`` (``{vm name: host}``,
    a launch's ``plan`` XCom). Names that do not exist are reported, not an error (destroying is
    idempotent). Returns the list of names destroyed and absent.

    :param host: physical host name from the rackflow inventory.
    :param names: VM names to destroy on ``host``.
    :param plan: VM name -> host, instead of ``host`` and ``names``.
    :param keep_volumes: keep the cloned disks.
    """

    template_fields: Sequence[str] = ("host", "names", "plan")
    ui_color = "#ffd6cc"

    def __init__(
        self,
        *,
        host: str | None = None,
        names: list[str] | str = (),  # type: ignore[assignment]
        plan: Mapping[str, str] | str | None = None,
        keep_volumes: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.names = names
        self.plan = plan
        self.keep_volumes = keep_volumes

    def _by_host(self) -> dict[str, list[str]]:
        if isinstance(self.plan, Mapping) and self.plan:
            by_host: dict[str, list[str]] = {}
            for name, host in self.plan.items():
                by_host.setdefault(str(host), []).append(str(name))
            return by_host
        names = [self.names] if isinstance(self.names, str) else list(self.names)
        if not self.host:
            raise AirflowFailException("destroying VMs needs a host and names, or a plan")
        return {self.host: names}

    def execute(self, context: Any) -> dict[str, list[str]]:
        destroyed, absent = [], []
        for host, names in sorted(self._by_host().items()):
            row = inventory_host(host)
            with LibvirtHook(row.libvirt_conn_id) as hook:
                for name in names:
                    if hook.destroy_domain(name, delete_volumes=not self.keep_volumes):
                        destroyed.append(name)
                    else:
                        absent.append(name)
            self.log.info("on %s destroyed %s; not there: %s", host, destroyed, absent)
        return {"destroyed": destroyed, "absent": absent}
