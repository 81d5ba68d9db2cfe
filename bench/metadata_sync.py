"""metadata-sync against a partner-like metadata-api: wall time of a full sync of N changed songs
against the rate bound (requests / rate), the same against a faulty partner (a share of 5xx and
of requests that hang past our timeout), and the sequential client (one request at a time, what
the old job did) measured on a smaller catalog and projected linearly."""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_model, measure  # noqa: E402

DATE = "2026-11-26"
TOKEN = "bench-token"


def start_api(bin_dir, catalog, work, latency_ms, rate, faults=()):
    port_file = work / "api.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [f"{bin_dir}/metadata-api", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
         "--catalog", str(catalog), "--latency-ms", str(latency_ms), "--rate", str(rate),
         "--token", TOKEN, *faults],
        stderr=subprocess.DEVNULL)
    for _ in range(400):
        if port_file.exists() and port_file.read_text():
            return proc, f"http://{port_file.read_text().strip()}"
        time.sleep(0.025)
    proc.kill()
    raise RuntimeError("metadata-api did not start")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def sync_once(bin_dir, api_url, root, extra):
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    cmd = [f"{bin_dir}/metadata-sync", "--date", DATE, "--data-root", str(root),
           "--api-url", api_url, "--api-token", TOKEN, *extra]
    m = measure(cmd)
    record = json.loads(next((root / "runs" / "metadata-sync").glob("*.json")).read_text())
    m["requests"] = record["extra"]["api"]["requests"]
    m["rate_limited"] = record["extra"]["api"]["rate_limited"]
    m["retries"] = record["extra"]["api"]["retries"]
    m["timeouts"] = record["extra"]["api"]["timeouts"]
    m["server_errors"] = record["extra"]["api"]["server_errors"]
    m["hedged"] = record["extra"]["api"].get("hedged", 0)
    m["songs"] = record["rows_in"]
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--songs", type=int, default=5000)
    ap.add_argument("--seq-songs", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=300)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--faulty-songs", type=int, default=2000)
    ap.add_argument("--fault-rate", type=float, default=0.08)
    ap.add_argument("--hang-rate", type=float, default=0.01)
    ap.add_argument("--hang-s", type=int, default=15)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)

    catalogs = {}
    for n in (a.songs, a.faulty_songs, a.seq_songs):
        root = work / f"partner-{n}"
        if not (root / "songs" / f"date={DATE}").exists():
            subprocess.run([f"{a.bin_dir}/datagen", "--date", DATE, "--data-root", str(root),
                            "--songs", str(n), "--datasets", "songs"], check=True,
                           stderr=subprocess.DEVNULL)
        catalogs[n] = root / "songs" / f"date={DATE}"

    page = 500
    rows = {}

    def sync_runs(songs, name, faults=()):
        """`a.runs` syncs of `songs` changed songs, each against a partner started afresh (a
        full bucket, and its fault draws from the same seed)."""
        runs = []
        for i in range(a.runs):
            api, url = start_api(a.bin_dir, catalogs[songs], work, a.latency_ms, a.rate, faults)
            try:
                m = sync_once(a.bin_dir, url, work / name, ["--rate", str(a.rate)])
            finally:
                stop(api)
            print(f"{name} run {i + 1}: {m}", file=sys.stderr)
            runs.append(m)
        return runs

    rows["metadata-sync (32 in flight, token bucket)"] = sync_runs(a.songs, "sync")
    # The partner on a bad day: 5xx, and hangs longer than our 10 s timeout.
    faulty_runs = sync_runs(a.faulty_songs, "sync-faulty",
                            ["--fault-rate", str(a.fault_rate), "--timeout-rate", str(a.hang_rate),
                             "--hang-s", str(a.hang_s)])

    api, url = start_api(a.bin_dir, catalogs[a.seq_songs], work, a.latency_ms, a.rate)
    try:
        seq = sync_once(a.bin_dir, url, work / "sync-seq", ["--rate", str(a.rate),
                                                             "--concurrency", "1", "--burst", "1"])
        print(f"sequential: {seq}", file=sys.stderr)
    finally:
        stop(api)

    requests_needed = a.songs + -(-a.songs // page)
    bound = requests_needed / a.rate
    med = {k: statistics.median(r[k] for r in rows["metadata-sync (32 in flight, token bucket)"])
           for k in ("wall_s", "cpu_s", "peak_rss_mb", "requests", "rate_limited")}
    seq_projected = seq["wall_s"] * a.songs / a.seq_songs
    faulty_needed = a.faulty_songs + -(-a.faulty_songs // page)
    faulty_bound = faulty_needed / a.rate
    fmed = {k: statistics.median(r[k] for r in faulty_runs)
            for k in ("wall_s", "cpu_s", "peak_rss_mb", "requests", "rate_limited", "retries",
                      "timeouts", "server_errors", "hedged")}
    result = {
        "songs": a.songs, "latency_ms": a.latency_ms, "rate": a.rate,
        "rate_bound_s": bound, "sync": med, "sync_runs": rows,
        "sequential_measured": {**seq, "songs": a.seq_songs},
        "sequential_projected_s": seq_projected,
        "ratio_to_bound": med["wall_s"] / bound,
        "faulty": {"songs": a.faulty_songs, "fault_rate": a.fault_rate, "hang_rate": a.hang_rate,
                   "hang_s": a.hang_s, "rate_bound_s": faulty_bound, "sync": fmed,
                   "runs": faulty_runs, "ratio_to_bound": fmed["wall_s"] / faulty_bound,
                   "ratio_to_requests_sent": fmed["wall_s"] / (fmed["requests"] / a.rate)},
        "host_cpu": cpu_model(),
        "host_cores": os.cpu_count(),
    }
    Path(a.out + ".json").write_text(json.dumps(result, indent=2))
    md = [
        f"# metadata-sync benchmark: {a.songs} changed songs, {a.latency_ms} ms latency, "
        f"{a.rate:g} req/s partner limit",
        "",
        f"Rate bound: {requests_needed} requests ({a.songs} songs + feed pages of {page}) / "
        f"{a.rate:g} per s = **{bound:.1f} s**. Medians of {a.runs} runs.",
        "",
        "| client | wall | vs rate bound | requests | 429s | CPU | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| metadata-sync | {med['wall_s']:.1f} s | {med['wall_s'] / bound:.3f}x | "
        f"{med['requests']:.0f} | {med['rate_limited']:.0f} | {med['cpu_s']:.2f} s | "
        f"{med['peak_rss_mb']:.0f} MB |",
        f"| sequential (one at a time), projected from {a.seq_songs} songs measured in "
        f"{seq['wall_s']:.1f} s | {seq_projected / 60:.1f} min | {seq_projected / bound:.1f}x | "
        f"| | | |",
        "",
        f"## A faulty partner: {a.faulty_songs} songs, {a.fault_rate:.0%} 5xx, {a.hang_rate:.0%} "
        f"of requests hang {a.hang_s} s (our timeout: 10 s)",
        "",
        f"Rate bound: {faulty_needed} requests / {a.rate:g} per s = **{faulty_bound:.1f} s**; the "
        f"retries add requests of their own (the last column: wall against the requests really "
        f"sent, at the rate). Medians of {a.runs} runs.",
        "",
        "| client | wall | vs rate bound | requests | retries | 5xx | timeouts | hedged | 429s | CPU | "
        "peak RSS | vs requests sent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| metadata-sync | {fmed['wall_s']:.1f} s | {fmed['wall_s'] / faulty_bound:.3f}x | "
        f"{fmed['requests']:.0f} | {fmed['retries']:.0f} | {fmed['server_errors']:.0f} | "
        f"{fmed['timeouts']:.0f} | {fmed['hedged']:.0f} | "
        f"{fmed['rate_limited']:.0f} | {fmed['cpu_s']:.2f} s | "
        f"{fmed['peak_rss_mb']:.0f} MB | {fmed['wall_s'] / (fmed['requests'] / a.rate):.3f}x |",
        "",
        f"Host: {cpu_model()}, {os.cpu_count()} cores.",
        "",
    ]
    Path(a.out + ".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
