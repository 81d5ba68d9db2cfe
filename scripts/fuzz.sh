#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 60) and prints, per
# target, its run time, executions and whether it crashed. Not part of `make test`: a crash is
# kept in fuzz/artifacts/<target>/ and becomes a regression test in the crate it found a bug in.
#   scripts/fuzz.sh [TARGET...]     (default: every target)
# Installs cargo-fuzz on first use. It runs with `--sanitizer none`, the mode that works on the
# stable toolchain: libFuzzer's coverage guidance, Rust's own checks (overflow, bounds, debug
# assertions), no AddressSanitizer (safe Rust needs none).
# Seed corpora are generated, not committed: a datagen day (CSV rows, their JSON play events, its
# songs as the metadata API serves them) plus the hostile cases a real export brings.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}
say() { echo "fuzz.sh: $*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked >&2
fi

seeds="$CARGO_TARGET_DIR/fuzz-seeds"
if [ ! -f "$seeds/.complete" ]; then
  say "generating seed corpora under $seeds"
  rm -rf "$seeds" && mkdir -p "$seeds"
  [ -x "$CARGO_TARGET_DIR/release/datagen" ] || make build >&2
  day=$(mktemp -d)
  "$CARGO_TARGET_DIR/release/datagen" --date 2026-11-26 --data-root "$day" --plays 2000 --users 200 \
    --songs 100 --bad-rows 0.02 --datasets plays-csv,songs >&2
  PY=$(scripts/python-env.sh)
  "$PY" - "$day" "$seeds" <<'EOF'
import csv, io, json, pathlib, sys
import pyarrow.parquet as pq
day, seeds = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
export = (day / "exports" / "plays-2026-11-26.csv").read_bytes()
header, *rows = export.split(b"\n")
for t in ["csv_blocks", "csv_file", "play_event", "song_json", "dates_and_decimals", "change_feed"]:
    (seeds / t).mkdir(parents=True, exist_ok=True)
def put(target, name, data):
    (seeds / target / name).write_bytes(data)
# Bodies under the header (csv_blocks) and whole files (csv_file).
body = b"\n".join(rows[:40]) + b"\n"
hostile = {
    "datagen": body,
    "crlf": body.replace(b"\n", b"\r\n"),
    "quoted": b'1,2,3,4,5,6,2026-11-26T00:00:00.000Z,1,2,"ios","US","a,b",false,false,"1.""2"""\n',
    "bad-utf8": rows[0] + b"\xff\xfe\n",
    "nul": rows[0].replace(b",", b"\x00,", 1) + b"\n",
    "huge-field": b"1,2,3,4,5,6,2026-11-26T00:00:00.000Z,1,2," + b"x" * 100_000 + b",US,s,false,false,1\n",
    "short": b"1,2,3\n",
    "unterminated-quote": b'1,2,3,4,5,6,2026-11-26T00:00:00.000Z,1,2,"ios\n',
    "no-final-newline": rows[0],
}
for name, data in hostile.items():
    put("csv_blocks", name, data)
    put("csv_file", name, header + b"\n" + data)
put("csv_file", "bom", b"\xef\xbb\xbf" + header + b"\n" + body)
put("csv_file", "gzip-magic", b"\x1f\x8b\x08\x00garbage")
put("csv_file", "zstd-magic", b"\x28\xb5\x2f\xfdgarbage")
# JSON play events, as play-ingest reads them.
names = header.decode().split(",")
for i, row in enumerate(csv.reader(io.StringIO(b"\n".join(rows[:30]).decode()))):
    if len(row) == len(names):
        put("play_event", f"datagen-{i}", json.dumps(dict(zip(names, row))).encode())
put("play_event", "ms", b'{"play_id":1,"user_id":2,"session_id":"s","song_id":3,"artist_id":4,"album_id":5,'
    b'"played_at":1764115200000,"ms_played":1,"track_ms":2,"platform":"ios","country":"US","source":"x",'
    b'"shuffle":false,"offline":false,"client_version":"1"}')
put("play_event", "not-json", b"{\"play_id\": 1,")
# Songs as the metadata API serves them.
songs = pq.read_table(next((day / "songs").rglob("*.parquet"))).to_pylist()[:20]
for i, s in enumerate(songs):
    s["release_date"] = s["release_date"].isoformat()
    s["updated_at"] = s["updated_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z")
    put("song_json", f"datagen-{i}", json.dumps(s).encode())
# Change-feed pages and Retry-After values, as the partner sends them.
feed = {"songs": [{"song_id": s["song_id"], "updated_at": s["updated_at"]} for s in songs], "next_cursor": "c2"}
put("change_feed", "page", json.dumps(feed).encode())
put("change_feed", "last-page", json.dumps({"songs": [], "next_cursor": None}).encode())
put("change_feed", "cursor-unicode", json.dumps({"songs": [], "next_cursor": "a&b=c d%é#"}).encode())
for i, text in enumerate(["120", "0", "Wed, 26 Nov 2026 00:00:10 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "-1"]):
    put("change_feed", f"retry-after-{i}", text.encode())
for i, text in enumerate(["2026-11-26", "2024-02-29", "2026-02-30", "2026-11-26T13:45:12.345Z",
                          "2026-11-26T10:00:00+02:00", "9.99", "-0.000001", "1e-3", "12.3456789"]):
    put("dates_and_decimals", f"seed-{i}", text.encode())
EOF
  rm -rf "$day"
  touch "$seeds/.complete"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(csv_blocks csv_file play_event song_json dates_and_decimals change_feed)
fi
status=0
summary=""
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  say "$t: ${seconds}s"
  if cargo fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "$seeds/$t" -- \
      -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$t/)"
    status=1
  fi
  # A crash prints no "Done" line: the greps find nothing then, which must not end the script
  # (set -e with pipefail) before the other targets run and the summary is printed.
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1 || true)
  summary+=$(printf '%-20s %6ss %12s execs  %s' "$t" "${took:-$seconds}" "${runs:-?}" "$result")$'\n'
  [ "$result" = ok ] || tail -40 "$log" >&2
  rm -f "$log"
done
printf '\n%-20s %7s %18s  %s\n%s' target time executions result "$summary"
exit $status
