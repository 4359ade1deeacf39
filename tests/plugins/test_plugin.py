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
    assert any(v["href"] == "/rackflow/ui/home" for v in plugin["external_views"])


def test_rackflow_api_refuses_requests_without_token(api):
    assert api.get("/rackflow/api/status").status_code == 401
    assert api.get("/rackflow/ui/home").status_code == 401


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


def test_ui_cookie_login_serves_page(api, token):
    resp = api.get("/rackflow/ui/home", headers={"Cookie": f"_token={token('victor')}"})
    assert resp.status_code == 200
    assert "<title>rackflow</title>" in resp.text
