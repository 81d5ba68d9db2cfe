#!/usr/bin/env bash
# Validates docker-compose.yml without a Docker engine, then asserts the local stack's fixes on
# the rendered configuration:
#   scripts/check-compose.sh [COMPOSE_FILE]      (default: docker-compose.yml at the top)
# `docker-compose config -q` for the default services and for each profile the file uses
# (`--profile P`), then, on the configuration rendered with every profile:
#   - Kafka advertises a host listener on localhost:29092 (published) besides kafka:9092;
#   - metadata-api has a healthcheck (its --port-file) and metadata-sync waits for service_healthy;
#   - the one-shot init-data (root) gives ./data to uid 10001, and every service writing
#     ./data waits for it (service_completed_successfully);
#   - revenue's month falls back to SP_DATE's in the container's sh: one `$` for the shell after
#     compose's unescaping, checked by running the rendered command against a stub `revenue`;
#   - the cluster profile's Spark Connect server, and the --engine spark services sent to it.
# Without the `docker-compose` client: installed with apt-get when running as root, else the
# check is skipped (exit 0). Exit 1 when the file is invalid or an assertion fails.
set -euo pipefail
if [ -n "${1:-}" ]; then
  file="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
else
  file="$(cd "$(dirname "$0")/.." && pwd)/docker-compose.yml"
fi
cd "$(dirname "$file")"
echo "checking $file"

if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "docker-compose not found: installing it with apt-get" >&2
    # Without the recommended docker.io: `config` needs no engine.
    apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  else
    echo "SKIPPED: no docker-compose client, and installing it needs root and apt-get"
    exit 0
  fi
fi
dc=(docker-compose -f "$file")
echo "client: $(docker-compose version --short 2>/dev/null || docker-compose version | head -1)"

failures=0
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. Validity: default services, then each profile.
profiles=$(grep -o 'profiles: *\[[^]]*\]' "$file" | sed 's/.*\[//; s/\]//' | tr ',' '\n' \
  | tr -d ' "'"'" | grep -v '^$' | sort -u)
if "${dc[@]}" config -q; then ok "config -q (default services)"; else fail "config -q (default services)"; fi
all_profiles=()
for p in $profiles; do
  all_profiles+=(--profile "$p")
  if "${dc[@]}" --profile "$p" config -q; then ok "config -q --profile $p"; else fail "config -q --profile $p"; fi
done
if [ "$failures" -gt 0 ]; then
  echo "docker-compose.yml is invalid ($failures failure(s))"
  exit 1
fi

rendered="$tmp/rendered.yml"
"${dc[@]}" "${all_profiles[@]}" config >"$rendered"

# How this client renders one literal `$` of the container's command: `$` (unescaped) or `$$`
# (compose v1.29 re-escapes its output, so that it is a valid compose file again).
mkdir "$tmp/probe"
# shellcheck disable=SC2016 # literal dollars, for compose
printf 'services:\n  p:\n    image: probe\n    command: ["echo", "$$PROBE"]\n' >"$tmp/probe/docker-compose.yml"
(cd "$tmp/probe" && docker-compose config) >"$tmp/probe/rendered.yml"
# shellcheck disable=SC2016
if grep -qF '$$PROBE' "$tmp/probe/rendered.yml"; then d='$$'; else d='$'; fi
echo "this client renders a literal \$ as '$d'"

# The rendered block of one service (under the top-level `services:`).
block() {
  awk -v svc="$1" '
    /^[^ ]/ { top = $0; inside = 0; next }
    top == "services:" && /^  [^ ]/ { inside = ($0 == "  " svc ":") ; next }
    inside { print }' "$rendered"
}
# The condition of DEP in the depends_on of the block on stdin ("" when it has none).
dep_condition() {
  awk -v dep="$1" '
    /^    depends_on:/ { deps = 1; next }
    deps && /^    [^ -]/ { deps = 0 }
    deps && $0 == "      " dep ":" { want = 1; next }
    deps && /^      [^ ]/ { want = 0 }
    deps && want && !done && /condition:/ { sub(/.*condition: */, ""); print; done = 1 }'
}
# Whether the block on stdin mounts /data writable (short `src:/data[:rw]` or long syntax).
writes_data() {
  awk '
    /^    volumes:/ { vols = 1; next }
    vols && /^    [^ -]/ { vols = 0 }
    vols && /:\/data(:rw)?$/ { found = 1 }
    vols && /target: \/data$/ { long = 1 }
    vols && long && /read_only: true/ { long = 0 }
    END { exit !(found || long) }'
}

# 2. Kafka: a host listener besides kafka:9092.
kafka="$(block kafka)"
adv="$(grep 'KAFKA_ADVERTISED_LISTENERS:' <<<"$kafka" || true)"
host_name="$(grep -o '[A-Z_]*://localhost:29092' <<<"$adv" | sed 's,://.*,,' || true)"
if grep -q 'PLAINTEXT://kafka:9092' <<<"$adv"; then ok "kafka advertises kafka:9092 to the containers"; else fail "kafka does not advertise PLAINTEXT://kafka:9092"; fi
if [ -n "$host_name" ] \
  && grep 'KAFKA_LISTENERS:' <<<"$kafka" | grep "$host_name://[^,]*:29092" >/dev/null \
  && grep 'KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:' <<<"$kafka" | grep "$host_name:PLAINTEXT" >/dev/null; then
  ok "kafka has the host listener $host_name, advertised as localhost:29092 (protocol map included)"
else
  fail "kafka has no host listener advertised as localhost:29092 (KAFKA_LISTENERS, ADVERTISED, PROTOCOL_MAP)"
fi
if grep -Eq "published: ['\"]?29092['\"]?$" <<<"$kafka" && grep -q 'target: 29092$' <<<"$kafka"; then
  ok "kafka publishes port 29092 on the host"
else
  fail "kafka does not publish 29092:29092"
fi

# 3. metadata-api: healthcheck on its --port-file; metadata-sync waits for it to be healthy.
api="$(block metadata-api)"
port_file="$(grep -A1 -e '- --port-file$' <<<"$api" | tail -1 | sed 's/^ *- *//' || true)"
if grep -q '^    healthcheck:' <<<"$api" && [ -n "$port_file" ] \
  && sed -n '/^    healthcheck:/,/^    [^ -]/p' <<<"$api" | grep -F -- "$port_file" >/dev/null; then
  ok "metadata-api healthcheck tests its --port-file $port_file"
else
  fail "metadata-api has no healthcheck on its --port-file"
fi
cond="$(block metadata-sync | dep_condition metadata-api)"
if [ "$cond" = service_healthy ]; then ok "metadata-sync depends on metadata-api: service_healthy"; else fail "metadata-sync depends on metadata-api: '${cond}', not service_healthy"; fi

# 4. ./data handed to uid 10001 before any pipeline writes it.
init="$(block init-data)"
if grep -Eq "^    user: ['\"]?(0|root)['\"]?$" <<<"$init" && grep -q 'chown.*10001' <<<"$init" \
  && writes_data <<<"$init"; then
  ok "init-data runs as root and chowns ./data (/data) to 10001"
else
  fail "no init-data service (user 0, chown 10001, ./data mounted)"
fi
for svc in $("${dc[@]}" "${all_profiles[@]}" config --services); do
  [ "$svc" = init-data ] && continue
  block "$svc" | writes_data || continue
  cond="$(block "$svc" | dep_condition init-data)"
  if [ "$cond" = service_completed_successfully ]; then
    ok "$svc writes /data after init-data (service_completed_successfully)"
  else
    fail "$svc writes /data without waiting for init-data (condition '${cond}')"
  fi
done

# 5. revenue: --month "${SP_MONTH:-${SP_DATE%-*}}" for the container's sh.
rev="$(block revenue)"
want="--month \"${d}{SP_MONTH:-${d}{SP_DATE%-*}}\""
line="$(grep -F -- "$want" <<<"$rev" | head -1 || true)"
if [ -n "$line" ]; then
  ok "revenue's command renders $want (one \$ for the shell)"
else
  fail "revenue's command does not render $want:"
  sed -n '/^    command:/,/^    [^ -]/p' <<<"$rev"
fi
if grep -q '^      SP_DATE:' <<<"$rev"; then ok "revenue's environment has SP_DATE"; else fail "revenue's environment lacks SP_DATE"; fi
if [ -n "$line" ]; then
  # The string sh receives: the YAML scalar unquoted, then compose's `$$` unescaped.
  cmd="${line#"${line%%[! ]*}"}"; cmd="${cmd#- }"
  case "$cmd" in
    \'*) cmd="${cmd#\'}"; cmd="${cmd%\'}"; cmd="${cmd//\'\'/\'}" ;;
    \"*) cmd="${cmd#\"}"; cmd="${cmd%\"}"; cmd="${cmd//\\\"/\"}"; cmd="${cmd//\\\\/\\}" ;;
  esac
  [ "$d" = '$$' ] && cmd="${cmd//\$\$/\$}"
  mkdir "$tmp/bin"
  printf '#!/bin/sh\necho "$*"\n' >"$tmp/bin/revenue"
  chmod +x "$tmp/bin/revenue"
  run() { env -i PATH="$tmp/bin:/usr/bin:/bin" "$@" sh -c "$cmd"; }
  echo "revenue's command as sh receives it: $cmd"
  for case_ in "SP_DATE=2026-11-26 SP_MONTH= =2026-11" "SP_DATE=2026-11-26 SP_MONTH=2026-10 =2026-10" \
    "SP_DATE=2027-01-01 =2027-01"; do
    vars="${case_% =*}"; expect="--xcom --month ${case_##* =}"
    # shellcheck disable=SC2086
    got="$(run $vars)"
    if [ "$got" = "$expect" ]; then ok "with $vars: revenue $got"; else fail "with $vars: revenue '$got', expected '$expect'"; fi
  done
fi

# 6. The cluster profile: a Spark Connect server on spark:15002, the root at the pipelines' /data,
#    and play-counts-spark / revenue-spark sent to it once it is healthy.
spark="$(block spark)"
if grep -q 'spark.connect.grpc.binding.port=15002' <<<"$spark" && grep -q 'SPARK_NO_DAEMONIZE' <<<"$spark" \
  && grep -Eq '(target: /data|:/data)' <<<"$spark" && grep -q 'healthcheck:' <<<"$spark"; then
  ok "spark serves Spark Connect on 15002 in the foreground, ./data at /data, with a healthcheck"
else
  fail "spark: no Connect server on 15002 (foreground, ./data at /data, healthcheck)"
fi
for svc in play-counts-spark revenue-spark; do
  b="$(block "$svc")"
  if grep -q 'SP_ENGINE: spark' <<<"$b" && grep -q 'SP_SPARK_REMOTE: sc://spark:15002' <<<"$b" \
    && grep -A1 '^      spark:' <<<"$b" | grep -q service_healthy; then
    ok "$svc runs --engine spark against sc://spark:15002 once spark is healthy"
  else
    fail "$svc is not pointed at a healthy spark (SP_ENGINE, SP_SPARK_REMOTE, depends_on)"
  fi
done

# 7. The lake profile: MinIO, its bucket made once it is healthy, and the daily pipelines on
#    s3://streampulse/ as Delta tables, with local credentials and no metadata service.
if grep -q 'healthcheck:' <<<"$(block minio)" && [ "$(block lake-bucket | dep_condition minio)" = service_healthy ]; then
  ok "minio has a healthcheck, and lake-bucket waits for it"
else
  fail "minio: no healthcheck, or lake-bucket does not wait for it"
fi
for svc in lake-datagen lake-play-counts lake-recommend lake-ab-analytics lake-revenue lake-vacuum; do
  b="$(block "$svc")"
  if grep -q 'SP_DATA_ROOT: s3://streampulse/lake' <<<"$b" && grep -q 'SP_TABLE_FORMAT: delta' <<<"$b" \
    && grep -q 'AWS_ENDPOINT_URL: http://minio:9000' <<<"$b" && grep -Eq "AWS_EC2_METADATA_DISABLED: ['\"]?true" <<<"$b" \
    && [ "$(dep_condition lake-bucket <<<"$b")" = service_completed_successfully ]; then
    ok "$svc runs on s3://streampulse/lake in Delta format, after lake-bucket"
  else
    fail "$svc is not on the lake (SP_DATA_ROOT, SP_TABLE_FORMAT, AWS_ENDPOINT_URL, metadata off, depends_on)"
  fi
done

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "docker-compose.yml: valid, all checks passed"
