#!/usr/bin/env bash
# Creates (once) the virtual environment of the Airflow DAG test, keyed by the hash of
# tests/airflow-requirements.txt. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/airflow-requirements.txt
hash=$(sha256sum "$req" | cut -c1-12)
venv="${SP_VENV_DIR:-$HOME/.cache/streampulse/airflow-venv}-$hash"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
