"""What the end-to-end checks share: one line per check, a closing tally, and running a binary
with its stderr shown only when it fails."""
import functools
import html as html_mod
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
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


# Injected into a copy of a report: lays out every chart and lists what a reader would see wrong.
_LAYOUT_CHECK = """<script>
window.addEventListener('load', () => {
  const problems = [];
  const svgs = [...document.querySelectorAll('svg')];
  if (svgs.length === 0) problems.push('no chart on the page');
  svgs.forEach((svg, i) => {
    const box = svg.getBoundingClientRect();
    if (box.width < 100 || box.height < 60) problems.push(`chart ${i} is ${box.width}x${box.height} px`);
    if (svg.querySelectorAll('circle').length === 0) problems.push(`chart ${i} draws no data point`);
    const texts = [...svg.querySelectorAll('text')];
    if (texts.length < 5) problems.push(`chart ${i} has ${texts.length} labels: no scale`);
    for (const t of texts) {
      const r = t.getBoundingClientRect();
      if (t.textContent.trim() !== '' && r.width === 0) problems.push(`chart ${i}: "${t.textContent}" is not laid out`);
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
        problems.push(`chart ${i}: "${t.textContent}" overflows the chart (text ${Math.round(r.left)}..${Math.round(r.right)}`
          + ` x ${Math.round(r.top)}..${Math.round(r.bottom)}, chart ${Math.round(box.left)}..${Math.round(box.right)}`
          + ` x ${Math.round(box.top)}..${Math.round(box.bottom)})`);
    }
  });
  const page = document.documentElement.scrollWidth;
  if (page > window.innerWidth) problems.push(`the page is ${page} px wide in a ${window.innerWidth} px window`);
  const out = document.createElement('pre');
  out.id = 'sp-layout';
  out.textContent = JSON.stringify({charts: svgs.length, problems});
  document.body.appendChild(out);
});
</script>"""


@functools.cache
def _chromium():
    """The headless Chromium's path, found (or installed) once per check script."""
    return subprocess.run([str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / "chromium.sh")],
                          capture_output=True, text=True, check=True).stdout.strip()


def browser_layout(html_path, widths=(1280, 760)):
    """Lays out the HTML report at `html_path` in headless Chromium (scripts/chromium.sh) at each
    window width; returns (charts found, problems), problems being every empty chart, chart without
    a scale, text outside its chart and page wider than the window."""
    chromium = _chromium()
    page = pathlib.Path(html_path).read_text()
    charts, problems = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / "report.html"
        copy.write_text(page.replace("</body>", _LAYOUT_CHECK + "</body>", 1))
        for width in widths:
            p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp}/profile",
                                f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
                                copy.as_uri()], capture_output=True, text=True, timeout=120)
            found = re.search(r'<pre id="sp-layout">(.*?)</pre>', p.stdout, re.S)
            if not found:
                problems.append(f"{width} px: no layout result (exit {p.returncode}): {p.stderr[-500:]}")
                continue
            result = json.loads(html_mod.unescape(found.group(1)))
            charts = result["charts"]
            problems += [f"{width} px: {x}" for x in result["problems"]]
    return charts, problems
