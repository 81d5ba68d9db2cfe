//! Progress of a long run, for the person or the log watching it: a bar on a terminal (stderr
//! is a TTY and the logs are text), else a `progress` log line every few seconds with rows,
//! bytes, the rate and, when the total is known, the ETA. Cheap to tick from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the log line is written.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A run's progress over one input (clones share it).
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    what: &'static str,
    /// The input's size in bytes, when known (a file), for the ETA.
    total_bytes: Option<u64>,
    rows: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
    bar: Option<indicatif::ProgressBar>,
}

/// What a progress line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub rows: u64,
    pub bytes: u64,
    pub rows_per_second: f64,
    pub bytes_per_second: f64,
    /// Seconds left at the rate so far, when the total is known and some bytes are done.
    pub eta_seconds: Option<f64>,
}

impl Progress {
    /// Starts counting `what` (e.g. "plays"), a bar when a person watches the terminal.
    pub fn start(what: &'static str, total_bytes: Option<u64>) -> Progress {
        // The format the run's logs use, flag or environment: a bar between JSON lines would
        // break every line-oriented reader of the stream.
        let text_logs = crate::telemetry::log_format() == crate::config::LogFormat::Text;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = (tty && text_logs).then(|| {
            let (bar, template) = match total_bytes {
                Some(total) => (
                    indicatif::ProgressBar::new(total),
                    "{bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta}) {msg}",
                ),
                None => (
                    indicatif::ProgressBar::no_length(),
                    "{spinner} {binary_bytes} ({binary_bytes_per_sec}) {msg}",
                ),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress::with_bar(what, total_bytes, bar, Instant::now())
    }

    fn with_bar(
        what: &'static str,
        total_bytes: Option<u64>,
        bar: Option<indicatif::ProgressBar>,
        now: Instant,
    ) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                what,
                total_bytes,
                rows: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                started: now,
                last_line: Mutex::new(now),
                bar,
            }),
        }
    }

    /// Adds rows and the input bytes they came from; logs when a line is due.
    pub fn add(&self, rows: u64, bytes: u64) {
        let i = &self.inner;
        let rows = i.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let total = i.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &i.bar {
            bar.set_position(total);
            bar.set_message(format!("{rows} {}", i.what));
            return;
        }
        let now = Instant::now();
        let due = match i.last_line.try_lock() {
            Ok(mut last) if now.duration_since(*last) >= LOG_EVERY => {
                *last = now;
                true
            }
            _ => false,
        };
        if due {
            self.log(&self.snapshot(now));
        }
    }

    /// The counts and rates at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let i = &self.inner;
        let (rows, bytes) = (
            i.rows.load(Ordering::Relaxed),
            i.bytes.load(Ordering::Relaxed),
        );
        let seconds = now.duration_since(i.started).as_secs_f64().max(1e-9);
        let bytes_per_second = bytes as f64 / seconds;
        Snapshot {
            rows,
            bytes,
            rows_per_second: rows as f64 / seconds,
            bytes_per_second,
            eta_seconds: i
                .total_bytes
                .filter(|_| bytes > 0)
                .map(|total| total.saturating_sub(bytes) as f64 / bytes_per_second),
        }
    }

    fn log(&self, s: &Snapshot) {
        tracing::info!(
            what = self.inner.what,
            rows = s.rows,
            bytes = s.bytes,
            total_bytes = self.inner.total_bytes,
            rows_per_second = s.rows_per_second.round(),
            mb_per_second = (s.bytes_per_second / 1e6 * 10.0).round() / 10.0,
            eta_seconds = s.eta_seconds.map(|e| e.round()),
            "progress"
        );
    }

    /// Clears the bar (the run's own summary line follows).
    pub fn finish(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Inner {
    /// A bar never outlives its run's last handle (an early return included).
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_the_rate_and_the_time_left() {
        let start = Instant::now();
        let p = Progress::with_bar("plays", Some(1_000), None, start);
        p.add(40, 250);
        p.clone().add(60, 150);
        let s = p.snapshot(start + Duration::from_secs(2));
        assert_eq!((s.rows, s.bytes), (100, 400));
        assert!((s.rows_per_second - 50.0).abs() < 1e-9);
        assert!((s.bytes_per_second - 200.0).abs() < 1e-9);
        // 600 bytes left at 200 bytes a second.
        assert!((s.eta_seconds.unwrap() - 3.0).abs() < 1e-9);
        let unknown = Progress::with_bar("users", None, None, start);
        unknown.add(5, 0);
        assert_eq!(
            unknown.snapshot(start + Duration::from_secs(1)).eta_seconds,
            None
        );
    }
}
