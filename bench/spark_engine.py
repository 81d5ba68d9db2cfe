#!/usr/bin/env python3
"""Benchmark of play-counts' Spark engine: one generated day (and the same day at 4x) through the
embedded engine, our binary on Sail, our binary on Apache Spark (local-cluster, two executor
processes), and, as the anchor, the same counts written directly in PySpark on that same Spark
(bench/pyspark_play_counts.py). Reports medians of --runs runs: wall, CPU and peak RSS of our
process (for PySpark: of its client process), the ratio of our Spark run to the PySpark job's
wall, and how our process's peak RSS moves from 1x to 4x (the point of the engine: the day stays
on the cluster). Every run's outputs are checked byte-identical to the embedded engine's.
Run under scripts/with-spark.sh (SP_SAIL_REMOTE, SP_SPARK_REMOTE_TEST)."""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(__file__))
from measure import cpu_model, digest, measure  # noqa: E402

DATE = "2026-11-26"



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--plays", type=int, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--spark-python", required=True, help="the Spark venv's python (PySpark client)")
    a = ap.parse_args()
    b = pathlib.Path(a.bin_dir)
    remotes = {"sail": os.environ["SP_SAIL_REMOTE"], "spark": os.environ["SP_SPARK_REMOTE_TEST"]}
    rows = []
    audit_root = pathlib.Path(a.work, "spark-audit")
    shutil.rmtree(audit_root, ignore_errors=True)
    audit_runs = audit_root / "runs" / "play-counts"
    for scale in [1, 4]:
        plays = a.plays * scale
        data = os.path.join(a.work, f"spark-{plays}")
        part = os.path.join(data, "plays", f"date={DATE}")
        if not os.path.isdir(part):
            users, songs = max(plays // 16, 1000), max(a.plays // 200, 1000)
            subprocess.run([str(b / "datagen"), "--date", DATE, "--data-root", data, "--plays", str(plays),
                            "--users", str(users), "--songs", str(songs), "--datasets", "plays"], check=True,
                           stderr=subprocess.DEVNULL)
        configs = {
            "embedded": [],
            "sail": ["--engine", "spark", "--spark-remote", remotes["sail"]],
            "spark": ["--engine", "spark", "--spark-remote", remotes["spark"]],
        }
        want = None
        results = {}
        for name, flags in configs.items():
            runs = []
            for _ in range(a.runs):
                records = set(pathlib.Path(data, "runs", "play-counts").glob("*.json"))
                runs.append(measure([str(b / "play-counts"), "--date", DATE, "--data-root", data, *flags]))
                if name == "spark":
                    # The Apache Spark runs' records, at both scales, for the audit's cluster sizing.
                    for f in set(pathlib.Path(data, "runs", "play-counts").glob("*.json")) - records:
                        audit_runs.mkdir(parents=True, exist_ok=True)
                        shutil.copy(f, audit_runs / f.name)
                got = digest(data, DATE)
                if want is None:
                    want = got
                if got != want:
                    raise SystemExit(f"{name} at {scale}x: outputs differ from the embedded engine's")
            results[name] = runs
        results["pyspark"] = [measure([a.spark_python, os.path.join(os.path.dirname(__file__), "pyspark_play_counts.py"),
                                       remotes["spark"], part, DATE]) for _ in range(a.runs)]
        for name, runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append({"scale": scale, "plays": plays, "config": name, **med,
                         "runs": [r["wall_s"] for r in runs]})
            print(f"{scale}x {name:9s} wall {med['wall_s']:7.2f} s  cpu {med['cpu_s']:7.2f} s  "
                  f"rss {med['peak_rss_mb']:7.1f} MB", flush=True)

    def med(scale, config, key):
        return next(r[key] for r in rows if r["scale"] == scale and r["config"] == config)

    summary = {
        "spark_vs_pyspark_wall": {s: med(s, "spark", "wall_s") / med(s, "pyspark", "wall_s") for s in [1, 4]},
        "rss_4x_over_1x": {c: med(4, c, "peak_rss_mb") / med(1, c, "peak_rss_mb") for c in ["embedded", "sail", "spark"]},
    }
    cpu = cpu_model()
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
           "plays_1x": a.plays, "runs": a.runs, "rows": rows, "summary": summary}
    pathlib.Path(a.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# play-counts on Spark: embedded, Sail, Apache Spark, and the same job in PySpark",
             "", f"{out['date']}, {cpu}, {os.cpu_count()} cores; medians of {a.runs} runs; "
             f"1x = {a.plays} plays. Apache Spark 4.3 local-cluster[2,1,1024] (two executor processes) and Sail "
             "on this machine, beside our process. Wall is the whole run; CPU and peak RSS are our process's "
             "(PySpark: its client's; the cluster's own are not in them).", "",
             "| scale | config | wall s | CPU s | peak RSS MB |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scale']}x | {r['config']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.1f} |")
    lines += ["", "Our Spark run over the hand-written PySpark job (wall): "
              + ", ".join(f"{s}x {v:.2f}" for s, v in summary["spark_vs_pyspark_wall"].items()),
              "", "Our process's peak RSS, 4x over 1x: "
              + ", ".join(f"{c} {v:.2f}" for c, v in summary["rss_4x_over_1x"].items()), ""]
    # The audit's projection of the cluster a growing day needs, from these Spark runs.
    audit_out = audit_root / "report"
    subprocess.run([str(b / "audit"), "--data-root", str(audit_root), "--out-dir", str(audit_out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = (audit_out / "audit.md").read_text()
    cluster = report[report.index("## On a Spark cluster"):] if "## On a Spark cluster" in report else ""
    lines += ["The audit on the Apache Spark runs (both scales), projecting the executor cores that keep "
              "the day inside a 6 h window at 30 % growth a year:", "", "#" + cluster.strip(), ""]
    pathlib.Path(a.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
