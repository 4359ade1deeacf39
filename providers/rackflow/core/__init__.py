"""rackflow's domain core: plain Python (pydantic, PyYAML), no Airflow import.

Models and decisions live here — the fleet file, jobnets and their revert order, job descriptions and
scheduler adapters, the S3 job status protocol, power planning and VM placement — so they can be
tested as plain functions and reused by hooks, operators, DAG factories and the plugin.
"""
