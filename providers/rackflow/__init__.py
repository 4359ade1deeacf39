"""rackflow: run an on-premises fleet from Apache Airflow."""

__version__ = "0.1.0"
