-- A second database for Airflow's metadata beside MLflow's.
CREATE DATABASE airflow;
