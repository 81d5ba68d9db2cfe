#!/usr/bin/env bash
# Creates (once) the Python virtual environment of the reference checks and benchmarks, keyed by
# the hash of its requirements file so a changed pin rebuilds it. Prints the venv's python.
#   python-env.sh [REQUIREMENTS [NAME]]   (default: tests/requirements.txt, venv)
set -euo pipefail
cd "$(dirname "$0")/.."
req=${1:-tests/requirements.txt}
hash=$(sha256sum "$req" | cut -c1-12)
venv="${SP_VENV_DIR:-$HOME/.cache/streampulse}/${2:-venv}-$hash"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
