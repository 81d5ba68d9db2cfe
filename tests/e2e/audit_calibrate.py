#!/usr/bin/env python3
"""End-to-end check of `audit --calibrate`: it generates data at three scales, runs every batch
pipeline on each (the largest scale again on one thread), and fits runtime and memory against
input size. Checks that every pipeline got a fit on three runs, a measured core scaling, a
recommendation and a band, that runtime grows with the input, and that the three reports exist.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from harness import browser_layout

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    with tempfile.TemporaryDirectory() as root:
        p = subprocess.run([b / "audit", "--data-root", root, "--calibrate", "--calibrate-plays", "500000"],
                           env=dict(os.environ, RUST_LOG="error"), capture_output=True, text=True)
        check("audit --calibrate runs", p.returncode == 0, p.stderr[-2000:])
        out = pathlib.Path(root, "reports", "audit")
        check("Markdown, JSON and HTML reports", all((out / f).exists() for f in ["audit.md", "audit.json", "audit.html"]))
        if not (out / "audit.json").exists():
            sys.exit(1)
        doc = json.loads((out / "audit.json").read_text())
        # The HTML report laid out by a real browser: two charts per pipeline, each with points,
        # a scale and the limits, nothing outside its chart, no page wider than the window.
        charts, problems = browser_layout(out / "audit.html")
        check("audit.html in headless Chromium: every chart drawn, nothing cut off",
              charts == 2 * len(doc["pipelines"]) and not problems,
              f"{charts} charts; " + "; ".join(problems[:5]))
        names = {p["pipeline"] for p in doc["pipelines"]}
        check("every batch pipeline audited", {"play-counts", "recommend", "ab-analytics", "revenue"} <= names,
              str(names))
        for p in doc["pipelines"]:
            fit = p["time_fit"]
            check(f"{p['pipeline']}: fitted on 3 runs", fit is not None and fit["points"] == 3, json.dumps(fit))
            if os.cpu_count() > 1:
                sc = p["scaling"]
                check(f"{p['pipeline']}: core scaling measured on 1 and {os.cpu_count()} threads",
                      sc is not None and sc["threads"] == [1, os.cpu_count()]
                      and 0.0 <= sc["parallel_fraction"] <= 1.0, json.dumps(sc))
            check(f"{p['pipeline']}: a recommendation and a band", p["recommendation"] != "" and all(
                y["runtime_low"] <= y["runtime_seconds"] <= y["runtime_high"] for y in p["projections"]),
                  json.dumps(p["projections"][-1]))
            # Sub-second runs are dominated by start-up noise; the longer ones must scale up.
            if fit is not None and p["latest"]["wall_seconds"] > 0.5:
                years = [y["runtime_seconds"] for y in p["projections"]]
                check(f"{p['pipeline']}: runtime grows with the input, projected for years 0..5",
                      fit["slope"] > 0 and len(years) == 6 and years == sorted(years), json.dumps(fit))
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
