"""`rackflow job ...` against a real Airflow standalone, real Slurm and real S3 (acceptance 1 end to end)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORDS

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")


def _cli(capsys: pytest.CaptureFixture[str], stack: Any, user: str, *args: str) -> tuple[int, Any]:
    from rackflow.cli import main

    rc = main(["--url", stack.url, "--user", user, "--password", PASSWORDS[user], *args])
    out = capsys.readouterr()
    return rc, json.loads(out.out) if out.out.strip() else json.loads(out.err)


def test_cli_submit_wait_failed_job_exit_code_events_and_stage_out(
    airflow_stack: Any, devfleet: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    airflow_stack.wait_for_dag("rackflow_job")
    key = f"cli/{uuid.uuid4().hex}/result.txt"
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "executable": "/bin/sh",
                "arguments": ["-c", "echo computed > result.txt; echo out; echo err >&2; sleep 1; exit 3"],
                "stage_out": [{"source": "result.txt", "target": f"s3://rackflow-results/{key}"}],
            }
        )
    )
    rc, job = _cli(capsys, airflow_stack, "alice", "job", "submit", str(spec), "--wait", "--interval", "1")
    assert rc == 1, job  # the job did not complete
    assert job["state"] == "FAILED" and job["properties"]["exit_code"] == 3
    states = [e["state"] for e in job["events"]]
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == ["QUEUED", "ACTIVE", "FAILED"]
    assert any(e["scheduler_job_id"] for e in job["events"])
    obj = devfleet.s3.client().get_object(Bucket="rackflow-results", Key=key)
    assert obj["Body"].read() == b"computed\n"

    rc, events = _cli(capsys, airflow_stack, "alice", "job", "events", job["job_id"])
    assert rc == 0 and [e["time"] for e in events] == sorted(e["time"] for e in events)
    rc, status = _cli(capsys, airflow_stack, "alice", "job", "status", job["job_id"])
    assert rc == 0 and status["state"] == "FAILED"
    rc, listing = _cli(capsys, airflow_stack, "alice", "job", "list")
    assert rc == 0 and job["job_id"] in [j["job_id"] for j in listing["jobs"]]
    rc, out = _cli(capsys, airflow_stack, "alice", "job", "output", job["job_id"])
    assert rc == 0 and (out["stream"], out["content"]) == ("stdout", "out\n"), out
    rc, err_out = _cli(capsys, airflow_stack, "alice", "job", "output", job["job_id"], "--stream", "stderr")
    assert rc == 0 and (err_out["stream"], err_out["content"]) == ("stderr", "err\n"), err_out
    rc, err = _cli(capsys, airflow_stack, "alice", "job", "output", job["job_id"], "--tail", "0")
    assert rc == 2 and "422" in err["error"]
    rc, again = _cli(capsys, airflow_stack, "alice", "job", "cancel", job["job_id"], "--reason", "done")
    assert rc == 0 and again["acted"] is False and "already finished" in again["message"]
    rc, err = _cli(capsys, airflow_stack, "bob", "job", "status", job["job_id"])
    assert rc == 2 and "404" in err["error"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"executable": 5}')
    rc, err = _cli(capsys, airflow_stack, "alice", "job", "submit", str(bad))
    assert rc == 2 and "400" in err["error"] and "executable" in err["error"]
