"""rackflow's settings: one place, Airflow's config section ``[rackflow]``.

Each option can be set in airflow.cfg or as ``AIRFLOW__RACKFLOW__<OPTION>``; defaults are declared in
``get_provider_info()["config"]`` so ``airflow config list`` shows them.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from rackflow.core.staging_policy import StagingPolicy, parse_allow_list, parse_size

SECTION = "rackflow"


def _get(option: str, fallback: str) -> str:
    from airflow.configuration import conf

    value = conf.get(SECTION, option, fallback=fallback)
    return fallback if value in (None, "") else str(value)


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


def database_url() -> str:
    """The rackflow inventory database: a SQLite file under AIRFLOW_HOME unless a URL is configured."""
    return _get("database_url", f"sqlite:///{airflow_home() / 'rackflow.db'}")


def fleet_file() -> Path:
    return Path(_get("fleet_file", str(airflow_home() / "fleet.yaml")))


def jobnets_folder() -> Path:
    return Path(_get("jobnets_folder", str(airflow_home() / "jobnets")))


def poll_interval(kind: str, fallback: float) -> float:
    """Seconds between polls for ``kind`` (e.g. ``vm``, ``scheduler``, ``s3``, ``power``)."""
    return float(_get(f"{kind}_poll_interval", str(fallback)))


def dag_grants() -> dict[str, list[str]]:
    """``[rackflow] dag_grants``: users allowed to act on DAGs beyond their role, ``{user: [glob, ...]}``.

    The option is a comma-separated list of ``user:dag_id_glob`` entries (a user may appear more than
    once), e.g. ``alice:jobnet_*,bob:rackflow_power``. An entry without a user or a glob is refused.
    """
    grants: dict[str, list[str]] = {}
    for entry in _get("dag_grants", "").split(","):
        if not entry.strip():
            continue
        user, sep, glob = (part.strip() for part in entry.partition(":"))
        if not sep or not user or not glob:
            raise ValueError(f"[rackflow] dag_grants: entry {entry.strip()!r} is not user:dag_id_glob")
        grants.setdefault(user, []).append(glob)
    return grants


def staging_policy() -> StagingPolicy:
    """What batch jobs may stage: the ``staging_*`` allow-lists and the per-file size limit.

    Empty lists allow nothing; ``staging_allow_http`` is off unless set to true.
    """
    from airflow.configuration import conf

    return StagingPolicy(
        s3_sources=parse_allow_list(_get("staging_s3_sources", "")),
        s3_targets=parse_allow_list(_get("staging_s3_targets", "")),
        sftp_sources=parse_allow_list(_get("staging_sftp_sources", "")),
        sftp_targets=parse_allow_list(_get("staging_sftp_targets", "")),
        allow_http=conf.getboolean(SECTION, "staging_allow_http", fallback=False),
        max_file_bytes=parse_size(_get("staging_max_file_size", "1G")),
    )


def _positive_int(option: str, fallback: int) -> int:
    raw = _get(option, str(fallback))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"[{SECTION}] {option} must be a positive integer, got {raw!r}")
    return value


def api_max_body_bytes() -> int:
    """Largest request body rackflow's routes read; a longer one is refused with 413 while it arrives."""
    return _positive_int("api_max_body_bytes", 1_048_576)


def api_max_json_depth() -> int:
    """Deepest nesting of arrays and objects in a JSON request body; deeper is refused with 400."""
    return _positive_int("api_max_json_depth", 32)


DEFAULT_JOBS_DIRECTORY = "/var/lib/rackflow/jobs"


def jobnet_ssh_conn_id() -> str:
    """SSH connection of a jobnet step whose server has no connection of its own."""
    return _get("jobnet_ssh_conn_id", "ssh_default")


def ssh_step_end_from_trigger() -> bool:
    """Whether a deferred SSH step that has ended is ended by its trigger (no resume on a worker).
    Off only for ``dag.test()``, which runs triggers inline and drops an end event's XComs."""
    from airflow.configuration import conf

    return conf.getboolean(SECTION, "ssh_step_end_from_trigger", fallback=True)


def jobs_directory() -> str:
    """Base of the batch jobs' directories on the scheduler side (``[rackflow] jobs_directory``)."""
    return _get("jobs_directory", DEFAULT_JOBS_DIRECTORY)


def job_accounts() -> dict[str, str]:
    """``[rackflow] job_accounts``: Airflow user name -> the Unix account that user's jobs run as."""
    raw = _get("job_accounts", "{}")
    try:
        accounts = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"[rackflow] job_accounts is not a JSON object: {exc}") from exc
    if not isinstance(accounts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in accounts.items()
    ):
        raise ValueError("[rackflow] job_accounts must be a JSON object of user name -> account name")
    return accounts


def job_account(user: str | None) -> str | None:
    """The Unix account ``user``'s batch jobs run as; None when ``[rackflow] job_accounts`` has none."""
    if not user:
        return None
    return job_accounts().get(user)


def missing_job_account(user: str | None) -> str:
    """Why a job of ``user`` cannot run: the message the job API and the job DAG give."""
    return (
        f"no job account for Airflow user {user!r}: [rackflow] job_accounts has no mapping for it "
        "(batch jobs never run as the Airflow service account)"
    )


def job_output_tail_bytes() -> int:
    """``[rackflow] job_output_tail_size``: bytes of each job's stdout and of its stderr kept in the
    rackflow database when the job ends (the last ones; a longer file is kept truncated)."""
    try:
        return parse_size(_get("job_output_tail_size", "64K"))
    except ValueError as exc:
        raise ValueError(f"[{SECTION}] job_output_tail_size: {exc}") from exc


def job_directory_retention() -> timedelta:
    """``[rackflow] job_directory_retention``: how long a finished job's directory stays after
    stage-out; ``0`` (the default) removes it in the job's own cleanup."""
    from rackflow.core.values import parse_duration

    raw = _get("job_directory_retention", "0").strip()
    if raw in ("0", "0s", "PT0S"):
        return timedelta(0)
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"[{SECTION}] job_directory_retention: {exc}") from exc


def tes_container_runtime() -> str | None:
    """``[rackflow] tes_container_runtime``: ``apptainer`` or ``singularity`` runs TES executors in
    their images; ``bwrap`` runs their commands on the node with the task's paths mounted where it
    names them (no image); empty (the default) runs their commands as they are."""
    from rackflow.core.tes import CONTAINER_RUNTIMES

    value = _get("tes_container_runtime", "").strip()
    if not value:
        return None
    if value not in CONTAINER_RUNTIMES:
        raise ValueError(
            f"[rackflow] tes_container_runtime {value[:40]!r} is not one of {', '.join(CONTAINER_RUNTIMES)}"
        )
    return value


def placement_policy() -> str:
    """``[rackflow] placement_policy``: where VMs go, for the power planner and group launches alike
    (see :func:`rackflow.core.placement.load_placement_policy`)."""
    return _get("placement_policy", "packing")


def tes_executor_path() -> str | None:
    """``[rackflow] tes_executor_path``: the PATH TES tasks' jobs start with (None: the account's own)."""
    value = _get("tes_executor_path", "").strip()
    if not value:
        return None
    for part in value.split(":"):
        if not part.startswith("/") or any(c in part for c in "\x00\n\r\t="):
            raise ValueError(f"[{SECTION}] tes_executor_path: {part[:80]!r} is not an absolute directory")
    return value
