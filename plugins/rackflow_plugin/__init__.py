"""rackflow's Airflow plugin: the ``/rackflow`` FastAPI app and its pages in Airflow's UI."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rackflow_plugin.app import URL_PREFIX, create_app

# Pages shown inside Airflow's UI (nav entries); each is served by the app under /rackflow/ui/.
PAGES = [
    {"name": "rackflow", "page": "home", "icon": "server"},
    {"name": "power", "page": "power", "icon": "power"},
    {"name": "server layout", "page": "layout", "icon": "layout"},
    # A tab on every DAG run: the jobnet report of that run (Airflow fills {DAG_ID} and {RUN_ID}).
    {
        "name": "jobnet report",
        "page": "jobnet_report",
        "destination": "dag_run",
        "query": "?dag_id={DAG_ID}&run_id={RUN_ID}",
    },
]


class RackflowPlugin(AirflowPlugin):
    name = "rackflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "rackflow"}]
    external_views = [
        {
            "name": page["name"],
            "href": f"{URL_PREFIX}/ui/{page['page']}" + page.get("query", ""),
            "destination": page.get("destination", "nav"),
            "url_route": f"rackflow-{page['page']}",
            "category": "rackflow",
        }
        for page in PAGES
    ]
