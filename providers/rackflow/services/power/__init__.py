"""Power control against the inventory DB, the BMCs and libvirt: what the DAGs, operator and API call.

``rackflow.core.power`` decides; this package gathers the facts it decides on and carries the decisions
out, one module per concern: :mod:`.config` (settings), :mod:`.bmc` (bounded BMC reads and actions),
:mod:`.history` (every mode/status change with who asked and why), :mod:`.monitor` (the monitor
cycle) and :mod:`.control` (manual on/off, migrate-then-off, the planner).
"""
