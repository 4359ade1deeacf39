"""The TES task -> job description mapping (pure), and the generated script run by a real bash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rackflow.core.tes import (
    SCRIPT_DRIVER,
    TesState,
    TesTaskError,
    executor_logs,
    executor_script,
    executor_sections,
    parse_task,
    tes_state,
    to_job_description,
)

TASK = {
    "name": "two steps",
    "inputs": [
        {"url": "s3://rackflow-jobs/in.txt", "path": "/data/in.txt"},
        {"content": "inline\n", "path": "/data/inline.txt"},
    ],
    "outputs": [{"url": "s3://rackflow-results/out.txt", "path": "/data/out.txt"}],
    "executors": [
        {"image": "alpine", "command": ["cat", "data/in.txt", "data/inline.txt"], "stdout": "/data/cat.txt"},
        {"image": "alpine", "command": ["sh", "-c", 'echo "$GREETING" > data/out.txt'],
         "env": {"GREETING": "hi"}},
    ],
    "resources": {"cpu_cores": 2, "ram_gb": 0.5, "disk_gb": 1, "zones": ["debug"],
                  "backend_parameters": {"slurm.qos": "normal", "duration": "600"}},
}  # fmt: skip


def test_task_maps_to_one_job_with_staging_resources_and_attributes() -> None:
    job = to_job_description(parse_task(TASK)).to_dict()
    assert job["executable"] == "/bin/bash" and job["arguments"][:3] == ["-c", SCRIPT_DRIVER, "rackflow-tes"]
    assert job["stage_in"] == [{"source": "s3://rackflow-jobs/in.txt", "target": "data/in.txt"}]
    assert job["stage_out"] == [{"source": "data/out.txt", "target": "s3://rackflow-results/out.txt"}]
    assert job["resources"] == {"process_count": 1, "cpu_cores_per_process": 2, "memory": 512 << 20}
    assert job["attributes"]["queue_name"] == "debug"
    assert job["attributes"]["duration"] == 600
    assert job["attributes"]["custom_attributes"] == {"slurm.qos": "normal", "slurm.tmp": "1024M"}
    assert job["name"] == "two steps"


def test_generated_script_runs_executors_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("staged\n")
    script = executor_script(parse_task(TASK))
    done = subprocess.run(["/bin/bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "cat.txt").read_text() == "staged\ninline\n"
    assert (tmp_path / "data" / "out.txt").read_text() == "hi\n"
    assert [(tmp_path / ".tes" / f"exit.{i}").read_text() for i in (0, 1)] == ["0\n", "0\n"]

    failing = parse_task(
        {"executors": [
            {"image": "a", "command": ["sh", "-c", "exit 4"], "ignore_error": True},
            {"image": "a", "command": ["sh", "-c", "exit 3"]},
            {"image": "a", "command": ["touch", "never"]},
        ]}
    )  # fmt: skip
    done = subprocess.run(["/bin/bash", "-c", executor_script(failing)], cwd=tmp_path)
    assert done.returncode == 3
    assert (tmp_path / ".tes" / "exit.0").read_text() == "4\n"
    assert not (tmp_path / "never").exists()


def test_container_runtime_binds_the_task_paths_into_the_image() -> None:
    script = executor_script(parse_task(TASK), "apptainer")
    assert 'exec apptainer exec --bind "$top"/data:/data docker://alpine cat data/in.txt' in script


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"executors": []}, "executors"),
        ({}, "executors"),
        ({"executors": [{"image": "a", "command": ["x"]}], "bogus": 1}, "bogus"),
        ({"executors": [{"image": "a", "command": []}]}, "executors[0].command"),
        ({"executors": [{"image": "a", "command": ["x"], "stdout": "rel"}]}, "executors[0].stdout"),
        ({"executors": [{"image": "a", "command": ["x"]}], "inputs": [{"path": "/a"}]}, "inputs[0]"),
        ({"executors": [{"image": "a", "command": ["x"]}],
          "outputs": [{"url": "s3://b/k", "path": "/a/../b"}]}, "outputs[0].path"),
        ({"executors": [{"image": "a", "command": ["x"]}], "inputs": [{"url": "ftp://h/x", "path": "/a"}]},
         "inputs[0].url"),
        ({"executors": [{"image": "a", "command": ["x"]}],
          "resources": {"backend_parameters": {"slurm.output": "/tmp/x"}}}, "resources.backend_parameters"),
        ({"executors": [{"image": "a", "command": ["x"]}],
          "resources": {"backend_parameters": {"nope": "1"}, "backend_parameters_strict": True}},
         "resources.backend_parameters.nope"),
        ({"executors": [{"image": "a", "command": ["x" * 4000, "y"]}] * 32,
          "inputs": [{"path": f"/in/{i}", "content": "z" * 65536} for i in range(64)]}, "executors"),
    ],
)  # fmt: skip
def test_invalid_tasks_name_the_tes_field(task: dict, field: str) -> None:
    with pytest.raises(TesTaskError) as exc:
        to_job_description(parse_task(task))
    assert any(p.startswith(field) for p in exc.value.problems), exc.value.problems


def test_states_map_onto_the_eleven_tes_states() -> None:
    def state(
        job: str | None, run: str | None, code: int | None = None, sub: bool = True, term: bool = False
    ) -> TesState:
        return tes_state(
            job_state=job, run_state=run, exit_code=code, submitted=sub, terminate_requested=term
        )

    assert state(None, "queued") == TesState.QUEUED
    assert state("QUEUED", "running", sub=False) == TesState.INITIALIZING
    assert state("QUEUED", "running") == TesState.QUEUED
    assert state("ACTIVE", "running") == TesState.RUNNING
    assert state("COMPLETED", "running") == TesState.RUNNING  # staging out
    assert state("COMPLETED", "success") == TesState.COMPLETE
    assert state("COMPLETED", "failed") == TesState.SYSTEM_ERROR
    assert state("FAILED", "failed", 3) == TesState.EXECUTOR_ERROR
    assert state("FAILED", "failed", None, sub=False) == TesState.SYSTEM_ERROR
    assert state("ACTIVE", "running", term=True) == TesState.CANCELING
    assert state("CANCELED", "failed", term=True) == TesState.CANCELED
    assert state("ACTIVE", "failed", term=True) == TesState.CANCELED


def test_executor_logs_report_what_the_exit_code_tells() -> None:
    task = parse_task(TASK)
    assert [log.exit_code for log in executor_logs(task, TesState.COMPLETE, 0)] == [0, 0]
    assert [log.exit_code for log in executor_logs(task, TesState.EXECUTOR_ERROR, 3)] == [3]
    assert executor_logs(task, TesState.QUEUED, None) == []


def test_each_executors_output_and_exit_code_are_read_back_from_the_job_output(tmp_path: Path) -> None:
    task = parse_task(
        {"executors": [
            {"image": "a", "command": ["sh", "-c", "echo one; echo oops >&2"]},
            {"image": "a", "command": ["printf", "no newline"], "stdout": "/out/two.txt"},
            {"image": "a", "command": ["sh", "-c", "echo MK 0 9 99; exit 3"]},
        ]}
    )  # fmt: skip
    done = subprocess.run(
        ["/bin/bash", "-c", executor_script(task, marker="MK")], cwd=tmp_path, capture_output=True
    )
    assert done.returncode == 3
    assert (tmp_path / "out" / "two.txt").read_text() == "no newline"  # its own stdout path as well
    sections = executor_sections(done.stdout, done.stderr, "MK")
    assert {i: (s.exit_code, s.stdout, s.stderr) for i, s in sections.items()} == {
        0: (0, "one\n", "oops\n"),
        1: (0, "no newline", ""),
        2: (3, "MK 0 9 99\n", ""),  # a header-like line inside an executor's output is its output
    }
    logs = executor_logs(task, TesState.EXECUTOR_ERROR, 3, sections)
    assert [(log.exit_code, log.stdout) for log in logs] == [
        (0, "one\n"),
        (0, "no newline"),
        (3, "MK 0 9 99\n"),
    ]
    # A kept tail that lost the first header still yields the later sections.
    assert sorted(executor_sections(done.stdout[3:], None, "MK")) == [1, 2]


def test_a_long_script_travels_in_chunks_and_runs_as_one(tmp_path: Path) -> None:
    content = "".join(f"line {i}\n" for i in range(3000))  # ~25 KB inline, several argument chunks
    task = parse_task(
        {"inputs": [{"path": "/data/big.txt", "content": content}],
         "executors": [{"image": "a", "command": ["wc", "-l", "data/big.txt"]}]}
    )  # fmt: skip
    job = to_job_description(task)
    assert len(job.arguments) > 5
    done = subprocess.run(["/bin/bash", *job.arguments], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "big.txt").read_text() == content
    assert "3000 data/big.txt" in done.stdout


def test_bwrap_runs_the_commands_on_the_node_with_the_task_paths_where_it_names_them(tmp_path: Path) -> None:
    """Snakemake's TES plugin names ``/tmp`` paths: under ``bwrap`` they are the job directory's."""
    task = parse_task(
        {
            "inputs": [{"content": "echo from-script > /tmp/out.txt; pwd\n", "path": "/tmp/run.sh"}],
            "outputs": [{"url": "s3://rackflow-results/out.txt", "path": "/tmp/out.txt"}],
            "executors": [
                {"image": "snakemake/snakemake", "command": ["/bin/bash", "/tmp/run.sh"], "workdir": "/tmp"},
                {"image": "alpine", "command": ["sh", "-c", "cat /tmp/out.txt; pwd; ls /usr/bin/env"]},
            ],
        }
    )
    script = executor_script(task, "bwrap", marker="m")
    done = subprocess.run(["/bin/bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tmp" / "out.txt").read_text() == "from-script\n"
    assert not Path("/tmp/out.txt").exists() or Path("/tmp/out.txt").read_text() != "from-script\n"
    sections = executor_sections(done.stdout.encode(), done.stderr.encode(), "m")
    assert sections[0].stdout == "/tmp\n"
    # Without a workdir the executor starts in the job directory; the node's own /usr is there.
    assert sections[1].stdout == f"from-script\n{tmp_path}\n/usr/bin/env\n"
