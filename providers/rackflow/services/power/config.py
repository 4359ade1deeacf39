"""Power settings from ``[rackflow]``: thresholds, placement policy, timeouts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from rackflow.core.power import (
    PowerThresholds,
    ReconcileTimeouts,
)

log = logging.getLogger(__name__)


class PowerConfigError(ValueError):
    """The ``[rackflow]`` power options are invalid; the message says which and why."""


@dataclass(frozen=True)
class PowerConfig:
    thresholds: PowerThresholds
    timeouts: ReconcileTimeouts
    bmc_timeout: float
    placement_policy: str | None


def _conf(option: str, fallback: str) -> str:
    from rackflow import settings

    return settings._get(option, fallback)


def load_power_config() -> PowerConfig:
    """Read and check the ``[rackflow]`` power options; bad thresholds raise :class:`PowerConfigError`.

    ``power_off_threshold`` must exceed ``power_on_threshold`` (otherwise a node would flap on and off).
    """
    off, on = _conf("power_off_threshold", "60m"), _conf("power_on_threshold", "30m")
    try:
        thresholds = PowerThresholds(off_threshold=off, on_threshold=on)  # type: ignore[arg-type]
    except ValueError as err:
        reasons = "; ".join(e["msg"] for e in getattr(err, "errors", lambda: [])()) or str(err)
        raise PowerConfigError(
            f"[rackflow] power_off_threshold={off!r} / power_on_threshold={on!r} rejected: {reasons}"
        ) from err
    try:
        timeouts = ReconcileTimeouts(
            boot_timeout=timedelta(seconds=float(_conf("power_boot_timeout", "600"))),
            stop_timeout=timedelta(seconds=float(_conf("power_stop_timeout", "600"))),
        )
        bmc_timeout = float(_conf("power_bmc_timeout", "10"))
    except ValueError as err:
        raise PowerConfigError(f"[rackflow] power timeouts must be seconds: {err}") from err
    policy = _conf("placement_policy", "packing")
    return PowerConfig(thresholds, timeouts, bmc_timeout, policy)


def thresholds_summary(config: PowerConfig) -> dict[str, float]:
    return {
        "off_threshold_s": config.thresholds.off_threshold.total_seconds(),
        "on_threshold_s": config.thresholds.on_threshold.total_seconds(),
        "guaranteed_off_s": config.thresholds.guaranteed_off.total_seconds(),
    }
