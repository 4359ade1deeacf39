"""Job API staging against the real servers: SeaweedFS S3, the devfleet's sshd (``ssh_fleet``) and Slurm.

What a job leaves in its directory is untrusted: a symlink it plants is never followed on stage-out.
Copies are bounded and leave no partial file. Only allow-listed remote ends are used, and a web host
is contacted only at a checked public address (here, every name resolves to loopback: refused).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.staging_policy import StagingPolicy, parse_allow_list
from rackflow.hooks.job_dirs import LocalJobDirectory, SftpJobDirectory
from rackflow.services.staging import StagingError, _write_in, http_get, resolve_public, stage_in, stage_out
from rackflow_devfleet.fleet import SSH_CONN_ID
from tests.conftest import SFTP_EXCHANGE

os.environ.setdefault("AIRFLOW__RACKFLOW__JOB_AWS_CONN_ID", "aws_fleet_s3")
S3_CONN = "aws_fleet_s3"
RESULTS = "rackflow-results"
POLICY = StagingPolicy(
    s3_sources=parse_allow_list("rackflow-jobs"),
    s3_targets=parse_allow_list(RESULTS),
    max_file_bytes=1024,
)


def _entries(kind: str, *pairs: tuple[str, str]) -> Any:
    job = parse_job_description(
        {"executable": "/bin/true", kind: [{"source": s, "target": t} for s, t in pairs]}
    )
    return getattr(job, kind)


def _keys(devfleet: Any, prefix: str) -> list[str]:
    listed = devfleet.s3.client().list_objects_v2(Bucket=RESULTS, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_symlinks_planted_by_the_job_are_not_followed_on_stage_out(devfleet: Any, tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "out").mkdir(parents=True)
    (job / "out" / "ok.txt").write_text("mine\n")
    (job / "out" / "shadow").symlink_to("/etc/shadow")
    (job / "result.txt").symlink_to("/etc/hostname")
    (job / "etc").symlink_to("/etc")
    prefix = f"planted/{uuid.uuid4().hex}/"
    target = f"s3://{RESULTS}/{prefix}"
    directory = LocalJobDirectory(job)

    for source, rule in (("result.txt", "is a symlink"), ("etc/hostname", "etc is a symlink")):
        with pytest.raises(StagingError, match=rule):
            stage_out(
                _entries("stage_out", (source, target + "x")),
                job_dir=directory,
                aws_conn_id=S3_CONN,
                policy=POLICY,
            )
    done = stage_out(
        _entries("stage_out", ("out", target)), job_dir=directory, aws_conn_id=S3_CONN, policy=POLICY
    )
    assert done == [f"out/ok.txt -> {target}ok.txt", "out/shadow (symlink, not followed): skipped"]
    assert _keys(devfleet, prefix) == [f"{prefix}ok.txt"]


def test_a_symlink_planted_on_the_login_node_is_not_followed_either(devfleet: Any, tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "result.txt").symlink_to("/etc/hostname")
    (tmp_path / "job" / "etc").symlink_to("/etc")
    prefix = f"planted-sftp/{uuid.uuid4().hex}/"
    with SftpJobDirectory(str(tmp_path / "job"), SSH_CONN_ID) as directory:
        for source in ("result.txt", "etc/hostname"):
            with pytest.raises(StagingError, match="symlink"):
                stage_out(
                    _entries("stage_out", (source, f"s3://{RESULTS}/{prefix}x")),
                    job_dir=directory,
                    aws_conn_id=S3_CONN,
                    policy=POLICY,
                )
    assert _keys(devfleet, prefix) == []


def test_stage_in_never_writes_through_a_symlinked_directory(devfleet: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "in").symlink_to(outside)
    devfleet.s3.client().put_object(Bucket="rackflow-jobs", Key="inputs/small.txt", Body=b"x")
    with pytest.raises(StagingError, match="in is a symlink"):
        stage_in(
            _entries("stage_in", ("s3://rackflow-jobs/inputs/small.txt", "in/small.txt")),
            job_dir=LocalJobDirectory(tmp_path / "job"),
            aws_conn_id=S3_CONN,
            policy=POLICY,
        )
    assert _files(outside) == []


def test_over_size_files_fail_staging_and_leave_no_partial_file(devfleet: Any, tmp_path: Path) -> None:
    devfleet.s3.client().put_object(Bucket="rackflow-jobs", Key="inputs/big.bin", Body=b"b" * 2048)
    directory = LocalJobDirectory(tmp_path / "job")
    with pytest.raises(StagingError, match="2048 bytes, over the 1024-byte limit per file"):
        stage_in(
            _entries("stage_in", ("s3://rackflow-jobs/inputs/big.bin", "big.bin")),
            job_dir=directory,
            aws_conn_id=S3_CONN,
            policy=POLICY,
        )
    assert _files(tmp_path / "job") == []

    # A stream whose size is not announced is cut at the limit, and the partial file removed.
    with pytest.raises(StagingError, match="more than 1024 bytes"):
        _write_in(directory, ["stream.bin"], io.BytesIO(b"s" * 5000).read, 1024)
    assert _files(tmp_path / "job") == []

    (tmp_path / "job" / "result.bin").write_bytes(b"r" * 2048)
    prefix = f"big/{uuid.uuid4().hex}/"
    with pytest.raises(StagingError, match="over the 1024-byte limit"):
        stage_out(
            _entries("stage_out", ("result.bin", f"s3://{RESULTS}/{prefix}result.bin")),
            job_dir=directory,
            aws_conn_id=S3_CONN,
            policy=POLICY,
        )
    assert _keys(devfleet, prefix) == []


def test_allow_listed_sftp_connection_round_trips_and_others_are_refused_at_staging_time(
    devfleet: Any, tmp_path: Path
) -> None:
    """With the site's settings (tests/conftest.py: ssh_fleet, under one exchange directory only)."""
    exchange = SFTP_EXCHANGE / uuid.uuid4().hex
    (exchange / "in").mkdir(parents=True)
    (exchange / "in" / "a.txt").write_text("a\n")
    (exchange / "in" / "b.txt").write_text("b\n")
    (exchange / "in" / "link").symlink_to("/etc/hostname")  # skipped: only regular files are read
    (exchange / "out").mkdir()
    (exchange / "out" / "trap").symlink_to(tmp_path / "trapped")
    directory = LocalJobDirectory(tmp_path / "job")
    stage_in(_entries("stage_in", (f"sftp://{SSH_CONN_ID}{exchange}/in/", "inputs")), job_dir=directory)
    assert _files(tmp_path / "job") == ["inputs", "inputs/a.txt", "inputs/b.txt"]
    stage_out(_entries("stage_out", ("inputs", f"sftp://{SSH_CONN_ID}{exchange}/out/")), job_dir=directory)
    assert _files(exchange / "out") == ["a.txt", "b.txt", "trap"]

    # Symlinks at the remote end are not followed: neither read nor written through.
    with pytest.raises(StagingError, match="not a regular file"):
        stage_in(_entries("stage_in", (f"sftp://{SSH_CONN_ID}{exchange}/in/link", "h")), job_dir=directory)
    with pytest.raises(StagingError, match="is a symlink: not written through"):
        stage_out(
            _entries("stage_out", ("inputs/a.txt", f"sftp://{SSH_CONN_ID}{exchange}/out/trap")),
            job_dir=directory,
        )
    assert not (tmp_path / "trapped").exists()

    # The settings are checked again at staging time: a run triggered through /api/v2 skips the job API.
    with pytest.raises(StagingError, match="staging_sftp_sources"):
        stage_in(_entries("stage_in", (f"sftp://{SSH_CONN_ID}/etc/hostname", "h")), job_dir=directory)
    with pytest.raises(StagingError, match="staging_sftp_targets"):
        stage_out(_entries("stage_out", ("inputs", f"sftp://{SSH_CONN_ID}/tmp/")), job_dir=directory)
    assert not (tmp_path / "job" / "h").exists()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A loopback HTTP server with ``handler`` in a thread; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def loopback_web() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal")

    with _serving(Handler) as port:
        yield port, seen


def test_a_name_that_resolves_to_loopback_is_refused_before_any_connection(
    loopback_web: tuple[int, list[str]], tmp_path: Path
) -> None:
    """DNS is asked at staging time and every answer checked: this host's name resolves to loopback."""
    port, seen = loopback_web
    name = socket.gethostname()
    assert socket.gethostbyname(name).startswith("127."), "this test needs a host name resolving to loopback"
    with pytest.raises(StagingError, match="resolves to 127"):
        resolve_public(name, port)
    web = StagingPolicy(allow_http=True)
    with pytest.raises(StagingError, match=rf"{name}' resolves to 127\.[0-9.]+, refused: .*loopback"):
        stage_in(
            _entries("stage_in", (f"http://{name}:{port}/secret", "page")),
            job_dir=LocalJobDirectory(tmp_path / "job"),
            policy=web,
        )
    # With the site's settings http(s) is off: refused before any lookup.
    with pytest.raises(StagingError, match="staging_allow_http"):
        stage_in(
            _entries("stage_in", (f"http://{name}:{port}/secret", "page")),
            job_dir=LocalJobDirectory(tmp_path / "job"),
        )
    assert seen == []
    assert _files(tmp_path / "job") == []


def test_job_that_plants_a_symlink_fails_stage_out_with_the_reason(
    airflow_db: Path, rackflow_db: str, devfleet: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole job DAG on Slurm: the job links /etc/hostname as its result; stage-out refuses it."""
    from rackflow.db import jobs
    from rackflow_devfleet.fleet import JOB_ACCOUNTS
    from tests.operators.test_scheduler import _job_dag

    # dag.test() runs are triggered by the user dag_test: it runs as alice's account
    monkeypatch.setenv(
        "AIRFLOW__RACKFLOW__JOB_ACCOUNTS", json.dumps({**JOB_ACCOUNTS, "dag_test": JOB_ACCOUNTS["alice"]})
    )

    prefix = f"dag-planted/{uuid.uuid4().hex}/"
    spec = {
        "executable": "/bin/sh",
        "arguments": ["-c", "ln -s /etc/hostname result.txt"],
        "stage_out": [{"source": "result.txt", "target": f"s3://{RESULTS}/{prefix}result.txt"}],
    }
    dag = _job_dag()
    run = dag.test(run_conf={"job": spec})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    # stage-out is part of the job DAG's finish task (submit -> finish since d595400)
    assert states["submit"] == "success" and states["finish"] == "failed"
    job = jobs.get_job(dag.dag_id, run.run_id)
    assert job is not None and job.state == "FAILED"
    assert "result.txt" in (job.message or "") and "symlink" in (job.message or "")
    assert _keys(devfleet, prefix) == []


@pytest.fixture
def web_server() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """A loopback server with a file, a redirect, an over-size announced body and an unannounced one."""
    seen: list[dict[str, str]] = []

    class Handler(_QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append({"path": self.path, "host": self.headers.get("Host", "")})
            if self.path == "/data.txt":
                self._send(200, b"public data\n")
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/secret")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/big":
                self._send(200, b"b" * 4096)
            else:  # /stream: no Content-Length, the body ends with the connection
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(8):
                    self.wfile.write(b"s" * 1000)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _serving(Handler) as port:
        yield port, seen


def test_web_download_goes_to_the_checked_address_without_redirects_and_bounded(
    web_server: tuple[int, list[dict[str, str]]], tmp_path: Path
) -> None:
    """The allowed-http path past the address check. There is no public address here, so the resolver
    is replaced by one answering loopback for a public-looking name (the address rules themselves are
    tested in tests/core/test_staging_policy.py and above): the connection goes to that address with
    the name in the Host header, redirects are refused, and bodies stop at the limit."""
    port, seen = web_server
    directory = LocalJobDirectory(tmp_path / "job")
    directory.create()

    def loopback(host: str, _port: int) -> str:
        return "127.0.0.1"

    def into(name: str) -> Any:
        return lambda read: _write_in(directory, [name], read, 1024)

    url = f"http://files.example.org:{port}"
    assert http_get(f"{url}/data.txt", into("data.txt"), 1024, resolve=loopback) == 12
    assert (tmp_path / "job" / "data.txt").read_bytes() == b"public data\n"
    assert seen[-1] == {"path": "/data.txt", "host": f"files.example.org:{port}"}
    with pytest.raises(
        StagingError,
        match=re.escape("302 redirect to 'http://127.0.0.1:1/secret': redirects are not followed"),
    ):
        http_get(f"{url}/moved", into("moved"), 1024, resolve=loopback)
    with pytest.raises(StagingError, match="4096 bytes, over the 1024-byte limit"):
        http_get(f"{url}/big", into("big"), 1024, resolve=loopback)
    with pytest.raises(StagingError, match="more than 1024 bytes"):
        http_get(f"{url}/stream", into("stream"), 1024, resolve=loopback)
    assert _files(tmp_path / "job") == ["data.txt"]
    assert [s["path"] for s in seen] == ["/data.txt", "/moved", "/big", "/stream"]
