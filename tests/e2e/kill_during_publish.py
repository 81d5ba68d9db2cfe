#!/usr/bin/env python3
"""End-to-end check of the run-level commit: play-counts killed at every rename of its run.

A day is published once (the "old" outputs), then play-counts reruns the day on a different
export (the "new" outputs) and is killed with SIGKILL at its N-th rename, for every N, by strace's
fault injection (`-e inject=rename:signal=KILL:when=N`). After each kill:

  * every partition of every dataset (the rejects included) holds either the old files or the new
    ones, never a mix, and no dataset directory holds a staging or temporary directory;
  * the next run of any pipeline on the root (here: play-counts for another day, which has no
    input and exits 66) recovers the dead run first: after it, either all four datasets (rejects included) are new
    (the kill came after the commit record) or all are old (before it);
  * a rerun of the day then gives the new outputs, byte for byte, and leaves no staging area.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

from harness import strace

DAY = "2026-11-26"
OTHER_DAY = "2026-11-20"
# The rejects are published by the same commit as the outputs: a reader never finds one run's
# rejects beside another run's counts.
DATASETS = ["daily_song_counts", "daily_artist_counts", "charts", "rejects/play-counts"]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def state(root):
    """dataset -> {file name: sha256} of the day's partition, and stray directories."""
    out, stray = {}, []
    for ds in DATASETS:
        part = pathlib.Path(root, ds, f"date={DAY}")
        out[ds] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(part.glob("*"))
                   if p.is_file()} if part.exists() else None
        stray += [str(p) for p in pathlib.Path(root, ds).iterdir() if p.name != f"date={DAY}"] \
            if pathlib.Path(root, ds).exists() else []
    return out, stray


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], env=dict(os.environ, RUST_LOG="warn"), capture_output=True,
                          text=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    st = strace()
    if st is None:
        check("strace is available for the kill points", False, "install strace")
        print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        gen = os.path.join(tmp, "gen")
        for seed, name in [("1", "old"), ("2", "new")]:
            r = run([b / "datagen", "--date", DAY, "--data-root", os.path.join(gen, name), "--seed", seed,
                     "--plays", "20000", "--users", "2000", "--songs", "800", "--bad-rows", "0.002",
                     "--datasets", "plays-csv"])
            check(f"datagen {name} export", r.returncode == 0, r.stderr[-500:])
        export = {n: os.path.join(gen, n, "exports", f"plays-{DAY}.csv") for n in ["old", "new"]}

        def play_counts(root, which, prefix=()):
            return run([*prefix, b / "play-counts", "--date", DAY, "--data-root", root, "--input", export[which],
                        "--threads", "2", "--max-reject-share", "1", "--spill-dir", os.path.join(root, "..", "spill")])

        base = os.path.join(tmp, "base")
        check("the old outputs are published", play_counts(base, "old").returncode == 0)
        old, _ = state(base)
        ref = os.path.join(tmp, "ref")
        shutil.copytree(base, ref)
        check("a clean run publishes the new outputs", play_counts(ref, "new").returncode == 0)
        new, _ = state(ref)
        check("old and new differ in every dataset", all(old[d] != new[d] for d in DATASETS))

        # How many renames a whole run makes (the run record, the commit record, one swap per
        # output partition, the rejects file joining its partition...).
        counted = os.path.join(tmp, "counted")
        shutil.copytree(base, counted)
        trace = os.path.join(tmp, "renames.txt")
        r = play_counts(counted, "new", [st, "-f", "-qq", "-o", trace, "-e", "trace=rename,renameat,renameat2"])
        # strace counts each system call on its own: the kill points are (call, n) pairs.
        calls = Counter(m.group(1) for m in (re.match(r"^\d+\s+(rename\w*)\(", line) for line in open(trace)) if m)
        check("a traced run succeeds and renames (the swaps included)",
              r.returncode == 0 and sum(calls.values()) >= 4 and calls.get("renameat2", 0) >= len(DATASETS) - 1,
              str(dict(calls)))

        for call, count in sorted(calls.items()):
            for n in range(1, count + 1):
                kill_at(b, st, base, tmp, play_counts, old, new, call, n)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


def kill_at(b, st, base, tmp, play_counts, old, new, call, n):
    """Kills a run at its n-th `call` and checks what a reader, the next run and a rerun find."""
    root = os.path.join(tmp, f"kill-{call}-{n}")
    shutil.copytree(base, root)
    r = play_counts(root, "new", [st, "-f", "-qq", "-o", os.devnull, "-e", f"trace={call}",
                                  "-e", f"inject={call}:signal=KILL:when={n}"])
    n = f"{call} #{n}"
    killed = r.returncode == -9
    now, stray = state(root)
    whole = all(now[d] in (old[d], new[d]) for d in DATASETS)
    check(f"kill at rename {n}: every partition is old or new, nothing stray", killed and whole and not stray,
          f"exit {r.returncode}, stray {stray}, mixed {[d for d in DATASETS if now[d] not in (old[d], new[d])]}")
    # Any later run recovers: play-counts of a day without input exits 66, after recovery.
    spill = os.path.join(tmp, "spill")
    r = run([b / "play-counts", "--date", OTHER_DAY, "--data-root", root, "--spill-dir", spill])
    left = sorted(p.name for p in pathlib.Path(spill, "streampulse").iterdir())
    check(f"kill at rename {n}: the next run removes the killed run's spill", not left, str(left))
    after, _ = state(root)
    together = all(after[d] == new[d] for d in DATASETS) or all(after[d] == old[d] for d in DATASETS)
    check(f"kill at rename {n}: the next run finds the day all old or all new", r.returncode == 66 and together,
          f"exit {r.returncode}: {[d for d in DATASETS if after[d] != new[d]]} not new")
    r = play_counts(root, "new")
    final, stray = state(root)
    areas = [p.name for p in pathlib.Path(root, "_staging").iterdir()] \
        if pathlib.Path(root, "_staging").exists() else []
    check(f"kill at rename {n}: a rerun gives the new bytes and no staging is left",
          r.returncode == 0 and final == new and not stray and not areas, f"areas {areas}")


if __name__ == "__main__":
    main()
