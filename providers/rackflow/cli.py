"""``rackflow`` command line: batch jobs through the job API (``/rackflow/api/jobs``) with a token.

    rackflow job submit spec.json [--wait]     # JSON job description or JSDL XML; prints the job id
    rackflow job status JOB_ID
    rackflow job events JOB_ID
    rackflow job output JOB_ID [--stream stderr] [--tail N]   # kept when the job ended
    rackflow job cancel JOB_ID [--reason TEXT]
    rackflow job list [--state FAILED]

Server and credentials: ``--url`` (``RACKFLOW_URL``, default http://127.0.0.1:8080) and either
``--token`` (``RACKFLOW_TOKEN``) or ``--user``/``--password`` (``RACKFLOW_USER``/``RACKFLOW_PASSWORD``,
exchanged at Airflow's ``POST /auth/token``). Everything goes over plain HTTP+JSON, so any client that
speaks the same protocol can replace this one. Output is JSON; exit status is 0 on success, 1 when a
waited-for job did not complete, 2 on a request error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")
MAX_RETRY_PAUSE = 30.0  # seconds: the longest pause of ``--wait`` between polls the server failed


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {json.dumps(detail) if not isinstance(detail, str) else detail}")
        self.status = status
        self.detail = detail


class JobClient:
    """The job API over HTTP."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 180.0,
    ):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token is None:
            if not user or password is None:
                raise ApiError(
                    0, "give --token (RACKFLOW_TOKEN) or --user/--password (RACKFLOW_USER/_PASSWORD)"
                )
            resp = self.session.post(
                f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=self.timeout
            )
            if resp.status_code not in (200, 201):
                raise ApiError(resp.status_code, _detail(resp))
            token = resp.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.session.request(
            method, f"{self.url}/rackflow/api/jobs{path}", timeout=self.timeout, **kwargs
        )
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _detail(resp))
        return resp.json()

    def submit(self, spec_text: str) -> dict[str, Any]:
        xml = spec_text.lstrip().startswith("<")
        return dict(
            self._call(
                "POST",
                "",
                data=spec_text.encode(),
                headers={"Content-Type": "application/xml" if xml else "application/json"},
            )
        )

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/{job_id}"))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/{job_id}/events"))

    def output(self, job_id: str, stream: str = "stdout", tail: int | None = None) -> dict[str, Any]:
        """The tail of the job's stdout or stderr that rackflow kept when the job ended."""
        params: dict[str, Any] = {"stream": stream}
        if tail is not None:
            params["tail"] = tail
        return dict(self._call("GET", f"/{job_id}/output", params=params))

    def cancel(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", f"/{job_id}/terminate", json={"reason": reason} if reason else {}))

    def list(self, state: str | None = None) -> dict[str, Any]:
        return dict(self._call("GET", "", params={"state": state} if state else None))

    def wait(self, job_id: str, interval: float = 2.0, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job is final and its run has finished (stage_out and cleanup done).

        A server error (5xx) or a lost connection while polling does not end the wait: the job goes on
        whatever the API server's load (30 ``--wait`` clients on ``make demo`` saw HTTP 500s from an
        API server whose DB pool was exhausted), so the poll is retried, each pause twice the last (up
        to ``MAX_RETRY_PAUSE``) and noted on stderr, until ``timeout``. A 4xx (no such job, not
        allowed) ends it at once."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            pause = state.next_action.sleep if state.next_action is not None else None
            print(
                json.dumps({"job_id": job_id, "retrying_in_s": pause, "error": str(error)}), file=sys.stderr
            )

        poll = Retrying(
            retry=retry_if_exception(_server_side),
            # interval, then twice the last pause, up to MAX_RETRY_PAUSE; back to interval after an answer
            wait=lambda s: (
                interval
                if s.attempt_number == 1
                else min(interval * 2 ** (s.attempt_number - 1), MAX_RETRY_PAUSE)
            ),
            stop=lambda _: deadline is not None and time.monotonic() > deadline,
            before_sleep=note,
            reraise=True,
        )
        while True:
            try:
                job = poll(self.status, job_id)
            except (ApiError, requests.ConnectionError, requests.Timeout) as exc:
                if not _server_side(exc):
                    raise
                raise ApiError(0, f"job {job_id}: {exc}, still after {timeout}s") from exc
            if job["state"] in FINAL_STATES and job.get("run_state") in ("success", "failed"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(0, f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(interval)


def _server_side(error: BaseException) -> bool:
    """A failure of the server or the network (5xx, lost connection, timeout), not of the request."""
    if isinstance(error, ApiError):
        return error.status >= 500
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def _detail(resp: requests.Response) -> Any:
    try:
        return resp.json().get("detail", resp.json())
    except ValueError:
        return resp.text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rackflow", description="rackflow command line")
    parser.add_argument("--url", default=os.environ.get("RACKFLOW_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("RACKFLOW_TOKEN"))
    parser.add_argument("--user", default=os.environ.get("RACKFLOW_USER"))
    parser.add_argument("--password", default=os.environ.get("RACKFLOW_PASSWORD"))
    parser.add_argument("--http-timeout", type=float, default=180.0, help="seconds per HTTP request")
    top = parser.add_subparsers(dest="area", required=True)
    job = top.add_parser("job", help="batch jobs on the local scheduler").add_subparsers(
        dest="cmd", required=True
    )
    submit = job.add_parser("submit", help="submit a job description (JSON or JSDL XML; '-' reads stdin)")
    submit.add_argument("spec")
    submit.add_argument(
        "--wait", action="store_true", help="wait until the job ends; exit 1 unless COMPLETED"
    )
    submit.add_argument("--interval", type=float, default=2.0)
    submit.add_argument("--timeout", type=float, default=None)
    for name, text in (("status", "state and properties"), ("events", "chronological events")):
        job.add_parser(name, help=text).add_argument("job_id")
    output = job.add_parser("output", help="the stdout (or stderr) tail kept when the job ended")
    output.add_argument("job_id")
    output.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    output.add_argument("--tail", type=int, default=None, help="only the last N lines")
    cancel = job.add_parser("cancel", help="terminate")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", default=None, help="recorded in the job's events")
    listing = job.add_parser("list", help="your jobs")
    listing.add_argument("--state", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    submitted: str | None = None
    try:
        client = JobClient(args.url, args.token, args.user, args.password, args.http_timeout)
        rc = 0
        if args.cmd == "submit":
            text = sys.stdin.read() if args.spec == "-" else Path(args.spec).read_text()
            result: Any = client.submit(text)
            submitted = result["job_id"]
            if args.wait:
                result = client.wait(result["job_id"], args.interval, args.timeout)
                rc = 0 if result["state"] == "COMPLETED" else 1
        elif args.cmd == "status":
            result = client.status(args.job_id)
        elif args.cmd == "events":
            result = client.events(args.job_id)
        elif args.cmd == "output":
            result = client.output(args.job_id, args.stream, args.tail)
        elif args.cmd == "cancel":
            result = client.cancel(args.job_id, args.reason)
        else:
            result = client.list(args.state)
    except (ApiError, OSError, requests.RequestException) as exc:
        # A wait that gives up still names the job it submitted: it may well go on and complete.
        failed = {"error": str(exc), **({"job_id": submitted} if submitted else {})}
        print(json.dumps(failed), file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
