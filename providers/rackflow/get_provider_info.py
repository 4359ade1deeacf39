"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from rackflow import __version__
from rackflow.hooks.connection_forms import provider_connection_types


def _option(description: str, default: str | None, example: str | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": "string",
        "example": example,
        "default": default,
    }


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "rackflow",
        "name": "rackflow",
        "description": (
            "Run an on-premises fleet from Airflow: physical hosts, VMs (libvirt), power "
            "(Redfish, IPMI), SSH jobnets and the local batch scheduler."
        ),
        "versions": [__version__],
        "integrations": [
            {"integration-name": "libvirt", "tags": ["software"]},
            {"integration-name": "Redfish", "tags": ["protocol"]},
            {"integration-name": "IPMI", "tags": ["protocol"]},
            {"integration-name": "Batch scheduler", "tags": ["software"]},
            {"integration-name": "S3 job intake", "tags": ["protocol"]},
            {"integration-name": "Jobnets", "tags": ["software"]},
        ],
        "hooks": [
            {"integration-name": "libvirt", "python-modules": ["rackflow.hooks.libvirt"]},
            {"integration-name": "Redfish", "python-modules": ["rackflow.hooks.redfish"]},
            {"integration-name": "IPMI", "python-modules": ["rackflow.hooks.ipmi"]},
            {"integration-name": "Batch scheduler", "python-modules": ["rackflow.hooks.scheduler"]},
            {"integration-name": "S3 job intake", "python-modules": ["rackflow.hooks.s3_jobs"]},
        ],
        "operators": [
            {"integration-name": "libvirt", "python-modules": ["rackflow.operators.libvirt"]},
            {"integration-name": "Batch scheduler", "python-modules": ["rackflow.operators.scheduler"]},
            {"integration-name": "S3 job intake", "python-modules": ["rackflow.operators.s3_intake"]},
            {"integration-name": "Redfish", "python-modules": ["rackflow.operators.power"]},
            {"integration-name": "Jobnets", "python-modules": ["rackflow.operators.ssh_step"]},
        ],
        "sensors": [
            {"integration-name": "S3 job intake", "python-modules": ["rackflow.sensors.s3_job_status"]},
        ],
        "triggers": [
            {"integration-name": "libvirt", "python-modules": ["rackflow.triggers.libvirt"]},
            {"integration-name": "Batch scheduler", "python-modules": ["rackflow.triggers.scheduler"]},
            {"integration-name": "S3 job intake", "python-modules": ["rackflow.triggers.s3_job_status"]},
        ],
        "connection-types": provider_connection_types(),
        "plugins": [{"name": "rackflow", "plugin-class": "rackflow_plugin.RackflowPlugin"}],
        "config": {
            "rackflow": {
                "description": "rackflow: inventory database, fleet file and poll intervals.",
                "options": {
                    "database_url": _option(
                        "SQLAlchemy URL of the rackflow inventory database. Empty: "
                        "a SQLite file rackflow.db under AIRFLOW_HOME.",
                        "",
                        "postgresql+psycopg2://rackflow:secret@db/rackflow",
                    ),
                    "fleet_file": _option(
                        "Fleet file (YAML) listing the physical hosts. Empty: fleet.yaml under AIRFLOW_HOME.",
                        "",
                        "/etc/rackflow/fleet.yaml",
                    ),
                    "jobnets_folder": _option(
                        "Folder of jobnet YAML files turned into DAGs. Empty: jobnets/ under AIRFLOW_HOME.",
                        "",
                        "/etc/rackflow/jobnets",
                    ),
                    "vm_poll_interval": _option("Seconds between VM state polls while launching.", "2"),
                    "scheduler_poll_interval": _option("Seconds between batch scheduler polls.", "5"),
                    "jobnet_ssh_conn_id": _option(
                        "SSH connection of jobnet steps whose server has none of its own (a jobnet's "
                        "server_connections entry '*' overrides it).",
                        "ssh_default",
                    ),
                    "ssh_step_end_from_trigger": _option(
                        "A deferred SSH step that has ended is ended by its trigger, never resumed on a "
                        "worker (Airflow 3.3's defer-exit race). Turn off only for dag.test(), which "
                        "drops the XComs of a task its trigger ended.",
                        "True",
                    ),
                    "ssh_step_poll_interval": _option(
                        "Seconds between status polls of deferred SSH steps (one per server for all).", "5"
                    ),
                    "s3_poll_interval": _option("Seconds between S3 intake polls.", "5"),
                    "power_poll_interval": _option("Seconds between BMC polls.", "60"),
                    "power_off_threshold": _option(
                        "Power-off control's look-ahead (OffThresholdTime): 90s, 60m, 2h or seconds. "
                        "Must exceed power_on_threshold, checked at load.",
                        "60m",
                    ),
                    "power_on_threshold": _option(
                        "Power-on control's look-ahead (OnThresholdTime): nodes a reservation starting "
                        "within it needs are powered on.",
                        "30m",
                    ),
                    "power_boot_timeout": _option(
                        "Seconds a node may stay booting before error-stopped.", "600"
                    ),
                    "power_stop_timeout": _option(
                        "Seconds a node may stay stopping before error-stopped.", "600"
                    ),
                    "power_bmc_timeout": _option(
                        "Seconds per BMC call (each poll gets this deadline).", "10"
                    ),
                    "dag_grants": _option(
                        "With rackflow's auth manager: users who may act on DAGs (trigger, clear, mark, "
                        "pause) below the op role, as comma-separated user:dag_id_glob entries. Never "
                        "grants the rackflow_job DAG (end users use the job API).",
                        "",
                        "alice:jobnet_*,bob:rackflow_power",
                    ),
                    "placement_policy": _option(
                        "VM placement policy: packing, an entry point name in rackflow.placement, "
                        "pkg.mod:Class, or an http(s) URL of a placement service.",
                        "packing",
                    ),
                    "job_scheduler": _option(
                        "Batch scheduler of the rackflow_job DAG: slurm, pbspro, lsf or sge.", "slurm"
                    ),
                    "job_ssh_conn_id": _option(
                        "SSH connection of the scheduler's login node. Empty: run scheduler commands "
                        "on the Airflow worker.",
                        "",
                        "hpc_login",
                    ),
                    "job_aws_conn_id": _option(
                        "AWS connection used for s3:// stage_in/stage_out of batch jobs.", "aws_default"
                    ),
                    "staging_s3_sources": _option(
                        "Buckets that s3:// stage_in may read, comma or space separated; an entry "
                        "bucket/prefix/ allows only keys under that prefix. Empty: s3:// stage_in refused.",
                        "",
                        "rackflow-inputs, shared-data/public/",
                    ),
                    "staging_s3_targets": _option(
                        "Buckets (or bucket/prefix/) that s3:// stage_out may write. Never list an S3 "
                        "intake bucket here: a job could then drop a job into it. Empty: refused.",
                        "",
                        "rackflow-results",
                    ),
                    "staging_sftp_sources": _option(
                        "SSH connections that sftp:// stage_in may read through (conn_id or "
                        "conn_id/abs/path/prefix/). The connection's own account does the reading: list "
                        "only connections made for exchanging files. Empty: sftp:// stage_in refused.",
                        "",
                        "data_exchange/srv/exchange/",
                    ),
                    "staging_sftp_targets": _option(
                        "SSH connections (conn_id or conn_id/abs/path/prefix/) that sftp:// stage_out may "
                        "write through. Empty: sftp:// stage_out refused.",
                        "",
                        "data_exchange/srv/exchange/results/",
                    ),
                    "staging_allow_http": _option(
                        "Whether stage_in may download http(s):// URLs. Even when on, only public "
                        "addresses are contacted (loopback, private, link-local, multicast and reserved "
                        "ones are refused, after DNS too) and redirects are not followed.",
                        "False",
                    ),
                    "staging_max_file_size": _option(
                        "Largest file one staging copy may move (bytes, or with a K/M/G/T suffix); a "
                        "bigger one fails the stage and leaves no partial file.",
                        "1G",
                    ),
                    "jobs_directory": _option(
                        "Base of the job directories on the scheduler side: not world-writable (made "
                        "0711 when missing), on every node. Empty: /var/lib/rackflow/jobs.",
                        "",
                        "/shared/rackflow-jobs",
                    ),
                    "job_output_tail_size": _option(
                        "Bytes of each batch job's stdout and of its stderr (the last ones) kept in "
                        "the rackflow database when the job ends, readable through "
                        "GET /rackflow/api/jobs/<id>/output after its directory is gone.",
                        "64K",
                        "1M",
                    ),
                    "job_directory_retention": _option(
                        "How long a finished job's directory stays after stage-out: 0 removes it in "
                        "the job's own cleanup; a duration (seconds, 2h, 1-00:00:00, PT12H) keeps it "
                        "that long, then the cleanup of a later job of the same DAG removes it.",
                        "0",
                        "7-00:00:00",
                    ),
                    "tes_container_runtime": _option(
                        "How TES executors run: apptainer or singularity run each one in its image "
                        "(docker://IMAGE) with the task's paths bound where it names them; bwrap "
                        "(bubblewrap, no image) runs its command on the node with the task's top-level "
                        "directories mounted from the job directory; empty runs the command as it is, "
                        "in the job directory.",
                        "",
                        "bwrap",
                    ),
                    "tes_executor_path": _option(
                        "PATH that TES tasks' jobs start with, where the site installed the tools "
                        "tasks call when no image brings them (e.g. a Snakemake virtualenv for "
                        "snakemake-executor-plugin-tes). Absolute directories, ':'-separated. Empty: the "
                        "job account's login PATH.",
                        "",
                        "/opt/snakemake/bin:/usr/local/bin:/usr/bin:/bin",
                    ),
                    "api_max_body_bytes": _option(
                        "Largest request body (bytes) rackflow's routes under /rackflow accept; a larger "
                        "one, with or without Content-Length, is refused with 413 as it arrives.",
                        "1048576",
                    ),
                    "api_max_json_depth": _option(
                        "Deepest nesting of arrays and objects in a JSON request body to /rackflow; "
                        "deeper is refused with 400.",
                        "32",
                    ),
                    "job_accounts": _option(
                        "JSON object: Airflow user name -> Unix account that user's batch jobs run as "
                        "(an unprivileged account present on every node). A user without one cannot "
                        "submit jobs (403). Empty: nobody.",
                        "",
                        '{{"alice": "alice", "bob": "rf-bob"}}',
                    ),
                    "s3_intake_file": _option(
                        "YAML file listing the S3 intake buckets (one s3_intake_<name> DAG each). "
                        "Empty: s3_intake.yaml under AIRFLOW_HOME.",
                        "",
                        "/etc/rackflow/s3_intake.yaml",
                    ),
                },
            }
        },
    }
