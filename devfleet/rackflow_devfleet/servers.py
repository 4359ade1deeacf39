"""Real servers on loopback that stand in for a datacenter: libvirtd, Slurm, sshd, SeaweedFS S3, a
Redfish emulator, virtual IPMI BMCs and Redis (the Celery broker of the multi-machine topology).

Each server is a real process started in its own work directory, waited for until it answers, and
stopped by pid (SIGTERM, then SIGKILL). ``make demo`` and the pytest fixtures both use these classes.
Most need root (libvirtd in a private mount namespace, slurmd, sshd); CI and dev machines run as root.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return True
        time.sleep(0.1)
    return False


def venv_bin(name: str) -> str:
    """A console script installed beside this interpreter (the project's venv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ServerStartError(f"{name} is not installed (run `make venv`)")
    return found


@dataclass
class Server:
    """One server process: subclasses say how to configure and start it and which port proves it is up."""

    workdir: Path
    port: int = 0
    start_timeout: float = 30.0
    stop_grace: float = 5.0
    procs: list[subprocess.Popen] = field(default_factory=list, repr=False)
    # True when no port was asked for and free_port() picked one (it may be re-picked on a clash).
    picked_port: bool = field(default=False, init=False, repr=False)

    name = "server"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
            self.picked_port = True

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None):
        if not self.procs and wait_for_port(self.port, 0.2):
            # Otherwise the readiness check would pass against someone else's server.
            raise ServerStartError(f"{self.name}: port {LOOPBACK}:{self.port} is already in use")
        log_file = open(log or self.log_path, "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            list(argv),
            cwd=self.workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # own process group: Ctrl-C of the demo does not hit it first
        )
        log_file.close()
        self.procs.append(proc)
        return proc

    def _fail(self, what: str) -> ServerStartError:
        tail = ""
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        return ServerStartError(f"{self.name} did not start ({what}); log {self.log_path}:\n{tail}")

    def _await_port(self, port: int | None = None, proc: subprocess.Popen | None = None) -> None:
        port = port or self.port
        if not wait_for_port(port, self.start_timeout, proc or (self.procs[-1] if self.procs else None)):
            raise self._fail(f"nothing listens on {LOOPBACK}:{port}")

    def _await_own_port(self, port: int, proc: subprocess.Popen) -> None:
        """Like :meth:`_await_port`, and the listener must be ``proc`` itself: a free port picked a
        moment earlier may have been taken by another test session's server (all of them trust the
        same munge key, so a Slurm daemon would talk to the stranger without a word)."""
        self._await_port(port, proc)
        what = Path(str(next(iter(proc.args)))).name  # type: ignore[arg-type]
        import psutil  # imported late: only servers that check their listener need it

        try:
            listening = {
                c.laddr.port for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == "LISTEN"
            }
        except psutil.Error as exc:
            raise self._fail(f"{what} exited: {exc}") from exc
        if port not in listening:
            raise self._fail(f"{LOOPBACK}:{port} answers, but not {what}: another process took the port")

    def start(self) -> Server:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _terminate(proc, self.stop_grace)
        self.procs.clear()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --- libvirt -------------------------------------------------------------------------------------


@dataclass
class Libvirtd(Server):
    """A libvirtd serving the ``test`` driver on TCP loopback; one per fake physical host.

    Each daemon runs in a private mount namespace so several can run as root at once (they would
    otherwise fight over /run/libvirt). The test driver forgets its state ~15 s after the last client
    disconnects, so the fleet keeps one connection open (``keeper``) for as long as the daemon runs.
    """

    name = "libvirtd"
    keeper: object = field(default=None, repr=False)

    @property
    def uri(self) -> str:
        return f"test+tcp://{LOOPBACK}:{self.port}/default"

    def start(self) -> Libvirtd:
        # Unix socket paths are limited to ~108 bytes: keep them out of deep work directories.
        sock_dir = Path(tempfile.mkdtemp(prefix="rf-lv-"))
        self._sock_dir = sock_dir
        conf = self.workdir / "libvirtd.conf"
        conf.write_text(
            "listen_tls = 0\nlisten_tcp = 1\n"
            f'listen_addr = "{LOOPBACK}"\ntcp_port = "{self.port}"\nauth_tcp = "none"\n'
            f'unix_sock_dir = "{sock_dir}"\nlog_outputs = "3:stderr"\n'
        )
        pidfile = self.workdir / "libvirtd.pid"
        script = (
            "mkdir -p /run/libvirt /var/lib/libvirt && mount -t tmpfs tmpfs /run/libvirt && "
            "mount -t tmpfs tmpfs /var/lib/libvirt && "
            f"exec libvirtd -l -f {conf} -p {pidfile}"
        )
        proc = self._spawn(["unshare", "-m", "sh", "-c", script])
        self._await_port(proc=proc)
        import libvirt  # imported late: only the fleet needs it at start

        self.keeper = _open_libvirt(libvirt, self.uri, self.start_timeout)
        return self

    def stop(self) -> None:
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()  # type: ignore[attr-defined]
            self.keeper = None
        super().stop()
        if getattr(self, "_sock_dir", None):
            shutil.rmtree(self._sock_dir, ignore_errors=True)


def _open_libvirt(libvirt, uri: str, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- Slurm ---------------------------------------------------------------------------------------


@dataclass
class Slurm(Server):
    """A single-node Slurm cluster with accounting: munged, MariaDB, slurmdbd, slurmctld and slurmd.

    Clients find it through ``SLURM_CONF`` (see ``env``); ``port`` is slurmctld's. Controller state
    and the accounting database live in the work directory (a new one per test session). With
    ``accounting`` (default) the job accounting plugin samples each job's processes every second
    (``jobacct_gather/linux``) and slurmdbd stores the records in MariaDB, so ``sacct`` reports a
    job's end, CPU time and peak RSS after slurmctld has forgotten it (``min_job_age`` seconds after
    its end). ``AccountingStorageEnforce`` stays off: jobs of Unix users with no association in the
    database run and are recorded all the same (with an empty account), so job accounts need no
    ``sacctmgr add user``.
    """

    name = "slurm"
    cpus: int = 2
    accounting: bool = True
    min_job_age: int = 600
    cluster_name: str = "rackflow"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf_path)}

    @property
    def munge_socket(self) -> Path:
        return self.workdir / "munge.sock"

    def start(self) -> Slurm:
        wd = self.workdir
        for sub in ("state", "spool", "log"):
            (wd / sub).mkdir(exist_ok=True)
        munge_sock = self.munge_socket
        slurmd_port = free_port()
        accounting = ""
        if self.accounting:
            self._dbd_port = free_port()
            accounting = f"""JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={LOOPBACK}
AccountingStoragePort={self._dbd_port}
AccountingStoragePass={munge_sock}
"""
        # More CPUs than this host has (a bench's many small jobs at once): slurmd takes the node's
        # line as configured instead of draining it ("Low socket*core*thread count").
        overrides = "SlurmdParameters=config_overrides\n" if self.cpus > (os.cpu_count() or 1) else ""
        self.conf_path.write_text(
            f"""ClusterName={self.cluster_name}
SlurmctldHost=localhost
SlurmctldPort={self.port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_sock}
CredType=cred/munge
StateSaveLocation={wd}/state
SlurmdSpoolDir={wd}/spool
SlurmctldPidFile={wd}/slurmctld.pid
SlurmdPidFile={wd}/slurmd.pid
SlurmctldLogFile={wd}/log/slurmctld.log
SlurmdLogFile={wd}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge={self.min_job_age}
ReturnToService=2
JobCompType=jobcomp/filetxt
JobCompLoc={wd}/log/jobcomp.txt
{accounting}MpiDefault=none
{overrides}NodeName=localhost CPUs={self.cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        self._spawn(
            [
                "munged",
                "-F",
                f"--socket={munge_sock}",
                f"--pid-file={wd}/munged.pid",
                f"--log-file={wd}/log/munged.log",
                f"--seed-file={wd}/munge.seed",
                "--key-file=/etc/munge/munge.key",
                "--force",
            ],
            log=wd / "munged.out",
        )
        _wait_for_path(munge_sock, self.start_timeout)
        if self.accounting:
            self._start_accounting()
        self._start_controller()
        slurmd = self._spawn(["slurmd", "-D", "-N", "localhost", "-f", str(self.conf_path)], env=self.env)
        self._await_own_port(slurmd_port, slurmd)
        self._await_node_idle()
        return self

    def _start_controller(self, clear_state: bool = False) -> None:
        argv = ["slurmctld", "-D", "-i", "-f", str(self.conf_path)]
        self._controller = self._spawn([*argv, "-c"] if clear_state else argv, env=self.env)
        self._await_own_port(self.port, self._controller)

    def restart_controller(self, *, forget_jobs: bool = False) -> None:
        """Restart slurmctld; ``forget_jobs`` starts it with no job state (``-c``), as if every job's
        record had aged out: only accounting still knows them."""
        _terminate(self._controller, self.stop_grace)
        self.procs.remove(self._controller)
        self._start_controller(clear_state=forget_jobs)
        self._await_node_idle()

    def _start_accounting(self) -> None:
        """MariaDB in the work directory, then slurmdbd on it, then this cluster registered in it."""
        wd = self.workdir
        datadir, db_sock, db_port = wd / "mariadb", wd / "mariadb.sock", free_port()
        # Its own temporary directory: two MariaDBs bootstrapping at once in /tmp delete each other's
        # temporary tables ("Error on delete of '/tmp/#sql-temptable-...'").
        tmpdir = wd / "mariadb-tmp"
        tmpdir.mkdir(exist_ok=True)
        if not (datadir / "mysql").exists():
            self._setup_step(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={datadir}",
                    f"--tmpdir={tmpdir}",
                    "--auth-root-authentication-method=normal",
                    "--user=root",
                    "--skip-test-db",
                ]
            )
        mariadbd = self._spawn(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                f"--tmpdir={tmpdir}",
                f"--socket={db_sock}",
                f"--port={db_port}",
                f"--bind-address={LOOPBACK}",
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=0",
                "--performance-schema=OFF",
            ],
            log=wd / "log" / "mariadb.log",
        )
        self._await_own_port(db_port, mariadbd)
        password = secrets.token_hex(16)
        self._setup_step(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={db_sock}",
                "-uroot",
                "-e",
                f"CREATE USER IF NOT EXISTS 'slurm'@'{LOOPBACK}' IDENTIFIED BY '{password}';"
                f"ALTER USER 'slurm'@'{LOOPBACK}' IDENTIFIED BY '{password}';"
                f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{LOOPBACK}';",
            ]
        )
        dbd_conf = self.conf_path.with_name("slurmdbd.conf")  # slurmdbd finds it next to SLURM_CONF
        dbd_conf.touch(mode=0o600)
        dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read: it holds the password
        dbd_conf.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdAddr={LOOPBACK}
DbdHost=localhost
DbdPort={self._dbd_port}
SlurmUser=root
PidFile={wd}/slurmdbd.pid
LogFile={wd}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost={LOOPBACK}
StoragePort={db_port}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
"""
        )
        slurmdbd = self._spawn(["slurmdbd", "-D"], env=self.env, log=wd / "log" / "slurmdbd.out")
        self._await_own_port(self._dbd_port, slurmdbd)
        self._setup_step(["sacctmgr", "-i", "add", "cluster", self.cluster_name], ok_if="already exists")

    def _setup_step(self, argv: list[str], ok_if: str | None = None) -> None:
        out = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=self.start_timeout
        )
        if out.returncode != 0 and not (ok_if and ok_if in out.stdout + out.stderr):
            raise self._fail(f"{' '.join(argv[:4])} failed: {(out.stderr or out.stdout).strip()[-500:]}")

    def _await_node_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env={**os.environ, **self.env}, capture_output=True, text=True
            )
            if out.stdout.strip() == "idle":
                return
            time.sleep(0.2)
        raise self._fail("node never became idle")


def _wait_for_path(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ServerStartError(f"{path} never appeared")
        time.sleep(0.05)


# --- Redis ---------------------------------------------------------------------------------------


@dataclass
class Redis(Server):
    """A Redis (Debian's ``redis-server``) on loopback with no persistence: the Celery broker and result
    backend of the multi-machine topology test. ``url(db)`` is a ``redis://`` URL for one database."""

    name = "redis"

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def start(self) -> Redis:
        server = shutil.which("redis-server")
        if not server:
            raise ServerStartError("redis-server is not installed (scripts/install-apt.sh installs it)")
        proc = self._spawn(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ]
        )
        self._await_own_port(self.port, proc)
        import redis  # imported late: only the Celery topology needs the client

        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=5)
        try:
            if not client.ping():
                raise self._fail("PING was not answered")
        finally:
            client.close()
        return self


# --- SSH -----------------------------------------------------------------------------------------


@dataclass
class Sshd(Server):
    """A second OpenSSH daemon on loopback with key-only login for ``user`` (default: who runs it)."""

    name = "sshd"
    user: str = field(default_factory=lambda: os.environ.get("USER") or "root")

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_ed25519"

    def start(self) -> Sshd:
        wd = self.workdir
        host_key = wd / "host_ed25519"
        for key in (host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = wd / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        authorized.chmod(0o600)
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        config = wd / "sshd_config"
        config.write_text(
            f"""Port {self.port}
ListenAddress {LOOPBACK}
HostKey {host_key}
PidFile {wd}/sshd.pid
AuthorizedKeysFile {authorized}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
"""
        )
        self._spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
        self._await_port()
        return self


# --- S3 ------------------------------------------------------------------------------------------


@dataclass
class SeaweedS3(Server):
    """SeaweedFS (master, volume, filer and S3 gateway in one ``weed server``) enforcing credentials."""

    name = "seaweedfs"
    access_key: str = "rackflow"
    secret_key: str = "rackflow-secret"
    buckets: Sequence[str] = ()
    start_timeout: float = 60.0
    # weed takes its time on SIGTERM (5 s and more) over data nothing keeps: each fleet's is fresh.
    stop_grace: float = 2.0

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> SeaweedS3:
        wd = self.workdir
        (wd / "data").mkdir(exist_ok=True)
        identities = wd / "s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "rackflow",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        # A port free_port() found free can be taken before weed binds it (another server starting at the
        # same moment, a client's ephemeral port): then weed says "address already in use" and the
        # start is tried again on fresh ports -- the S3 port too, unless it was asked for.
        for attempt in range(1, 4):
            try:
                self._start_weed(identities)
                break
            except ServerStartError as err:
                if attempt == 3 or "address already in use" not in str(err):
                    raise
                if self.picked_port:
                    self.port = free_port()
        self._create_buckets()
        return self

    def _start_weed(self, identities: Path) -> None:
        wd = self.workdir
        master, volume, filer = free_port(), free_port(), free_port()
        self._spawn(
            [
                venv_bin("weed"),
                "server",
                f"-ip={LOOPBACK}",
                f"-ip.bind={LOOPBACK}",
                f"-dir={wd / 'data'}",
                f"-master.port={master}",
                f"-master.port.grpc={free_port()}",
                f"-volume.port={volume}",
                f"-volume.port.grpc={free_port()}",
                f"-filer.port={filer}",
                f"-filer.port.grpc={free_port()}",
                "-volume.max=100",
                "-master.volumeSizeLimitMB=256",
                "-s3",
                f"-s3.port={self.port}",
                f"-s3.port.grpc={free_port()}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={identities}",
            ],
            # One volume per new bucket (collection) instead of 7: tests make many small buckets.
            env={"WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"},
        )
        self._await_port()

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def _create_buckets(self) -> None:
        # The S3 port opens before the filer behind it is ready: retry the first calls.
        deadline = time.monotonic() + self.start_timeout
        client = self.client()
        pending = list(self.buckets)
        while True:
            try:
                client.list_buckets()
                for bucket in list(pending):
                    client.create_bucket(Bucket=bucket)
                    pending.remove(bucket)
                return
            except Exception as err:
                if "BucketAlreadyOwnedByYou" in str(err) or "BucketAlreadyExists" in str(err):
                    pending.pop(0)
                    continue
                if time.monotonic() > deadline:
                    raise self._fail(f"S3 API not ready: {err}") from err
                time.sleep(0.3)


# --- BMCs ----------------------------------------------------------------------------------------


@dataclass
class RedfishEmulator(Server):
    """sushy-emulator serving Redfish for the domains of a libvirtd (one domain per physical host)."""

    name = "sushy-emulator"
    libvirt_uri: str = ""
    username: str = "admin"
    password: str = "rackflow-bmc"

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> RedfishEmulator:
        if not self.libvirt_uri:
            raise ServerStartError("RedfishEmulator needs libvirt_uri (the BMC plane libvirtd)")
        htpasswd = self.workdir / "htpasswd"
        htpasswd.write_text(f"{self.username}:{_bcrypt(self.password)}\n")
        config = self.workdir / "emulator.conf"
        config.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = {LOOPBACK!r}\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_LIBVIRT_URI = {self.libvirt_uri!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
            "SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = True\n"
        )
        self._spawn([venv_bin("sushy-emulator"), "--config", str(config)])
        self._await_port()
        return self


def _bcrypt(password: str) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class VirtualBmc(Server):
    """virtualbmc's ``vbmcd``: one IPMI 2.0 (lanplus) BMC per libvirt domain, each on its own UDP port.

    The daemon gets a private config dir (``VIRTUALBMC_CONFIG``), so its BMC list, pid file and
    control port (``port``, ZeroMQ on loopback) never touch ``~/.vbmc`` or another daemon. Add a BMC with
    :meth:`add` (``vbmc add`` + ``vbmc start``); ``bmcs`` maps domain -> UDP port.
    """

    name = "vbmcd"
    libvirt_uri: str = ""
    username: str = "admin"
    password: str = "rackflow-ipmi"
    bmcs: dict[str, int] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.workdir / "virtualbmc.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"VIRTUALBMC_CONFIG": str(self.config_path)}

    def start(self) -> VirtualBmc:
        (self.workdir / "bmcs").mkdir(exist_ok=True)
        self.config_path.write_text(
            "[default]\n"
            f"config_dir = {self.workdir / 'bmcs'}\n"
            f"pid_file = {self.workdir / 'vbmcd.pid'}\n"
            f"server_port = {self.port}\n"
            "server_response_timeout = 10000\n"
            "[log]\n"
            f"logfile = {self.workdir / 'vbmcd-daemon.log'}\n"
            "debug = false\n"
        )
        self._spawn([venv_bin("vbmcd"), "--foreground"], env=self.env)
        self._await_port()
        return self

    def _vbmc(self, *args: str) -> None:
        out = subprocess.run(
            [venv_bin("vbmc"), "--no-daemon", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            why = out.stderr.strip() or out.stdout.strip()
            raise ServerStartError(f"vbmc {' '.join(args)} failed: {why}")

    def add(self, domain: str, port: int = 0, libvirt_uri: str = "") -> int:
        """Serve IPMI for ``domain`` on UDP ``port`` (free if 0) and wait until the BMC answers."""
        uri = libvirt_uri or self.libvirt_uri
        if not uri:
            raise ServerStartError("VirtualBmc.add needs a libvirt URI (the BMC plane libvirtd)")
        udp_port = port or free_udp_port()
        self._vbmc(
            "add",
            domain,
            "--port",
            str(udp_port),
            "--address",
            LOOPBACK,
            "--libvirt-uri",
            uri,
            "--username",
            self.username,
            "--password",
            self.password,
        )
        self._vbmc("start", domain)
        self.bmcs[domain] = udp_port
        _wait_for_udp_port(udp_port, self.start_timeout)
        return udp_port

    def restart(self, domain: str) -> None:
        """Restart ``domain``'s BMC, as a real BMC reboot would: it forgets every open IPMI session."""
        self._vbmc("stop", domain)
        self._vbmc("start", domain)
        _wait_for_udp_port(self.bmcs[domain], self.start_timeout)

    def connection(self, domain: str) -> dict[str, object]:
        """Airflow connection (JSON form) of ``domain``'s BMC; cipher suite 3: virtualbmc is SHA-1 only."""
        return {
            "conn_type": "ipmi",
            "host": LOOPBACK,
            "port": self.bmcs[domain],
            "login": self.username,
            "password": self.password,
            "extra": {"cipher_suite": 3},
        }


def free_udp_port() -> int:
    """A UDP port on loopback that nothing is bound to now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_for_udp_port(port: int, timeout: float) -> None:
    """Wait until something is bound to UDP ``port`` (binding it ourselves then fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return
        time.sleep(0.1)
    raise ServerStartError(f"no BMC bound UDP {LOOPBACK}:{port} within {timeout}s")
