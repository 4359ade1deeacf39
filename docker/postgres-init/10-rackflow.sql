-- The rackflow inventory lives in its own database beside Airflow's metadata.
CREATE DATABASE rackflow;
