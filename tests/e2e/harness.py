"""What the end-to-end checks share: one line per check, a closing tally, and running a binary
with its stderr shown only when it fails."""
import os
import subprocess
import sys

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def run(cmd):
    """Runs `cmd` (a binary and its arguments) with warnings-only logs; returns its exit code."""
    p = subprocess.run([str(c) for c in cmd], env=dict(os.environ, RUST_LOG="warn"), capture_output=True,
                       text=True)
    if p.returncode != 0:
        print(f"{cmd[0]} exited {p.returncode}:\n{p.stderr[-3000:]}", file=sys.stderr)
    return p.returncode


def finish():
    """Prints "N passed, M failed" and exits 1 on any failure."""
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)
