#!/usr/bin/env bash
# Prints the path of a headless Chromium for the end-to-end checks that lay out our HTML reports
# in a real browser, installing Debian's chromium-headless-shell (and a font, without which no
# text is laid out) when there is none:
#   1. $SP_CHROMIUM when it is set;
#   2. chromium-headless-shell, chromium or google-chrome on PATH;
#   3. else `apt-get install chromium-headless-shell fonts-dejavu-core` (as root, or with sudo).
# Progress goes to stderr; stdout is only the path, so `CHROMIUM=$(scripts/chromium.sh)` works.
set -euo pipefail
if [ -n "${SP_CHROMIUM:-}" ] && [ -x "$SP_CHROMIUM" ]; then
  echo "$SP_CHROMIUM"
  exit 0
fi
for b in chromium-headless-shell chromium google-chrome; do
  if command -v "$b" >/dev/null 2>&1 && [ -d /usr/share/fonts ]; then
    command -v "$b"
    exit 0
  fi
done
echo "chromium.sh: installing Debian's chromium-headless-shell (the report layout checks need a browser)" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium-headless-shell fonts-dejavu-core >&2
command -v chromium-headless-shell
