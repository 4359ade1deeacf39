"""Scheduler adapters: scripts they write, commands they build, and their parsers on recorded output."""

from __future__ import annotations

import shlex
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rackflow.core.jobspec import parse_job_description
from rackflow.core.schedulers import (
    JobState,
    LsfAdapter,
    PbsProAdapter,
    SchedulerError,
    SgeAdapter,
    SlurmAdapter,
    get_adapter,
)
from rackflow.core.schedulers.slurm import (
    expand_hostlist,
    parse_sacct,
    parse_slurm_memory,
    parse_slurm_timestamp,
)
from rackflow.core.values import parse_clock

FIXTURES = Path(__file__).parent / "fixtures" / "schedulers"
TRICKY = 'it\'s "quoted" $HOME `id` $(id); rm -rf / \n second line'


def fixture(name: str) -> str:
    """The recorded output without its provenance header (leading lines starting with '#')."""
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def full_job() -> dict:
    return {
        "executable": "/opt/app/bin/solve",
        "arguments": ["--input", "in put.dat", TRICKY],
        "environment": {"MODE": TRICKY, "THREADS": 4},
        "stdout_path": "out dir/stdout.txt",
        "resources": {
            "node_count": 2,
            "processes_per_node": 4,
            "cpu_cores_per_process": 2,
            "memory": 8 << 30,
        },
        "attributes": {
            "duration": "01:30:00",
            "queue_name": "batch",
            "account": "proj42",
            "custom_attributes": {"slurm.qos": "debug", "pbs.W": "umask=022", "lsf.app": "fluent"},
        },
    }


@pytest.mark.parametrize("kind", ["slurm", "pbspro", "lsf", "sge"])
def test_script_body_passes_arguments_and_environment_through_bash_unchanged(
    kind: str, tmp_path: Path
) -> None:
    adapter = get_adapter(kind)
    job = parse_job_description(
        {
            "executable": "/bin/sh",
            "arguments": ["-c", 'printf "%s|%s" "$MODE" "$1" > result.txt', "sh", TRICKY],
            "environment": {"MODE": TRICKY},
        }
    )
    script = adapter.submit_script(job, "rackflow__t", "run_id=manual__1", str(tmp_path))
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "result.txt").read_text() == f"{TRICKY}|{TRICKY}"


def test_script_exit_code_is_the_programs_and_post_launch_still_runs(tmp_path: Path) -> None:
    (tmp_path / "post.sh").write_text("echo post > post.txt\n")
    job = parse_job_description(
        {"executable": "/bin/sh", "arguments": ["-c", "exit 3"], "post_launch": "post.sh"}
    )
    script = SlurmAdapter().submit_script(job, "j", "", str(tmp_path))
    assert subprocess.run(["bash", "-c", script], timeout=10).returncode == 3
    assert (tmp_path / "post.txt").read_text() == "post\n"


def test_slurm_script_directives() -> None:
    script = SlurmAdapter().submit_script(
        parse_job_description(full_job()), "rackflow__a", "run 1", "/jobs/a"
    )
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=rackflow__a",
        '#SBATCH --comment="run 1"',
        '#SBATCH --chdir="/jobs/a"',
        '#SBATCH --output="/jobs/a/rackflow.out"',
        '#SBATCH --error="/jobs/a/rackflow.err"',
        "#SBATCH --export=NONE",  # inherit_environment (the default) never exports the submitter's
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks=8",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=2",
        f"#SBATCH --mem={4 << 20}K",
        "#SBATCH --time=0-01:30:00",
        '#SBATCH --partition="batch"',
        '#SBATCH --account="proj42"',
        '#SBATCH --qos="debug"',
    ]
    assert "export THREADS=4" in script
    assert f"export MODE={shlex.quote(TRICKY)}" in script
    assert "> 'out dir/stdout.txt'" in script


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "slurm",
            [
                "sbatch", "--parsable", "--job-name=rf-1", "--chdir=/jobs/rf-1", "--export=NONE",
                "--comment=run 1", "--output=/jobs/rf-1/rackflow.out", "--error=/jobs/rf-1/rackflow.err",
                "/jobs/rf-1/job.sh",
            ],
        ),
        (
            "pbspro",
            ["qsub", "-N", "rf-1", "-o", "/jobs/rf-1/rackflow.out", "-e", "/jobs/rf-1/rackflow.err",
             "/jobs/rf-1/job.sh"],
        ),
        (
            "lsf",
            ["sh", "-c", 'script=$1; shift; exec bsub "$@" < "$script"', "bsub", "/jobs/rf-1/job.sh",
             "-J", "rf-1", "-cwd", "/jobs/rf-1", "-env", "none", "-Jd", "run 1",
             "-o", "/jobs/rf-1/rackflow.out", "-e", "/jobs/rf-1/rackflow.err"],
        ),
        (
            "sge",
            ["qsub", "-terse", "-N", "rf-1", "-wd", "/jobs/rf-1", "-o", "/jobs/rf-1/rackflow.out",
             "-e", "/jobs/rf-1/rackflow.err", "/jobs/rf-1/job.sh"],
        ),
    ],
)  # fmt: skip
def test_managed_options_go_on_the_submit_command_line_before_the_script(kind: str, expected: list) -> None:
    """Command-line options override a script's own directives: a ready-made script cannot rename
    itself, move its output or working directory, or export an environment; none passes -V."""
    adapter = get_adapter(kind)
    argv = adapter.managed_submit_command(
        "/jobs/rf-1/job.sh", job_name="rf-1", workdir="/jobs/rf-1", comment="run 1"
    )
    assert argv == expected
    assert "-V" not in argv and not any(a.startswith("--export=ALL") for a in argv)
    without_output = adapter.managed_submit_command("/s/job.sh", job_name="rf-1", workdir="/s", output=False)
    assert not any("rackflow.out" in a for a in without_output)  # S3 scripts keep their own output


def test_lsf_managed_submit_passes_options_as_arguments_not_shell_text(tmp_path: Path) -> None:
    """``sh -c`` gets the script path and options as positional arguments: run it with a fake bsub."""
    fake = tmp_path / "bsub"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > args.txt\ncat > stdin.txt\n')
    fake.chmod(0o755)
    script = tmp_path / "job $(id).sh"
    script.write_text("#BSUB -J evil\ntrue\n")
    argv = LsfAdapter().managed_submit_command(str(script), job_name="rf-2", workdir=str(tmp_path))
    subprocess.run(argv, cwd=tmp_path, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=True, timeout=10)
    assert (tmp_path / "args.txt").read_text().split("\n")[:6] == [
        "-J",
        "rf-2",
        "-cwd",
        str(tmp_path),
        "-env",
        "none",
    ]
    assert (tmp_path / "stdin.txt").read_text() == "#BSUB -J evil\ntrue\n"


def test_no_directive_exports_the_submitters_environment() -> None:
    """``inherit_environment`` (true by default) means the account's login environment: a login shell,
    never ``--export=ALL``, ``-env all`` or ``-V``."""
    for inherit in (True, False):
        job = parse_job_description({"executable": "/bin/true", "inherit_environment": inherit})
        for kind in ("slurm", "pbspro", "lsf", "sge"):
            script = get_adapter(kind).submit_script(job, "rf-3", "", "/jobs/rf-3")
            assert script.splitlines()[0] == ("#!/bin/bash -l" if inherit else "#!/bin/bash")
            assert "--export=ALL" not in script and "-env all" not in script
            assert not any(line.endswith(" -V") for line in script.splitlines())


def test_pbs_lsf_sge_directives_carry_resources_and_walltime() -> None:
    job = parse_job_description(full_job())
    pbs = PbsProAdapter().submit_script(job, "rackflow__a", "c", "/jobs/a")
    assert "#PBS -l select=2:ncpus=8:mpiprocs=4:mem=4194304kb" in pbs
    assert "#PBS -l walltime=01:30:00" in pbs and "#PBS -A proj42" in pbs and "#PBS -W umask=022" in pbs
    lsf = LsfAdapter().submit_script(job, "rackflow__a", "run 1", "/jobs/a")
    for line in [
        '#BSUB -Jd "run 1"',
        "#BSUB -n 16",
        '#BSUB -R "span[ptile=8]"',
        "#BSUB -W 1:30",
        '#BSUB -app "fluent"',
    ]:
        assert line in lsf
    sge = SgeAdapter().submit_script(job, "rackflow__a", "c", "/jobs/a")
    assert "#$ -pe smp 16" in sge and "#$ -l h_rt=01:30:00" in sge and "#$ -wd /jobs/a" in sge


def test_script_refuses_unsafe_names_and_directive_text() -> None:
    adapter = SlurmAdapter()
    job = parse_job_description({"executable": "/bin/true"})
    with pytest.raises(ValueError, match="normalize_job_name"):
        adapter.submit_script(job, "a b\n#SBATCH --uid=0", "", "/jobs/a")
    with pytest.raises(ValueError, match="comment"):
        adapter.submit_script(job, "ok", 'x"\n#SBATCH --uid=0', "/jobs/a")
    with pytest.raises(ValueError, match="absolute"):
        adapter.submit_script(job, "ok", "", "relative/dir")


def test_normalize_job_name_is_deterministic_and_bounded() -> None:
    adapter = get_adapter("pbs")
    run_id = "rackflow__dag.task__scheduled__2024-01-01T00:00:00+00:00"
    assert adapter.normalize_job_name(run_id) == "rackflow__dag.task__scheduled__2024-01-01T00_00_00_00_00"
    long = "x" * 500
    assert adapter.normalize_job_name(long) == adapter.normalize_job_name(long)
    assert len(adapter.normalize_job_name(long)) == adapter.max_job_name
    assert adapter.normalize_job_name("42job").startswith("j42")


def test_get_adapter_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="known: lsf, pbspro, sge, slurm"):
        get_adapter("condor")


# -- Slurm, recorded from the real slurm-wlm 22.05 -------------------------------------------------------


def test_slurm_parses_submit_output() -> None:
    assert SlurmAdapter().parse_submit_output(fixture("slurm_sbatch_parsable.txt")) == "9"
    assert SlurmAdapter().parse_submit_output("12;cluster2\n") == "12"
    with pytest.raises(SchedulerError):
        SlurmAdapter().parse_submit_output("sbatch: error: Batch job submission failed\n")


def test_slurm_status_of_many_jobs_in_one_call_with_terminal_states_and_exit_codes() -> None:
    adapter = SlurmAdapter()
    assert adapter.status_command(["1", "2"])[:4] == ["squeue", "--noheader", "--states=all", "--jobs=1,2"]
    got = adapter.parse_status_output(fixture("slurm_squeue_status.txt"))
    summary = {jid: (s.state, s.native_state, s.exit_code, s.signal) for jid, s in got.items()}
    assert summary == {
        "1": (JobState.COMPLETED, "COMPLETED", 0, None),
        "6": (JobState.COMPLETED, "COMPLETED", 0, None),
        "2": (JobState.FAILED, "FAILED", 3, None),
        "8": (JobState.FAILED, "FAILED", 137, 9),
        "5": (JobState.FAILED, "TIMEOUT", 143, 15),
        "3": (JobState.CANCELED, "CANCELLED", 143, 15),
        "4": (JobState.CANCELED, "CANCELLED", 0, None),
        "9": (JobState.ACTIVE, "RUNNING", None, None),
        "10": (JobState.QUEUED, "PENDING", None, None),
    }
    assert got["2"].reason == "NonZeroExitCode" and got["2"].nodes == ("localhost",)
    assert got["10"].reason == "Resources" and got["10"].nodes == ()


def test_slurm_find_by_name_and_detail() -> None:
    adapter = SlurmAdapter()
    assert adapter.parse_find_by_name_output(fixture("slurm_squeue_by_name.txt"), "rackflow__ok") == [
        "1",
        "6",
    ]
    failed = adapter.parse_detail(fixture("slurm_scontrol_failed.txt"), "2")
    assert (failed.status.state, failed.exit_code, failed.nodes) == (JobState.FAILED, 3, ("localhost",))
    assert failed.wall_time == timedelta(0)
    running = adapter.parse_detail(fixture("slurm_scontrol_running.txt"), "9")
    assert running.status.state is JobState.ACTIVE and running.exit_code is None
    assert running.wall_time == timedelta(seconds=2)
    killed = adapter.parse_detail(fixture("slurm_scontrol_signal.txt"), "8")
    assert (killed.status.state, killed.status.signal) == (JobState.FAILED, 9)
    assert adapter.is_unknown_job_error("slurm_load_jobs error: Invalid job id specified")


def test_slurm_accounting_gives_final_state_exit_code_usage_and_times() -> None:
    adapter = SlurmAdapter()
    assert adapter.detail_command("7") == [
        "sacct", "--noheader", "--parsable2", "--allusers", "--jobs=7",
        "--format=JobID,State,ExitCode,Elapsed,TotalCPU,MaxRSS,NodeList,Submit,Start,End,Reason,JobName",
    ]  # fmt: skip
    got = parse_sacct(fixture("slurm_sacct_final.txt"))
    summary = {jid: (d.status.state, d.exit_code, d.status.signal, d.nodes) for jid, d in got.items()}
    assert summary == {
        "1": (JobState.COMPLETED, 0, None, ("localhost",)),
        "2": (JobState.FAILED, 3, None, ("localhost",)),
        "3": (JobState.FAILED, 137, 9, ("localhost",)),
        "4": (JobState.CANCELED, 0, None, ()),  # as Slurm says (0:0), like squeue
        "5": (JobState.COMPLETED, 0, None, ("localhost",)),
    }
    burn = got["1"]
    assert burn.cpu_time == timedelta(seconds=2.708)  # the job line's TotalCPU
    assert burn.max_memory == 219728 * 1024  # the .batch step's MaxRSS
    assert burn.wall_time == timedelta(seconds=3)
    assert burn.submitted_at == datetime(2026, 12, 1, 12, 44, 32)
    assert (burn.started_at, burn.ended_at) == (
        datetime(2026, 12, 1, 12, 44, 34),
        datetime(2026, 12, 1, 12, 44, 37),
    )
    assert got["4"].status.native_state == "CANCELLED"  # "CANCELLED by 0"
    assert got["5"].status.name == "rackflow|pipe name"
    assert got["5"].max_memory == 10824 * 1024  # the largest of the batch and srun steps
    assert got["2"].max_memory is None  # too short for one sample
    assert adapter.parse_detail(fixture("slurm_sacct_final.txt"), "2") == got["2"]
    with pytest.raises(SchedulerError, match="no job 9"):
        adapter.parse_detail(fixture("slurm_sacct_final.txt"), "9")


def test_slurm_accounting_while_it_lags_reports_jobs_not_final() -> None:
    got = parse_sacct(fixture("slurm_sacct_lagging.txt"))
    assert {jid: d.status.state for jid, d in got.items()} == {
        "1": JobState.ACTIVE,
        "2": JobState.FAILED,
        "3": JobState.QUEUED,
        "4": JobState.CANCELED,
        "5": JobState.QUEUED,
    }
    assert (got["1"].exit_code, got["1"].ended_at, got["1"].max_memory) == (None, None, None)
    assert got["3"].started_at is None and got["3"].nodes == ()


def test_slurm_without_accounting_storage_falls_back_to_the_controller() -> None:
    adapter = SlurmAdapter()
    said = "Slurm accounting storage is disabled\n"  # sacct's stderr (exit 1) with no slurmdbd, recorded
    assert adapter.fallback_detail_command("2", said) == ["scontrol", "show", "job", "--oneliner", "2"]
    assert adapter.fallback_detail_command("2", "sacct: error: Problem talking to the database") is None
    failed = adapter.parse_detail(fixture("slurm_scontrol_failed.txt"), "2")
    assert failed.cpu_time is None and failed.ended_at is not None


def test_slurm_time_and_memory_formats() -> None:
    assert parse_clock("00:02.708") == timedelta(seconds=2.708)
    assert parse_clock("01:02:03") == timedelta(hours=1, minutes=2, seconds=3)
    assert parse_clock("2-03:04:05") == timedelta(days=2, hours=3, minutes=4, seconds=5)
    assert parse_clock("12:34") == timedelta(minutes=12, seconds=34)
    for word in ("", "INVALID", "UNLIMITED", "Partition_Limit"):
        assert parse_clock(word) is None
    assert parse_slurm_memory("219728K") == 219728 * 1024
    assert parse_slurm_memory("1.50G") == int(1.5 * (1 << 30))
    assert parse_slurm_memory("512M") == 512 << 20
    assert parse_slurm_memory("0") == 0
    assert parse_slurm_memory("") is None
    assert parse_slurm_timestamp("2026-12-01T12:44:32") == datetime(2026, 12, 1, 12, 44, 32)
    assert parse_slurm_timestamp("Unknown") is None and parse_slurm_timestamp("None") is None


def test_slurm_hostlists_expand() -> None:
    assert expand_hostlist("n[01-03,07],login") == ("n01", "n02", "n03", "n07", "login")
    assert expand_hostlist("") == ()


# -- PBS Pro, LSF, Grid Engine: documented formats --------------------------------------------------------


def test_pbspro_commands_and_parsers() -> None:
    adapter = PbsProAdapter()
    assert adapter.parse_submit_output("101.pbs-head\n") == "101.pbs-head"
    assert adapter.status_command(["101.pbs-head", "102.pbs-head"]) == [
        "qstat", "-f", "-F", "json", "-x", "101.pbs-head", "102.pbs-head"
    ]  # fmt: skip
    got = adapter.parse_status_output(fixture("pbspro_qstat_status.json.txt"))
    summary = {jid: (s.state, s.exit_code, s.nodes) for jid, s in got.items()}
    assert summary == {
        "101.pbs-head": (JobState.COMPLETED, 0, ("node01",)),
        "102.pbs-head": (JobState.FAILED, 3, ("node01", "node02")),
        "103.pbs-head": (JobState.CANCELED, 143, ("node02",)),
        "104.pbs-head": (JobState.ACTIVE, None, ("node03",)),
        "105.pbs-head": (JobState.QUEUED, None, ()),
    }
    assert got["105.pbs-head"].reason == "Not Running: Insufficient amount of resource: ncpus"
    detail = adapter.parse_detail(fixture("pbspro_qstat_status.json.txt"), "101.pbs-head")
    assert (detail.cpu_time, detail.wall_time, detail.max_memory) == (
        timedelta(seconds=1),
        timedelta(seconds=2),
        5200 * 1024,
    )
    assert adapter.find_by_name_command("rackflow__ok") == ["qselect", "-x", "-N", "rackflow__ok"]
    assert adapter.parse_find_by_name_output("12.pbs-head\n9.pbs-head\n", "x") == [
        "9.pbs-head",
        "12.pbs-head",
    ]
    assert adapter.is_unknown_job_error("qstat: Unknown Job Id 99.pbs-head")


def test_lsf_commands_and_parsers() -> None:
    adapter = LsfAdapter()
    assert adapter.submit_command("/jobs/a b/job.sh") == [
        "sh",
        "-c",
        'exec bsub < "$1"',
        "bsub",
        "/jobs/a b/job.sh",
    ]
    assert adapter.parse_submit_output("Job <2001> is submitted to default queue <normal>.\n") == "2001"
    got = adapter.parse_status_output(fixture("lsf_bjobs_status.json.txt"))
    summary = {jid: (s.state, s.exit_code, s.nodes) for jid, s in got.items()}
    assert summary == {
        "2001": (JobState.COMPLETED, 0, ("hostA",)),
        "2002": (JobState.FAILED, 3, ("hostA", "hostB")),
        "2003": (JobState.CANCELED, 130, ("hostB",)),
        "2004": (JobState.ACTIVE, None, ("hostC",)),
        "2005": (JobState.QUEUED, None, ()),
    }
    assert "2999" not in got  # the ERROR record of an unknown id
    assert adapter.parse_find_by_name_output(fixture("lsf_bjobs_status.json.txt"), "rackflow__fail") == [
        "2002"
    ]
    detail = adapter.parse_detail(fixture("lsf_bjobs_detail.json.txt"), "2002")
    assert (detail.exit_code, detail.cpu_time, detail.wall_time, detail.max_memory) == (
        3,
        timedelta(seconds=1.5),
        timedelta(seconds=12),
        2 << 20,
    )


def test_sge_commands_and_parsers() -> None:
    adapter = SgeAdapter()
    assert adapter.forgets_finished_jobs
    assert adapter.parse_submit_output("45\n") == "45"
    assert adapter.parse_submit_output("46.1-10:1\n") == "46"
    got = adapter.parse_status_output(fixture("sge_qstat.xml.txt"))
    assert {jid: (s.state, s.nodes) for jid, s in got.items()} == {
        "42": (JobState.ACTIVE, ("node01.example.com",)),
        "43": (JobState.QUEUED, ()),
        "44": (JobState.FAILED, ()),
    }
    assert adapter.parse_find_by_name_output(fixture("sge_qstat.xml.txt"), "rackflow__queued") == ["43"]
    detail = adapter.parse_detail(fixture("sge_qacct.txt"), "45")
    assert (detail.status.state, detail.exit_code, detail.nodes) == (
        JobState.FAILED,
        3,
        ("node01.example.com",),
    )
    assert (detail.cpu_time, detail.wall_time) == (timedelta(seconds=1.5), timedelta(seconds=12))
    assert detail.max_memory == int(19.949 * (1 << 20))
    assert adapter.parse_finished_by_name_output(fixture("sge_qacct.txt"), "rackflow__fail") == ["45"]


def test_pbs_and_lsf_accounting_gives_exit_code_nodes_and_usage_of_a_failed_job() -> None:
    """What the job API shows for PBS and LSF jobs (Grid Engine's qacct: test_sge_commands_and_parsers)."""
    pbs = PbsProAdapter().parse_detail(fixture("pbspro_qstat_status.json.txt"), "102.pbs-head")
    assert (pbs.status.state, pbs.exit_code, pbs.nodes) == (JobState.FAILED, 3, ("node01", "node02"))
    assert (pbs.cpu_time, pbs.wall_time, pbs.max_memory) == (timedelta(0), timedelta(seconds=1), 0)
    lsf = LsfAdapter().parse_detail(fixture("lsf_bjobs_detail.json.txt"), "2002")
    assert (lsf.status.state, lsf.nodes) == (JobState.FAILED, ("hostA", "hostB"))


def test_status_results_serialise_to_json_for_triggers() -> None:
    status = SlurmAdapter().parse_status_output(fixture("slurm_squeue_status.txt"))["2"]
    assert type(status).model_validate_json(status.model_dump_json()) == status
