#!/usr/bin/env bash
# Prints the path of a protoc (the Protocol Buffers compiler), which the Spark Connect client's
# protocol crate needs at build time, installing Debian's protobuf-compiler when there is none:
#   1. $PROTOC when it is set;
#   2. protoc on PATH;
#   3. else `apt-get install protobuf-compiler` (as root, or with sudo).
# Progress goes to stderr; stdout is only the path, so `PROTOC=$(scripts/protoc.sh)` works.
set -euo pipefail
if [ -n "${PROTOC:-}" ] && [ -x "$PROTOC" ]; then
  echo "$PROTOC"
  exit 0
fi
if command -v protoc >/dev/null 2>&1; then
  command -v protoc
  exit 0
fi
echo "protoc.sh: installing Debian's protobuf-compiler (the Spark Connect client needs protoc to build)" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >&2
command -v protoc
