"""JSON routes under ``/rackflow/api``: one module per capability, each exporting ``router``."""
