"""Broken jobnet files show up as this file's Airflow import error (file, line, reason); good ones are DAGs.

Kept apart from ``rackflow_jobnets.py`` so one bad YAML file never hides the other jobnets' DAGs.
"""

from __future__ import annotations

from rackflow import settings
from rackflow.dag_factories.jobnet import raise_jobnet_errors

raise_jobnet_errors(settings.jobnets_folder())
