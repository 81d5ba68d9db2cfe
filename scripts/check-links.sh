#!/usr/bin/env bash
# Fails when a stage that needs neither Kafka nor the catalog database would build librdkafka or
# sqlx: the core keeps both behind its `kafka` and `sql` features, and only the stages that use
# them turn them on (crates/streampulse-core/Cargo.toml). `cargo tree` resolves each package's
# features as a build of that package alone would, so this costs no compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for pkg in metadata-api audit ab-analytics vacuum; do
  heavy=$(cargo tree --locked -p "$pkg" -e normal,build --prefix none --format '{p}' \
    | awk '{print $1}' | grep -xE 'rdkafka|rdkafka-sys|sqlx|sqlx-core' | sort -u | tr '\n' ' ' || true)
  if [ -n "$heavy" ]; then
    echo "check-links: $pkg would build $heavy(turn the core's kafka/sql features off for it)" >&2
    status=1
  else
    echo "check-links: $pkg links neither librdkafka nor sqlx"
  fi
done
exit $status
