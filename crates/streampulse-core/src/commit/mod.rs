//! A run's outputs appear together: the run-level commit on a local data root.
//!
//! A run stages every partition it writes under `<root>/_staging/<area>/` (outside every dataset
//! directory, so no reader lists a half-written file; same file system, so publishing is a
//! rename). `<area>` is unique to the process, which holds an exclusive lock on
//! `<root>/_staging/<area>.lock` for as long as it lives. Publishing is then:
//!
//! 1. the **commit record** `<area>/commit-<n>/commit.json`, written atomically and synced: which staged
//!    directory becomes which partition (or which files join a partition beside other shards',
//!    and which of its files go). From here on, the run *is* committed;
//! 2. one atomic swap per partition (`renameat2(RENAME_EXCHANGE)`: a reader sees the old
//!    partition or the new one, never none), the replaced partition then parked in the commit's
//!    directory;
//! 3. the commit's directory removed, the record with it.
//!
//! A process that dies anywhere in 2 leaves a commit record: the next run on the same root
//! (any pipeline: [`recover`] runs at every start) finds the area's lock free, replays the
//! record's renames (each is idempotent), and removes the area. A process that dies before 1
//! leaves an area without a record: it is removed, and nothing of it was ever visible. So readers
//! see each partition old or new, never a mix inside one, and a run's datasets all new once its
//! commit has completed or been recovered.
//!
//! On an object store there is no rename: each partition is committed on its own, by a marker
//! that names its new files ([`objects`]); the commit record does not apply.
//!
//! With `--table-format delta` each dataset (the rejects excepted: they are JSON lines, not a
//! table) is a Delta table, and each partition is replaced by one Delta commit ([`delta`]), on
//! any root. The run's tables are committed first, one after the other, then its other files.

#[cfg(feature = "delta")]
pub mod delta;
pub mod objects;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::config::TableFormat;
use crate::error::{Error, Result};
use crate::location::{DataRoot, write_atomic};
use crate::output::StagedPartition;

/// The directory of staging areas under a local root.
pub const STAGING: &str = "_staging";

const RECORD: &str = "commit.json";

/// Whether a commit is under way in this process: a signal then waits for it (see the runner)
/// rather than dropping the run half-published.
static PUBLISHING: AtomicBool = AtomicBool::new(false);

/// Numbers this process's commits.
static COMMITS: AtomicUsize = AtomicUsize::new(0);

pub fn publishing() -> bool {
    PUBLISHING.load(Ordering::SeqCst)
}

/// Marks a commit under way for as long as it lives.
pub(crate) struct Publishing;

impl Publishing {
    pub(crate) fn begin() -> Self {
        PUBLISHING.store(true, Ordering::SeqCst);
        Publishing
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        PUBLISHING.store(false, Ordering::SeqCst);
    }
}

/// The process's staging areas, one per local root, each with its held lock.
static AREAS: Mutex<Vec<(PathBuf, PathBuf, File)>> = Mutex::new(Vec::new());

/// This process's staging area under the local root `root`: created (and locked) on first use.
pub fn area(root: &Path) -> Result<PathBuf> {
    locked_area(&root.join(STAGING))
}

/// The directory spill files of this run go to, under `--spill-dir` (`<spill>/streampulse/`):
/// locked like a staging area, so that the spill of a killed run is found dead and removed by the
/// next run's [`recover_spill`] instead of piling up.
pub fn spill_area(spill_dir: &Path) -> Result<PathBuf> {
    locked_area(&spill_dir.join(SPILL))
}

/// The directory of spill areas under `--spill-dir`.
pub const SPILL: &str = "streampulse";

/// This process's area under `base` (a directory of areas and their locks): created and locked
/// on first use.
fn locked_area(base: &Path) -> Result<PathBuf> {
    let mut areas = AREAS
        .lock()
        .map_err(|_| Error::Internal("staging areas poisoned".into()))?;
    if let Some((_, dir, _)) = areas.iter().find(|(r, _, _)| r == base) {
        return Ok(dir.clone());
    }
    std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{}-{nanos}", std::process::id());
    let lock_path = base.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.try_lock()
        .map_err(|e| Error::Internal(format!("locking {}: {e}", lock_path.display())))?;
    let dir = base.join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    areas.push((base.to_path_buf(), dir.clone(), lock));
    Ok(dir)
}

/// Removes the spill areas of dead runs under `--spill-dir`; returns how many.
pub fn recover_spill(spill_dir: &Path) -> Result<usize> {
    Ok(sweep(&spill_dir.join(SPILL))?.areas)
}

/// Removes this process's staging areas and their locks: called when the run is over (its
/// commits are done, and what a failed run staged is gone with it).
pub fn release() {
    let Ok(mut areas) = AREAS.lock() else {
        return;
    };
    for (_, dir, lock) in areas.drain(..) {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(dir.with_extension("lock"));
        drop(lock);
    }
}

/// One partition of a commit record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    staged: PathBuf,
    target: PathBuf,
    /// The staged directory's inode: after the swap the target has it, which tells a replay
    /// that the swap was done (the staged path then holds the replaced partition).
    #[serde(default)]
    inode: u64,
    /// `None`: the staged directory replaces the partition. `Some(names)`: its files join the
    /// partition, whose files `names` are removed.
    beside: Option<Vec<String>>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    entries: Vec<Entry>,
}

/// A published partition: where readers find it, and a local directory holding its files for
/// what comes after publishing (Kafka messages are sent from the published files, so a consumer
/// that gets a message always finds its partition).
#[derive(Debug)]
pub struct Published {
    pub dataset: String,
    pub url: String,
    pub dir: PathBuf,
    /// The local copy of an object-store partition is ours to remove.
    remove_dir: bool,
}

impl Drop for Published {
    fn drop(&mut self) {
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Publishes every staged partition of a run together, in order: the datasets in `format`, the
/// rejects as plain files. A dataset that is already a Delta table is never written as plain
/// Parquet (no Delta reader would see the files): that is a configuration error (64).
pub async fn publish(
    root: &DataRoot,
    format: TableFormat,
    staged: Vec<StagedPartition>,
) -> Result<Vec<Published>> {
    let _publishing = Publishing::begin();
    let (tables, staged): (Vec<_>, Vec<_>) = staged
        .into_iter()
        .partition(|s| format == TableFormat::Delta && !crate::rejects::is_rejects(&s.dataset));
    let mut out = Vec::with_capacity(tables.len() + staged.len());
    for mut s in tables {
        publish_table(root, &s).await?;
        out.push(Published {
            dataset: s.dataset.clone(),
            url: root.partition_url(&s.dataset, &s.partition),
            dir: std::mem::take(&mut s.dir),
            remove_dir: true,
        });
    }
    for s in &staged {
        if format == TableFormat::Parquet
            && !crate::rejects::is_rejects(&s.dataset)
            && root.is_delta_table(&s.dataset).await?
        {
            return Err(Error::Config(format!(
                "{} in {} is a Delta table: write it with --table-format delta",
                s.dataset,
                root.display()
            )));
        }
    }
    out.extend(publish_plain(root, staged).await?);
    Ok(out)
}

#[cfg(feature = "delta")]
async fn publish_table(root: &DataRoot, staged: &StagedPartition) -> Result<()> {
    delta::publish(root, staged).await
}

#[cfg(not(feature = "delta"))]
async fn publish_table(_: &DataRoot, staged: &StagedPartition) -> Result<()> {
    Err(Error::Config(format!(
        "{}: this build has no Delta Lake support (the core's `delta` feature is off)",
        staged.dataset
    )))
}

/// Whether the directory `dir` of `store` is a Delta table: its `_delta_log/` holds a version
/// ([`is_log_version`]). The one test of "this dataset is a Delta table", with the `delta`
/// feature or without it (a build without it must still never read a table's files as plain
/// Parquet).
pub(crate) async fn is_table_dir(
    store: &dyn object_store::ObjectStore,
    dir: &object_store::path::Path,
) -> Result<bool> {
    use futures::StreamExt;
    let log = dir.clone().join("_delta_log");
    let mut listing = store.list(Some(&log));
    while let Some(entry) = listing.next().await {
        match entry {
            // Versions sort first (digits before `_`): this stops at the first entry of a table.
            Ok(meta) if meta.location.filename().is_some_and(is_log_version) => return Ok(true),
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// Whether `name`, an entry of a `_delta_log/`, is a version of the table: a commit
/// (`00000000000000000000.json`, or a compacted range) or a checkpoint
/// (`….checkpoint….parquet`). A log that holds only temporaries (`_commit_….json.tmp`: a first
/// commit that died while being written) is no table yet: the directory is plain Parquet, as
/// every Delta reader also sees it.
pub(crate) fn is_log_version(name: &str) -> bool {
    let Some((digits, rest)) = name.split_once('.') else {
        return false;
    };
    digits.len() == 20
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (rest == "json" || rest.ends_with(".json") || rest.ends_with(".parquet"))
}

/// The objects of a listing by directory (the object path up to its last `/`), in path order:
/// commits are per directory (a partition), so is what a reader may read.
pub(crate) fn by_directory(
    objects: Vec<object_store::ObjectMeta>,
) -> std::collections::BTreeMap<String, Vec<object_store::ObjectMeta>> {
    let mut by_dir: std::collections::BTreeMap<String, Vec<object_store::ObjectMeta>> =
        std::collections::BTreeMap::new();
    for meta in objects {
        let dir = meta
            .location
            .as_ref()
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        by_dir.entry(dir).or_default().push(meta);
    }
    by_dir
}

/// What [`split_tables`] gives: the files the tables' logs name, the other directories'
/// objects, and whether any directory was a table's.
pub(crate) type TableSplit = (
    Vec<object_store::ObjectMeta>,
    Vec<object_store::ObjectMeta>,
    bool,
);

/// Of one listing (files of one or more directories, on `store` at `base`): the files that the
/// Delta tables among the directories' parents name, the objects of the other directories
/// untouched, and whether any directory was a table's.
#[cfg(feature = "delta")]
pub(crate) async fn split_tables(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    base: &url::Url,
    objects: Vec<object_store::ObjectMeta>,
) -> Result<TableSplit> {
    delta::split_listing(store, base, objects).await
}

/// Without Delta support a table's directory cannot be read right: it is an error (64), never
/// a plain read of every file the table ever had.
#[cfg(not(feature = "delta"))]
pub(crate) async fn split_tables(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    _base: &url::Url,
    objects: Vec<object_store::ObjectMeta>,
) -> Result<TableSplit> {
    let mut parents = std::collections::BTreeSet::new();
    for meta in &objects {
        let mut parts: Vec<_> = meta.location.parts().collect();
        parts.pop();
        parts.pop();
        parents.insert(object_store::path::Path::from_iter(parts));
    }
    for parent in parents {
        if is_table_dir(store.as_ref(), &parent).await? {
            return Err(Error::Config(format!(
                "{parent} is a Delta table: this build has no Delta Lake support (the core's \
                 `delta` feature is off)"
            )));
        }
    }
    Ok((Vec::new(), objects, false))
}

/// The names of the files the Delta log above `rel_dir` (`<dataset>/<partition>`) names there;
/// `None` when the dataset is no Delta table.
pub(crate) async fn table_file_names(
    root: &DataRoot,
    rel_dir: &str,
) -> Result<Option<Vec<String>>> {
    #[cfg(feature = "delta")]
    {
        delta::partition_file_names(root, rel_dir).await
    }
    #[cfg(not(feature = "delta"))]
    {
        match rel_dir.trim_matches('/').rsplit_once('/') {
            Some((dataset, _)) if root.is_delta_table(dataset).await? => {
                Err(Error::Config(format!(
                    "{dataset} is a Delta table: this build has no Delta Lake support (the core's \
                 `delta` feature is off)"
                )))
            }
            _ => Ok(None),
        }
    }
}

/// Publishes plain partitions: renames under a commit record on a local root, commit markers
/// on an object store.
async fn publish_plain(root: &DataRoot, staged: Vec<StagedPartition>) -> Result<Vec<Published>> {
    let DataRoot::Local(local) = root else {
        let mut out = Vec::with_capacity(staged.len());
        for mut s in staged {
            root.publish_objects(&s).await?;
            out.push(Published {
                dataset: s.dataset.clone(),
                url: root.partition_url(&s.dataset, &s.partition),
                dir: std::mem::take(&mut s.dir),
                remove_dir: true,
            });
        }
        return Ok(out);
    };
    let area = area(local)?;
    let mut entries = Vec::with_capacity(staged.len());
    for s in &staged {
        let target = local.join(&s.dataset).join(s.partition.dir_name());
        let beside = match &s.stale {
            None => None,
            Some(crate::output::Beside { stale, .. }) => {
                let mine = file_names(&s.dir)?;
                let existing = if target.exists() {
                    file_names(&target)?
                } else {
                    Vec::new()
                };
                Some(
                    existing
                        .into_iter()
                        .filter(|n| stale(n.as_str()) && !mine.contains(n))
                        .collect(),
                )
            }
        };
        entries.push(Entry {
            staged: s.dir.clone(),
            inode: inode(&s.dir).unwrap_or(0),
            target,
            beside,
        });
    }
    // Each commit has a directory of its own in the area: runs of one process (tests, shards
    // run together) may commit side by side.
    let dir = area.join(format!("commit-{}", COMMITS.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let record = Record { entries };
    write_atomic(&dir.join(RECORD), &serde_json::to_vec_pretty(&record)?)?;
    apply(&record, &dir)?;
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(staged
        .iter()
        .zip(record.entries)
        .map(|(s, e)| Published {
            dataset: s.dataset.clone(),
            url: root.partition_url(&s.dataset, &s.partition),
            dir: e.target,
            remove_dir: false,
        })
        .collect())
}

/// Publishes into `root` (an object store, or any root in Delta format) the files of a tree
/// written locally under `local`, as they lie there: each `<dataset>/<partition>/` directory by a commit that replaces the
/// partition (as [`publish`] does for a run's), every other file (a CSV export) by one upload.
/// Gives the published URLs, partitions first. What datagen does for an object-store root.
pub async fn publish_tree(
    root: &DataRoot,
    format: TableFormat,
    local: &Path,
    files: &[PathBuf],
) -> Result<Vec<String>> {
    if root.is_local() && format != TableFormat::Delta {
        return Err(Error::Internal(
            "a tree is published into an object-store root or as Delta tables; a local root of \
             plain Parquet is written in place"
                .into(),
        ));
    }
    let mut partitions = std::collections::BTreeMap::new();
    let mut others = Vec::new();
    for file in files {
        let rel = file.strip_prefix(local).map_err(|_| {
            Error::Internal(format!(
                "{} is not under {}",
                file.display(),
                local.display()
            ))
        })?;
        let dir = rel.parent().unwrap_or(Path::new(""));
        let parsed = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(crate::location::Partition::parse);
        match (parsed, dir.parent()) {
            (Some(partition), Some(dataset)) if !dataset.as_os_str().is_empty() => {
                let dataset = dataset.to_string_lossy().into_owned();
                partitions
                    .entry(local.join(dir))
                    .or_insert((dataset, partition));
            }
            _ => others.push(rel.to_path_buf()),
        }
    }
    let mut staged = Vec::with_capacity(partitions.len());
    for (dir, (dataset, partition)) in partitions {
        staged.push(StagedPartition::from_dir(&dataset, partition, dir)?);
    }
    let mut urls: Vec<String> = publish(root, format, staged)
        .await?
        .into_iter()
        .map(|p| p.url.clone())
        .collect();
    for rel in others {
        urls.push(
            root.upload(&rel.to_string_lossy(), &local.join(&rel))
                .await?,
        );
    }
    Ok(urls)
}

/// For a run that fails on its input after staging its rejects: publishes the rejects alone
/// (the data's owner needs them to see why; the outputs stay as they were) and gives back the
/// run's error. A failure to publish them is logged: the run's own error is the one to report.
pub async fn fail_with_rejects<E>(root: &DataRoot, rejects: StagedPartition, error: E) -> E {
    if let Err(e) = publish(root, TableFormat::Parquet, vec![rejects]).await {
        tracing::warn!(error = %e, "could not publish the rejects of the failed run");
    }
    error
}

/// Makes the record's renames happen; each step checks what is already done, so a replay after
/// a crash completes what the crash interrupted. Replaced partitions move into `dir`, the
/// commit's own directory.
fn apply(record: &Record, dir: &Path) -> Result<()> {
    for (i, e) in record.entries.iter().enumerate() {
        if !e.staged.exists() {
            continue; // published before the crash
        }
        let nothing_staged = e.beside.is_some() && file_names(&e.staged)?.is_empty();
        if let Some(parent) = e.target.parent()
            && !nothing_staged
        {
            std::fs::create_dir_all(parent).map_err(|err| Error::io(parent, err))?;
        }
        match &e.beside {
            None => {
                let old = dir.join(format!("replaced-{i}"));
                if inode(&e.target) == Some(e.inode) {
                    // Swapped before the crash: park what the staged path now holds.
                    if e.staged.exists() {
                        std::fs::rename(&e.staged, &old)
                            .map_err(|err| Error::io(&e.staged, err))?;
                    }
                } else if e.target.exists() {
                    // One atomic swap: a reader sees the old partition or the new, never none.
                    exchange(&e.staged, &e.target)?;
                    std::fs::rename(&e.staged, &old).map_err(|err| Error::io(&e.staged, err))?;
                } else {
                    std::fs::rename(&e.staged, &e.target)
                        .map_err(|err| Error::io(&e.target, err))?;
                }
            }
            Some(remove) => {
                // The shard's new files first (each rename is atomic, one of the same name is
                // replaced in place), then its stale ones go: no moment without the shard's rows.
                // A shard with nothing to add (no rejects) only removes its stale files: it
                // makes no empty directory.
                if !nothing_staged {
                    std::fs::create_dir_all(&e.target).map_err(|err| Error::io(&e.target, err))?;
                }
                for name in file_names(&e.staged)? {
                    let dest = e.target.join(&name);
                    std::fs::rename(e.staged.join(&name), &dest)
                        .map_err(|err| Error::io(&dest, err))?;
                }
                for name in remove {
                    match std::fs::remove_file(e.target.join(name)) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => return Err(Error::io(e.target.join(name), err)),
                    }
                }
                std::fs::remove_dir(&e.staged).map_err(|err| Error::io(&e.staged, err))?;
            }
        }
    }
    Ok(())
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Swaps two directories in one step (`renameat2(RENAME_EXCHANGE)`, Linux 3.15+).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| Error::io(b, std::io::Error::from(e)))
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// What [`recover`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Commits of dead runs completed.
    pub commits: usize,
    /// Staging areas of dead runs removed (their runs had not committed: nothing was visible).
    pub areas: usize,
}

/// Completes the commits of runs that died publishing, and removes the staging areas of runs
/// that died before. Areas of live processes (their lock is held) are left alone. Local roots
/// only; a no-op elsewhere.
pub fn recover(root: &DataRoot) -> Result<Recovered> {
    match root {
        DataRoot::Local(local) => sweep(&local.join(STAGING)),
        DataRoot::ObjectStore { .. } => Ok(Recovered::default()),
    }
}

/// Completes the commit records and removes the areas of dead processes under `base`.
fn sweep(base: &Path) -> Result<Recovered> {
    let mut done = Recovered::default();
    let base = base.to_path_buf();
    let entries = match std::fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(Error::io(&base, e)),
    };
    let ours: Vec<PathBuf> = AREAS
        .lock()
        .map(|a| a.iter().map(|(_, dir, _)| dir.clone()).collect())
        .unwrap_or_default();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(&base, e))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        let area = base.join(name);
        if ours.contains(&area) {
            continue;
        }
        let lock = File::options()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if lock.try_lock().is_err() {
            continue; // a live run
        }
        let mut committed = 0;
        for entry in std::fs::read_dir(&area).into_iter().flatten() {
            let record = entry.map_err(|e| Error::io(&area, e))?.path().join(RECORD);
            if !record.exists() {
                continue;
            }
            let bytes = std::fs::read(&record).map_err(|e| Error::io(&record, e))?;
            let rec: Record = serde_json::from_slice(&bytes)?;
            tracing::warn!(record = %record.display(), partitions = rec.entries.len(), "completing the commit of a run that died publishing");
            apply(&rec, record.parent().unwrap_or(&area))?;
            committed += 1;
        }
        if committed > 0 {
            done.commits += committed;
        } else if area.exists() {
            tracing::info!(area = %area.display(), "removing the staging area of a run that died before publishing");
            done.areas += 1;
        }
        let _ = std::fs::remove_dir_all(&area);
        let _ = std::fs::remove_file(&path);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::{Partition, staging_dir};

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    }

    fn staged(root: &DataRoot, dataset: &str, files: &[&str]) -> StagedPartition {
        let partition = Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        let dir = staging_dir(root, Path::new("/nonexistent"), dataset, &partition).unwrap();
        for f in files {
            std::fs::write(dir.join(f), dataset.as_bytes()).unwrap();
        }
        StagedPartition {
            dataset: dataset.into(),
            partition,
            dir,
            rows: 0,
            bytes: 0,
            files: files.len(),
            stale: None,
        }
    }

    #[tokio::test]
    async fn a_commit_replaces_each_partition_whole_and_leaves_nothing_in_the_datasets() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(tmp.path().to_str().unwrap()).unwrap();
        for files in [
            &["part-0.parquet", "part-1.parquet"][..],
            &["part-0.parquet"][..],
        ] {
            let run = vec![staged(&root, "a", files), staged(&root, "b", files)];
            let urls = publish(&root, TableFormat::Parquet, run).await.unwrap();
            assert_eq!(urls.len(), 2);
        }
        for ds in ["a", "b"] {
            assert_eq!(
                names(&tmp.path().join(ds)),
                ["date=2026-11-26"],
                "only the partition"
            );
            assert_eq!(
                names(&tmp.path().join(ds).join("date=2026-11-26")),
                ["part-0.parquet"]
            );
        }
        let area = area(tmp.path()).unwrap();
        assert!(
            names(&area).is_empty(),
            "the area is empty after the commit"
        );
        assert!(!publishing());
    }

    #[tokio::test]
    async fn a_shard_publishes_beside_the_others_and_replaces_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(tmp.path().to_str().unwrap()).unwrap();
        for (shard, files) in [
            ("s0-", ["s0-part-0.parquet"]),
            ("s1-", ["s1-part-0.parquet"]),
        ] {
            let s = staged(&root, "recs", &files).beside(shard, move |n| n.starts_with(shard));
            publish(&root, TableFormat::Parquet, vec![s]).await.unwrap();
        }
        let again =
            staged(&root, "recs", &["s0-part-1.parquet"]).beside("s0-", |n| n.starts_with("s0-"));
        publish(&root, TableFormat::Parquet, vec![again])
            .await
            .unwrap();
        assert_eq!(
            names(&tmp.path().join("recs/date=2026-11-26")),
            ["s0-part-1.parquet", "s1-part-0.parquet"]
        );
    }

    /// A dead run's area, as a kill at any point would leave it.
    fn dead_area(root: &Path, name: &str) -> PathBuf {
        let base = root.join(STAGING);
        std::fs::create_dir_all(base.join(name)).unwrap();
        std::fs::write(base.join(format!("{name}.lock")), b"").unwrap();
        base.join(name)
    }

    #[test]
    fn the_next_run_completes_a_commit_interrupted_between_two_renames() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(tmp.path().to_str().unwrap()).unwrap();
        let area = dead_area(tmp.path(), "1-1");
        // Dataset a: already renamed in before the kill. Dataset b: its old partition still in
        // place, the new one staged.
        let (a, b) = (tmp.path().join("a/date=D"), tmp.path().join("b/date=D"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("part-0.parquet"), b"old").unwrap();
        }
        std::fs::write(a.join("part-0.parquet"), b"new").unwrap();
        let staged_b = area.join("b-date=D");
        std::fs::create_dir_all(&staged_b).unwrap();
        std::fs::write(staged_b.join("part-0.parquet"), b"new").unwrap();
        let record = Record {
            entries: vec![
                // a was swapped in: the target is the staged directory, by inode.
                Entry {
                    staged: area.join("a-date=D"),
                    inode: inode(&a).unwrap(),
                    target: a.clone(),
                    beside: None,
                },
                Entry {
                    inode: inode(&staged_b).unwrap(),
                    staged: staged_b,
                    target: b.clone(),
                    beside: None,
                },
            ],
        };
        std::fs::create_dir_all(area.join("commit-0")).unwrap();
        std::fs::write(
            area.join("commit-0").join(RECORD),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        // A run that died before its commit: its staged data never shows.
        let uncommitted = dead_area(tmp.path(), "2-2");
        std::fs::create_dir_all(uncommitted.join("c-date=D")).unwrap();

        let done = recover(&root).unwrap();
        assert_eq!(
            done,
            Recovered {
                commits: 1,
                areas: 1
            }
        );
        for d in [&a, &b] {
            assert_eq!(std::fs::read(d.join("part-0.parquet")).unwrap(), b"new");
        }
        assert!(!tmp.path().join("c").exists());
        assert!(
            names(&tmp.path().join(STAGING)).is_empty(),
            "both areas are gone"
        );
        assert_eq!(recover(&root).unwrap(), Recovered::default(), "idempotent");
    }

    #[test]
    fn the_spill_of_dead_runs_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(SPILL).join("9-9");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("bucket-7.spill"), b"x").unwrap();
        std::fs::write(tmp.path().join(SPILL).join("9-9.lock"), b"").unwrap();
        let ours = spill_area(tmp.path()).unwrap();
        assert_eq!(recover_spill(tmp.path()).unwrap(), 1);
        assert!(!dead.exists());
        assert!(ours.exists(), "this process's own spill is kept");
    }

    #[test]
    fn a_live_run_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(tmp.path().to_str().unwrap()).unwrap();
        let area = dead_area(tmp.path(), "3-3");
        let lock = File::options()
            .write(true)
            .open(tmp.path().join(STAGING).join("3-3.lock"))
            .unwrap();
        lock.try_lock().unwrap();
        assert_eq!(recover(&root).unwrap(), Recovered::default());
        assert!(area.exists());
        drop(lock);
        assert_eq!(recover(&root).unwrap().areas, 1);
    }
}
