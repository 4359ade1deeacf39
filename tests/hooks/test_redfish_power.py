"""RedfishHook against real sushy-emulators over the power fleet's BMC plane libvirtd."""

from __future__ import annotations

import pytest

from rackflow_devfleet.servers import free_port


@pytest.fixture
def fleet(power_fleet):
    power_fleet.reset()
    return power_fleet


def test_redfish_reads_on_and_powers_domain_off_and_on(fleet):
    from rackflow.hooks.redfish import RedfishHook

    hook = RedfishHook("pw_redfish_a", timeout=5)
    assert "pw-a" in hook.list_systems()
    assert hook.get_power_state("pw-a") == "On"
    hook.set_power("pw-a", "hard_off")
    assert hook.get_power_state("pw-a") == "Off"
    assert not fleet.powered("pw-a")  # the emulator really stopped the plane's domain
    hook.set_power("pw-a", "on")
    assert hook.get_power_state("pw-a") == "On"
    assert fleet.powered("pw-a")


def test_redfish_soft_off_shuts_the_domain_down(fleet):
    from rackflow.hooks.redfish import RedfishHook

    hook = RedfishHook("pw_redfish_a", timeout=5)
    hook.set_power("pw-a", "soft_off")
    assert hook.get_power_state("pw-a") == "Off"


def test_redfish_unknown_system_names_it(fleet):
    from rackflow.hooks.redfish import RedfishHook

    with pytest.raises(KeyError, match="no-such-node"):
        RedfishHook("pw_redfish_a", timeout=5).get_power_state("no-such-node")


def test_redfish_wrong_password_is_an_error_not_retried_forever(fleet, monkeypatch):
    import json

    from rackflow.hooks.redfish import RedfishError, RedfishHook

    emulator = fleet.redfish["pw-a"]
    conn = {"conn_type": "redfish", "host": "127.0.0.1", "port": emulator.port, "login": "admin"}
    monkeypatch.setenv("AIRFLOW_CONN_PW_BAD", json.dumps({**conn, "password": "wrong", "schema": "http"}))
    with pytest.raises(RedfishError, match=r"401|Unauthorized|authenticat"):
        RedfishHook("pw_bad", timeout=5, retries=3, retry_delay=0).get_power_state("pw-a")


def test_redfish_bmc_that_is_gone_raises_after_retries(monkeypatch):
    import json

    from rackflow.hooks.redfish import RedfishError, RedfishHook

    port = free_port()  # nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_PW_GONE",
        json.dumps({"conn_type": "redfish", "host": "127.0.0.1", "port": port, "schema": "http"}),
    )
    hook = RedfishHook("pw_gone", timeout=1, retries=2, retry_delay=0)
    with pytest.raises(RedfishError, match=f"127.0.0.1:{port}"):
        hook.get_power_state("pw-a")


def test_redfish_power_states_reads_many_bmcs_on_one_loop_and_a_gone_bmc_fails_only_its_node(
    fleet, monkeypatch
):
    """The monitor's poll: real sushy-emulators for pw-a/pw-b, a port nobody listens on for a third."""
    import json

    from rackflow.services.power.bmc import NodeRef, redfish_power_states

    fleet.set_powered("pw-b", False)
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PW_GONE_LOOP",
        json.dumps({"conn_type": "redfish", "host": "127.0.0.1", "port": port, "schema": "http"}),
    )
    nodes = [
        NodeRef("pw-a", "g", 1, 1, "x", "redfish", "pw_redfish_a", "pw-a"),
        NodeRef("pw-b", "g", 1, 1, "x", "redfish", "pw_redfish_b", "pw-b"),
        NodeRef("gone", "g", 1, 1, "x", "redfish", "pw_gone_loop", "gone"),
    ]
    results = redfish_power_states(nodes, timeout=1, deadline=3)
    assert (results["pw-a"].value, results["pw-b"].value) == ("On", "Off")
    assert not results["gone"].ok and f"127.0.0.1:{port}" in str(results["gone"].error)


def test_redfish_async_read_unknown_system_names_it(fleet):
    import asyncio

    import aiohttp

    from rackflow.hooks.redfish import RedfishHook

    async def read() -> str:
        async with aiohttp.ClientSession(trust_env=False) as session:
            return await RedfishHook("pw_redfish_a", timeout=5).aget_power_state(
                "no-such-node", session=session
            )

    with pytest.raises(KeyError, match="no-such-node"):
        asyncio.run(read())
