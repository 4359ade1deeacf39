"""`make demo` end to end: the demo fleet and airflow standalone, reached the way the README says."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rackflow_devfleet.demo import DEMO_USERS
from rackflow_devfleet.servers import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# The uploader's side of the README's S3 intake steps, credentials and endpoint from the environment
# only (boto3's default chain is the aws CLI's): prints the final status.
UPLOADER = """
import time

import boto3

s3, bucket = boto3.client("s3"), "rackflow-jobs"
s3.put_object(Bucket=bucket, Key="job0001/aws-job-run.sh", Body=b"#!/bin/bash\\nhostname > result.txt\\n")
s3.put_object(Bucket=bucket, Key="job0001/aws-job-stat.txt", Body=b"FILE_UPLOAD\\n")
deadline, status = time.monotonic() + 400, ""
while time.monotonic() < deadline and status not in ("COMPLETED", "FAILED", "CANCELED"):
    time.sleep(2)
    status = s3.get_object(Bucket=bucket, Key="job0001/aws-job-stat.txt")["Body"].read().decode()
    status = status.split("\\n")[0]
s3.head_object(Bucket=bucket, Key="job0001/result.txt")
print(status)
"""


def test_demo_prints_url_and_serves_rackflow_to_token_holders_only(tmp_path):
    port = free_port()
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        # The demo uses the fleet file's fixed ports; its own AIRFLOW_HOME under the state dir.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SLURM_CONF"))}
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rackflow_devfleet",
                "demo",
                "--repo",
                str(REPO),
                "--port",
                str(port),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        url = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and demo.poll() is None:
            match = re.search(r"Airflow UI:\s+(http://127\.0\.0\.1:\d+)/", log.read_text())
            if match:
                url = match.group(1)
                break
            time.sleep(1)
        assert url == f"http://127.0.0.1:{port}", log.read_text()[-3000:]
        text = log.read_text()
        for user, (role, password) in DEMO_USERS.items():
            assert re.search(rf"{user}\s+{password}\s+\({role}\)", text)

        token = requests.post(
            f"{url}/auth/token", json={"username": "admin", "password": DEMO_USERS["admin"][1]}, timeout=30
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        providers = requests.get(
            f"{url}/api/v2/providers", headers=headers, params={"limit": 100}, timeout=30
        )
        assert providers.status_code == 200
        assert "rackflow" in {p["package_name"] for p in providers.json()["providers"]}
        plugins = requests.get(f"{url}/api/v2/plugins", headers=headers, timeout=30)
        assert plugins.status_code == 200
        assert "rackflow" in {p["name"] for p in plugins.json()["plugins"]}
        assert requests.get(f"{url}/rackflow/api/status", timeout=30).status_code == 401
        assert requests.get(f"{url}/rackflow/api/status", headers=headers, timeout=30).status_code == 200
        # rackflow's auth manager is on (plain `airflow standalone` would drop it): alice, a user,
        # may not act on the fleet through Airflow's own API.
        alice = requests.post(
            f"{url}/auth/token", json={"username": "alice", "password": DEMO_USERS["alice"][1]}, timeout=30
        ).json()["access_token"]
        refused = requests.post(
            f"{url}/api/v2/dags/rackflow_power/dagRuns",
            json={"logical_date": None, "conf": {}},
            headers={"Authorization": f"Bearer {alice}"},
            timeout=30,
        )
        assert refused.status_code == 403, refused.text
        # A job goes all the way through: tasks and triggers of every standalone component must share
        # one fernet key and JWT secret (a first start once gave each its own: every task failed).
        alice_headers = {"Authorization": f"Bearer {alice}"}
        submitted = requests.post(
            f"{url}/rackflow/api/jobs",
            json={"executable": "/bin/sh", "arguments": ["-c", "id -un"]},
            headers=alice_headers,
            timeout=60,
        )
        assert submitted.status_code == 201, submitted.text
        job_url = f"{url}/rackflow/api/jobs/{submitted.json()['job_id']}"
        deadline = time.monotonic() + 240
        job = requests.get(job_url, headers=alice_headers, timeout=60).json()
        while job.get("run_state") not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = requests.get(job_url, headers=alice_headers, timeout=60).json()
        assert job["state"] == "COMPLETED", job
        stdout = requests.get(f"{job_url}/output", headers=alice_headers, timeout=60).json()
        assert stdout["content"] == "rf-alice\n", stdout
        # The README's S3 intake in the demo: `source .rackflow/fleet.env`, drop job0001 into
        # rackflow-jobs (boto3 reads the environment as the aws CLI does), follow its status object to
        # COMPLETED; alice (visible_to) finds it in the job API.
        state = tmp_path / "state"
        uploader = tmp_path / "upload.py"
        uploader.write_text(UPLOADER)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        clean["AWS_CONFIG_FILE"] = clean["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
        dropped = subprocess.run(
            [
                "bash",
                "-c",
                'source "$1" && exec "$2" "$3"',
                "sh",
                str(state / "fleet.env"),
                sys.executable,
                str(uploader),
            ],
            env=clean,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert (dropped.returncode, dropped.stdout.strip()) == (0, "COMPLETED"), dropped.stderr[-2000:]
        s3_jobs = requests.get(f"{url}/rackflow/api/jobs", headers=alice_headers, timeout=60).json()["jobs"]
        assert [j["origin"] for j in s3_jobs if j["source"] == "s3"] == ["s3://rackflow-jobs/job0001"]
        # Its directory is the demo's own (under the fleet's work directory, or a fresh one of the fleet's
        # when the parents keep job accounts out, as pytest's are), not the site default that outlives it.
        intake = json.loads((state / "airflow" / "s3_intake.yaml").read_text())["intakes"][0]
        assert intake["job_base_dir"] != "/var/lib/rackflow/s3-jobs"
        assert (Path(intake["job_base_dir"]) / "job0001").is_dir()
        # A fresh demo shows no failed runs: the scheduler starts once the API server listens (before,
        # the power monitor's and planner's first runs failed on "Connection refused" to the execution
        # API and stood in the dashboard's recent failures).
        failed = requests.get(
            f"{url}/api/v2/dags/~/dagRuns", headers=headers, params={"state": "failed"}, timeout=60
        ).json()
        assert failed["total_entries"] == 0, [(r["dag_id"], r["dag_run_id"]) for r in failed["dag_runs"]]
        # Job accounts exist; no job account can read AIRFLOW_HOME's secrets or the fleet's credentials.
        for account in ("rf-alice", "rf-bob", "rf-intake"):
            pwd.getpwnam(account)
        assert stat.S_IMODE((state / "airflow").stat().st_mode) == 0o700
        passwords = state / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
        assert stat.S_IMODE((state / "fleet.env").stat().st_mode) == 0o600
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
            demo.wait(90)
    assert "stopped Airflow and the demo fleet" in log.read_text()
    # Everything it started is gone: nothing listens on the fleet's ports any more.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
