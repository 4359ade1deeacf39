"""Every file in dags/ imports cleanly: what `airflow dags list-import-errors` reports, in-process."""

from __future__ import annotations

from tests.conftest import REPO


def test_dags_folder_has_no_import_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
