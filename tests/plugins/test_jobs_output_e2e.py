"""Job output through the job API on a real Airflow standalone and Slurm: kept in the rackflow DB
when the job ends, readable by its owner (and admins) after the job directory is gone (issue 15,
acceptance 4 for the job API), bounded, and never read through a symlink the job planted."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from tests.plugins.jobs_support import JOBS, job_finished, wait_for_job

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")


def _submit(stack: Any, session: Any, script: str) -> str:
    resp = session.post(
        f"{stack.url}{JOBS}", json={"executable": "/bin/sh", "arguments": ["-c", script]}, timeout=180
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["job_id"])


def test_output_of_a_failed_job_is_readable_by_its_owner_after_the_directory_is_gone(
    airflow_stack: Any, devfleet: Any
) -> None:
    airflow_stack.wait_for_dag("rackflow_job")
    alice = airflow_stack.session("alice")
    marker = uuid.uuid4().hex
    job_id = _submit(airflow_stack, alice, f"echo out-{marker}; echo line2; echo err-{marker} >&2; exit 3")
    url = f"{airflow_stack.url}{JOBS}/{job_id}/output"
    early = alice.get(url, timeout=180)  # the run has not finished: nothing kept yet
    assert early.status_code == 409, early.text
    assert "not yet available" in early.json()["detail"]

    job = wait_for_job(airflow_stack, alice, job_id, job_finished)
    assert job["state"] == "FAILED" and job["properties"]["exit_code"] == 3, job
    workdir = job["properties"]["workdir"]
    assert workdir and not Path(workdir).exists()  # cleanup removed the job directory
    messages = [e["message"] for e in job["events"]]
    assert any(m.startswith("output kept (stdout: ") for m in messages), messages
    assert messages.index(next(m for m in messages if m.startswith("output kept"))) < messages.index(
        f"job directory {workdir} removed"
    )

    out = alice.get(url, params={"stream": "stdout"}, timeout=180)
    assert out.status_code == 200, out.text
    assert out.json() == {
        "job_id": job_id,
        "stream": "stdout",
        "content": f"out-{marker}\nline2\n",
        "truncated": False,
        "size": len(f"out-{marker}\nline2\n"),
        "path": "rackflow.out",
        "note": None,
    }
    assert alice.get(url, timeout=180).json()["content"] == out.json()["content"]  # stdout by default
    err = alice.get(url, params={"stream": "stderr"}, timeout=180).json()
    assert err["content"] == f"err-{marker}\n" and err["truncated"] is False
    last = alice.get(url, params={"tail": 1}, timeout=180).json()
    assert (last["content"], last["truncated"]) == ("line2\n", True)
    admin = airflow_stack.session("admin")
    assert admin.get(url, timeout=180).json()["content"] == out.json()["content"]

    # Nobody else learns the job exists; no token is 401; bad parameters are 422 naming them.
    import requests

    assert requests.get(url, timeout=180).status_code == 401
    for other in ("bob", "victor"):
        assert airflow_stack.session(other).get(url, timeout=180).status_code == 404
    for params, field in (({"stream": "stdin"}, "stream"), ({"tail": 0}, "tail"), ({"tail": "x"}, "tail")):
        resp = alice.get(url, params=params, timeout=180)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["detail"][0]["loc"][-1] == field
    assert alice.get(f"{airflow_stack.url}{JOBS}/no-such-job/output", timeout=180).status_code == 404


def test_huge_output_is_kept_truncated_and_a_planted_symlink_is_not_followed(
    airflow_stack: Any, devfleet: Any, tmp_path: Path
) -> None:
    airflow_stack.wait_for_dag("rackflow_job")
    alice = airflow_stack.session("alice")
    secret = tmp_path / "secret"
    secret.write_text(f"root-only-{uuid.uuid4().hex}\n")
    secret.chmod(0o600)
    # 300 000 bytes of stdout; stderr replaced by a symlink to a file only root (the worker) may read.
    huge = _submit(
        airflow_stack,
        alice,
        "head -c 300000 /dev/zero | tr '\\0' x; echo END; "
        f"echo gone >&2; rm -f rackflow.err; ln -s {secret} rackflow.err",
    )
    job = wait_for_job(airflow_stack, alice, huge, job_finished)
    assert job["state"] == "COMPLETED", [e["message"] for e in job["events"]]
    assert not Path(job["properties"]["workdir"]).exists()
    url = f"{airflow_stack.url}{JOBS}/{huge}/output"
    out = alice.get(url, timeout=180).json()
    assert out["truncated"] is True and out["size"] == 300_004
    assert len(out["content"]) == 64 * 1024 and out["content"].endswith("xxEND\n")
    err = alice.get(url, params={"stream": "stderr"}, timeout=180).json()
    assert err["content"] == "" and err["size"] is None
    assert "rackflow.err is not a regular file reached without a symlink" in err["note"]
    assert secret.read_text().strip() not in str(job["events"])
