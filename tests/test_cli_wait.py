"""`rackflow job submit --wait` when the API server fails some polls.

The server here is a small stand-in (Python's ``http.server`` on loopback) because the fault it injects
— HTTP 500 on a job's GET while the job runs on — is what a real Airflow API server answers only under
load (``make demo`` with 30 concurrent ``--wait`` clients: its DB pool ran out), never on demand. The
CLI's happy path against the real Airflow, Slurm and S3 is tests/test_cli.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rackflow import cli


class _Api:
    """Answers of the stand-in job API: ``gets`` is the sequence of (status, body) for the job's GETs."""

    def __init__(self, gets: list[tuple[int, dict[str, Any]]]) -> None:
        self.gets = gets
        self.seen: list[str] = []


def _server(api: _Api) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            api.seen.append(f"POST {self.path}")
            if self.path == "/auth/token":
                self._send(201, {"access_token": "t"})
            else:
                self._send(201, {"job_id": "job__1", "state": "QUEUED", "owner": "alice"})

        def do_GET(self) -> None:
            api.seen.append(f"GET {self.path}")
            code, body = api.gets.pop(0) if len(api.gets) > 1 else api.gets[0]
            self._send(code, body)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(api: _Api) -> str:
        server = _server(api)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


ERROR = (500, {"detail": "Internal Server Error"})
ACTIVE = (200, {"job_id": "job__1", "state": "ACTIVE", "run_state": "running"})
DONE = (200, {"job_id": "job__1", "state": "COMPLETED", "run_state": "success"})


def _run(url: str, tmp_path: Any, *extra: str) -> int:
    spec = tmp_path / "spec.json"
    spec.write_text('{"executable": "/bin/true"}')
    args = ["--url", url, "--user", "alice", "--password", "alice", "job", "submit", str(spec)]
    return cli.main([*args, "--wait", "--interval", "0.05", *extra])


def test_wait_rides_out_server_errors_and_reports_the_completed_job(
    serve: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_RETRY_PAUSE", 0.2)
    api = _Api([ERROR, ERROR, ACTIVE, ERROR, DONE])
    assert _run(serve(api), tmp_path) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["state"] == "COMPLETED"
    notes = [json.loads(line) for line in out.err.splitlines()]
    assert [n["job_id"] for n in notes] == ["job__1"] * 3 and all("HTTP 500" in n["error"] for n in notes)
    assert [n["retrying_in_s"] for n in notes] == [
        0.05,
        0.1,
        0.05,
    ]  # doubles, back to the interval after a success
    assert api.seen.count("GET /rackflow/api/jobs/job__1") == 5


def test_wait_gives_up_at_its_timeout_naming_the_submitted_job(
    serve: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_RETRY_PAUSE", 0.1)
    assert _run(serve(_Api([ERROR])), tmp_path, "--timeout", "0.5") == 2
    last = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert last["job_id"] == "job__1" and "HTTP 500" in last["error"] and "after 0.5s" in last["error"]


def test_wait_ends_at_once_on_a_client_error(
    serve: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    api = _Api([(404, {"detail": "no job 'job__1'"}), DONE])
    assert _run(serve(api), tmp_path) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and json.loads(err[0]) == {"error": "HTTP 404: no job 'job__1'", "job_id": "job__1"}
    assert api.seen.count("GET /rackflow/api/jobs/job__1") == 1
