"""A job's usage figures as the scheduler's accounting gives them fit the rackflow DB on real Postgres."""

from __future__ import annotations

import pytest

from rackflow_devfleet.postgres import Postgres


@pytest.fixture(scope="module")
def postgres_url(postgres: Postgres) -> str:
    """A database of this module's own on the session's Postgres."""
    return postgres.create_database("rackflow_usage")


def test_final_record_keeps_a_peak_memory_past_2_gib(postgres_url: str) -> None:
    from rackflow.db import jobs
    from rackflow.db.session import upgrade

    upgrade(postgres_url)
    peak = 96 << 30  # a 96 GiB job: more than a 32-bit INTEGER holds
    jobs.record_event(
        "rackflow_job",
        "big",
        "COMPLETED",
        "slurm job 7 ended COMPLETED, exit code 0",
        scheduler_job_id="7",
        url=postgres_url,
        exit_code=0,
        cpu_time_s=86_400 * 30,
        wall_time_s=86_400,
        max_memory=peak,
    )
    row = jobs.get_job("rackflow_job", "big", url=postgres_url)
    assert row is not None
    assert (row.state, row.max_memory, row.cpu_time_s) == ("COMPLETED", peak, 86_400 * 30)


def test_kept_output_with_nul_bytes_round_trips_on_postgres(postgres_url: str) -> None:
    """A job's kept stdout is bytes (BYTEA): a NUL, which a Postgres TEXT refuses, is kept as written."""
    from rackflow.db import jobs
    from rackflow.db.session import upgrade

    upgrade(postgres_url)
    body = b"before\x00after\n\xff"
    jobs.save_output(
        "rackflow_job",
        "nul",
        "stdout",
        content=body,
        size=3 << 30,
        truncated=True,
        path="rackflow.out",
        url=postgres_url,
    )
    kept = jobs.get_output("rackflow_job", "nul", "stdout", url=postgres_url)
    assert kept is not None
    assert (kept.content, kept.size, kept.truncated) == (body, 3 << 30, True)
