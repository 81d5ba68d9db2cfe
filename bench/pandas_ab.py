#!/usr/bin/env python3
"""The pandas + SciPy + statsmodels implementation of ab-analytics: the job it replaces, written
the way a data scientist would (read everything, merge, call the library tests on raw arrays).

It is both the benchmark's baseline (bench/ab_analytics.py) and the independent reference of the
correctness check (tests/e2e/ab_vs_scipy.py): every number comes from the libraries working on
the raw values, none from the sufficient statistics the Rust pipeline uses.

    pandas_ab.py DATA_ROOT DATE OUT.json [--winsorize P] [--confidence C]
"""
import argparse
import json
import os
import sys

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

# (column of user_metrics, binary?, has the pre-period covariate?) in report order.
METRICS = [
    ("minutes_listened", False, True),
    ("sessions", False, False),
    ("converted", True, False),
    ("retained_d7", True, False),
]
CAPPED = ["minutes_listened", "sessions", "pre_minutes_listened"]


def _row(metric, variant, cuped, yc, yt, p, lo, hi, crit, binary):
    nc, nt = len(yc), len(yt)
    mc, mt = yc.mean(), yt.mean()
    if binary:
        vc, vt = mc * (1 - mc) / nc, mt * (1 - mt) / nt
    else:
        vc, vt = yc.var(ddof=1) / nc, yt.var(ddof=1) / nt
    diff = mt - mc
    rel = diff / mc
    rel_se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    return {
        "metric": metric, "variant": variant, "cuped": cuped, "n_control": nc, "n_treatment": nt,
        "control_mean": mc, "treatment_mean": mt, "diff": diff, "diff_ci_low": lo, "diff_ci_high": hi,
        "rel_lift": rel, "rel_ci_low": rel - crit * rel_se, "rel_ci_high": rel + crit * rel_se, "p_value": p,
    }


def _welch(metric, variant, cuped, yc, yt, confidence):
    r = stats.ttest_ind(yt, yc, equal_var=False)
    ci = r.confidence_interval(confidence)
    crit = stats.t.ppf(0.5 + confidence / 2, r.df)
    return _row(metric, variant, cuped, yc, yt, float(r.pvalue), float(ci.low), float(ci.high), crit, False)


def _proportions(metric, variant, yc, yt, confidence):
    ct, cc = int(yt.sum()), int(yc.sum())
    _, p = proportions_ztest([ct, cc], [len(yt), len(yc)])
    lo, hi = confint_proportions_2indep(ct, len(yt), cc, len(yc), method="wald", compare="diff",
                                        alpha=1 - confidence)
    crit = stats.norm.ppf(0.5 + confidence / 2)
    return _row(metric, variant, False, yc, yt, float(p), float(lo), float(hi), crit, True)


def analyse(root, date, winsorize=None, confidence=0.95, assignments=None, user_metrics=None):
    a = pd.read_parquet(assignments or os.path.join(root, "assignments", f"date={date}"))
    m = pd.read_parquet(user_metrics or os.path.join(root, "user_metrics", f"date={date}"))
    plan_dir = os.path.join(root, "experiments", f"date={date}")
    plans = pd.read_parquet(plan_dir) if os.path.exists(plan_dir) else None
    out = {}
    for exp, ag in a.groupby("experiment_id", sort=True):
        mg = m[m["experiment_id"] == exp].copy()
        caps = None
        if winsorize is not None:
            caps = {c: float(np.percentile(mg[c].to_numpy(dtype=float), winsorize)) for c in CAPPED}
            for c in CAPPED:
                mg[c] = mg[c].astype(float).clip(upper=caps[c])
        if plans is not None and (plans["experiment_id"] == exp).any():
            p = plans[plans["experiment_id"] == exp]
            control = p.loc[p["is_control"], "variant"].iloc[0]
            variants = [control] + sorted(v for v in p["variant"] if v != control)
            weights = dict(zip(p["variant"], p["weight"]))
        else:
            names = sorted(ag["variant"].unique())
            variants = ["control"] + [v for v in names if v != "control"]
            weights = {v: 1.0 for v in variants}
        control, treatments = variants[0], variants[1:]
        counts = ag["variant"].value_counts()
        observed = np.array([counts.get(v, 0) for v in variants], dtype=float)
        w = np.array([weights[v] for v in variants])
        srm = float(stats.chisquare(observed, f_exp=observed.sum() * w / w.sum()).pvalue)
        j = ag[["user_id", "variant"]].merge(mg, on="user_id", how="inner")
        groups = {v: g for v, g in j.groupby("variant")}
        rows = []
        for metric, binary, covariate in METRICS:
            yc = groups[control][metric].to_numpy(dtype=float)
            for t in treatments:
                yt = groups[t][metric].to_numpy(dtype=float)
                if binary:
                    rows.append(_proportions(metric, t, yc, yt, confidence))
                    continue
                rows.append(_welch(metric, t, False, yc, yt, confidence))
                if covariate:
                    xc = groups[control]["pre_minutes_listened"].to_numpy(dtype=float)
                    xt = groups[t]["pre_minutes_listened"].to_numpy(dtype=float)
                    x, y = np.concatenate([xc, xt]), np.concatenate([yc, yt])
                    theta = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
                    rows.append(_welch(metric, t, True, yc - theta * (xc - x.mean()), yt - theta * (xt - x.mean()),
                                       confidence))
        raw = [r["p_value"] for r in rows if not r["cuped"]]
        holm = multipletests(raw, method="holm")[1]
        bh = multipletests(raw, method="fdr_bh")[1]
        k = -1
        for r in rows:
            if r["cuped"]:
                # A CUPED row stands in for its raw twin (the row before it) in the family.
                ps = list(raw)
                ps[k] = r["p_value"]
                r["p_holm"] = float(multipletests(ps, method="holm")[1][k])
                r["p_bh"] = float(multipletests(ps, method="fdr_bh")[1][k])
            else:
                k += 1
                r["p_holm"], r["p_bh"] = float(holm[k]), float(bh[k])
            r["srm_p_value"] = srm
        out[exp] = {
            "srm_p_value": srm,
            "caps": caps,
            "assigned": {v: int(counts.get(v, 0)) for v in variants},
            "results": rows,
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("date")
    ap.add_argument("out")
    ap.add_argument("--winsorize", type=float)
    ap.add_argument("--confidence", type=float, default=0.95)
    a = ap.parse_args()
    res = analyse(a.root, a.date, a.winsorize, a.confidence)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
