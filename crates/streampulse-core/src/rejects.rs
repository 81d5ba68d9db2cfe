//! Rejected input rows: kept with their reason, never dropped silently (docs/architecture.md).
//!
//! Layout: `<root>/rejects/<pipeline>/<partition>/rejects.jsonl` (or `rejects-<part>.jsonl` when
//! several writers share the partition), one JSON object per rejected row
//! with `file`, `line`, `column`, `reason` and `raw`, so `wc -l` counts them. The file is streamed
//! to a temporary sibling and renamed into place when the run ends; a run with no rejects removes
//! a stale file from an earlier run of the same date.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::error::{Error, PipelineError, Result};
use crate::location::{DataRoot, Partition, temp_sibling};

/// One rejected input row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    pub file: String,
    /// Physical line (1 = the header) where the record starts; for Parquet input, the row index.
    pub line: u64,
    /// The column that failed to parse; null when the record as a whole is malformed.
    pub column: Option<String>,
    pub reason: String,
    /// The record as it appeared in the input.
    pub raw: String,
}

/// A point in a [`RejectSink`]'s output.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    count: u64,
    bytes: u64,
}

/// Runs `pass` over an input that a streaming merge needs sorted, trusting its order first
/// (`pass(false, ..)`): when it turns out not sorted, the rejects of the abandoned pass are
/// forgotten (those pushed before it are kept) and `pass(true, ..)` runs once on input the
/// engine sorts. Returns the result and whether the input had to be sorted.
pub async fn once_sorted<T>(
    rejects: &mut RejectSink,
    mut pass: impl AsyncFnMut(bool, &mut RejectSink) -> std::result::Result<T, PipelineError>,
) -> std::result::Result<(T, bool), PipelineError> {
    let before = rejects.checkpoint()?;
    match pass(false, rejects).await {
        Err(PipelineError::NotSorted { input, key, line }) => {
            tracing::warn!(
                %input,
                key,
                line,
                "input not sorted: sorting it first (slower; write it sorted upstream to skip this)"
            );
            rejects.rewind(before)?;
            Ok((pass(true, rejects).await?, true))
        }
        other => Ok((other?, false)),
    }
}

/// Streams rejects of one run to disk and publishes them at the end.
pub struct RejectSink {
    target: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<std::fs::File>>,
    count: u64,
    root: DataRoot,
    rel: String,
}

impl RejectSink {
    /// A sink for `pipeline`'s rejects of `partition`. For object-store roots the file is staged
    /// in `spill_dir` and uploaded by [`RejectSink::finish`].
    pub fn new(
        root: &DataRoot,
        spill_dir: &std::path::Path,
        pipeline: &str,
        partition: &Partition,
    ) -> Self {
        Self::named(root, spill_dir, pipeline, partition, "rejects.jsonl")
    }

    /// A sink writing `name` in the partition's rejects directory instead of `rejects.jsonl`:
    /// for runs that each do one share of a partition (recommend's shards), whose rejects must
    /// not replace one another's.
    pub fn named(
        root: &DataRoot,
        spill_dir: &std::path::Path,
        pipeline: &str,
        partition: &Partition,
        name: &str,
    ) -> Self {
        let rel = format!("rejects/{pipeline}/{}/{name}", partition.dir_name());
        let target = root.local_path(&rel).unwrap_or_else(|| {
            spill_dir.join(format!(
                "sp-rejects-{pipeline}-{}-{name}",
                partition.dir_name()
            ))
        });
        let tmp = temp_sibling(&target);
        RejectSink {
            target,
            tmp,
            writer: None,
            count: 0,
            root: root.clone(),
            rel,
        }
    }

    /// Where the rejects end up (for messages and run records).
    pub fn location(&self) -> String {
        match &self.root {
            DataRoot::Local(_) => self.target.display().to_string(),
            DataRoot::ObjectStore { url, .. } => {
                format!("{}/{}", url.as_str().trim_end_matches('/'), self.rel)
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn push(&mut self, reject: &Reject) -> Result<()> {
        if self.writer.is_none() {
            let parent = self.tmp.parent().unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            let f = std::fs::File::create(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
            self.writer = Some(BufWriter::with_capacity(1 << 16, f));
        }
        if let Some(w) = self.writer.as_mut() {
            serde_json::to_writer(&mut *w, reject)?;
            w.write_all(b"\n").map_err(|e| Error::io(&self.tmp, e))?;
        }
        self.count += 1;
        Ok(())
    }

    /// Where the sink is now, to [`RejectSink::rewind`] to.
    pub fn checkpoint(&mut self) -> Result<Checkpoint> {
        let bytes = match self.writer.as_mut() {
            Some(w) => {
                w.flush().map_err(|e| Error::io(&self.tmp, e))?;
                w.get_ref()
                    .metadata()
                    .map_err(|e| Error::io(&self.tmp, e))?
                    .len()
            }
            None => 0,
        };
        Ok(Checkpoint {
            count: self.count,
            bytes,
        })
    }

    /// Forgets the rejects pushed since `to` (a pass over the input that is being redone), and
    /// keeps those before it.
    pub fn rewind(&mut self, to: Checkpoint) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        if let Some(w) = self.writer.as_mut() {
            w.flush().map_err(|e| Error::io(&self.tmp, e))?;
            let f = w.get_mut();
            f.set_len(to.bytes).map_err(|e| Error::io(&self.tmp, e))?;
            f.seek(SeekFrom::Start(to.bytes))
                .map_err(|e| Error::io(&self.tmp, e))?;
        }
        self.count = to.count;
        Ok(())
    }

    /// Closes the file and moves it into place (or removes a stale one when nothing was rejected).
    pub async fn finish(mut self) -> Result<u64> {
        match self.writer.take() {
            Some(w) => {
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
                f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
                std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
                if !self.root.is_local() {
                    let bytes =
                        std::fs::read(&self.target).map_err(|e| Error::io(&self.target, e))?;
                    self.root.put_file(&self.rel, &bytes).await?;
                    let _ = std::fs::remove_file(&self.target);
                }
            }
            None => {
                if self.root.is_local() {
                    match std::fs::remove_file(&self.target) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(&self.target, e)),
                    }
                }
            }
        }
        Ok(self.count)
    }

    /// Fails with exit 65 when more than `max_share` of `rows` were rejected.
    pub fn check_share(&self, rows: u64, max_share: f64) -> Result<()> {
        if rows > 0 && self.count as f64 > max_share * rows as f64 {
            return Err(Error::TooManyRejects {
                rejected: self.count,
                rows,
                max_share,
                rejects_path: self.location(),
            });
        }
        Ok(())
    }
}

impl Drop for RejectSink {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sinks_of_two_shards_keep_their_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::Local(tmp.path().to_path_buf());
        let part = Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        let reject = Reject {
            file: "users.parquet".into(),
            line: 3,
            column: None,
            reason: "null vector".into(),
            raw: String::new(),
        };
        let mut a = RejectSink::named(
            &root,
            tmp.path(),
            "recommend",
            &part,
            "rejects-shard-0.jsonl",
        );
        a.push(&reject).unwrap();
        a.finish().await.unwrap();
        // Shard 1 rejected nothing: it removes a stale file of its own, not shard 0's.
        let b = RejectSink::named(
            &root,
            tmp.path(),
            "recommend",
            &part,
            "rejects-shard-1.jsonl",
        );
        b.finish().await.unwrap();
        let dir = tmp.path().join("rejects/recommend/date=2026-11-26");
        assert!(dir.join("rejects-shard-0.jsonl").exists());
        assert!(!dir.join("rejects-shard-1.jsonl").exists());
    }

    #[tokio::test]
    async fn a_sorted_retry_keeps_the_rejects_from_before_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::Local(tmp.path().to_path_buf());
        let part = Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        let mut sink = RejectSink::new(&root, tmp.path(), "recommend", &part);
        let reject = |line: u64| Reject {
            file: "songs.parquet".into(),
            line,
            column: None,
            reason: "before".into(),
            raw: String::new(),
        };
        sink.push(&reject(1)).unwrap(); // the catalog's, before the users' pass
        let (passes, sorted) = once_sorted(&mut sink, async |sorted, sink: &mut RejectSink| {
            sink.push(&reject(if sorted { 20 } else { 10 }))?;
            if sorted {
                Ok(2)
            } else {
                Err(PipelineError::NotSorted {
                    input: "users".into(),
                    key: "user_id",
                    line: 3,
                })
            }
        })
        .await
        .unwrap();
        assert_eq!((passes, sorted), (2, true));
        assert_eq!(sink.count(), 2);
        let at = sink.location();
        sink.finish().await.unwrap();
        let lines: Vec<u64> = std::fs::read_to_string(at)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Reject>(l).unwrap().line)
            .collect();
        assert_eq!(
            lines,
            [1, 20],
            "the catalog's reject is kept, the abandoned pass's is not"
        );
    }

    #[tokio::test]
    async fn rejects_are_jsonl_and_checked_against_the_share() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::Local(tmp.path().to_path_buf());
        let part = Partition {
            key: "date",
            value: "2026-11-26".into(),
        };
        let mut sink = RejectSink::new(&root, tmp.path(), "play-counts", &part);
        let r = Reject {
            file: "p.csv".into(),
            line: 9,
            column: Some("user_id".into()),
            reason: "x".into(),
            raw: "a,b".into(),
        };
        sink.push(&r).unwrap();
        sink.push(&r).unwrap();
        assert!(sink.check_share(2000, 0.001).is_ok());
        let err = sink.check_share(1999, 0.001).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit::ExitCode::DataErr);
        assert_eq!(sink.finish().await.unwrap(), 2);
        let text = std::fs::read_to_string(
            tmp.path()
                .join("rejects/play-counts/date=2026-11-26/rejects.jsonl"),
        )
        .unwrap();
        assert_eq!(text.lines().count(), 2);
        let back: Reject = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(back, r);
        // A clean rerun of the same date removes the stale file.
        let sink = RejectSink::new(&root, tmp.path(), "play-counts", &part);
        sink.finish().await.unwrap();
        assert!(
            !tmp.path()
                .join("rejects/play-counts/date=2026-11-26/rejects.jsonl")
                .exists()
        );
    }
}
