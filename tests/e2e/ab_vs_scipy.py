#!/usr/bin/env python3
"""End-to-end check of ab-analytics against SciPy and statsmodels.

Generates three experiments with datagen (one with a planted sample-ratio mismatch, one with
three variants), runs ab-analytics, and recomputes every statistic from the raw values with the
libraries (bench/pandas_ab.py: scipy.stats.ttest_ind, its confidence_interval, chisquare,
statsmodels proportions_ztest, confint_proportions_2indep and multipletests). Every number of the
JSON report and of the ab_results Parquet table must match to a relative 1e-9. Done three ways:
inputs sorted as upstream writes them, the same rows scrambled (the pipeline sorts them first),
and winsorized at the 99th percentile.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
from pandas_ab import analyse  # noqa: E402
from harness import browser_layout  # noqa: E402

DATE = "2026-11-26"
REL = 1e-9
FIELDS = ["n_control", "n_treatment", "control_mean", "treatment_mean", "diff", "diff_ci_low", "diff_ci_high",
          "rel_lift", "rel_ci_low", "rel_ci_high", "p_value", "p_holm", "p_bh", "srm_p_value"]

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def missing(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def close(a, b):
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    # p-values below 1e-300 are 0 in one library and subnormal in the other: both say "certain".
    return abs(a - b) <= REL * max(abs(a), abs(b)) or (abs(a) < 1e-300 and abs(b) < 1e-300)


def run(cmd):
    p = subprocess.run(cmd, env=dict(os.environ, RUST_LOG="warn"), capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    return p.returncode


def compare(label, root, reference, winsorize):
    for exp, ref in reference.items():
        report = json.loads(pathlib.Path(root, "ab_reports", f"date={DATE}", f"{exp}.json").read_text())
        got = {(r["metric"], r["variant"], r["cuped"]): dict(r, srm_p_value=report["srm"]["p_value"])
               for r in report["results"]}
        table = pq.read_table(pathlib.Path(root, "ab_results", f"experiment={exp}")).to_pylist()
        parquet = {(r["metric"], r["variant"], r["cuped"]): r for r in table}
        bad = []
        for want in ref["results"]:
            key = (want["metric"], want["variant"], want["cuped"])
            for source, rows in [("json", got), ("parquet", parquet)]:
                have = rows.get(key)
                if have is None:
                    bad.append(f"{source} lacks {key}")
                    continue
                bad += [f"{source} {key} {f}: {have[f]!r} vs {want[f]!r}" for f in FIELDS
                        if not close(have[f], want[f])]
        check(f"{label} {exp}: {len(ref['results'])} comparisons x {len(FIELDS)} statistics match SciPy/statsmodels",
              not bad and len(got) == len(ref["results"]) == len(parquet), "; ".join(bad[:5]))
        assigned = {v["variant"]: v["assigned"] for v in report["variants"]}
        check(f"{label} {exp}: users per variant", assigned == ref["assigned"], f"{assigned} vs {ref['assigned']}")
        flagged = report["srm"]["flagged"]
        check(f"{label} {exp}: SRM flag (p = {ref['srm_p_value']:.3g})", flagged == (ref["srm_p_value"] < 1e-3))
        if winsorize:
            caps = report["caps"]
            check(f"{label} {exp}: winsorization caps equal np.percentile",
                  all(close(caps[c], ref["caps"][c]) for c in ref["caps"]), f"{caps} vs {ref['caps']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    a = ap.parse_args()
    b = pathlib.Path(a.bin_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "sorted")
        gen = [b / "datagen", "--date", DATE, "--data-root", root, "--datasets", "experiments", "--users", "150000",
               "--experiment-users", "50000"]
        check("datagen writes the experiments", run(gen) == 0)
        reference = analyse(root, DATE)
        check("ab-analytics runs on sorted inputs", run([b / "ab-analytics", "--date", DATE, "--data-root", root]) == 0)
        compare("sorted", root, reference, False)
        # Every experiment's HTML report, laid out by a real browser: a forest plot per report,
        # with points, a scale, and no label outside the plot or page wider than the window.
        for html in sorted(pathlib.Path(root, "ab_reports", f"date={DATE}").glob("*.html")):
            charts, problems = browser_layout(html)
            check(f"{html.name} in headless Chromium: a forest plot, nothing cut off",
                  charts == 1 and not problems, "; ".join(problems[:5]))

        # The same rows scrambled: the pipeline must notice and sort before joining.
        scrambled = os.path.join(tmp, "scrambled")
        for ds in ["assignments", "user_metrics", "experiments"]:
            t = pq.read_table(os.path.join(root, ds, f"date={DATE}"))
            t = t.take(pa.array(np.random.default_rng(7).permutation(t.num_rows)))
            out = pathlib.Path(scrambled, ds, f"date={DATE}")
            out.mkdir(parents=True)
            pq.write_table(t, out / "part-0.parquet")
        check("ab-analytics runs on scrambled inputs with --winsorize 99",
              run([b / "ab-analytics", "--date", DATE, "--data-root", scrambled, "--winsorize", "99"]) == 0)
        compare("scrambled+winsorized", scrambled, analyse(scrambled, DATE, winsorize=99.0), True)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
