#!/usr/bin/env bash
# Runs a command with a private Kafka-protocol broker: tansu (scripts/tansu.sh fetches it), in
# memory, on a free port of 127.0.0.1, exported to the command as SP_KAFKA_BROKERS. The broker
# stops when the command ends, whatever its outcome; the command's exit code is returned.
#   scripts/with-broker.sh CMD [ARGS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tansu="$("$here/tansu.sh")"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp -t tansu.XXXXXX.log)"
"$tansu" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" >"$log" 2>&1 &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$broker" 2>/dev/null; then cat "$log" >&2; echo "with-broker.sh: tansu exited" >&2; exit 69; fi
  sleep 0.05
done
echo "with-broker.sh: tansu on 127.0.0.1:$port" >&2
export SP_KAFKA_BROKERS="127.0.0.1:$port"
set +e
"$@"
code=$?
exit $code
