"""The Slurm adapter against a real slurmctld/slurmd: the script it writes runs, and its parsers read the
real commands' answers (submit, one status call for several jobs, lookup by name, detail, cancel)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.schedulers import JobDetail, JobState, JobStatus, SlurmAdapter, get_adapter
from rackflow.core.schedulers.slurm import parse_sacct

# Burns 2 s of CPU while holding 200 MB (written, so resident); one line, no shell needed.
BURN = (
    "import time; b = b'x' * (200 << 20); t = time.process_time(); "
    "any(time.process_time() - t >= 2 for _ in iter(int, 1))"
)


@pytest.fixture(scope="module")
def slurm_env(devfleet) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The session's real Slurm node (a server that cannot start fails these tests, never skips them)."""
    return {**os.environ, **devfleet.slurm.env}


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def submit(adapter: SlurmAdapter, env: dict[str, str], workdir: Path, name: str, job: dict) -> str:
    workdir.mkdir(parents=True)
    script = workdir / adapter.script_name
    script.write_text(
        adapter.submit_script(parse_job_description(job), name, "run_id=manual__1", str(workdir))
    )
    out = run(adapter.submit_command(str(script)), env)
    assert out.returncode == 0, out.stderr
    return adapter.parse_submit_output(out.stdout)


def wait_final(adapter: SlurmAdapter, env: dict[str, str], ids: list[str]) -> dict[str, JobStatus]:
    deadline = time.monotonic() + 60
    while True:
        out = run(adapter.status_command(ids), env)
        assert out.returncode == 0, out.stderr
        statuses = adapter.parse_status_output(out.stdout)
        if all(i in statuses and statuses[i].state.is_final for i in ids) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def accounted(adapter: SlurmAdapter, env: dict[str, str], job_id: str) -> JobDetail:
    """The job's final record in Slurm's accounting (sacct), asked again while it lags the end."""
    deadline = time.monotonic() + 30
    while True:
        out = run(adapter.detail_command(job_id), env)
        assert out.returncode == 0, out.stderr
        detail = parse_sacct(out.stdout).get(job_id)
        if detail is not None and detail.status.state.is_final:
            assert adapter.parse_detail(out.stdout, job_id) == detail
            return detail
        assert time.monotonic() < deadline, f"sacct has no final record of job {job_id}: {out.stdout!r}"
        time.sleep(0.5)


def test_real_slurm_runs_jobs_reports_exit_codes_and_finds_them_by_name(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    adapter = get_adapter("slurm")
    assert isinstance(adapter, SlurmAdapter)
    tricky = 'it\'s a "test" $HOME `id` ; rm -rf /'
    ok_name = adapter.normalize_job_name("rackflow__demo__scheduled__2024-01-01T00:00:00+00:00__ok")
    ok = submit(
        adapter,
        slurm_env,
        tmp_path / "ok",
        ok_name,
        {
            "executable": "/bin/sh",
            "arguments": ["-c", 'printf "%s|%s" "$GREETING" "$1" > out.txt', "sh", tricky],
            "environment": {"GREETING": tricky},
            "attributes": {"duration": "00:05:00"},
        },
    )
    failed = submit(
        adapter,
        slurm_env,
        tmp_path / "fail",
        adapter.normalize_job_name("rackflow__fail"),
        {"executable": "/bin/sh", "arguments": ["-c", "exit 3"]},
    )

    statuses = wait_final(adapter, slurm_env, [ok, failed])

    assert statuses[ok].state is JobState.COMPLETED and statuses[ok].exit_code == 0
    assert statuses[failed].state is JobState.FAILED and statuses[failed].exit_code == 3
    assert statuses[failed].nodes == ("localhost",)
    # Quoting survived: the value reached the program byte for byte, and nothing was executed.
    assert (tmp_path / "ok" / "out.txt").read_text() == f"{tricky}|{tricky}"

    found = run(adapter.find_by_name_command(ok_name), slurm_env)
    assert adapter.parse_find_by_name_output(found.stdout, ok_name) == [ok]

    parsed = accounted(adapter, slurm_env, failed)
    assert parsed.exit_code == 3 and parsed.status.state is JobState.FAILED


def test_real_slurm_cancel_and_unknown_ids(slurm_env: dict[str, str], tmp_path: Path) -> None:
    adapter = get_adapter("slurm")
    assert isinstance(adapter, SlurmAdapter)
    job = submit(
        adapter,
        slurm_env,
        tmp_path / "long",
        "rackflow__long",
        {"executable": "/bin/sleep", "arguments": ["300"]},
    )
    assert run(adapter.cancel_command(job), slurm_env).returncode == 0
    assert wait_final(adapter, slurm_env, [job])[job].state is JobState.CANCELED

    # One unknown id among known ones is simply absent; alone, squeue fails with a recognisable error.
    mixed = run(adapter.status_command([job, "999999"]), slurm_env)
    assert set(adapter.parse_status_output(mixed.stdout)) == {job}
    alone = run(adapter.status_command(["999999"]), slurm_env)
    assert alone.returncode != 0 and adapter.is_unknown_job_error(alone.stderr)


def test_real_slurm_accounting_reports_cpu_time_peak_memory_and_times(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    adapter = get_adapter("slurm")
    assert isinstance(adapter, SlurmAdapter)
    job = submit(
        adapter,
        slurm_env,
        tmp_path / "burn",
        "rackflow__burn",
        {"executable": "/usr/bin/python3", "arguments": ["-c", BURN]},
    )
    assert wait_final(adapter, slurm_env, [job])[job].state is JobState.COMPLETED
    detail = accounted(adapter, slurm_env, job)
    assert detail.exit_code == 0 and detail.nodes == ("localhost",)
    assert detail.cpu_time is not None and detail.cpu_time.total_seconds() >= 1.5
    assert detail.max_memory is not None and detail.max_memory >= 180 * 10**6
    assert detail.wall_time is not None and detail.wall_time.total_seconds() >= 2
    assert detail.started_at is not None and detail.ended_at is not None
    assert detail.started_at <= detail.ended_at
