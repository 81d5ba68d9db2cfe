#!/usr/bin/env bash
# Prints the URL of a running PostgreSQL server for the tests, starting one if needed:
#   1. $DATABASE_URL when it is set (CI services, a developer's own server);
#   2. the server on 127.0.0.1:5432 when it answers (trust auth, role postgres);
#   3. else a private server under $SP_PG_DIR (default ~/.cache/streampulse/postgres) on port
#      $SP_PG_PORT (default 55432), installing PostgreSQL from Debian's packages when missing.
# Progress goes to stderr; stdout is only the URL, so `DATABASE_URL=$(scripts/postgres.sh)` works.
set -euo pipefail

if [ -n "${DATABASE_URL:-}" ]; then
  echo "$DATABASE_URL"
  exit 0
fi

say() { echo "postgres.sh: $*" >&2; }

answers() { # host port
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$1" -p "$2" -t 2
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

if answers 127.0.0.1 5432; then
  echo "postgres://postgres@127.0.0.1:5432/postgres"
  exit 0
fi

dir="${SP_PG_DIR:-$HOME/.cache/streampulse/postgres}"
port="${SP_PG_PORT:-55432}"
url="postgres://postgres@127.0.0.1:$port/postgres"
if answers 127.0.0.1 "$port"; then
  echo "$url"
  exit 0
fi

# Find the server binaries: on PATH, else Debian's versioned directory, else install them.
bindir=""
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
  bindir="$(dirname "$(command -v initdb)")"
else
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  say "PostgreSQL is not installed; installing it from Debian's packages"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >&2
  bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi

# PostgreSQL refuses to run as root: use the `postgres` system user then.
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
  run_as=(runuser -u postgres --)
fi

mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
  say "initialising a private cluster in $dir/data"
  "${run_as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >&2
fi
say "starting PostgreSQL on 127.0.0.1:$port (log: $dir/log)"
"${run_as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >&2
echo "$url"
