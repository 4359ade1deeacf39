"""Jobnet DAGs run against the real loopback sshd: order, parallel groups, reverts, report, retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dag_factories.jobnet_support import jobnet_dag as _dag
from tests.dag_factories.jobnet_support import library_from as _library
from tests.dag_factories.jobnet_support import report as _report
from tests.dag_factories.jobnet_support import run_dag, task_states

pytestmark = pytest.mark.usefixtures("airflow_db", "devfleet")


# a, [b, c], x (no revert), d (fails). Each action appends one line to the param `log`.
FAILING = """
    name: {name}
    params:
      log: {{type: string}}
    servers:
      box: {{ssh_conn_id: ssh_fleet}}
    steps:
      - id: a
        server: box
        command: echo "run a" >> "$RACKFLOW_PARAM_LOG"
        revert: {{command: 'echo "revert a" >> "$RACKFLOW_PARAM_LOG"'}}
      - - id: b
          server: box
          command: echo "run b" >> "$RACKFLOW_PARAM_LOG"
          revert: {{command: 'echo "revert b" >> "$RACKFLOW_PARAM_LOG"'}}
        - id: c
          server: box
          command: echo "run c" >> "$RACKFLOW_PARAM_LOG"
          revert: {{command: 'echo "revert c" >> "$RACKFLOW_PARAM_LOG"'}}
      - id: x
        server: box
        command: echo "run x" >> "$RACKFLOW_PARAM_LOG"
      - id: d
        server: box
        command: echo "run d" >> "$RACKFLOW_PARAM_LOG"; echo "d is broken" >&2; exit 5
        revert: {{command: 'echo "revert d" >> "$RACKFLOW_PARAM_LOG"'}}
"""


def test_failed_step_reverts_succeeded_steps_in_reverse_order_and_fails_the_run(tmp_path: Path) -> None:
    library = _library(tmp_path, FAILING.format(name="revert-order"))
    log = tmp_path / "actions.log"
    dag_run = _dag(library, "revert-order", "jobnet_test_revert_order")
    result = run_dag(dag_run, {"log": str(log)})

    assert str(result.state) == "failed"
    lines = log.read_text().splitlines()
    assert (
        lines[0] == "run a" and sorted(lines[1:3]) == ["run b", "run c"] and lines[3:5] == ["run x", "run d"]
    )
    # c and b undone together (either order), then a; x has no revert; d failed so its revert never runs.
    assert sorted(lines[5:7]) == ["revert b", "revert c"] and lines[7:] == ["revert a"]

    states = task_states(result)
    assert states["d"] == "failed" and states["revert.d"] == "skipped"
    assert states["revert.a"] == states["revert.parallel_2.b"] == states["revert.parallel_2.c"] == "success"
    assert states["report"] == "failed"

    report = _report(result, library)
    rows = {row["step_id"]: row for row in report["steps"]}
    assert [row["step_id"] for row in report["steps"]] == ["a", "b", "c", "x", "d"]
    assert {k: rows[k]["state"] for k in rows} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "x": "succeeded",
        "d": "failed",
    }
    assert {k: rows[k]["reverted"] for k in rows} == {
        "a": "yes",
        "b": "yes",
        "c": "yes",
        "x": "none",
        "d": "no",
    }
    assert rows["d"]["exit_code"] == 5 and "d is broken" in rows["d"]["output_tail"]
    assert rows["a"]["exit_code"] == 0 and rows["a"]["server"] == "box"
    assert rows["a"]["duration_s"] is not None
    assert [sorted(group) for group in report["revert_order"]] == [["b", "c"], ["a"]]


def test_all_steps_succeeding_skips_every_revert_and_succeeds(tmp_path: Path) -> None:
    text = FAILING.format(name="all-good").replace("exit 5", "true")
    library = _library(tmp_path, text)
    log = tmp_path / "actions.log"
    result = run_dag(_dag(library, "all-good", "jobnet_test_all_good"), {"log": str(log)})

    assert str(result.state) == "success"
    assert not [line for line in log.read_text().splitlines() if line.startswith("revert")]
    states = task_states(result)
    assert {states[t] for t in states if t.startswith("revert.")} == {"skipped"}
    assert states["report"] == "success"


def test_parallel_group_members_share_upstreams_and_do_not_wait_for_each_other(tmp_path: Path) -> None:
    # Concurrency itself is proven end to end (tests/plugins/test_jobnet_e2e.py: three install steps
    # running at once on the server); here: the DAG gives Airflow nothing that would serialize them.
    library = _library(tmp_path, FAILING.format(name="shape"))
    dag = _dag(library, "shape", "jobnet_test_shape")
    b, c = dag.get_task("parallel_2.b"), dag.get_task("parallel_2.c")
    assert b.upstream_task_ids == c.upstream_task_ids == {"a"}
    assert "parallel_2.c" not in b.upstream_task_ids | b.downstream_task_ids
    assert dag.get_task("x").upstream_task_ids == {"parallel_2.b", "parallel_2.c"}
    assert dag.get_task("revert.a").upstream_task_ids == {"revert.parallel_2.b", "revert.parallel_2.c"}
    assert dag.get_task("revert_plan").upstream_task_ids == {"a", "parallel_2.b", "parallel_2.c", "x", "d"}
    assert "revert.x" not in dag.task_dict
    assert "log" in dag.params and "jobnet:shape" in dag.tags


def test_step_retries_until_it_succeeds(tmp_path: Path) -> None:
    text = """
    name: flaky
    params:
      counter: {type: string}
    servers:
      box: {ssh_conn_id: ssh_fleet}
    steps:
      - id: flaky
        server: box
        retries: 2
        command: |
          n=$(cat "$RACKFLOW_PARAM_COUNTER" 2>/dev/null || echo 0); n=$((n+1))
          echo $n > "$RACKFLOW_PARAM_COUNTER"
          [ $n -ge 3 ] || { echo "attempt $n fails"; exit 1; }
          echo "attempt $n works"
    """
    library = _library(tmp_path, text)
    counter = tmp_path / "counter"
    result = run_dag(_dag(library, "flaky", "jobnet_test_flaky"), {"counter": str(counter)})
    assert str(result.state) == "success"
    assert counter.read_text().strip() == "3"
    ti = next(ti for ti in result.get_task_instances() if ti.task_id == "flaky")
    assert ti.try_number == 3


def test_a_failed_revert_is_reported_and_the_earlier_reverts_still_run(tmp_path: Path) -> None:
    """b succeeds, c fails, b's revert exits non-zero: a is still reverted (an operator wants the servers
    back where they were as far as possible), and the report shows b's revert failed, with its output."""
    text = """
    name: bad-revert
    params:
      log: {type: string}
    servers:
      box: {ssh_conn_id: ssh_fleet}
    steps:
      - id: a
        server: box
        command: echo "run a" >> "$RACKFLOW_PARAM_LOG"
        revert: {command: 'echo "revert a" >> "$RACKFLOW_PARAM_LOG"'}
      - id: b
        server: box
        command: echo "run b" >> "$RACKFLOW_PARAM_LOG"
        revert:
          command: echo "revert b" >> "$RACKFLOW_PARAM_LOG"; echo "cannot undo b" >&2; exit 7
      - id: c
        server: box
        command: echo "run c" >> "$RACKFLOW_PARAM_LOG"; exit 3
        revert: {command: 'echo "revert c" >> "$RACKFLOW_PARAM_LOG"'}
    """
    library = _library(tmp_path, text)
    log = tmp_path / "actions.log"
    result = run_dag(_dag(library, "bad-revert", "jobnet_test_bad_revert"), {"log": str(log)})

    assert str(result.state) == "failed"
    assert log.read_text().splitlines() == ["run a", "run b", "run c", "revert b", "revert a"]
    states = task_states(result)
    assert states["c"] == "failed" and states["revert.c"] == "skipped"
    assert states["revert.b"] == "failed" and states["revert.a"] == "success"
    assert states["report"] == "failed"

    rows = {row["step_id"]: row for row in _report(result, library)["steps"]}
    assert {k: rows[k]["state"] for k in rows} == {"a": "succeeded", "b": "succeeded", "c": "failed"}
    assert {k: rows[k]["reverted"] for k in rows} == {"a": "yes", "b": "failed", "c": "no"}
    assert rows["b"]["revert_exit_code"] == 7
    assert "cannot undo b" in rows["b"]["revert_output_tail"]
    assert rows["b"]["revert_task_state"] == "failed"


def test_param_defaults_reach_the_steps_and_every_task_holds_the_dags_params(tmp_path: Path) -> None:
    # The jobnet DAGs get their params after their tasks are built (one shared copy, not Airflow's
    # deep copy per task): a run without conf must still see the defaults, a run with conf its values.
    log = tmp_path / "defaults.log"
    library = _library(
        tmp_path,
        f"""
        name: defaults
        params:
          log: {{type: string, default: "{log}"}}
          word: {{type: string, default: from-default}}
        servers:
          box: {{ssh_conn_id: ssh_fleet}}
        steps:
          - id: a
            server: box
            command: echo "a $RACKFLOW_PARAM_WORD" >> "$RACKFLOW_PARAM_LOG"
          - - id: b
              server: box
              command: echo "b $RACKFLOW_PARAM_WORD" >> "$RACKFLOW_PARAM_LOG"
            - id: c
              server: box
              command: echo "c $RACKFLOW_PARAM_WORD" >> "$RACKFLOW_PARAM_LOG"
        """,
    )
    dag = _dag(library, "defaults", "jobnet_test_param_defaults")
    assert dag.params.dump() == {"log": str(log), "word": "from-default"}
    assert {task.task_id: task.params.dump() for task in dag.tasks} == {
        task.task_id: {"log": str(log), "word": "from-default"} for task in dag.tasks
    }
    assert str(run_dag(dag).state) == "success"
    assert str(run_dag(dag, {"word": "from-conf"}).state) == "success"
    lines = log.read_text().splitlines()
    assert lines[0] == "a from-default" and sorted(lines[1:3]) == ["b from-default", "c from-default"]
    assert lines[3] == "a from-conf" and sorted(lines[4:6]) == ["b from-conf", "c from-conf"]
