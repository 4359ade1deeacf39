"""/rackflow/api/power/timeline through Airflow's real API app, on the power fleet's inventory DB.

The transitions are written into the fleet's real rackflow DB with times in the past (a monitor cycle
cannot record a past status), then read back as bands by the route.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest


@pytest.fixture
def fleet(power_fleet: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW__RACKFLOW__DATABASE_URL", power_fleet.url)
    power_fleet.reset()
    return power_fleet


def _record(url: str, node: str, rows: list[tuple[timedelta, str, str | None, str, str]]) -> None:
    """Transitions of ``node``: (how long ago, field, from, to, actor)."""
    from rackflow.db.models import HostTransition
    from rackflow.db.session import session_scope

    now = datetime.now(UTC)
    with session_scope(url) as session:
        for ago, field, old, new, actor in rows:
            row = HostTransition(
                host=node, at=now - ago, field=field, from_value=old, to_value=new, actor=actor
            )
            session.add(row)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_timeline_needs_a_token_and_read_access(api: Any, auth: Any, fleet: Any) -> None:
    assert api.get("/rackflow/api/power/timeline").status_code == 401
    for user in ("victor", "alice", "operator"):
        assert api.get("/rackflow/api/power/timeline", headers=auth(user)).status_code == 200, user


def test_timeline_bands_follow_the_transitions_and_start_with_the_value_held_before_the_window(
    api: Any, auth: Any, fleet: Any
) -> None:
    h = timedelta(hours=1)
    _record(
        fleet.url,
        "pw-a",
        [
            (5 * h, "status", None, "on", "rackflow_power_monitor"),  # before the 3 h window
            (2 * h, "mode", "on", "off", "operator"),
            (2 * h - timedelta(minutes=1), "status", "on", "stopping", "rackflow_power_monitor"),
            (90 * timedelta(minutes=1), "status", "stopping", "off", "rackflow_power_monitor"),
            (30 * timedelta(minutes=1), "mode", "off", "on", "operator"),
            (20 * timedelta(minutes=1), "status", "off", "booting", "rackflow_power_monitor"),
        ],
    )
    resp = api.get("/rackflow/api/power/timeline?hours=3", headers=auth("victor"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    now, since = _parse(body["now"]), _parse(body["since"])
    assert abs((now - since) - 3 * h) < timedelta(seconds=1)
    node = next(n for n in body["nodes"] if n["name"] == "pw-a")
    status = [(b["value"], b["actor"]) for b in node["bands"] if b["field"] == "status"]
    assert status == [
        ("on", "rackflow_power_monitor"),
        ("stopping", "rackflow_power_monitor"),
        ("off", "rackflow_power_monitor"),
        ("booting", "rackflow_power_monitor"),
    ]
    mode = [(b["value"], b["actor"]) for b in node["bands"] if b["field"] == "mode"]
    # The mode held before the first transition in the window is what it changed from (set earlier).
    assert mode == [("on", None), ("off", "operator"), ("on", "operator")]
    for field in ("status", "mode"):
        bands = [b for b in node["bands"] if b["field"] == field]
        assert _parse(bands[0]["start"]) == since and _parse(bands[-1]["end"]) == now
        for a, b in pairwise(bands):
            assert a["end"] == b["start"]
    # A node without history: its inventory values held throughout (status never polled: unknown).
    other = next(n for n in body["nodes"] if n["name"] == "pw-c")
    assert [(b["field"], b["value"]) for b in other["bands"]] == [("status", None), ("mode", "on")]


def test_timeline_shows_reservations_and_the_on_off_windows_ahead_and_who_may_act(
    api: Any, auth: Any, fleet: Any
) -> None:
    start = datetime.now(UTC) + timedelta(minutes=40)
    new = {
        "name": "course",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "vm_count": 1,
        "vcpus_per_vm": 1,
        "memory_mib_per_vm": 128,
        "group": "pw-g1",
    }
    assert api.post("/rackflow/api/power/reservations", headers=auth("operator"), json=new).status_code == 201
    far = {**new, "name": "far", "start": (start + timedelta(days=3)).isoformat()}
    far["end"] = (start + timedelta(days=3, hours=1)).isoformat()
    assert api.post("/rackflow/api/power/reservations", headers=auth("operator"), json=far).status_code == 201
    body = api.get("/rackflow/api/power/timeline?hours=1&ahead_hours=2", headers=auth("victor")).json()
    now = _parse(body["now"])
    # The tests' site: OffThreshold 60 min, OnThreshold 30 min.
    assert (body["on_threshold_s"], body["off_threshold_s"]) == (1800, 3600)
    assert _parse(body["on_window_end"]) - now == timedelta(minutes=30)
    assert _parse(body["off_window_end"]) - now == timedelta(minutes=60)
    assert _parse(body["until"]) - now == timedelta(hours=2)
    assert [r["name"] for r in body["reservations"]] == ["course"]  # "far" starts after until
    assert body["can_act"] is False
    assert api.get("/rackflow/api/power/timeline", headers=auth("operator")).json()["can_act"] is True


def test_timeline_refuses_bad_windows_and_unknown_nodes_naming_them(api: Any, auth: Any, fleet: Any) -> None:
    for query, field in (("hours=0", "hours"), ("hours=100000", "hours"), ("ahead_hours=-1", "ahead_hours")):
        resp = api.get(f"/rackflow/api/power/timeline?{query}", headers=auth("victor"))
        assert resp.status_code == 422 and field in resp.text, query
    resp = api.get("/rackflow/api/power/timeline?node=nowhere", headers=auth("victor"))
    assert resp.status_code == 404 and "nowhere" in resp.text
    one = api.get("/rackflow/api/power/timeline?node=pw-b", headers=auth("victor")).json()
    assert [n["name"] for n in one["nodes"]] == ["pw-b"]
