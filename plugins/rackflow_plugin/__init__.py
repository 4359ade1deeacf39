"""rackflow's Airflow plugin: the ``/rackflow`` FastAPI app and its pages in Airflow's UI."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rackflow_plugin.app import URL_PREFIX, create_app

# Pages shown inside Airflow's UI (nav entries); each is served by the app under /rackflow/ui/.
PAGES = [
    {"name": "rackflow", "page": "home", "icon": "server"},
]


class RackflowPlugin(AirflowPlugin):
    name = "rackflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "rackflow"}]
    external_views = [
        {
            "name": page["name"],
            "href": f"{URL_PREFIX}/ui/{page['page']}",
            "destination": "nav",
            "url_route": f"rackflow-{page['page']}",
            "category": "rackflow",
        }
        for page in PAGES
    ]
