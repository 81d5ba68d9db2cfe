#!/usr/bin/env python3
"""What a container's log shipper and a person at a terminal each get from a run.

- `--log-format json` (the flag, not only `LOG_FORMAT`): every stderr line of every pipeline is
  one JSON object with a timestamp, a level and a message, and every line of the run carries the
  run's span (pipeline, logical date, run id), whose run id is the run record's.
- On a terminal with text logs, the CSV decode draws a progress bar; on a terminal with JSON logs
  it draws none (a bar between JSON lines breaks every line-oriented reader). Before the progress
  bar asked the configured format, it read only `LOG_FORMAT`, so `--log-format json` on a
  terminal still drew one.
"""
import argparse
import json
import os
import pathlib
import pty
import re
import select
import subprocess
import tempfile

from harness import check, finish

DAY = "2026-11-26"
ANSI = re.compile(rb"\x1b\[")


def json_lines(name, stderr, root, pipeline):
    """Checks the JSON log lines of one run against its run record."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    bad = []
    objects = []
    for l in lines:
        try:
            o = json.loads(l)
        except ValueError:
            bad.append(l)
            continue
        if not isinstance(o, dict) or not {"timestamp", "level", "message"} <= o.keys():
            bad.append(l)
        else:
            objects.append(o)
    check(f"{name}: every stderr line is a JSON log object ({len(lines)} lines)", lines and not bad,
          str(bad[:2])[:500])
    records = [json.loads(f.read_text()) for f in sorted((root / "runs" / pipeline).glob("*.json"),
                                                          key=lambda f: f.stat().st_mtime)]
    if not records:
        check(f"{name}: a run record", False, "none")
        return
    want = {"name": "run", "pipeline": pipeline, "run_id": records[-1]["run_id"],
            "logical_date": records[-1]["logical_date"]}
    spans = [o.get("span") for o in objects]
    check(f"{name}: every line carries the run's span (pipeline, date, run id of the record)",
          spans and all(s == want for s in spans),
          f"want {want}, got {[s for s in spans if s != want][:2]}")
    check(f"{name}: no terminal escapes in JSON logs", not ANSI.search(stderr.encode()))


def on_a_terminal(cmd):
    """Runs `cmd` with stderr on a pseudo-terminal (stdout to a pipe); returns (code, stderr bytes)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=slave, env={k: v for k, v in os.environ.items() if k != "LOG_FORMAT"})
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            out += chunk
        elif p.poll() is not None:
            break
    p.wait()
    os.close(master)
    return p.returncode, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, type=pathlib.Path)
    b = ap.parse_args().bin_dir
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp, "root")
        common = ["--data-root", root, "--threads", "2"]
        env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
        env["RUST_LOG"] = "info"
        runs = [
            ("datagen", "datagen", [b / "datagen", "--date", DAY, "--plays", "400000", "--users", "20000",
                                    "--songs", "3000", "--experiment-users", "5000"]),
            ("play-counts", "play-counts", [b / "play-counts", "--date", DAY]),
            ("recommend", "recommend", [b / "recommend", "--date", DAY, "--k", "10"]),
            ("revenue", "revenue", [b / "revenue", "--month", DAY[:7]]),
            ("ab-analytics", "ab-analytics", [b / "ab-analytics", "--date", DAY]),
            ("audit", "audit", [b / "audit"]),
        ]
        for name, pipeline, cmd in runs:
            p = subprocess.run([str(c) for c in cmd + common + ["--log-format", "json"]], env=env,
                               capture_output=True, text=True)
            check(f"{name} --log-format json exits 0", p.returncode == 0, p.stderr[-1500:])
            json_lines(name, p.stderr, root, pipeline)

        export = root / "exports" / f"plays-{DAY}.csv"
        for fmt, want_bar in [("text", True), ("json", False)]:
            code, err = on_a_terminal([b / "play-counts", "--date", DAY, "--input", export,
                                       "--data-root", root, "--threads", "1", "--log-format", fmt])
            check(f"play-counts on a terminal, {fmt} logs: exits 0", code == 0, err[-800:].decode(errors="replace"))
            # The bar's template ends "(<rate>, eta <time>) <rows> plays"; no log line has it.
            drew = b", eta " in err
            check(f"play-counts on a terminal, {fmt} logs: {'a' if want_bar else 'no'} progress bar",
                  drew == want_bar, repr(err[:300]))
            if fmt == "json":
                text = err.replace(b"\r\n", b"\n").decode(errors="replace")
                lines = [l for l in text.splitlines() if l.strip()]
                bad = [l for l in lines if not l.startswith("{")]
                check("play-counts on a terminal, json logs: every line is JSON", lines and not bad,
                      str(bad[:2])[:400])
    finish()


if __name__ == "__main__":
    main()
