"""The hadoop-cluster example fails its smoke test on purpose: everything is undone in reverse order,
and the run report is served by the authenticated JSON route (tasks ran over the real loopback sshd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DAG_ID = "jobnet_hadoop-cluster"


@pytest.fixture(scope="module")
def failed_hadoop_run(airflow_db: Path, devfleet: object, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from rackflow import settings
    from rackflow.dag_factories.jobnet import build_jobnet_dags

    root = tmp_path_factory.mktemp("hadoop") / "root"
    dag = build_jobnet_dags(settings.jobnets_folder())[DAG_ID]
    dag_run = dag.test(run_conf={"root": str(root), "fail_smoke_test": True, "daemon_seconds": 120})
    return dag_run, root


def test_report_route_needs_a_token(api: Any) -> None:
    assert api.get(f"/rackflow/api/jobnets/{DAG_ID}/runs/x/report").status_code == 401


def test_report_route_rejects_dags_that_are_not_jobnets(api: Any, auth: Any, failed_hadoop_run: Any) -> None:
    resp = api.get("/rackflow/api/jobnets/not_a_jobnet/runs/x/report", headers=auth("admin"))
    assert resp.status_code == 404


def test_failed_smoke_test_reverts_the_whole_cluster_and_the_report_shows_it(
    api: Any, auth: Any, failed_hadoop_run: Any
) -> None:
    dag_run, root = failed_hadoop_run
    assert str(dag_run.state) == "failed"
    # Every node folder was created by the steps and removed again by the reverts.
    assert not any(root.glob("*/opt")) and not any(root.glob("*/etc")) and not any(root.glob("*/run"))

    resp = api.get(f"/rackflow/api/jobnets/{DAG_ID}/runs/{dag_run.run_id}/report", headers=auth("victor"))
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["jobnet"] == "hadoop-cluster" and report["run_state"] == "failed"
    rows = {row["step_id"]: row for row in report["steps"]}
    assert rows["smoke-test"]["state"] == "failed" and rows["smoke-test"]["exit_code"] == 1
    assert "failing on purpose" in rows["smoke-test"]["output_tail"]
    assert rows["smoke-test"]["reverted"] == "none"
    assert {row["reverted"] for name, row in rows.items() if name != "smoke-test"} == {"yes"}
    assert {row["state"] for name, row in rows.items() if name != "smoke-test"} == {"succeeded"}
    assert rows["install-java-nn"]["server"] == "nn" and rows["install-java-nn"]["exit_code"] == 0
    order = [sorted(group) for group in report["revert_order"]]
    assert order == [
        ["start-datanode-dn1", "start-datanode-dn2", "start-namenode"],
        ["format-namenode"],
        ["write-config-dn1", "write-config-dn2", "write-config-nn"],
        ["install-java-dn1", "install-java-dn2", "install-java-nn"],
    ]
    # The reverts really ran in that order: each group finished before the next one's first revert.
    finished = {name: row["revert_finished_at"] for name, row in rows.items() if row["revert_finished_at"]}
    for earlier, later in zip(report["revert_order"], report["revert_order"][1:], strict=False):
        assert max(finished[s] for s in earlier) <= min(finished[s] for s in later)


def test_report_gives_each_step_its_stage_and_times_and_the_reverts_run_after_the_failure(
    api: Any, auth: Any, failed_hadoop_run: Any
) -> None:
    from datetime import datetime

    dag_run, _ = failed_hadoop_run
    report = api.get(
        f"/rackflow/api/jobnets/{DAG_ID}/runs/{dag_run.run_id}/report", headers=auth("victor")
    ).json()
    assert report["stages"][0] == ["install-java-nn", "install-java-dn1", "install-java-dn2"]
    assert report["stages"][-1] == ["smoke-test"]
    rows = {row["step_id"]: row for row in report["steps"]}
    assert [rows[s]["stage"] for s in report["stages"][0]] == [1, 1, 1]
    assert rows["smoke-test"]["stage"] == len(report["stages"])

    def at(value: str) -> datetime:
        return datetime.fromisoformat(value)

    run_start, run_end = at(report["run_started_at"]), at(report["run_ended_at"])
    for stage, later in zip(report["stages"], report["stages"][1:], strict=False):
        # A stage starts after every step of the one before it ended.
        assert max(at(rows[s]["ended_at"]) for s in stage) <= min(at(rows[s]["started_at"]) for s in later)
    failed_at = at(rows["smoke-test"]["ended_at"])
    for name, row in rows.items():
        assert run_start <= at(row["started_at"]) <= at(row["ended_at"]) <= run_end, name
        if name != "smoke-test":  # every other step was undone after the failure
            assert failed_at <= at(row["revert_started_at"]) <= at(row["revert_ended_at"]) <= run_end, name
    assert rows["smoke-test"]["revert_started_at"] is None


def test_report_page_is_a_dag_run_tab(api: Any, auth: Any) -> None:
    from rackflow_plugin import RackflowPlugin

    tabs = [a for a in RackflowPlugin.react_apps if a["destination"] == "dag_run"]
    assert [a["url_route"] for a in tabs] == ["rackflow-jobnet-report"]
    bundle = api.get("/rackflow/ui/app/rackflow.umd.js", headers=auth("victor"))
    assert bundle.status_code == 200 and "/report" in bundle.text
