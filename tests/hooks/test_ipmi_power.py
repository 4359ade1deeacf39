"""IpmiHook (ipmitool) against a real virtualbmc over the power fleet's BMC plane libvirtd."""

from __future__ import annotations

import json
import os
import time

import pytest


@pytest.fixture
def fleet(power_fleet):
    power_fleet.reset()
    return power_fleet


def _wait_power(hook, want: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    state = hook.get_power_state()
    while state != want and time.monotonic() < deadline:
        time.sleep(0.2)
        state = hook.get_power_state()
    return state


def test_ipmi_reads_on_and_powers_domain_off_and_on(fleet):
    from rackflow.hooks.ipmi import IpmiHook

    hook = IpmiHook("pw_ipmi_c", timeout=5)  # the connection's extra selects cipher suite 3 (SHA-1)
    assert hook.get_power_state() == "on"
    hook.set_power("hard_off")
    assert _wait_power(hook, "off") == "off"
    assert not fleet.powered("pw-c")
    hook.set_power("on")
    assert _wait_power(hook, "on") == "on"
    assert fleet.powered("pw-c")


def test_ipmi_answers_after_the_bmc_restarted_between_calls(fleet):
    """A BMC that restarted (or expired the session while the monitor slept) answers the next call:
    every call opens its own session."""
    from rackflow.hooks.ipmi import IpmiHook

    hook = IpmiHook("pw_ipmi_c", timeout=5, retries=0)
    assert hook.get_power_state() == "on"
    fleet.vbmc.restart("pw-c")
    assert hook.get_power_state() == "on"


def test_ipmi_answers_in_a_process_holding_over_1024_files(fleet):
    """A long-lived process holding over 1024 files (a select()-based client would be blind to such
    descriptors and hang until its timeout) still reads the BMC."""
    from rackflow.hooks.ipmi import IpmiHook

    held = [open(os.devnull) for _ in range(1100)]  # noqa: SIM115 - closed below
    try:
        assert max(f.fileno() for f in held) >= 1024
        assert IpmiHook("pw_ipmi_c", timeout=5, retries=0).get_power_state() == "on"
    finally:
        for f in held:
            f.close()


def test_ipmi_soft_off(fleet):
    from rackflow.hooks.ipmi import IpmiHook

    hook = IpmiHook("pw_ipmi_c", timeout=5)
    hook.set_power("soft_off")
    assert _wait_power(hook, "off") == "off"


def test_ipmi_connection_test_reports_power(fleet):
    from rackflow.hooks.ipmi import IpmiHook

    ok, message = IpmiHook("pw_ipmi_c", timeout=5).test_connection()
    assert ok, message
    assert "power is on" in message


def test_ipmi_bmc_that_does_not_answer_raises_with_address(monkeypatch):
    from rackflow.hooks.ipmi import IpmiError, IpmiHook
    from rackflow_devfleet.servers import free_udp_port

    port = free_udp_port()  # nothing answers there
    monkeypatch.setenv(
        "AIRFLOW_CONN_PW_IPMI_GONE",
        json.dumps(
            {
                "conn_type": "ipmi",
                "host": "127.0.0.1",
                "port": port,
                "login": "admin",
                "password": "x",
                "extra": {"cipher_suite": 3},
            }
        ),
    )
    with pytest.raises(IpmiError, match=f"127.0.0.1:{port}"):
        IpmiHook("pw_ipmi_gone", timeout=1, retries=0).get_power_state()


def test_ipmi_rejects_unknown_cipher_suite(fleet):
    from rackflow.hooks.ipmi import IpmiError, IpmiHook

    with pytest.raises(IpmiError, match="cipher suite 1 "):
        IpmiHook("pw_ipmi_c", cipher_suite=1).get_power_state()
