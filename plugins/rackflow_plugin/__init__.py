"""rackflow's Airflow plugin: the ``/rackflow`` FastAPI app and its pages in Airflow's UI."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rackflow_plugin.app import BUNDLE_NAME, URL_PREFIX, create_app

# rackflow's React pages (plugins/rackflow_plugin/www, one bundle): each entry is a nav item (or a tab,
# by destination) at /plugin/<url_route> in Airflow's UI; the bundle picks the page by its url_route.
# Each gets its own bundle URL (?page=): Airflow imports a react app's bundle once per URL and takes the
# component it assigns, so two entries sharing one URL would find nothing the second time. The URL is
# relative to Airflow's base URL, so it holds behind a reverse-proxy prefix.
REACT_PAGES = [
    {"name": "rackflow", "url_route": "rackflow"},
    {"name": "jobs", "url_route": "rackflow-jobs"},
    {"name": "S3 intake", "url_route": "rackflow-s3"},
    {"name": "server layout", "url_route": "rackflow-layout"},
    {"name": "power", "url_route": "rackflow-power"},
    # A tab on every DAG run: the jobnet report of that run (Airflow passes the DAG and run ids).
    {"name": "jobnet report", "url_route": "rackflow-jobnet-report", "destination": "dag_run"},
]


class RackflowPlugin(AirflowPlugin):
    name = "rackflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "rackflow"}]
    react_apps = [
        {
            "name": page["name"],
            "bundle_url": f"{URL_PREFIX.lstrip('/')}/ui/app/{BUNDLE_NAME}?page={page['url_route']}",
            "destination": page.get("destination", "nav"),
            "url_route": page["url_route"],
            "category": "rackflow",
        }
        for page in REACT_PAGES
    ]
