"""PBS Pro, LSF and Grid Engine take the S3 intake's ready-made scripts (issue 14, acceptance 3): the
intake's accept step, on the real SeaweedFS and the rackflow DB, submits an uploaded ``aws-job-run.sh``
through each scheduler's client and a retried submit finds it by name instead of submitting again.

The clients are recorded ones: OpenPBS and LSF are not in Debian, and a Grid Engine cluster takes
longer to set up here than this test may; each fake ``qsub``/``bsub``/``qselect``/``bjobs``/``qstat``
logs how it was called and prints what the real client prints (formats as in the adapters' tests,
``tests/core/test_schedulers.py``). The parsers of their status output are tested there.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from rackflow.core.s3_protocol import StatusCache
from rackflow.db import jobs
from rackflow.hooks.s3_jobs import S3JobsHook
from rackflow.hooks.scheduler import DEFAULT_PATH, BatchSchedulerHook
from rackflow.operators.s3_intake import IntakeRun, accept_jobs, scheduler_job_name
from rackflow_devfleet.fleet import INTAKE_ACCOUNT
from tests.dag_factories.s3_intake_support import CONN_ID, new_bucket, read_status, upload_job

SCRIPT = (
    b"#!/bin/bash\n#PBS -N chosen-by-uploader\n#BSUB -J chosen-by-uploader\n#$ -N chosen\necho ok > out.txt\n"
)

# kind: (submit client, what it prints, the job id, find client)
RECORDED = {
    "pbspro": ("qsub", "101.pbs-head\n", "101.pbs-head", "qselect"),
    "lsf": ("bsub", "Job <4242> is submitted to default queue <normal>.\n", "4242", "bjobs"),
    "sge": ("qsub", "45\n", "45", "qstat"),
}


def _found(kind: str, job_id: str, name: str) -> str:
    """What the find-by-name client prints once the job exists."""
    if kind == "pbspro":
        return f"{job_id}\n"
    if kind == "lsf":
        record = {"JOBID": job_id, "JOB_NAME": name, "STAT": "PEND", "EXIT_CODE": "", "EXEC_HOST": ""}
        return json.dumps({"COMMAND": "bjobs", "JOBS": 1, "RECORDS": [{**record, "PEND_REASON": ""}]})
    return (
        "<?xml version='1.0'?>\n<job_info><queue_info/><job_info><job_list state=\"pending\">"
        f"<JB_job_number>{job_id}</JB_job_number><JB_name>{name}</JB_name><state>qw</state>"
        "</job_list></job_info></job_info>\n"
    )


NOT_FOUND = {
    "pbspro": "",
    "lsf": '{"COMMAND":"bjobs","JOBS":0,"RECORDS":[]}\n',
    "sge": "<?xml version='1.0'?>\n<job_info><queue_info/><job_info/></job_info>\n",
}


def _fake_clients(kind: str, where: Path, name: str) -> Path:
    """A bin directory with the recorded clients of ``kind``; their calls go to ``where/calls``."""
    submit, printed, job_id, find = RECORDED[kind]
    bin_dir = where / "bin"
    bin_dir.mkdir()
    calls = where / "calls"
    calls.touch(mode=0o666)
    calls.chmod(0o666)  # the clients run as the intake's account
    (where / "found.out").write_text(_found(kind, job_id, name))
    (where / "none.out").write_text(NOT_FOUND[kind])
    for client, body in {
        submit: (
            f'printf "%s\\n" "{submit} $(id -un) $PWD $*" >> {calls}\n'
            + (f"cat > {where}/stdin.txt\n" if kind == "lsf" else "")
            + f"touch {where}/submitted 2>/dev/null || true\nprintf '{printed}'\n"
        ),
        find: (
            f'printf "%s\\n" "{find} $*" >> {calls}\n'
            f"if [ -e {where}/submitted ]; then cat {where}/found.out; else cat {where}/none.out; fi\n"
        ),
    }.items():
        path = bin_dir / client
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    where.chmod(0o777)  # the submit client marks the job submitted, as the intake's account
    return bin_dir


@pytest.mark.parametrize("kind", sorted(RECORDED))
def test_the_intake_submits_an_uploaded_script_once_through_pbs_lsf_and_sge(
    kind: str, devfleet: Any, rackflow_db: str, shared_tmp: Path
) -> None:
    client = devfleet.s3.client()
    bucket = new_bucket(devfleet, kind)
    prefix = f"{kind}{uuid.uuid4().hex[:6]}"
    upload_job(client, bucket, prefix, script=SCRIPT, files={"input.dat": b"x\n"})
    run = IntakeRun(
        dag_id=f"s3_intake_{kind}_recorded",
        run_id=f"run_{uuid.uuid4().hex[:6]}",
        run_as=INTAKE_ACCOUNT,
        base_dir=str(shared_tmp / "base"),
    )
    key = scheduler_job_name(bucket, prefix, run.run_id)
    scheduler = BatchSchedulerHook(scheduler=kind)
    name = scheduler.adapter.normalize_job_name(key)
    fakes = shared_tmp / "clients"
    fakes.mkdir()
    bin_dir = _fake_clients(kind, fakes, name)
    scheduler = BatchSchedulerHook(scheduler=kind, scheduler_env={"PATH": f"{bin_dir}:{DEFAULT_PATH}"})
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)

    accepted = accept_jobs(hook, [j.to_dict() for j in hook.poll(StatusCache()).ready], scheduler, run)

    submit, _, job_id, find = RECORDED[kind]
    assert [(j["prefix"], j["job_id"], j["job_key"]) for j in accepted] == [(prefix, job_id, key)]
    assert read_status(client, bucket, prefix) == f"QUEUED\n{job_id}\n"
    job_dir = shared_tmp / "base" / prefix
    calls = (fakes / "calls").read_text().splitlines()
    submits = [c for c in calls if c.startswith(f"{submit} ")]
    assert len(submits) == 1 and calls[0].startswith(f"{find} "), calls
    # run as the intake's account, from the job directory, with rackflow's name and the uploaded script
    assert submits[0].startswith(f"{submit} {INTAKE_ACCOUNT} {job_dir} "), submits
    assert name in submits[0].split()
    if kind == "lsf":  # bsub reads the script on stdin
        assert (fakes / "stdin.txt").read_bytes() == SCRIPT
    else:
        assert submits[0].endswith(f"{job_dir}/aws-job-run.sh"), submits
    row = jobs.get_job(run.dag_id, key)
    assert row is not None and (row.scheduler_job_id, row.scheduler, row.state) == (job_id, kind, "QUEUED")
    assert row.owner == INTAKE_ACCOUNT and row.s3_prefix == prefix and row.dag_run_id == run.run_id

    # A retried submit (a crash between submit and record) finds the job by its name.
    again = scheduler.submit_script(
        str(job_dir / "aws-job-run.sh"), job_name=key, workdir=str(job_dir), account=INTAKE_ACCOUNT
    )
    assert (again.scheduler_job_id, again.existing) == (job_id, True)
    calls = (fakes / "calls").read_text().splitlines()
    assert len([c for c in calls if c.startswith(f"{submit} ")]) == 1, calls
