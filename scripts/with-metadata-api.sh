#!/usr/bin/env bash
# Runs a command next to a local metadata-api server, then stops the server:
#   scripts/with-metadata-api.sh BIN_DIR CATALOG [metadata-api flags...] -- COMMAND [ARGS...]
# The server listens on a free port; COMMAND sees its URL in SP_API_URL. The exit status is
# COMMAND's.
set -euo pipefail
bin="$1"; catalog="$2"; shift 2
api_flags=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do api_flags+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift

port_file="$(mktemp)"
rm -f "$port_file"
"$bin/metadata-api" --listen 127.0.0.1:0 --port-file "$port_file" --catalog "$catalog" \
  "${api_flags[@]}" &
api_pid=$!
trap 'kill "$api_pid" 2>/dev/null; wait "$api_pid" 2>/dev/null; rm -f "$port_file"' EXIT
for _ in $(seq 1 200); do
  [ -s "$port_file" ] && break
  kill -0 "$api_pid" 2>/dev/null || { echo "metadata-api did not start" >&2; exit 69; }
  sleep 0.05
done
[ -s "$port_file" ] || { echo "metadata-api did not start within 10 s" >&2; exit 69; }
export SP_API_URL="http://$(cat "$port_file")"
echo "metadata-api listening on $SP_API_URL" >&2
"$@"
