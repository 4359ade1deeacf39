"""Jobnet definitions to DAGs without running them: YAML = Python API, and bad files reported by name."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name: good
params:
  version: {type: string, default: "1.0"}
servers:
  web: {ssh_conn_id: ssh_fleet}
steps:
  - id: install
    server: web
    command: echo install "$RACKFLOW_PARAM_VERSION"
    timeout: 30
    revert: {command: echo uninstall}
  - - id: conf-a
      server: web
      command: echo a
    - id: conf-b
      server: local
      command: echo b
      retries: 2
      revert: {command: echo unb}
"""


def _shape(dag: Any) -> dict[str, Any]:
    return {
        task.task_id: (
            sorted(task.upstream_task_ids),
            str(task.trigger_rule),
            getattr(task, "command", None),
            getattr(task, "ssh_conn_id", None),
            getattr(task, "step_timeout", None),
            task.retries,
            getattr(task, "revert_of", None),
        )
        for task in dag.tasks
    }


def test_yaml_and_python_api_give_the_same_dag(tmp_path: Path) -> None:
    from rackflow.core.jobnet import Jobnet, ParamSpec, Revert, SshServer, Step, load_jobnets
    from rackflow.dag_factories.jobnet import build_jobnet_dag, jobnet_dag

    (tmp_path / "good.yaml").write_text(GOOD)
    from_yaml = build_jobnet_dag(load_jobnets(tmp_path), "good")
    from_python = jobnet_dag(
        Jobnet(
            name="good",
            params={"version": ParamSpec(type="string", default="1.0")},
            servers={"web": SshServer(ssh_conn_id="ssh_fleet")},
        )
        .then(
            Step(
                id="install",
                server="web",
                command='echo install "$RACKFLOW_PARAM_VERSION"',
                timeout=30,
                revert=Revert(command="echo uninstall"),
            )
        )
        .then(
            [
                Step(id="conf-a", server="web", command="echo a"),
                Step(
                    id="conf-b",
                    server="local",
                    command="echo b",
                    retries=2,
                    revert=Revert(command="echo unb"),
                ),
            ]
        )
    )
    assert from_yaml.dag_id == from_python.dag_id == "jobnet_good"
    assert _shape(from_yaml) == _shape(from_python)
    assert set(from_yaml.params) == set(from_python.params) == {"version"}
    assert _shape(from_yaml)["parallel_2.conf-b"][3] is None  # local: no SSH
    assert _shape(from_yaml)["parallel_2.conf-b"][5] == 2


BAD_KEY = """
name: bad-key
servers:
  web: {ssh_conn_id: ssh_fleet}
steps:
  - id: install
    server: web
    command: echo hi
    timout: 30
"""

BAD_SERVER = """
name: bad-server
servers:
  web: {ssh_conn_id: ssh_fleet}
steps:
  - id: install
    server: web
    command: echo hi
  - id: configure
    server: db
    command: echo hi
"""


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    for name, text in {"good.yaml": GOOD, "bad-key.yaml": BAD_KEY, "bad-server.yaml": BAD_SERVER}.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_bad_files_are_rejected_naming_file_line_and_step_while_good_ones_still_build(
    mixed_folder: Path,
) -> None:
    from rackflow.dag_factories.jobnet import JobnetFolderError, build_jobnet_dags, raise_jobnet_errors

    assert list(build_jobnet_dags(mixed_folder)) == ["jobnet_good"]
    with pytest.raises(JobnetFolderError) as caught:
        raise_jobnet_errors(mixed_folder)
    message = str(caught.value)
    assert (
        f"{mixed_folder / 'bad-key.yaml'}:9: steps[0].timout: unknown key 'timout' (did you mean 'timeout'?)"
        in (message)
    )
    assert (
        f"{mixed_folder / 'bad-server.yaml'}:10: steps[1].server: step 'configure': server 'db' " in message
    )


def test_bad_jobnet_file_is_an_airflow_import_error_and_the_good_dags_still_load(
    mixed_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__RACKFLOW__JOBNETS_FOLDER", str(mixed_folder))
    good = DagBag(str(REPO / "dags" / "rackflow_jobnets.py"))
    assert "jobnet_good" in good.dags and not good.import_errors
    errors = DagBag(str(REPO / "dags" / "rackflow_jobnet_errors.py")).import_errors
    (message,) = errors.values()
    assert "bad-key.yaml:9" in message and "bad-server.yaml:10" in message and "'configure'" in message
