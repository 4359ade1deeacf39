"""Staging outside the job is refused at submit (acceptance 2 of issue 13), in Airflow's real API app.

Each hostile description is 400 at ``POST /rackflow/api/jobs`` naming the field and the rule; no DAG
run and no rackflow job row is recorded, and nothing is written or contacted (the loopback web server
the last one points at sees no request).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.plugins.test_jobs import JOBS, RUNS, _runs

pytestmark = pytest.mark.usefixtures("job_dag")


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"secret")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_web() -> Iterator[tuple[int, list[str]]]:
    """A web server on loopback, the kind of internal service SSRF reaches; yields (port, requests)."""
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def _job_rows() -> int:
    from rackflow import settings
    from rackflow.db.models import Job
    from rackflow.db.session import session_scope

    with session_scope(settings.database_url()) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_staging_outside_the_job_is_400_naming_the_field_and_nothing_is_recorded(
    api: Any, auth: Any, loopback_web: tuple[int, list[str]]
) -> None:
    port, requests_seen = loopback_web
    hostile = [
        ({"source": "s3://rackflow-jobs/in.txt", "target": "/etc/x"}, None, "stage_in[0].target", "absolute"),
        ({"source": "s3://rackflow-jobs/in.txt", "target": "../../x"}, None, "stage_in[0].target", "'..'"),
        (
            None,
            {"source": "/etc/hostname", "target": "s3://rackflow-results/h"},
            "stage_out[0].source",
            "absolute",
        ),
        (
            {"source": "sftp://fleet_root/etc/shadow", "target": "shadow"},
            None,
            "stage_in[0].source",
            "staging_sftp_sources",
        ),
        (
            None,
            {"source": "out.txt", "target": "sftp://fleet_root/root/.ssh/authorized_keys"},
            "stage_out[0].target",
            "staging_sftp_targets",
        ),
        ({"source": f"http://127.0.0.1:{port}/", "target": "page"}, None, "stage_in[0].source", "loopback"),
        ({"source": "s3://other-bucket/k", "target": "k"}, None, "stage_in[0].source", "staging_s3_sources"),
        (
            None,
            {"source": "out.txt", "target": "s3://rackflow-jobs/j/aws-job-stat.txt"},
            "stage_out[0].target",
            "staging_s3_targets",
        ),
    ]
    runs_before, rows_before = _runs(api, auth), _job_rows()
    for stage_in, stage_out, field, rule in hostile:
        job: dict[str, Any] = {"executable": "/bin/true"}
        if stage_in:
            job["stage_in"] = [stage_in]
        if stage_out:
            job["stage_out"] = [stage_out]
        resp = api.post(JOBS, json=job, headers=auth("alice"))
        assert resp.status_code == 400, (job, resp.text)
        problems = resp.json()["detail"]["problems"]
        assert any(p.startswith(f"{field}:") and rule in p for p in problems), (field, rule, problems)
    assert _runs(api, auth) == runs_before
    assert _job_rows() == rows_before
    assert requests_seen == []
    assert not Path("/etc/x").exists()


def test_api_v2_trigger_refuses_paths_outside_the_job_through_the_param_schema(api: Any, auth: Any) -> None:
    """Airflow's own trigger route (admins only, by rackflow's auth manager) validates the same path
    rules before recording a run."""
    before = _runs(api, auth)
    for job in (
        {"executable": "/bin/true", "stage_in": [{"source": "s3://rackflow-jobs/k", "target": "/etc/x"}]},
        {
            "executable": "/bin/true",
            "stage_out": [{"source": "/etc/hostname", "target": "s3://rackflow-results/h"}],
        },
    ):
        resp = api.post(RUNS, json={"logical_date": None, "conf": {"job": job}}, headers=auth("admin"))
        assert resp.status_code == 400, resp.text
    assert _runs(api, auth) == before


def test_allow_listed_staging_is_still_accepted(api: Any, auth: Any) -> None:
    job = {
        "executable": "/bin/true",
        "stage_in": [{"source": "s3://rackflow-jobs/inputs/in.txt", "target": "in/in.txt"}],
        "stage_out": [{"source": "in", "target": "s3://rackflow-results/copies/"}],
    }
    resp = api.post(JOBS, json=job, headers=auth("alice"))
    assert resp.status_code == 201, resp.text
