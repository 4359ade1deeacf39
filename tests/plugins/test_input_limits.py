"""Bad input to /rackflow/api gets a 4xx naming what is wrong, and nothing is recorded.

Each test sends one of the inputs that once gave a 500, a reset connection or a stored megabyte
(issue 13) through Airflow's real API app, with the rackflow_job DAG and the devfleet's inventory
behind it. The chunked-body test runs rackflow's app under a real uvicorn, because only a real server
hands the body to the app in pieces.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

JOBS = "/rackflow/api/jobs"
RUNS = "/api/v2/dags/rackflow_job/dagRuns"
RESERVATIONS = "/rackflow/api/power/reservations"
JSON_TYPE = {"Content-Type": "application/json"}
XML_TYPE = {"Content-Type": "application/xml"}

JSDL = """<?xml version="1.0" encoding="UTF-8"?>
<jsdl:JobDefinition xmlns:jsdl="http://schemas.ggf.org/jsdl/2005/11/jsdl"
                    xmlns:jsdl-hpcpa="http://schemas.ggf.org/jsdl/2006/07/jsdl-hpcpa">
  <jsdl:JobDescription>
    <jsdl:Application>
      <jsdl-hpcpa:HPCProfileApplication>
        <jsdl-hpcpa:Executable>/bin/true</jsdl-hpcpa:Executable>
      </jsdl-hpcpa:HPCProfileApplication>
    </jsdl:Application>
    <jsdl:Resources>
      <jsdl:TotalCPUCount><jsdl:Exact>{count}</jsdl:Exact></jsdl:TotalCPUCount>
    </jsdl:Resources>
  </jsdl:JobDescription>
</jsdl:JobDefinition>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
""" + JSDL.split("\n", 1)[1].replace("/bin/true", "&lol9;").format(count=1)

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
""" + JSDL.split("\n", 1)[1].replace("/bin/true", "&secret;").format(count=1)


def _runs(api: Any, auth: Any) -> int:
    resp = api.get(RUNS, headers=auth("admin"))
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total_entries"])


def _reservations(api: Any, auth: Any) -> int:
    resp = api.get(
        RESERVATIONS, params={"include_canceled": True, "include_past": True}, headers=auth("admin")
    )
    assert resp.status_code == 200, resp.text
    return len(resp.json())


def _problems(resp: Any) -> str:
    return json.dumps(resp.json()["detail"])


@pytest.fixture
def no_new_runs(api: Any, auth: Any, job_dag: str) -> Iterator[None]:
    """The test body submits only bad jobs: no rackflow_job run may appear."""
    before = _runs(api, auth)
    yield
    assert _runs(api, auth) == before


@pytest.mark.parametrize(
    ("duration", "why"),
    [
        ("1e400", "finite"),  # JSON's 1e400 is a float infinity once parsed
        ("Infinity", "finite"),
        ("NaN", "finite"),
        ('"inf"', "cannot read duration"),
        ("-5", "positive"),
        ("99999999999", "at most 365 days"),
        ('"999999999999999999999:00:00"', "at most 365 days"),
    ],
)
def test_durations_beyond_finite_bounds_are_400_naming_the_field(
    api: Any, auth: Any, no_new_runs: None, duration: str, why: str
) -> None:
    body = '{"executable": "/bin/true", "attributes": {"duration": ' + duration + "}}"
    resp = api.post(JOBS, content=body, headers={**auth("alice"), **JSON_TYPE})
    assert resp.status_code == 400, resp.text
    assert "attributes.duration" in _problems(resp) and why in _problems(resp)


@pytest.mark.parametrize("count", [str(2**64), "1e400", "NaN", "4294967297"])
def test_jsdl_counts_beyond_bounds_are_400_naming_the_element(
    api: Any, auth: Any, no_new_runs: None, count: str
) -> None:
    resp = api.post(JOBS, content=JSDL.format(count=count), headers={**auth("alice"), **XML_TYPE})
    assert resp.status_code == 400, resp.text
    assert "TotalCPUCount" in _problems(resp) or "resources.process_count" in _problems(resp)


def test_a_jsdl_count_within_bounds_is_accepted(api: Any, auth: Any, job_dag: str) -> None:
    resp = api.post(JOBS, content=JSDL.format(count=4), headers={**auth("alice"), **XML_TYPE})
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["xml-bomb", "external-entity"])
def test_xml_bombs_and_external_entities_are_400(
    api: Any, auth: Any, no_new_runs: None, document: str
) -> None:
    resp = api.post(JOBS, content=document, headers={**auth("alice"), **XML_TYPE})
    assert resp.status_code == 400, resp.text
    assert "DTDs and entities are not accepted" in _problems(resp)
    assert "root:" not in resp.text  # /etc/passwd was not read into the answer


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"arguments": ["x" * 1_000_000]}, "arguments[0]"),
        ({"arguments": ["x"] * 5000}, "arguments"),
        ({"environment": {"BIG": "x" * 100_000}}, "environment.BIG"),
        ({"environment": {f"V{i}": "1" for i in range(1000)}}, "environment"),
        ({"name": "n" * 1000}, "name"),
        ({"resources": {"node_count": 2**63}}, "resources.node_count"),
        ({"resources": {"memory": 2**70}}, "resources.memory"),
        ({"attributes": {"custom_attributes": {"slurm.qos": 2**64}}}, "attributes.custom_attributes"),
    ],
)
def test_strings_lists_and_counts_beyond_bounds_are_400_naming_the_field(
    api: Any, auth: Any, no_new_runs: None, job: dict[str, Any], field: str
) -> None:
    resp = api.post(JOBS, json={"executable": "/bin/true", **job}, headers=auth("alice"))
    assert resp.status_code == 400, resp.text
    assert field in _problems(resp)


def test_a_megabyte_terminate_reason_is_refused_and_not_recorded(api: Any, auth: Any, job_dag: str) -> None:
    from rackflow.db import jobs

    job_id = api.post(JOBS, json={"executable": "/bin/sleep", "arguments": ["60"]}, headers=auth("alice"))
    assert job_id.status_code == 201, job_id.text
    job_id = job_id.json()["job_id"]
    resp = api.post(f"{JOBS}/{job_id}/terminate", json={"reason": "r" * 1_000_000}, headers=auth("alice"))
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "reason"]
    assert jobs.termination_requested("rackflow_job", job_id) is None
    assert api.get(f"{JOBS}/{job_id}/events", headers=auth("alice")).json() == []


def test_deep_json_nesting_is_400_before_any_parser_runs(api: Any, auth: Any, no_new_runs: None) -> None:
    deep = '{"executable": "/bin/true", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for url in (JOBS, RESERVATIONS):
        resp = api.post(url, content=deep, headers={**auth("operator"), **JSON_TYPE})
        assert resp.status_code == 400, resp.text
        assert "nests deeper than 32 levels" in resp.json()["detail"]
    # At the limit the body reaches the route, which names the field it does not accept.
    nested = "[" * 31 + '"x"' + "]" * 31
    resp = api.post(
        JOBS,
        content='{"executable": "/bin/true", "arguments": ' + nested + "}",
        headers={**auth("alice"), **JSON_TYPE},
    )
    assert resp.status_code == 400, resp.text
    assert "arguments[0]" in _problems(resp)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        None,
    ],
)
def test_bodies_that_are_not_json_are_415(
    api: Any, auth: Any, no_new_runs: None, rackflow_db: str, content_type: str | None
) -> None:
    """A cross-site form or a no-cors fetch (no preflight) can only send these; none reaches a route."""
    headers = auth("operator") if content_type is None else {**auth("operator"), "Content-Type": content_type}
    before = _reservations(api, auth)
    job = api.post(JOBS, content=json.dumps({"executable": "/bin/true"}), headers=headers)
    assert job.status_code == 415, job.text
    assert "application/json" in job.json()["detail"] and "application/xml" in job.json()["detail"]
    reservation = {
        "name": "csrf",
        "start": "2030-01-01T00:00:00Z",
        "end": "2030-01-02T00:00:00Z",
        "vm_count": 1,
        "vcpus_per_vm": 1,
        "memory_mib_per_vm": 512,
    }
    resp = api.post(RESERVATIONS, content=json.dumps(reservation), headers=headers)
    assert resp.status_code == 415, resp.text
    assert _reservations(api, auth) == before


def test_json_with_a_charset_and_xml_are_accepted_on_the_submit_route(
    api: Any, auth: Any, job_dag: str
) -> None:
    body = json.dumps({"executable": "/bin/true"})
    headers = {**auth("alice"), "Content-Type": "application/json; charset=utf-8"}
    assert api.post(JOBS, content=body, headers=headers).status_code == 201
    xml = {**auth("alice"), "Content-Type": "text/xml"}
    assert api.post(JOBS, content=JSDL.format(count=1), headers=xml).status_code == 201


def test_a_body_over_the_limit_is_413_and_one_at_the_limit_is_read(
    api: Any, auth: Any, no_new_runs: None
) -> None:
    from rackflow import settings

    limit = settings.api_max_body_bytes()
    assert limit == 1_048_576  # the documented default
    over = api.post(JOBS, content=b"x" * (limit + 1), headers={**auth("alice"), **JSON_TYPE})
    assert over.status_code == 413, over.text
    assert "api_max_body_bytes" in over.json()["detail"]
    at = api.post(JOBS, content=b" " * (limit - 2) + b"{}", headers={**auth("alice"), **JSON_TYPE})
    assert at.status_code == 400 and "executable" in _problems(at)


@pytest.fixture
def rackflow_server() -> Iterator[int]:
    """rackflow's own FastAPI app under a real uvicorn on a free loopback port."""
    import uvicorn

    from rackflow_plugin.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(rackflow_server: int) -> None:
    """64 MiB offered in 64 KiB chunks: the 413 arrives long before the client is done sending."""
    offered = 64 * 2**20
    chunk = b"x" * 2**16
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection(("127.0.0.1", rackflow_server), timeout=10) as sock:
        sock.sendall(
            b"POST /api/jobs HTTP/1.1\r\nHost: rackflow\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < offered and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += len(chunk)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what it answered is below
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < offered


GOOD_RESERVATION = {
    "name": "bounds",
    "start": "2030-01-01T00:00:00Z",
    "end": "2030-01-02T00:00:00Z",
    "vm_count": 1,
    "vcpus_per_vm": 1,
    "memory_mib_per_vm": 512,
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vcpus_per_vm": 2**63}, "vcpus_per_vm"),
        ({"vcpus_per_vm": 2**64}, "vcpus_per_vm"),
        ({"memory_mib_per_vm": 2**40}, "memory_mib_per_vm"),
        ({"vm_count": 10**12}, "vm_count"),
        ({"name": "n" * 1_000_000}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"group": "g" * 1000}, "group"),
        ({"start": "0001-01-01T00:00:00+14:00"}, "start"),
        ({"end": "9999-12-31T23:59:59-14:00"}, "end"),
    ],
)
def test_reservation_numbers_strings_and_dates_beyond_bounds_are_422_and_not_recorded(
    api: Any, auth: Any, rackflow_db: str, change: dict[str, Any], field: str
) -> None:
    before = _reservations(api, auth)
    resp = api.post(RESERVATIONS, json={**GOOD_RESERVATION, **change}, headers=auth("operator"))
    assert resp.status_code == 422, resp.text
    assert [e["loc"][-1] for e in resp.json()["detail"]] == [field]
    assert _reservations(api, auth) == before


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("DELETE", f"{RESERVATIONS}/{2**63}"),
        ("DELETE", f"{RESERVATIONS}/{2**31}"),
        ("DELETE", f"{RESERVATIONS}/-1"),
        ("DELETE", f"{RESERVATIONS}/abc"),
        ("DELETE", f"{RESERVATIONS}/1.5"),
        ("GET", "/rackflow/api/power/nodes/pw-a/history?limit=abc"),
        ("GET", f"/rackflow/api/power/nodes/pw-a/history?limit={2**64}"),
        ("GET", f"{JOBS}?offset=-1"),
        ("GET", f"{JOBS}?offset={2**63}"),
        ("GET", f"{JOBS}?limit=0"),
        ("GET", f"{JOBS}/a%00b"),
        ("GET", f"{JOBS}/{'j' * 300}"),
        ("GET", f"{JOBS}?state={'s' * 100}"),
        ("GET", f"/rackflow/api/hosts/{'h' * 300}"),
    ],
)
def test_path_and_query_parameters_of_the_wrong_type_or_size_are_422(
    api: Any, auth: Any, rackflow_db: str, method: str, url: str
) -> None:
    resp = api.request(method, url, headers=auth("admin"))
    assert resp.status_code == 422, resp.text


def test_reservation_times_in_other_offsets_are_stored_in_utc_and_list_back(
    api: Any, auth: Any, rackflow_db: str
) -> None:
    """Found by the fuzz: end after start in UTC but not in wall-clock time was stored naive and then
    broke listing every reservation (500)."""
    body = {**GOOD_RESERVATION, "start": "2031-01-01T10:00:00+05:00", "end": "2031-01-01T09:00:00Z"}
    created = api.post(RESERVATIONS, json=body, headers=auth("operator"))
    assert created.status_code == 201, created.text
    assert created.json()["start"].startswith("2031-01-01T05:00:00")
    listed = api.get(RESERVATIONS, headers=auth("operator"))
    assert listed.status_code == 200, listed.text
    assert created.json()["id"] in [r["id"] for r in listed.json()]


@pytest.mark.parametrize(
    "name", ["a" * 300 + ".js", "a%00.js", "..%2Fhome.html", "layout.html", "nothing.css"]
)
def test_static_files_outside_the_schema_answer_unknown_names_with_404(
    api: Any, auth: Any, name: str
) -> None:
    """The UI's routes are not in the OpenAPI document, so the fuzz does not reach them: no file name
    from a request reaches the filesystem (the static route is gone; the bundle route takes no name)."""
    assert api.get(f"/rackflow/ui/static/{name}", headers=auth("victor")).status_code == 404
    assert api.get(f"/rackflow/ui/app/{name}", headers=auth("victor")).status_code == 404
    assert api.get("/rackflow/ui/app/rackflow.umd.js", headers=auth("victor")).status_code == 200


def test_the_limits_are_read_from_the_rackflow_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[rackflow] api_max_body_bytes`` and ``api_max_json_depth`` set the limits of a new app; the
    refusals come before authentication, so no token is needed to see them."""
    from fastapi.testclient import TestClient

    from rackflow_plugin.app import create_app

    monkeypatch.setenv("AIRFLOW__RACKFLOW__API_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("AIRFLOW__RACKFLOW__API_MAX_JSON_DEPTH", "3")
    client = TestClient(create_app())
    assert client.post("/api/jobs", content=b" " * 4097, headers=JSON_TYPE).status_code == 413
    deep = client.post("/api/jobs", content=b"[[[[1]]]]", headers=JSON_TYPE)
    assert deep.status_code == 400 and "deeper than 3 levels" in deep.json()["detail"]
    assert client.post("/api/jobs", content=b"[[[1]]]", headers=JSON_TYPE).status_code == 401

    for option, value in (("API_MAX_BODY_BYTES", "0"), ("API_MAX_JSON_DEPTH", "deep")):
        monkeypatch.setenv(f"AIRFLOW__RACKFLOW__{option}", value)
        with pytest.raises(ValueError, match=option.lower()):
            create_app()
        monkeypatch.setenv(f"AIRFLOW__RACKFLOW__{option}", "10")
