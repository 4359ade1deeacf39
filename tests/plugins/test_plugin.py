"""The rackflow plugin and provider as Airflow's API server sees them."""

from __future__ import annotations


def test_providers_endpoint_lists_rackflow(api, auth):
    resp = api.get("/api/v2/providers", headers=auth("admin"), params={"limit": 100})
    assert resp.status_code == 200
    names = {p["package_name"] for p in resp.json()["providers"]}
    assert "rackflow" in names


def test_plugins_endpoint_lists_rackflow_plugin_with_app_and_page(api, auth):
    resp = api.get("/api/v2/plugins", headers=auth("admin"))
    assert resp.status_code == 200
    plugin = next(p for p in resp.json()["plugins"] if p["name"] == "rackflow")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/rackflow"
    # The home page is the React dashboard (react_apps); each page has its own bundle URL, relative to
    # Airflow's base URL.
    apps = {a["url_route"]: a for a in plugin["react_apps"]}
    assert apps["rackflow"]["bundle_url"] == "rackflow/ui/app/rackflow.umd.js?page=rackflow"
    assert {"rackflow", "rackflow-jobs", "rackflow-s3"} <= set(apps)


def test_rackflow_api_refuses_requests_without_token(api):
    assert api.get("/rackflow/api/status").status_code == 401
    assert api.get("/rackflow/ui/app/rackflow.umd.js").status_code == 401


def test_rackflow_api_refuses_forged_token(api):
    resp = api.get("/rackflow/api/status", headers={"Authorization": "Bearer not-a-jwt"})
    assert resp.status_code in (401, 403)


def test_status_names_the_caller_and_admin_flag(api, auth):
    alice = api.get("/rackflow/api/status", headers=auth("alice")).json()
    admin = api.get("/rackflow/api/status", headers=auth("admin")).json()
    operator = api.get("/rackflow/api/status", headers=auth("operator")).json()
    assert (alice["user"], alice["admin"]) == ("alice", False)
    assert (operator["user"], operator["admin"]) == ("operator", False)
    assert (admin["user"], admin["admin"]) == ("admin", True)


def test_status_says_what_the_pages_may_offer_each_role(api, auth):
    rights = {
        user: {
            k: v
            for k, v in api.get("/rackflow/api/status", headers=auth(user)).json().items()
            if k.startswith("can_")
        }
        for user in ("victor", "alice", "operator")
    }
    assert rights["victor"] == {"can_read_jobs": True, "can_submit_jobs": False}
    assert rights["alice"] == {"can_read_jobs": True, "can_submit_jobs": True}
    assert rights["operator"] == {"can_read_jobs": True, "can_submit_jobs": True}


def test_ui_cookie_login_serves_page(api, token):
    resp = api.get("/rackflow/ui/app/rackflow.umd.js", headers={"Cookie": f"_token={token('victor')}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/javascript")
    assert "AirflowPlugin" in resp.text  # the UMD bundle assigns the page component there


def test_intakes_route_needs_a_login_and_bounds_its_limit(api, auth):
    assert api.get("/rackflow/api/intakes").status_code == 401
    resp = api.get("/rackflow/api/intakes", params={"limit": 501}, headers=auth("victor"))
    assert resp.status_code == 422 and "limit" in resp.text
