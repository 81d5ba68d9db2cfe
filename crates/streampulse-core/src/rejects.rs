//! Rejected input rows: kept with their reason, never dropped silently (docs/architecture.md).
//!
//! Layout: `<root>/rejects/<pipeline>/<partition>/rejects.jsonl` (or `rejects-<part>.jsonl` when
//! several writers share the partition), one JSON object per rejected row
//! with `file`, `line`, `column`, `reason` and `raw`, so `wc -l` counts them. The file is streamed
//! into the run's staging area and published by the run's commit with its outputs (so a reader
//! never sees a run's rejects beside another run's outputs); a run that fails on its input
//! publishes its rejects alone, for the data's owner to see why; a run with no rejects removes
//! a stale file from an earlier run of the same date.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::error::{Error, PipelineError, Result};
use crate::location::{DataRoot, Partition, staging_dir};
use crate::output::StagedPartition;

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

/// Streams rejects of one run to disk, into a staging directory like any output's, and hands
/// them to the run's commit ([`RejectSink::stage`]) or publishes them alone
/// ([`RejectSink::finish`]).
pub struct RejectSink {
    root: DataRoot,
    spill_dir: PathBuf,
    /// `rejects/<pipeline>`: a dataset of its own as far as publishing goes.
    dataset: String,
    partition: Partition,
    name: String,
    /// The staging directory and the file being written, from the first reject on.
    file: Option<(PathBuf, BufWriter<std::fs::File>)>,
    count: u64,
}

impl RejectSink {
    /// A sink for `pipeline`'s rejects of `partition`.
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
        RejectSink {
            root: root.clone(),
            spill_dir: spill_dir.to_path_buf(),
            dataset: format!("rejects/{pipeline}"),
            partition: partition.clone(),
            name: name.to_string(),
            file: None,
            count: 0,
        }
    }

    /// Where the rejects end up (for messages and run records).
    pub fn location(&self) -> String {
        let rel = format!(
            "{}/{}/{}",
            self.dataset,
            self.partition.dir_name(),
            self.name
        );
        match &self.root {
            DataRoot::Local(root) => root.join(rel).display().to_string(),
            DataRoot::ObjectStore { url, .. } => {
                format!("{}/{rel}", url.as_str().trim_end_matches('/'))
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn path(&self) -> PathBuf {
        self.file
            .as_ref()
            .map(|(dir, _)| dir.join(&self.name))
            .unwrap_or_default()
    }

    pub fn push(&mut self, reject: &Reject) -> Result<()> {
        if self.file.is_none() {
            let dir = staging_dir(&self.root, &self.spill_dir, &self.dataset, &self.partition)?;
            let path = dir.join(&self.name);
            let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            self.file = Some((dir, BufWriter::with_capacity(1 << 16, f)));
        }
        let path = self.path();
        if let Some((_, w)) = self.file.as_mut() {
            serde_json::to_writer(&mut *w, reject)?;
            w.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        }
        self.count += 1;
        Ok(())
    }

    /// Where the sink is now, to [`RejectSink::rewind`] to.
    pub fn checkpoint(&mut self) -> Result<Checkpoint> {
        let path = self.path();
        let bytes = match self.file.as_mut() {
            Some((_, w)) => {
                w.flush().map_err(|e| Error::io(&path, e))?;
                w.get_ref()
                    .metadata()
                    .map_err(|e| Error::io(&path, e))?
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
        let path = self.path();
        if let Some((_, w)) = self.file.as_mut() {
            w.flush().map_err(|e| Error::io(&path, e))?;
            let f = w.get_mut();
            f.set_len(to.bytes).map_err(|e| Error::io(&path, e))?;
            f.seek(SeekFrom::Start(to.bytes))
                .map_err(|e| Error::io(&path, e))?;
        }
        self.count = to.count;
        Ok(())
    }

    /// Closes the file and gives it as a staged partition of `rejects/<pipeline>`, to publish
    /// with the run's outputs in one commit: its file joins the partition beside others' (a
    /// shard's), replacing the one of the same name; with nothing rejected, it removes a stale
    /// one of an earlier run.
    pub fn stage(mut self) -> Result<StagedPartition> {
        let path = self.path();
        let (dir, bytes, files) = match self.file.take() {
            Some((dir, w)) => {
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?;
                f.sync_all().map_err(|e| Error::io(&path, e))?;
                let bytes = f.metadata().map_err(|e| Error::io(&path, e))?.len();
                (dir, bytes, 1)
            }
            None => (
                staging_dir(&self.root, &self.spill_dir, &self.dataset, &self.partition)?,
                0,
                0,
            ),
        };
        let name = self.name.clone();
        let writer = name.clone();
        Ok(StagedPartition {
            dataset: self.dataset.clone(),
            partition: self.partition.clone(),
            dir,
            rows: self.count,
            bytes,
            files,
            stale: None,
        }
        .beside(writer, move |n| n == name))
    }

    /// [`RejectSink::stage`] after the share check of [`RejectSink::check_share`]: past the
    /// share, the rejects are published alone (the data's owner needs them to see why) and the
    /// run fails with 65, its outputs as they were.
    pub async fn stage_checked(self, rows: u64, max_share: f64) -> Result<StagedPartition> {
        let share = self.check_share(rows, max_share);
        let root = self.root.clone();
        let staged = self.stage()?;
        match share {
            Ok(()) => Ok(staged),
            Err(e) => Err(crate::commit::fail_with_rejects(&root, staged, e).await),
        }
    }

    /// Publishes the rejects on their own (see [`RejectSink::stage`]); gives their count.
    pub async fn finish(self) -> Result<u64> {
        let (root, count) = (self.root.clone(), self.count);
        crate::commit::publish(
            &root,
            crate::config::TableFormat::Parquet,
            vec![self.stage()?],
        )
        .await?;
        Ok(count)
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

/// A sink dropped unstaged (a failed run) removes what it wrote.
impl Drop for RejectSink {
    fn drop(&mut self) {
        if let Some((dir, _)) = self.file.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The datasets of rejects (`rejects/<pipeline>`), which a run's commit publishes with its
/// outputs but which are not outputs.
pub fn is_rejects(dataset: &str) -> bool {
    dataset.starts_with("rejects/")
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
    async fn rejects_appear_with_the_runs_commit_and_not_before() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::Local(tmp.path().to_path_buf());
        let part = Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        let target = tmp
            .path()
            .join("rejects/play-counts/date=2026-11-26/rejects.jsonl");
        let reject = Reject {
            file: "p.csv".into(),
            line: 2,
            column: None,
            reason: "x".into(),
            raw: "a".into(),
        };
        let mut sink = RejectSink::new(&root, tmp.path(), "play-counts", &part);
        sink.push(&reject).unwrap();
        assert_eq!(sink.location(), target.display().to_string());
        let staged = sink.stage().unwrap();
        assert!(!target.exists(), "staged rejects are not visible yet");
        assert!(
            !tmp.path().join("rejects").exists(),
            "nothing is written under the rejects directory before the commit"
        );
        // A run that fails before its commit leaves no rejects behind it.
        drop(staged);
        assert!(!target.exists());
        assert!(
            std::fs::read_dir(tmp.path().join("_staging"))
                .unwrap()
                .flatten()
                .all(
                    |e| !e.path().is_dir() || std::fs::read_dir(e.path()).unwrap().next().is_none()
                )
        );
        // Committed: they appear; a clean rerun's commit removes them, making no directory
        // where there was none.
        let mut sink = RejectSink::new(&root, tmp.path(), "play-counts", &part);
        sink.push(&reject).unwrap();
        crate::commit::publish(
            &root,
            crate::config::TableFormat::Parquet,
            vec![sink.stage().unwrap()],
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 1);
        let sink = RejectSink::new(&root, tmp.path(), "play-counts", &part);
        crate::commit::publish(
            &root,
            crate::config::TableFormat::Parquet,
            vec![sink.stage().unwrap()],
        )
        .await
        .unwrap();
        assert!(!target.exists());
        let other = Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap());
        let sink = RejectSink::new(&root, tmp.path(), "play-counts", &other);
        assert_eq!(sink.finish().await.unwrap(), 0);
        assert!(
            !tmp.path()
                .join("rejects/play-counts/date=2026-11-27")
                .exists()
        );
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
