//! Run records: every run ends by writing what it did and what it cost, so `audit` can build the
//! capacity report from measurements instead of guesses (docs/architecture.md, "Run records").
//!
//! `<root>/runs/<pipeline>/<date>-<run_id>.json`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::location::{DataRoot, write_atomic};

/// The field (in `extra`) of the executor cores a cluster engine's run had, which the audit
/// projects a cluster's size from.
pub const CLUSTER_CORES: &str = "cluster_cores";

/// Measured facts about one run of one pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub pipeline: String,
    pub run_id: String,
    /// The logical date (or month) the run processed.
    pub logical_date: String,
    pub status: String,
    pub exit_code: u8,
    /// Wall-clock start, for people reading the file; nothing downstream depends on it.
    pub started_at: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub engine: String,
    pub threads: usize,
    pub memory_limit_bytes: u64,
    pub host_cores: usize,
    pub host_memory_bytes: u64,
    /// Pipeline-specific figures (outputs written, rows outside the date, spill bytes, ...).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Starts timing at creation; [`RunMeter::finish`] turns the counters into a [`RunRecord`].
pub struct RunMeter {
    pub pipeline: String,
    pub run_id: String,
    pub logical_date: String,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    cpu_at_start: f64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub engine: String,
    pub threads: usize,
    pub memory_limit_bytes: u64,
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl RunMeter {
    pub fn start(pipeline: &str, logical_date: &str) -> Self {
        let started_at = chrono::Utc::now();
        RunMeter {
            pipeline: pipeline.into(),
            run_id: format!(
                "{}-{:05}",
                started_at.format("%Y%m%dT%H%M%S%.3fZ"),
                std::process::id() % 100_000
            ),
            logical_date: logical_date.into(),
            started: Instant::now(),
            started_at,
            cpu_at_start: cpu_seconds(),
            rows_in: 0,
            rows_out: 0,
            rows_rejected: 0,
            bytes_in: 0,
            bytes_out: 0,
            engine: String::new(),
            threads: 0,
            memory_limit_bytes: 0,
            extra: BTreeMap::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.extra.insert(key.into(), value.into());
    }

    pub fn finish(&self, exit_code: u8, error: Option<String>) -> RunRecord {
        RunRecord {
            pipeline: self.pipeline.clone(),
            run_id: self.run_id.clone(),
            logical_date: self.logical_date.clone(),
            status: if exit_code == 0 {
                "succeeded"
            } else {
                "failed"
            }
            .into(),
            exit_code,
            started_at: self
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            rows_in: self.rows_in,
            rows_out: self.rows_out,
            rows_rejected: self.rows_rejected,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            wall_seconds: micros(self.started.elapsed().as_secs_f64()),
            cpu_seconds: micros(cpu_seconds() - self.cpu_at_start),
            peak_rss_bytes: peak_rss_bytes(),
            engine: self.engine.clone(),
            threads: self.threads,
            memory_limit_bytes: self.memory_limit_bytes,
            host_cores: std::thread::available_parallelism().map_or(1, usize::from),
            host_memory_bytes: host_memory_bytes(),
            extra: self.extra.clone(),
            error,
        }
    }
}

impl RunRecord {
    /// Writes the record under `<root>/runs/<pipeline>/`; returns where it went.
    pub async fn write(&self, root: &DataRoot) -> Result<String> {
        let rel = format!(
            "runs/{}/{}-{}.json",
            self.pipeline, self.logical_date, self.run_id
        );
        root.put_file(&rel, &serde_json::to_vec_pretty(self)?).await
    }

    /// Airflow's XCom: a small summary, never data.
    pub fn write_xcom(&self, path: &std::path::Path, outputs: &serde_json::Value) -> Result<()> {
        let summary = serde_json::json!({
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "logical_date": self.logical_date,
            "status": self.status,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_rejected": self.rows_rejected,
            "wall_seconds": self.wall_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "outputs": outputs,
        });
        write_atomic(path, &serde_json::to_vec(&summary)?)
    }
}

/// Seconds to the microsecond: what the clocks resolve, and what reads well in the JSON.
fn micros(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> f64 {
    rusage().map_or(0.0, |r| {
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(r.ru_utime) + t(r.ru_stime)
    })
}

/// Peak resident set size of this process (the kernel's high-water mark).
pub fn peak_rss_bytes() -> u64 {
    // Linux reports ru_maxrss in KiB.
    rusage().map_or(0, |r| r.ru_maxrss as u64 * 1024)
}

fn rusage() -> Option<libc::rusage> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer on success; we read it only
    // then. This is the one FFI call of the crate, hence the local allow.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    #[allow(unsafe_code)]
    ok.then(|| unsafe { usage.assume_init() })
}

/// Total memory of the host (or of the cgroup, when a container limit is lower).
pub fn host_memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_measure_something() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::Local(tmp.path().to_path_buf());
        let mut meter = RunMeter::start("play-counts", "2026-11-26");
        meter.rows_in = 10;
        meter.set("outputs", 3);
        let rec = meter.finish(0, None);
        assert!(
            rec.peak_rss_bytes > 1 << 20,
            "a Rust test process uses more than 1 MiB"
        );
        assert!(rec.host_cores >= 1 && rec.host_memory_bytes > 0);
        let path = rec.write(&root).await.unwrap();
        let back: RunRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, rec);
        assert!(path.contains("runs/play-counts/2026-11-26-"));
        let xcom = tmp.path().join("xcom/return.json");
        rec.write_xcom(&xcom, &serde_json::json!({"charts": "x"}))
            .unwrap();
        assert!(
            std::fs::read_to_string(xcom)
                .unwrap()
                .contains("\"rows_in\":10")
        );
    }
}
