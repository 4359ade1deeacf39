"""Schemathesis fuzzes every operation of ``/rackflow/openapi.json``: no input may give a 5xx.

The requests go in process to Airflow's own API app (the ``api`` fixture's ``create_app()``), with the
rackflow plugin mounted, the devfleet's inventory and libvirt daemons behind it and the DAGs in the
metadata DB, so routes that act (job submit, power on/off, reservations) run their real code. Every
operation is fuzzed with inputs that fit its schema and inputs that do not, as an admin and as a
``user``-role account; an exception inside the app fails the test like a 5xx does (the inputs issue 13
listed each have their own test in test_input_limits.py). The number of
examples per operation is bounded: about 20 s per user on two cores, after the shared fixtures.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import FLEET_FILE

MAX_EXAMPLES = 40
"""Cases per operation and user: some fit the schema, some do not, some act on a devfleet host."""
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure here reproduces
    phases=[Phase.generate],  # no shrinking: the failure names the case as found, in bounded time
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def rackflow_schema(api: Any, job_dag: str, rackflow_db: str) -> Any:
    """rackflow's OpenAPI document as the app serves it, fuzzed against that same app."""
    return schemathesis.openapi.from_asgi("/rackflow/openapi.json", api.app)


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _cases(operation: Any) -> Any:
    """Cases that fit the schema and cases that do not; for routes on a node or host, also cases on
    each devfleet host (power on and off included), which random names would never reach."""
    from rackflow.core.fleet import Fleet

    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = {p.name for p in operation.path_parameters}
    for host in (h.name for h in Fleet.load(FLEET_FILE).hosts):
        for action in ("on", "off"):
            fixed = {"node": host, "name": host, "action": action}
            path = {name: fixed[name] for name in names & {"node", "name"}}
            if path:
                path.update({name: fixed[name] for name in names & {"action"}})
                strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path))
    return st.one_of(strategies)


def test_the_fuzzed_schema_has_every_rackflow_route(rackflow_schema: Any) -> None:
    """The fuzz covers every documented operation, so a new route is fuzzed without being listed."""
    operations = {(op.method.upper(), op.path) for op in _operations(rackflow_schema)}
    assert len(operations) >= 15, operations
    assert {("POST", "/api/jobs"), ("POST", "/api/power/nodes/{node}/{action}")} <= operations
    assert ("DELETE", "/api/power/reservations/{reservation_id}") in operations


@pytest.mark.parametrize("user", ["admin", "alice"])
def test_no_rackflow_route_answers_a_server_error(rackflow_schema: Any, auth: Any, user: str) -> None:
    headers = auth(user)
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    for operation in _operations(rackflow_schema):
        seen = statuses.setdefault(operation.label, set())

        @FUZZ_SETTINGS
        @given(case=_cases(operation))
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
            seen.add(response.status_code)  # noqa: B023 - used while this loop turn runs

        try:
            fuzz()
        except Exception as exc:  # a 5xx, or an exception raised inside the app
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}")
    assert not failures, "\n\n".join(failures)
    # Not only refusals: the fuzz got through to the routes' own code.
    assert any(code < 300 for codes in statuses.values() for code in codes), statuses
