"""The connection form of each rackflow connection type: one source for the provider metadata Airflow
reads (``get_provider_info``) and for each hook's ``get_ui_field_behaviour``. Plain data: importing it
costs nothing (provider metadata is read by every Airflow process)."""

from __future__ import annotations

from typing import Any

CONNECTION_FORMS: dict[str, dict[str, Any]] = {
    "libvirt": {
        "hook_class": "rackflow.hooks.libvirt.LibvirtHook",
        "hook_name": "libvirt",
        "hidden_fields": ["schema", "port", "login", "password", "extra"],
        "relabeling": {"host": "libvirt URI"},
        "placeholders": {"host": "qemu+ssh://root@host-a/system"},
    },
    "redfish": {
        "hook_class": "rackflow.hooks.redfish.RedfishHook",
        "hook_name": "Redfish BMC",
        "hidden_fields": ["extra"],
        "relabeling": {"schema": "Scheme (http/https)"},
        "placeholders": {"host": "10.0.0.21", "schema": "https", "login": "admin"},
    },
    "ipmi": {
        "hook_class": "rackflow.hooks.ipmi.IpmiHook",
        "hook_name": "IPMI BMC",
        # extra carries {"cipher_suite": 3} for BMCs that speak only HMAC-SHA1 (the hook reads it)
        "hidden_fields": ["schema"],
        "relabeling": {},
        "placeholders": {
            "host": "10.0.0.21",
            "port": "623",
            "login": "admin",
            "extra": '{"cipher_suite": 3}',
        },
    },
}


def ui_field_behaviour(conn_type: str) -> dict[str, Any]:
    """What a hook's ``get_ui_field_behaviour`` returns for ``conn_type``."""
    form = CONNECTION_FORMS[conn_type]
    return {key: form[key] for key in ("hidden_fields", "relabeling", "placeholders")}


def provider_connection_types() -> list[dict[str, Any]]:
    """The ``connection-types`` entries of the provider metadata."""
    return [
        {
            "hook-class-name": form["hook_class"],
            "connection-type": conn_type,
            "hook-name": form["hook_name"],
            "ui-field-behaviour": {
                "hidden-fields": form["hidden_fields"],
                "relabeling": form["relabeling"],
                "placeholders": form["placeholders"],
            },
        }
        for conn_type, form in CONNECTION_FORMS.items()
    ]
