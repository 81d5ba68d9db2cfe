#!/usr/bin/env bash
# The Airflow DAG test's virtual environment (Airflow pins much of its own stack, so it lives apart
# from the reference checks'). Prints the venv's python.
exec "$(dirname "$0")/python-env.sh" tests/airflow-requirements.txt airflow-venv
