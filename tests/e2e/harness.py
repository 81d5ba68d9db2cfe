"""What the end-to-end checks share: one line per check, a closing tally, and running a binary
with its stderr shown only when it fails."""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

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


def free_port():
    """A TCP port free on 127.0.0.1 (for a server this check starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, seconds=30):
    """Waits until something listens on 127.0.0.1:port; exits the check when nothing does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"no server on 127.0.0.1:{port} after {seconds} s")


def moto_server(env=None):
    """Starts moto's S3 server (from this Python's environment) on a free port of 127.0.0.1;
    returns the process and its endpoint URL, once it listens."""
    port = free_port()
    moto = pathlib.Path(sys.executable).parent / "moto_server"
    server = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env or dict(os.environ))
    wait_for_port(port)
    return server, f"http://127.0.0.1:{port}"


def strace():
    """The strace binary for fault injection (installed with apt-get when missing and root)."""
    path = shutil.which("strace")
    if path is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "strace"], capture_output=True)
        path = shutil.which("strace")
    return path
