"""S3 job intake against the seed's hourly ``aws-jobmanager.sh`` cron, in one run on real SeaweedFS + Slurm.

Starts its own SeaweedFS S3 and single-node Slurm on free loopback ports (root needed for Slurm), then
measures what rackflow's intake path does -- the sensor's poll (ETag cache), the conditional claim,
stage-in and submission, i.e. the code of ``s3_intake_<name>`` without Airflow's task start-up:

1. latency from ``FILE_UPLOAD`` to scheduler submission (status ``QUEUED``), for jobs uploaded at
   random moments (goal: median <= 3 s): end to end through a real ``airflow standalone`` running the
   intake DAG (asset watcher in the triggerer -> DAG run -> accept task), and, as the floor, the same
   code in one process polling every ``--poll`` seconds. Baseline: the seed's cron runs hourly, so a
   job waits 1,800 s on average for the next run (uniform arrival; not simulated for an hour).
2. S3 requests per poll of a bucket holding 1,000 idle finished job prefixes (goal: listing pages only,
   no GET of an unchanged status object). Baseline measured on the same bucket: the seed's way, list
   then GET every ``aws-job-stat.txt`` on every run.
3. throughput for 100 jobs dropped at once: time until all are submitted (goal <= 20 s), and until all
   are COMPLETED with results uploaded (goal <= 120 s) -- through ``airflow standalone`` (parallelism 4,
   the demo's), and for the intake code alone with 4 worker threads -- and the jobs lost (not
   COMPLETED in the end) or doubled (more than one scheduler job) in each, printed.

It always runs to the end: a job that fails or never finishes is counted and printed, not raised.
Run ``python bench/bench_s3_intake.py [--poll 1] [--latency-jobs 10] [--airflow-jobs 10]
[--airflow-burst 100] [--slurm-cpus 32]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONN_ID = "bench_s3"
CRON_MEAN_LATENCY_S = 1800.0
LATENCY_GOAL_S = 3.0
SUBMIT_GOAL_S = 20.0
COMPLETE_GOAL_S = 120.0
BURST_TIMEOUT_S = 900.0


def start_servers(workdir: Path, slurm_cpus: int):  # type: ignore[no-untyped-def]
    from rackflow_devfleet.servers import SeaweedS3, Slurm, free_port

    s3 = SeaweedS3(workdir=workdir / "s3", port=free_port(), buckets=["bench-idle", "bench-jobs"])
    s3.start()
    slurm = Slurm(workdir=workdir / "slurm", port=free_port(), cpus=slurm_cpus).start()
    os.environ.update(slurm.env)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "aws",
            "login": s3.access_key,
            "password": s3.secret_key,
            "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"},
        }
    )
    return s3, slurm


def upload(client, bucket: str, prefix: str, status: bytes = b"FILE_UPLOAD\n") -> None:  # type: ignore[no-untyped-def]
    client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-run.sh", Body=b"#!/bin/bash\necho ok > out.txt\n")
    client.put_object(Bucket=bucket, Key=f"{prefix}/input.dat", Body=b"x\n")
    client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt", Body=status)


def take(hook, job: dict, base: Path, run_id: str) -> dict | None:  # type: ignore[no-untyped-def]
    """claim -> stage-in -> submit, as the intake DAG's mapped tasks do; None when the claim is lost."""
    from airflow.sdk.exceptions import AirflowSkipException

    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow.operators.s3_intake import claim_job, stage_in_job, submit_job
    from rackflow_devfleet.fleet import INTAKE_ACCOUNT

    try:
        claimed = claim_job(hook, job)
    except AirflowSkipException:
        return None
    staged = stage_in_job(hook, claimed, base)
    return submit_job(hook, staged, BatchSchedulerHook(), run_id, INTAKE_ACCOUNT)


def bench_latency(client, base: Path, poll: float, jobs: int) -> list[float]:  # type: ignore[no-untyped-def]
    from rackflow.core.s3_protocol import StatusCache
    from rackflow.hooks.s3_jobs import S3JobsHook

    bucket = "bench-jobs"
    uploaded: dict[str, float] = {}
    submitted: dict[str, float] = {}
    stop = threading.Event()

    def uploader() -> None:
        rng = random.Random(7)
        for i in range(jobs):
            time.sleep(rng.uniform(0.2, 2.5))
            prefix = f"lat{i:03d}"
            upload(client, bucket, prefix, status=b"")  # inputs first, status object last
            uploaded[prefix] = time.monotonic()
            client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt", Body=b"FILE_UPLOAD\n")

    def poller() -> None:
        hook = S3JobsHook(CONN_ID, bucket_name=bucket)
        cache = StatusCache()
        while not stop.is_set():
            for job in hook.poll(cache).ready:
                if take(hook, job.to_dict(), base / "lat", "bench") is not None:
                    submitted[job.prefix] = time.monotonic()
            stop.wait(poll)

    threads = [threading.Thread(target=uploader), threading.Thread(target=poller)]
    for t in threads:
        t.start()
    threads[0].join()
    deadline = time.monotonic() + 60
    while len(submitted) < jobs and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    threads[1].join()
    return [submitted[p] - uploaded[p] for p in sorted(submitted)]


def bench_through_airflow(  # type: ignore[no-untyped-def]
    client, workdir: Path, poll: float, jobs: int, burst: int
) -> tuple[list[float], int, dict[str, Any] | None]:
    """Start ``airflow standalone`` with only the intake DAG file; time FILE_UPLOAD -> QUEUED per job for
    ``jobs`` jobs arriving one by one, then ``burst`` jobs dropped at once (until all are submitted, and
    until all are COMPLETED with results uploaded)."""
    import shutil
    import subprocess

    import yaml

    from rackflow_devfleet.demo import (
        airflow_env,
        prepare_home,
        start_standalone,
        stop_standalone,
        wait_healthy,
    )
    from rackflow_devfleet.servers import free_port, venv_bin

    bucket = "bench-e2e"
    client.create_bucket(Bucket=bucket)
    home, dags = workdir / "airflow", workdir / "dags"
    dags.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "rackflow_s3_intake.py", dags)
    prepare_home(home)
    intake_file = workdir / "s3_intake.yaml"
    intake = {"name": "bench", "bucket": bucket, "aws_conn_id": CONN_ID, "poll_interval": poll}
    intake["run_as"] = "rf-intake"
    intake["job_base_dir"] = str(workdir / "aws-job-e2e")
    intake_file.write_text(yaml.safe_dump({"intakes": [intake]}))
    port = free_port()
    rackflow_db = f"sqlite:///{home / 'rackflow.db'}"
    env = {
        **os.environ,
        **airflow_env(REPO, home, port),  # the demo's settings for a small machine
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__RACKFLOW__S3_INTAKE_FILE": str(intake_file),
        "AIRFLOW__RACKFLOW__DATABASE_URL": rackflow_db,  # where the intake records its jobs
    }
    subprocess.run([venv_bin("airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    from rackflow.db.session import upgrade

    upgrade(rackflow_db)
    airflow = start_standalone(env, workdir / "airflow-standalone.log")
    try:
        if not wait_healthy(port, 300, airflow):
            raise RuntimeError(
                f"airflow standalone did not come up; see {workdir / 'airflow-standalone.log'}"
            )
        # Warm-up: the first job also waits for the DAG to be parsed and the watcher to start.
        warm_up = _time_to_queued(client, bucket, "warmup", timeout=300)
        print(f"  (warm-up job, includes DAG parsing and watcher start: {warm_up} s)", flush=True)
        rng = random.Random(11)
        latencies: list[float] = []
        missed = 0
        for i in range(jobs):
            time.sleep(rng.uniform(0.5, 3.0))  # arrive at a random moment of the poll cycle
            took = _time_to_queued(client, bucket, f"e2e{i:03d}", timeout=120)
            if took is None:
                missed += 1
            else:
                latencies.append(took)
        return latencies, missed, (_burst(client, bucket, burst) if burst else None)
    finally:
        stop_standalone(airflow)


def _burst(client, bucket: str, jobs: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Drop ``jobs`` jobs at once (status objects written together); seconds until every one is
    submitted and until every one has ended (None when that did not happen within the deadline), the
    final statuses, and the jobs lost (not COMPLETED) or doubled (more than one scheduler job)."""
    prefixes = [f"burst{i:03d}" for i in range(jobs)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: upload(client, bucket, p, status=b""), prefixes))
        start = time.monotonic()
        list(
            pool.map(
                lambda p: client.put_object(
                    Bucket=bucket, Key=f"{p}/aws-job-stat.txt", Body=b"FILE_UPLOAD\n"
                ),
                prefixes,
            )
        )

        def statuses() -> list[str]:
            def one(p: str) -> str:
                body = client.get_object(Bucket=bucket, Key=f"{p}/aws-job-stat.txt")["Body"].read()
                return body.decode().split("\n")[0]

            return list(pool.map(one, prefixes))

        submitted = completed = None
        now: list[str] = []
        while time.monotonic() - start < BURST_TIMEOUT_S:
            now = statuses()
            if submitted is None and not {"FILE_UPLOAD", "ACCEPTED", ""} & set(now):
                submitted = time.monotonic() - start
            if set(now) <= {"COMPLETED", "FAILED", "CANCELED"}:
                completed = time.monotonic() - start
                break
            time.sleep(1)
    names = _scheduler_job_names()
    per_prefix = {p: sum(1 for n in names if n.startswith(f"rf_s3_{p}_")) for p in prefixes}
    return {
        "submitted": submitted,
        "ended": completed,
        "statuses": dict(Counter(now)),
        "lost": [p for p, st in zip(prefixes, now, strict=True) if st != "COMPLETED"],
        "doubled": [p for p, n in per_prefix.items() if n > 1],
    }


def _scheduler_job_names() -> list[str]:
    """Names of every job the bench's Slurm still lists (MinJobAge keeps ended ones)."""
    import subprocess

    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%j"], capture_output=True, text=True, check=False
    )
    return out.stdout.split()


def _time_to_queued(client, bucket: str, prefix: str, timeout: float) -> float | None:  # type: ignore[no-untyped-def]
    """Upload one job and return seconds from its FILE_UPLOAD until its status leaves ACCEPTED; None
    (printed) when it failed or was not submitted within ``timeout``."""
    upload(client, bucket, prefix, status=b"")
    client.put_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt", Body=b"FILE_UPLOAD\n")
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/aws-job-stat.txt")["Body"].read()
        status = body.decode().split("\n")[0]
        if status not in ("FILE_UPLOAD", "ACCEPTED", ""):
            if status == "FAILED":
                print(f"  {prefix} FAILED: {body!r}", flush=True)
                return None
            return round(time.monotonic() - start, 2)
        time.sleep(0.05)
    print(f"  {prefix} was not submitted within {timeout} s", flush=True)
    return None


def bench_idle_poll(client, prefixes: int = 1000) -> tuple[dict[str, int], dict[str, int]]:  # type: ignore[no-untyped-def]
    from rackflow.core.s3_protocol import StatusCache
    from rackflow.hooks.s3_jobs import S3JobsHook

    bucket = "bench-idle"
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: upload(client, bucket, f"done{i:04d}", b"COMPLETED\n17\n"), range(prefixes)))
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    cache = StatusCache()
    hook.poll(cache)  # the first poll after a restart reads every status once
    # Every request the hook's client sends, by operation, counted by botocore's event hook.
    sent: Counter[str] = Counter()
    hook.client.meta.events.register("before-call.s3", lambda model, **_: sent.update([model.name]))
    hook.poll(cache)
    ours = {"list": sent["ListObjectsV2"], "get": sent["GetObject"]}
    # The seed's cron: list the bucket, then read every job's status object, every run.
    sent.clear()
    for job in hook.list_job_prefixes():
        hook.read_status(job)
    seed = {"list": sent["ListObjectsV2"], "get": sent["GetObject"]}
    return ours, seed


def bench_throughput(client, base: Path, workers: int = 4, jobs: int = 100) -> tuple[float, float, int, int]:  # type: ignore[no-untyped-def]
    from rackflow.core.s3_protocol import StatusCache
    from rackflow.hooks.s3_jobs import S3JobsHook
    from rackflow.hooks.scheduler import BatchSchedulerHook
    from rackflow.operators.s3_intake import finish_job, stage_out_job

    bucket = "bench-jobs"
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: upload(client, bucket, f"tp{i:03d}"), range(jobs)))
    start = time.monotonic()
    hook = S3JobsHook(CONN_ID, bucket_name=bucket)
    ready = [j for j in hook.poll(StatusCache()).ready if j.prefix.startswith("tp")]
    # One boto3 client shared by the workers (clients are thread-safe); creating one costs 0.3-1 s here.
    with ThreadPoolExecutor(workers) as pool:
        subs = [s for s in pool.map(lambda j: take(hook, j.to_dict(), base / "tp", "tp"), ready) if s]
    all_submitted = time.monotonic() - start
    scheduler = BatchSchedulerHook()
    pending = {s["job_id"]: s for s in subs}
    ended: dict[str, dict] = {}
    while pending:
        statuses = scheduler.statuses(sorted(pending))
        for job_id, st in statuses.items():
            if st.state.is_final:  # the end as observed, as the intake's wait uses it
                end = {
                    "state": st.state.value,
                    "native_state": st.native_state,
                    "exit_code": st.exit_code,
                    "reason": st.reason,
                }
                ended[job_id] = {**pending.pop(job_id), "end": end}
        time.sleep(0.5)

    def out(job: dict) -> str:
        try:
            return finish_job(hook, stage_out_job(hook, job))
        except Exception as exc:  # counted, never raised: the bench runs to its end
            return f"FAILED ({exc})"

    with ThreadPoolExecutor(workers) as pool:
        finals = list(pool.map(out, ended.values()))
    lost = jobs - sum(1 for f in finals if f == "COMPLETED")
    doubled = sum(1 for n in Counter(s["job_name"] for s in subs).values() if n > 1)
    return all_submitted, time.monotonic() - start, lost, doubled


def _report_latency(what: str, lat: list[float], poll: float, missed: int = 0) -> float | None:
    if not lat:
        print(f"latency FILE_UPLOAD -> submitted, {what}: no job was submitted ({missed} missed)", flush=True)
        return None
    median = statistics.median(lat)
    print(
        f"latency FILE_UPLOAD -> submitted, {what} ({len(lat)} jobs, poll {poll:g} s): "
        f"median {median:.2f} s, max {max(lat):.2f} s; goal {LATENCY_GOAL_S:g} s "
        f"({median / LATENCY_GOAL_S:.2f}x of goal); hourly cron mean {CRON_MEAN_LATENCY_S:.0f} s "
        f"({CRON_MEAN_LATENCY_S / median:.0f}x slower); jobs failed or not submitted: {missed}",
        flush=True,
    )
    return median


def _seconds(value: float | None) -> str:
    return "not within the deadline" if value is None else f"{value:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls (the sensor's)")
    parser.add_argument("--latency-jobs", type=int, default=10)
    parser.add_argument("--airflow-jobs", type=int, default=10, help="jobs timed through Airflow (0: skip)")
    parser.add_argument("--airflow-burst", type=int, default=100, help="jobs dropped at once through Airflow")
    parser.add_argument(
        "--burst", type=int, default=100, help="jobs dropped at once for the intake code alone"
    )
    parser.add_argument(
        "--idle-prefixes", type=int, default=1000, help="idle finished jobs in the polled bucket"
    )
    parser.add_argument(
        "--slurm-cpus",
        type=int,
        default=32,
        help="CPUs of the Slurm node: a burst's trivial jobs run at once, so what is timed is rackflow, "
        "not a 2-CPU node working through 100 jobs two at a time",
    )
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-s3-airflow-"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-s3-intake-"))
    workdir.chmod(0o711)  # the intake account runs the jobs under it
    s3, slurm = start_servers(workdir, args.slurm_cpus)
    print(f"Slurm node with {args.slurm_cpus} CPUs", flush=True)
    try:
        client = s3.client()
        base = workdir / "aws-job"

        goals: list[bool] = []
        if args.airflow_jobs or args.airflow_burst:
            lat, missed, burst = bench_through_airflow(
                client, workdir, args.poll, args.airflow_jobs, args.airflow_burst
            )
            if args.airflow_jobs:
                median = _report_latency("through airflow standalone", lat, args.poll, missed)
                goals.append(median is not None and median <= LATENCY_GOAL_S and not missed)
            if burst:
                n = args.airflow_burst
                rate = f" ({n / burst['submitted']:.1f} jobs/s)" if burst["submitted"] else ""
                print(
                    f"throughput through airflow standalone (parallelism 4), {n} jobs dropped at once: "
                    f"all submitted in {_seconds(burst['submitted'])}{rate} (goal {SUBMIT_GOAL_S:g} s), "
                    f"all ended in {_seconds(burst['ended'])} (goal: all COMPLETED with results "
                    f"uploaded in {COMPLETE_GOAL_S:g} s); final statuses {burst['statuses']}; "
                    f"lost {len(burst['lost'])}, doubled {len(burst['doubled'])}"
                    + (f" (lost: {burst['lost'][:10]})" if burst["lost"] else "")
                    + (f" (doubled: {burst['doubled'][:10]})" if burst["doubled"] else ""),
                    flush=True,
                )
                goals.append(
                    burst["submitted"] is not None
                    and burst["submitted"] <= SUBMIT_GOAL_S
                    and burst["ended"] is not None
                    and burst["ended"] <= COMPLETE_GOAL_S
                    and not burst["lost"]
                    and not burst["doubled"]
                )
        lat = bench_latency(client, base, args.poll, args.latency_jobs)
        _report_latency("intake code in one process, no Airflow task start-up", lat, args.poll)

        ours, seed = bench_idle_poll(client, args.idle_prefixes)
        print(
            f"requests per poll, {args.idle_prefixes:,} idle finished prefixes: "
            f"rackflow {ours['list']} list + {ours['get']} GET; "
            f"seed-style list+GET-all {seed['list']} list + {seed['get']} GET "
            f"({(seed['list'] + seed['get']) / max(1, ours['list'] + ours['get']):.0f}x more requests)"
        )

        submitted, completed, lost, doubled = bench_throughput(client, base, jobs=args.burst)
        print(
            f"throughput, {args.burst} jobs dropped at once (intake code alone, 4 workers): all submitted "
            f"in {submitted:.1f} s ({args.burst / submitted:.1f} jobs/s), all ended in {completed:.1f} s; "
            f"lost {lost}, doubled {doubled}; hourly cron: first submission after "
            f"{CRON_MEAN_LATENCY_S:.0f} s on average"
        )
        goals.append(ours["get"] == 0 and not lost and not doubled)
        print("goals met" if all(goals) else "GOALS NOT MET")
        return 0
    finally:
        slurm.stop()
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
