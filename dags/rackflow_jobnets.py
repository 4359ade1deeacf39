"""One Airflow DAG ``jobnet_<name>`` per jobnet YAML in ``[rackflow] jobnets_folder``."""

from __future__ import annotations

from rackflow import settings
from rackflow.dag_factories.jobnet import build_jobnet_dags

globals().update(build_jobnet_dags(settings.jobnets_folder()))
