"""What the benchmarks share. `measure` runs a command as a child process and reports wall time, CPU time and peak RSS (from wait4's
rusage of that child alone, so runs measured one after another do not mix)."""
import hashlib
import os
import pathlib
import platform
import subprocess
import time

PLAY_COUNTS_OUTPUTS = ["daily_song_counts", "daily_artist_counts", "charts"]


def digest(root, date, datasets=PLAY_COUNTS_OUTPUTS):
    """One hash of the `date=` partitions' Parquet bytes of `datasets` under `root`: two runs
    that wrote the same outputs have the same digest."""
    h = hashlib.sha256()
    for ds in datasets:
        for f in sorted(pathlib.Path(root, ds, f"date={date}").glob("*.parquet")):
            h.update(f.read_bytes())
    return h.hexdigest()


def cpu_model():
    """The CPU's model name (figures depend on it: a result without it cannot be compared)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def host():
    """The host as every result's header names it: CPU model and cores."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def measure(cmd, env=None):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{cmd[0]} exited {code}: {stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024}
