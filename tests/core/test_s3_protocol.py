from __future__ import annotations

import itertools
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rackflow.core.s3_protocol import (
    JOB_SCRIPT_NAME,
    MISSING_SCRIPT_REASON,
    STATUS_FILE_NAME,
    JobStatus,
    JobStatusFile,
    StatusCache,
    StatusTransitionError,
    UnsafeKeyError,
    check_transition,
    intake_decision,
    is_transition_allowed,
    job_prefixes_from_listing,
    local_path_for_key,
    result_files,
    result_key,
    status_key,
    take_manifest,
    validate_job_prefix,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 1, 2, tzinfo=UTC)

# --- file names and the status file ------------------------------------------------------------------


def test_file_names_match_the_seed() -> None:
    assert JOB_SCRIPT_NAME == "aws-job-run.sh"
    assert STATUS_FILE_NAME == "aws-job-stat.txt"
    assert status_key("job0001/") == "job0001/aws-job-stat.txt"


def test_upload_step_bytes_from_the_seed_parse_as_ready() -> None:
    # `echo FILE_UPLOAD > aws-job-stat.txt`, or a text file saved on Windows, or with no newline.
    for data in (
        b"FILE_UPLOAD\n",
        b"FILE_UPLOAD",
        b"FILE_UPLOAD\r\n",
        b"  FILE_UPLOAD \t\n\n",
        b"\xef\xbb\xbfFILE_UPLOAD\n",
    ):
        parsed = JobStatusFile.parse(data)
        assert parsed.status is JobStatus.FILE_UPLOAD, data
        assert parsed.is_ready and parsed.scheduler_job_id is None and parsed.reason is None


def test_file_upload_renders_exactly_like_the_seed_upload() -> None:
    assert JobStatusFile(JobStatus.FILE_UPLOAD).render() == b"FILE_UPLOAD\n"


@pytest.mark.parametrize(
    ("status_file", "expected"),
    [
        (JobStatusFile(JobStatus.ACCEPTED), b"ACCEPTED\n"),
        (JobStatusFile(JobStatus.QUEUED, scheduler_job_id="4711"), b"QUEUED\n4711\n"),
        (JobStatusFile(JobStatus.RUNNING, scheduler_job_id="4711.pbs01"), b"RUNNING\n4711.pbs01\n"),
        (JobStatusFile(JobStatus.COMPLETED, scheduler_job_id="4711"), b"COMPLETED\n4711\n"),
        (JobStatusFile(JobStatus.FAILED, "4711", "exit code 2"), b"FAILED\n4711\nexit code 2\n"),
        (
            JobStatusFile(JobStatus.FAILED, reason=MISSING_SCRIPT_REASON),
            b"FAILED\n\naws-job-run.sh is missing\n",
        ),
    ],
)
def test_render_exact_bytes_and_round_trip(status_file: JobStatusFile, expected: bytes) -> None:
    assert status_file.render() == expected
    assert JobStatusFile.parse(expected) == status_file
    assert JobStatusFile.parse(expected.replace(b"\n", b"\r\n")) == status_file


def test_reason_is_sanitised_to_one_line() -> None:
    status_file = JobStatusFile(JobStatus.FAILED, reason="line one\r\nline two\x00\tend  ")
    assert status_file.reason == "line one line two end"
    assert status_file.render() == b"FAILED\n\nline one line two end\n"
    assert len(JobStatusFile(JobStatus.FAILED, reason="x" * 5000).render().splitlines()[2]) == 500


def test_scheduler_job_id_with_whitespace_is_refused_on_write() -> None:
    with pytest.raises(ValueError, match="one token"):
        JobStatusFile(JobStatus.QUEUED, scheduler_job_id="47 11")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"\n", "unknown status ''"),
        (b"file_upload\n", "unknown status 'file_upload'"),
        (b"DONE\n", "unknown status 'DONE'"),
        (b"UNKNOWN\n", "unexpected first line"),
        (b"FILE_UPLOAD please\n", "unexpected first line"),
        (b"\xff\xfe\x00garbage", "unknown status"),
        (b"QUEUED\n" + b"x" * 300 + b"\n", "not one token"),
        (b"FILE_UPLOAD\n" * 10000, "too large"),
    ],
)
def test_empty_or_garbage_status_parses_as_unknown_with_a_problem(data: bytes, problem: str) -> None:
    parsed = JobStatusFile.parse(data)
    assert parsed.status is JobStatus.UNKNOWN and not parsed.is_valid and not parsed.is_ready
    assert parsed.problem is not None and problem in parsed.problem


def test_parse_never_raises_on_random_bytes() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert isinstance(JobStatusFile.parse(data), JobStatusFile)


def test_unknown_is_never_written() -> None:
    with pytest.raises(ValueError, match="never written"):
        JobStatusFile.parse(b"").render()


# --- transitions ------------------------------------------------------------------------------------

HAPPY = ["FILE_UPLOAD", "ACCEPTED", "QUEUED", "RUNNING", "STAGING_OUT", "COMPLETED"]


def test_happy_path_is_allowed_step_by_step() -> None:
    for current, new in itertools.pairwise(HAPPY):
        check_transition(JobStatus(current), JobStatus(new))


@pytest.mark.parametrize("current", HAPPY[:-1])
def test_any_non_terminal_status_may_fail_or_be_canceled(current: str) -> None:
    assert is_transition_allowed(JobStatus(current), JobStatus.FAILED)
    assert is_transition_allowed(JobStatus(current), JobStatus.CANCELED)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("FILE_UPLOAD", "QUEUED"),  # skipping ACCEPTED
        ("RUNNING", "QUEUED"),  # backwards
        ("RUNNING", "RUNNING"),  # no-op write
        ("COMPLETED", "FAILED"),  # out of a terminal state
        ("FAILED", "FILE_UPLOAD"),
        ("CANCELED", "RUNNING"),
        ("UNKNOWN", "FAILED"),  # an unreadable user object is reported, not overwritten
        ("ACCEPTED", "FILE_UPLOAD"),
    ],
)
def test_disallowed_transitions_raise(current: str, new: str) -> None:
    assert not is_transition_allowed(JobStatus(current), JobStatus(new))
    with pytest.raises(StatusTransitionError, match=f"{current} cannot change to {new}"):
        check_transition(JobStatus(current), JobStatus(new))


# --- prefixes and intake ------------------------------------------------------------------------------


def test_job_prefixes_from_listing_keeps_safe_ones_and_reports_the_rest() -> None:
    listing: list[dict[str, str] | str] = [
        {"Prefix": "job0002/"},
        {"Prefix": "job0001/"},
        "job0003/",
        {"Prefix": "../"},
        {"Prefix": "bad name/"},
        {"Prefix": ".hidden/"},
    ]
    scan = job_prefixes_from_listing(listing)
    assert scan.jobs == ["job0001", "job0002", "job0003"]
    assert set(scan.rejected) == {"../", "bad name/", ".hidden/"}


@pytest.mark.parametrize("prefix", ["job0001", "job0001/", "Job_1.a-b"])
def test_valid_job_prefixes(prefix: str) -> None:
    assert validate_job_prefix(prefix) == prefix.rstrip("/")


@pytest.mark.parametrize("prefix", ["", "/", "..", ".", "a/b", "job0001//", "-x", "a b", "a\nb", "x" * 129])
def test_invalid_job_prefixes(prefix: str) -> None:
    with pytest.raises(UnsafeKeyError):
        validate_job_prefix(prefix)


def test_intake_accepts_a_job_with_its_script() -> None:
    keys = ["job0001/aws-job-run.sh", "job0001/in.dat", "job0001/aws-job-stat.txt"]
    assert intake_decision("job0001/", keys) == JobStatusFile(JobStatus.ACCEPTED)


def test_intake_fails_a_job_without_its_script() -> None:
    decision = intake_decision(
        "job0001", ["job0001/in.dat", "job0001/aws-job-stat.txt", "job0001/x/aws-job-run.sh"]
    )
    assert decision.status is JobStatus.FAILED
    assert decision.render() == b"FAILED\n\naws-job-run.sh is missing\n"


def test_intake_fails_an_unsafe_prefix_with_a_reason() -> None:
    decision = intake_decision("bad name/", ["bad name/aws-job-run.sh"])
    assert decision.status is JobStatus.FAILED and decision.reason
    assert decision.reason.startswith("job prefix is not usable")


# --- poll cache -------------------------------------------------------------------------------------


def _listing(etags: dict[str, str], when: datetime = T0) -> list[dict[str, Any]]:
    page: list[dict[str, Any]] = []
    for job, etag in etags.items():
        page.append({"Key": f"{job}/{JOB_SCRIPT_NAME}", "ETag": '"s"', "LastModified": when})
        page.append({"Key": f"{job}/{STATUS_FILE_NAME}", "ETag": etag, "LastModified": when})
    return page


def test_first_poll_gets_all_status_objects_and_nothing_else() -> None:
    cache = StatusCache()
    plan = cache.poll(
        [*_listing({"job0001": '"a"', "job0002": '"b"'}), {"Key": "a/b/aws-job-stat.txt", "ETag": "x"}]
    )
    assert [o["Key"] for o in plan.to_fetch] == ["job0001/aws-job-stat.txt", "job0002/aws-job-stat.txt"]
    assert plan.ready == [] and plan.invalid == {}


def test_second_poll_with_same_etags_gets_nothing_and_reports_ready() -> None:
    cache = StatusCache()
    page = _listing({"job0001": '"a"', "job0002": '"b"', "job0003": '"c"'})
    bodies = {"job0001": b"FILE_UPLOAD\n", "job0002": b"COMPLETED\n17\n", "job0003": b""}
    for obj in cache.poll(page).to_fetch:
        cache.record(obj["Key"], obj["ETag"], obj["LastModified"], bodies[obj["Key"].split("/")[0]])
    assert cache.ready_jobs() == ["job0001"]
    plan = cache.poll(page)
    assert plan.to_fetch == []
    assert plan.ready == ["job0001"]
    assert set(plan.invalid) == {"job0003"} and "empty" in plan.invalid["job0003"]


def test_changed_etag_or_last_modified_gets_only_that_object() -> None:
    cache = StatusCache()
    page = _listing({"job0001": '"a"', "job0002": '"b"'})
    for obj in cache.poll(page).to_fetch:
        cache.record(obj["Key"], obj["ETag"], obj["LastModified"], b"RUNNING\n1\n")
    changed = _listing({"job0001": '"a"', "job0002": '"b2"'})
    assert [o["Key"] for o in cache.poll(changed).to_fetch] == ["job0002/aws-job-stat.txt"]
    touched = _listing({"job0001": '"a"'}, when=T1)
    assert [o["Key"] for o in cache.poll(touched).to_fetch] == ["job0001/aws-job-stat.txt"]


def test_thousand_idle_finished_jobs_cost_no_gets() -> None:
    cache = StatusCache()
    page = _listing({f"job{i:04d}": f'"{i}"' for i in range(1000)})
    first = cache.poll(page)
    assert len(first.to_fetch) == 1000
    for obj in first.to_fetch:
        cache.record(obj["Key"], obj["ETag"], obj["LastModified"], b"COMPLETED\n9\n")
    again = cache.poll(page)
    assert again.to_fetch == [] and again.ready == [] and again.invalid == {}


def test_own_write_is_cached_without_a_get() -> None:
    cache = StatusCache()
    key = "job0001/aws-job-stat.txt"
    cache.record(key, '"up"', T0, b"FILE_UPLOAD\n")
    accepted = JobStatusFile(JobStatus.ACCEPTED)
    # A PUT response carries the new ETag but no LastModified.
    cache.record_written(key, '"acc"', accepted)
    plan = cache.poll([{"Key": key, "ETag": '"acc"', "LastModified": T1}])
    assert plan.to_fetch == [] and plan.ready == []
    assert cache.get(key) == accepted


def test_prune_forgets_deleted_jobs() -> None:
    cache = StatusCache()
    cache.record("job0001/aws-job-stat.txt", "a", T0, b"COMPLETED\n")
    cache.record("job0002/aws-job-stat.txt", "b", T0, b"COMPLETED\n")
    assert cache.prune({"job0002/aws-job-stat.txt"}) == ["job0001/aws-job-stat.txt"]
    assert len(cache) == 1 and "job0002/aws-job-stat.txt" in cache


# --- safe local paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("job0002/../../etc/x", "'..' path component"),
        ("/etc/passwd", "absolute key"),
        ("job0002//x", "empty path component"),
        ("job0002/a/../../b", "'..' path component"),
        ("job0002/a\x00b", "control character"),
        ("job0002/a\nb", "control character"),
        ("job0002/./x", "'.' path component"),
        ("job0002/", "empty path component"),
        ("job0002/dir/", "empty path component"),
        ("job0003/x", "not under job prefix"),
        ("job0002x/y", "not under job prefix"),
        ("job0002/..\\..\\x", "backslash"),
        ("job0002/" + "n" * 256, "longer than 255 bytes"),
    ],
)
def test_hostile_keys_are_refused(tmp_path: Path, key: str, reason: str) -> None:
    with pytest.raises(UnsafeKeyError) as err:
        local_path_for_key(tmp_path / "job0002", "job0002/", key)
    assert reason in err.value.reason


def test_key_through_an_existing_symlink_out_of_the_job_dir_is_refused(tmp_path: Path) -> None:
    job_dir = tmp_path / "job0002"
    job_dir.mkdir()
    (tmp_path / "outside").mkdir()
    (job_dir / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafeKeyError, match="outside the job directory"):
        local_path_for_key(job_dir, "job0002", "job0002/out/x")


def test_safe_keys_map_inside_the_job_dir(tmp_path: Path) -> None:
    job_dir = tmp_path / "job0002"
    for key, rel in [
        ("job0002/aws-job-run.sh", "aws-job-run.sh"),
        ("job0002/my input file.dat", "my input file.dat"),
        ("job0002/data/sub dir/..x", "data/sub dir/..x"),
        ("job0002/日本語.txt", "日本語.txt"),
    ]:
        path = local_path_for_key(job_dir, "job0002", key)
        assert path == job_dir.resolve() / rel
        assert path.resolve().is_relative_to(job_dir.resolve())


# --- results -----------------------------------------------------------------------------------------


def test_result_files_are_new_or_changed_since_stage_in(tmp_path: Path) -> None:
    job_dir = tmp_path / "job0001"
    (job_dir / "inputs").mkdir(parents=True)
    (job_dir / "aws-job-run.sh").write_text("#!/bin/sh\n")
    (job_dir / "aws-job-stat.txt").write_text("FILE_UPLOAD\n")
    (job_dir / "inputs" / "a.dat").write_text("a")
    (job_dir / "inputs" / "b.dat").write_text("b")
    manifest = take_manifest(job_dir)
    assert set(manifest) == {"aws-job-run.sh", "aws-job-stat.txt", "inputs/", "inputs/a.dat", "inputs/b.dat"}

    (job_dir / "inputs" / "b.dat").write_text("changed, longer")
    (job_dir / "out put.txt").write_text("result")
    (job_dir / "results" / "deep").mkdir(parents=True)
    (job_dir / "results" / "deep" / "r.csv").write_text("1,2")
    (job_dir / "empty").mkdir()
    (job_dir / "aws-job-stat.txt").write_text("hacked\n")

    scan = result_files(job_dir, manifest)
    assert scan.keys == ["empty/", "inputs/b.dat", "out put.txt", "results/deep/r.csv"]
    assert "aws-job-stat.txt" in scan.skipped
    assert [result_key("job0001/", k) for k in scan.keys][1] == "job0001/inputs/b.dat"


def test_same_size_rewrite_counts_by_mtime(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    manifest = take_manifest(tmp_path)
    (tmp_path / "a").write_text("2")
    st = (tmp_path / "a").stat()
    os.utime(tmp_path / "a", ns=(st.st_atime_ns, manifest["a"].mtime_ns + 1_000_000))
    assert result_files(tmp_path, manifest).keys == ["a"]


def test_symlinks_in_results_are_skipped_and_reported(tmp_path: Path) -> None:
    job_dir = tmp_path / "job0001"
    job_dir.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("private")
    manifest = take_manifest(job_dir)

    (job_dir / "link-to-dir").symlink_to(outside)
    (job_dir / "link-to-file").symlink_to(outside / "key")
    (job_dir / "dangling").symlink_to(tmp_path / "nowhere")
    (job_dir / "real.txt").write_text("ok")
    os.mkfifo(job_dir / "fifo")

    scan = result_files(job_dir, manifest)
    assert scan.keys == ["real.txt"]
    assert scan.skipped == {
        "dangling": "symlink (not followed)",
        "fifo": "not a regular file or directory",
        "link-to-dir": "symlink (not followed)",
        "link-to-file": "symlink (not followed)",
    }
    assert not any(k.startswith("link-to-dir/") for k in take_manifest(job_dir))


def test_result_names_with_newlines_are_skipped(tmp_path: Path) -> None:
    manifest = take_manifest(tmp_path)
    (tmp_path / "bad\nname").write_text("x")
    scan = result_files(tmp_path, manifest)
    assert scan.keys == [] and scan.skipped == {"bad\nname": "control character in name"}
