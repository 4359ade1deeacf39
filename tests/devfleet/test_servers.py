"""Each real loopback server of the demo fleet answers rackflow's hooks (and the stock providers' hooks)."""

from __future__ import annotations

import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from rackflow_devfleet.fleet import S3_CONN_ID, SSH_CONN_ID


def test_libvirt_lists_each_fake_hosts_domains(devfleet):
    from rackflow.hooks.libvirt import LibvirtHook

    expected = {"host-a": ["db-01"], "host-b": ["cache-01", "cache-02"], "host-c": []}
    for host in devfleet.fleet.hosts:
        with LibvirtHook(libvirt_conn_id=host.libvirt_conn_id) as hook:
            domains = hook.list_domains()
            assert [d.name for d in domains] == expected[host.name]
            assert all(d.state == "running" for d in domains)
            assert hook.host_info().cpus == 16


def test_libvirt_hosts_keep_separate_state(devfleet):
    """Each fake host is its own libvirtd: a domain defined on host-c is not seen on host-a."""
    from rackflow.hooks.libvirt import LibvirtHook
    from rackflow_devfleet.fleet import TEST_DOMAIN_XML

    with LibvirtHook("libvirt_host_c") as c, LibvirtHook("libvirt_host_a") as a:
        dom = c.get_conn().defineXML(TEST_DOMAIN_XML.format(name="probe-01", memory_kib=1024, vcpus=1))
        try:
            assert "probe-01" in [d.name for d in c.list_domains()]
            assert "probe-01" not in [d.name for d in a.list_domains()]
        finally:
            dom.undefine()


def test_slurm_runs_batch_job_to_completed(devfleet, tmp_path):
    env = {**__import__("os").environ, **devfleet.slurm.env}
    out = tmp_path / "out.txt"
    job_id = subprocess.run(
        ["sbatch", "--parsable", "-o", str(out), "--wrap", "echo rackflow-ok"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        show = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True
        )
        state = next(f.split("=", 1)[1] for f in show.stdout.split() if f.startswith("JobState="))
        if state in {"COMPLETED", "FAILED", "CANCELLED"}:
            break
        time.sleep(0.5)
    assert state == "COMPLETED"
    assert out.read_text().strip() == "rackflow-ok"


def test_ssh_runs_command_with_key_only_login(devfleet):
    from airflow.providers.ssh.hooks.ssh import SSHHook

    hook = SSHHook(ssh_conn_id=SSH_CONN_ID)
    with hook.get_conn() as client:
        exit_status, stdout, _stderr = hook.exec_ssh_client_command(
            client, "echo $((6 * 7))", get_pty=False, environment=None, timeout=30
        )
    assert exit_status == 0
    assert stdout.decode().strip() == "42"


def test_ssh_refuses_password_login(devfleet):
    result = subprocess.run(
        [
            "ssh",
            "-p",
            str(devfleet.sshd.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "BatchMode=yes",
            "root@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_s3_put_list_get_with_credentials(devfleet):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=S3_CONN_ID)
    hook.load_bytes(
        b"FILE_UPLOAD\n", key="job0001/aws-job-stat.txt", bucket_name="rackflow-jobs", replace=True
    )
    assert hook.list_prefixes(bucket_name="rackflow-jobs", delimiter="/") == ["job0001/"]
    assert hook.read_key("job0001/aws-job-stat.txt", bucket_name="rackflow-jobs") == "FILE_UPLOAD\n"


def test_s3_refuses_wrong_secret_key(devfleet):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=devfleet.s3.endpoint_url,
        aws_access_key_id=devfleet.s3.access_key,
        aws_secret_access_key="wrong-secret",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as err:
        client.list_objects_v2(Bucket="rackflow-jobs")
    assert err.value.response["Error"]["Code"] in {
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidAccessKeyId",
    }


def test_redfish_powers_system_off_and_on(devfleet):
    from rackflow.hooks.redfish import RedfishHook

    hook = RedfishHook("redfish_default")
    assert set(hook.list_systems()) >= {"host-a", "host-b", "host-c"}
    assert hook.get_power_state("host-c") == "On"
    hook.set_power("host-c", "hard_off")
    assert _wait_power(hook, "host-c", "Off")
    hook.set_power("host-c", "on")
    assert _wait_power(hook, "host-c", "On")


def test_redfish_refuses_wrong_password(devfleet):
    import requests

    resp = requests.get(
        f"{devfleet.redfish.endpoint_url}/redfish/v1/Systems", auth=("admin", "wrong"), timeout=10
    )
    assert resp.status_code == 401


def _wait_power(hook, system: str, state: str, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hook.get_power_state(system) == state:
            return True
        time.sleep(0.3)
    return False


def test_a_server_whose_port_another_process_answers_on_fails_to_start(tmp_path):
    """The race a free port leaves open: another process listens there before our daemon could."""
    import socket

    from rackflow_devfleet.servers import LOOPBACK, ServerStartError, Slurm

    stranger = socket.socket()
    stranger.bind((LOOPBACK, 0))
    stranger.listen()
    port = stranger.getsockname()[1]
    server = Slurm(workdir=tmp_path / "slurm")  # never started: only its checks are used
    ours = server._spawn(["sleep", "30"])  # alive, listening on nothing
    try:
        with pytest.raises(ServerStartError, match="another process took the port"):
            server._await_own_port(port, ours)
        assert ours.poll() is not None  # the failed start stopped what it had spawned
    finally:
        server.stop()
        stranger.close()


def test_redis_answers_as_a_celery_broker_and_forgets_nothing_while_up(tmp_path):
    """The Celery topology's broker: a real redis-server on loopback that keeps what is pushed to it."""
    import redis

    from rackflow_devfleet.servers import Redis

    with Redis(workdir=tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url(1))
        client.rpush("celery", b"task-1", b"task-2")
        assert client.lrange("celery", 0, -1) == [b"task-1", b"task-2"]
        client.close()
    assert not server.pids  # stopped by pid


def test_fleet_env_file_lets_the_aws_cli_reach_the_intake_bucket_and_airflow_gets_no_aws_defaults(
    devfleet, tmp_path
):
    """`source .rackflow/fleet.env` is all an uploader's shell needs for the README's `aws s3 cp`; the
    AWS variables stay out of the environment Airflow's processes get (no default credentials there)."""
    import os
    import subprocess
    import sys

    env_file = tmp_path / "fleet.env"
    devfleet.write_env_file(env_file)
    assert not [k for k in devfleet.env() if k.startswith("AWS_")]
    # boto3's default chain is the AWS CLI's: endpoint, keys and region from the environment only.
    code = (
        "import boto3; s3 = boto3.client('s3');"
        "s3.put_object(Bucket='rackflow-jobs', Key='envfile/aws-job-stat.txt', Body=b'x');"
        "print(s3.get_object(Bucket='rackflow-jobs', Key='envfile/aws-job-stat.txt')['Body'].read())"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW_CONN_"))}
    clean["AWS_CONFIG_FILE"] = clean["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && exec "$2" -c "$3"', "sh", str(env_file), sys.executable, code],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "b'x'"


def test_seaweedfs_starts_again_on_fresh_ports_when_a_picked_port_was_taken(tmp_path, monkeypatch):
    """A port free_port() picked can be taken before weed binds it. The clash is injected (a fault a
    quiet machine does not produce on demand): the first internal port handed to weed is one another
    socket listens on; weed says "address already in use" and the start goes on with fresh ports."""
    import socket

    from rackflow_devfleet import servers

    stranger = socket.socket()
    stranger.bind((servers.LOOPBACK, 0))
    stranger.listen()
    taken = stranger.getsockname()[1]
    real_free_port = servers.free_port
    handed: list[int] = []

    def free_port_once_taken() -> int:
        port = taken if not handed else real_free_port()
        handed.append(port)
        return port

    s3 = servers.SeaweedS3(workdir=tmp_path / "s3", buckets=["clash"])  # its own S3 port picked here
    monkeypatch.setattr(servers, "free_port", free_port_once_taken)
    try:
        s3.start()
        assert "address already in use" in s3.log_path.read_text(errors="replace")
        assert handed[0] == taken and len(handed) > 7  # a second set of ports after the clash
        assert [b["Name"] for b in s3.client().list_buckets()["Buckets"]] == ["clash"]
    finally:
        s3.stop()
        stranger.close()
