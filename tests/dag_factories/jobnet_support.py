"""Helpers for jobnet DAG tests: register a DAG built in a test and run it with ``dag.test()``.

``dag.test()`` only runs DAGs whose serialized form is in the metadata DB; a DAG the dag-processor
finds in ``dags/`` is there, one built inside a test is not, so :func:`run_dag` writes it first (the
same call the dag-processor makes). Tasks then run in-process against the real loopback sshd.
Tests using these need the ``airflow_db`` and ``devfleet`` fixtures.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any


def register_dag(dag: Any) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder",
            None,
            [LazyDeserializedDAG.from_dag(dag)],
            {},
            None,
            set(),
            session=session,
            files_parsed=set(),
        )


def run_dag(dag: Any, conf: Mapping[str, Any] | None = None, *, use_executor: bool = False) -> Any:
    """Register ``dag`` and run it once with ``conf``; the finished DagRun.

    ``dag.test()`` runs each deferred step's trigger inline, one after the other: its SSH steps are
    polled at the session's short in-process interval (tests/conftest.py IN_PROCESS_SETTINGS), not 5 s.
    """
    register_dag(dag)
    return dag.test(run_conf=dict(conf or {}), use_executor=use_executor)


def task_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def library_from(tmp_path: Path, text: str, filename: str = "net.yaml") -> Any:
    """A jobnet library of one YAML file written under ``tmp_path/jobnets``; it must load cleanly."""
    from rackflow.core.jobnet import load_jobnets

    folder = tmp_path / "jobnets"
    folder.mkdir(exist_ok=True)
    (folder / filename).write_text(textwrap.dedent(text))
    library = load_jobnets(folder)
    assert not library.errors, library.errors
    return library


def jobnet_dag(library: Any, name: str, dag_id: str) -> Any:
    from rackflow.dag_factories.jobnet import build_jobnet_dag

    return build_jobnet_dag(library, name, dag_id=dag_id, retry_delay=timedelta(seconds=0))


def report(dag_run: Any, library: Any) -> dict[str, Any]:
    """The run report as the plugin's JSON route serves it."""
    from airflow.utils.session import create_session

    from rackflow_plugin.api.jobnets import report_from_db

    with create_session() as session:
        return report_from_db(dag_run.dag_id, dag_run.run_id, session, library).model_dump()
