"""Services: rackflow's own logic that joins hooks (one per external system) into what operators, DAG
factories and the plugin's routes call — power monitoring and control, staging, the fleet layout, job
output. Services may import ``core`` and ``hooks`` and ``db``; nothing below them imports a service."""
