"""The staging rules as plain Python: job paths, remote ends, addresses, allow-lists and sizes."""

from __future__ import annotations

import re

import pytest

from rackflow.core.jobspec import JobDescription, JobDescriptionError, parse_job_description
from rackflow.core.staging_policy import (
    JOB_PATH_PATTERN,
    AllowEntry,
    StagingPolicy,
    address_problem,
    host_problem,
    job_path_problem,
    literal_address,
    parse_allow_list,
    parse_size,
    remote_problem,
)


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/etc/x", "absolute path"),
        ("../../x", "'..' path component"),
        ("a/../../x", "'..' path component"),
        ("./x", "'.' path component"),
        ("a//b", "empty path component"),
        ("", "empty path"),
        ("~/x", "starts with '~'"),
        ("a\nb", "control character"),
        ("a\x00b", "control character"),
        ("a\\..\\b", "backslash"),
        ("x" * 256, "longer than 255 bytes"),
        ("s3://b/k", "must be a local path"),
        ("file:///etc/x", "must be a local path"),
    ],
)
def test_job_paths_outside_the_job_directory_are_refused_with_the_rule(path: str, rule: str) -> None:
    problem = job_path_problem(path)
    assert problem is not None and rule in problem
    assert re.match(JOB_PATH_PATTERN, path) is None  # the Param schema refuses the same at /api/v2


@pytest.mark.parametrize(
    "path", ["in.dat", "a/b/c.txt", "results/", ".hidden", "..data", "...", "a b", "ü.txt"]
)
def test_relative_paths_inside_the_job_directory_are_fine(path: str) -> None:
    assert job_path_problem(path) is None
    assert re.match(JOB_PATH_PATTERN, path) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "fe80::1",
        "fc00::1",
        "fd12::1",
        "100.64.0.1",  # shared address space
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "2001:db8::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ],
)
def test_resolved_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert address_problem(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_pass_the_checker(address: str) -> None:
    """The allowed-http path: what a public name resolves to passes (no internet needed)."""
    assert address_problem(address) is None


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST.", "api.localhost", "127.0.0.1", "[::1]", "127.1", "2130706433", "0x7f.1"],
)
def test_loopback_hosts_and_every_literal_form_are_refused_without_dns(host: str) -> None:
    assert host_problem(host) is not None


def test_literal_forms_are_read_as_addresses_and_names_are_left_to_dns() -> None:
    assert str(literal_address("2130706433")) == "127.0.0.1"
    assert str(literal_address("0x7f.1")) == "127.0.0.1"
    assert literal_address("example.org") is None
    assert host_problem("example.org") is None


@pytest.mark.parametrize(
    ("uri", "stage_out", "rule"),
    [
        ("/etc/hostname", False, "must be a s3://"),
        ("file:///etc/hostname", False, "must be a s3://"),
        ("ftp://h/x", False, "unsupported URI scheme 'ftp'"),
        ("https://h/x", True, "must be a s3://, sftp:// URI"),
        ("http://127.0.0.1:8080/x", False, "127.0.0.1 is a loopback address"),
        ("http://[::ffff:169.254.169.254]/", False, "link-local"),
        ("http://localhost/x", False, "loopback host"),
        ("http://user:pw@example.org/x", False, "credentials"),
        ("s3://b/a/../other", False, "'..' path component in the key"),
        ("sftp://c/srv/x/../../etc/shadow", True, "'..' path component in the remote path"),
        ("sftp://c/srv//x", True, "empty path component"),
    ],
)
def test_remote_ends_that_no_site_allows(uri: str, stage_out: bool, rule: str) -> None:
    problem = remote_problem(uri, stage_out=stage_out)
    assert problem is not None and rule in problem, problem


def test_policy_allows_only_listed_buckets_connections_and_prefixes() -> None:
    policy = StagingPolicy(
        s3_sources=parse_allow_list("inputs, shared/public/"),
        s3_targets=parse_allow_list("results"),
        sftp_sources=parse_allow_list("exchange/srv/x/"),
        sftp_targets=parse_allow_list("exchange/srv/x/out/"),
    )
    assert policy.remote_problem("s3://inputs/any/key", stage_out=False) is None
    assert policy.remote_problem("s3://shared/public/a.dat", stage_out=False) is None
    assert "staging_s3_sources" in (policy.remote_problem("s3://shared/private/a.dat", stage_out=False) or "")
    # reading a bucket does not allow writing it
    assert "staging_s3_targets" in (policy.remote_problem("s3://inputs/k", stage_out=True) or "")
    assert policy.remote_problem("s3://results/k", stage_out=True) is None
    assert policy.remote_problem("sftp://exchange/srv/x/in.txt", stage_out=False) is None
    assert policy.remote_problem("sftp://exchange/srv/x/out/r.txt", stage_out=True) is None
    refused = policy.remote_problem("sftp://site_root/etc/x", stage_out=False) or ""
    assert "SSH connection 'site_root'" in refused and "staging_sftp_sources" in refused
    assert "staging_sftp_targets" in (
        policy.remote_problem("sftp://exchange/srv/x/in.txt", stage_out=True) or ""
    )
    assert "staging_allow_http" in (policy.remote_problem("https://example.org/x", stage_out=False) or "")
    web = StagingPolicy(allow_http=True)
    assert web.remote_problem("https://example.org/x", stage_out=False) is None
    assert "loopback" in (web.remote_problem("http://127.0.0.1/x", stage_out=False) or "")
    assert str(AllowEntry.parse("b/p/q")) == "b/p/q/"


def test_policy_problems_name_each_field() -> None:
    job = parse_job_description(
        {
            "executable": "x",
            "stage_in": [{"source": "s3://ok/k", "target": "a"}, {"source": "s3://nope/k", "target": "b"}],
            "stage_out": [{"source": "a", "target": "s3://ok/k"}],
        }
    )
    policy = StagingPolicy(s3_sources=parse_allow_list("ok"))
    problems = policy.problems(
        [(e.source, e.target) for e in job.stage_in], [(e.source, e.target) for e in job.stage_out]
    )
    assert [p.partition(":")[0] for p in problems] == ["stage_in[1].source", "stage_out[0].target"]


def test_job_description_refuses_paths_outside_and_local_remote_ends_naming_the_field() -> None:
    with pytest.raises(JobDescriptionError) as info:
        parse_job_description(
            {
                "executable": "x",
                "stage_in": [
                    {"source": "s3://b/k", "target": "/etc/x"},
                    {"source": "s3://b/k", "target": "../../x"},
                    {"source": "/etc/shadow", "target": "x"},
                ],
                "stage_out": [
                    {"source": "/etc/hostname", "target": "s3://b/k"},
                    {"source": "out", "target": "/tmp/anywhere"},
                ],
            }
        )
    fields = [p.partition(":")[0] for p in info.value.problems]
    assert fields == [
        "stage_in[0].target",
        "stage_in[1].target",
        "stage_in[2].source",
        "stage_out[0].source",
        "stage_out[1].target",
    ]


def test_param_schema_carries_the_path_rules() -> None:
    import jsonschema

    schema = JobDescription.param_schema()
    good = {"executable": "x", "stage_in": [{"source": "s3://b/k", "target": "in"}]}
    jsonschema.validate(good, schema)
    for bad in (
        {"executable": "x", "stage_in": [{"source": "s3://b/k", "target": "/etc/x"}]},
        {"executable": "x", "stage_in": [{"source": "/etc/shadow", "target": "x"}]},
        {"executable": "x", "stage_out": [{"source": "../x", "target": "s3://b/k"}]},
        {"executable": "x", "stage_out": [{"source": "x", "target": "https://e.org/x"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_sizes() -> None:
    assert parse_size("1G") == 1 << 30
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1048576") == 1 << 20
    assert parse_size(10) == 10
    for bad in ("0", "-1", "1X", "lots", ""):
        with pytest.raises(ValueError):
            parse_size(bad)
