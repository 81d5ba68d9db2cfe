//! Where datasets live. A data root is a local directory or an object-store URL; datasets are laid
//! out Hive-style: `<root>/<dataset>/<key>=<value>/part-N.parquet` (docs/architecture.md).
//!
//! Outputs are staged in a local directory first and published at the end: locally by renaming the
//! staged directory over the partition (readers see the old or the new partition, never half of
//! one); on an object store by uploading the files under names unique to the run behind a commit
//! marker ([`crate::commit::objects`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::commit::objects::Writer;
use crate::error::{Error, Result};
use crate::output::StagedPartition;

/// A partition of a dataset: `date=2026-11-26`, `month=2026-11`, `experiment=exp-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub key: &'static str,
    pub value: String,
}

impl Partition {
    pub fn date(date: chrono::NaiveDate) -> Self {
        Partition {
            key: "date",
            value: date.format("%Y-%m-%d").to_string(),
        }
    }
    pub fn dir_name(&self) -> String {
        format!("{}={}", self.key, self.value)
    }

    /// The partition a directory name stands for (`date=…`, `month=…`, `experiment=…`), if any.
    pub fn parse(dir_name: &str) -> Option<Self> {
        let (key, value) = dir_name.split_once('=')?;
        let key = ["date", "month", "experiment"]
            .into_iter()
            .find(|k| *k == key)?;
        (!value.is_empty()).then(|| Partition {
            key,
            value: value.to_string(),
        })
    }
}

#[derive(Clone)]
pub enum DataRoot {
    Local(PathBuf),
    ObjectStore {
        url: Url,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    },
}

impl std::fmt::Debug for DataRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl DataRoot {
    /// Parses a local path or `s3://bucket/prefix` (credentials from the usual AWS_* variables).
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(DataRoot::Local(PathBuf::from(rest)));
        }
        if !s.contains("://") {
            return Ok(DataRoot::Local(PathBuf::from(s)));
        }
        let url = Url::parse(s).map_err(|e| Error::Config(format!("--data-root {s:?}: {e}")))?;
        match url.scheme() {
            "s3" | "s3a" => {
                let bucket = url
                    .host_str()
                    .ok_or_else(|| Error::Config(format!("--data-root {s:?} names no bucket")))?;
                if let Some(missing) = missing_credentials() {
                    return Err(Error::Config(format!(
                        "--data-root s3://{bucket}: {missing}"
                    )));
                }
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                let prefix = ObjectPath::from(url.path().trim_matches('/'));
                Ok(DataRoot::ObjectStore {
                    url,
                    store: Arc::new(store),
                    prefix,
                })
            }
            other => Err(Error::Config(format!(
                "--data-root scheme {other:?} is not supported (use a local path or s3://)"
            ))),
        }
    }

    pub fn display(&self) -> String {
        match self {
            DataRoot::Local(p) => p.display().to_string(),
            DataRoot::ObjectStore { url, .. } => url.to_string(),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, DataRoot::Local(_))
    }

    /// The URL or path of a dataset's partition, as DataFusion's listing tables take it.
    pub fn partition_url(&self, dataset: &str, partition: &Partition) -> String {
        match self {
            DataRoot::Local(p) => {
                format!("{}/", p.join(dataset).join(partition.dir_name()).display())
            }
            DataRoot::ObjectStore { url, .. } => {
                format!(
                    "{}/{dataset}/{}/",
                    url.as_str().trim_end_matches('/'),
                    partition.dir_name()
                )
            }
        }
    }

    /// A local path below the root (local roots only: CSV exports, rejects, run records).
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        match self {
            DataRoot::Local(p) => Some(p.join(rel)),
            DataRoot::ObjectStore { .. } => None,
        }
    }

    /// The URL of `<dataset>/date=<date>/` when that partition holds data: an empty directory
    /// (a writer that died before its first file) is no partition, and must not hide another
    /// source of the same day (the CSV export).
    pub async fn date_partition(
        &self,
        dataset: &str,
        date: chrono::NaiveDate,
    ) -> Result<Option<String>> {
        let partition = Partition::date(date);
        let files = self
            .list_files(&format!("{dataset}/{}", partition.dir_name()))
            .await?;
        let present = files.iter().any(|f| f.ends_with(".parquet"));
        Ok(present.then(|| self.partition_url(dataset, &partition)))
    }

    /// A pipeline input: the explicit path when given (`--<dataset>`), else the date's partition
    /// of `dataset`, which must exist.
    pub async fn input_or_date_partition(
        &self,
        explicit: Option<&Path>,
        dataset: &str,
        date: chrono::NaiveDate,
    ) -> Result<String> {
        if let Some(p) = explicit {
            return Ok(p.display().to_string());
        }
        self.date_partition(dataset, date).await?.ok_or_else(|| {
            Error::InputMissing(format!(
                "no {dataset} for {date}: {} does not exist (pass --{})",
                self.partition_url(dataset, &Partition::date(date)),
                dataset.replace('_', "-")
            ))
        })
    }

    /// Lists the values of a dataset's partitions (e.g. all dates of `charts`), sorted.
    pub async fn list_partitions(&self, dataset: &str, key: &str) -> Result<Vec<String>> {
        let prefix = format!("{key}=");
        let mut values = Vec::new();
        match self {
            DataRoot::Local(root) => {
                let dir = root.join(dataset);
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(values),
                    Err(e) => return Err(Error::io(dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&dir, e))?;
                    if let Some(v) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix(&prefix))
                        && entry.path().is_dir()
                    {
                        values.push(v.to_string());
                    }
                }
            }
            DataRoot::ObjectStore { store, .. } => {
                let base = self.object_path(dataset);
                let listing = store.list_with_delimiter(Some(&base)).await?;
                for p in listing.common_prefixes {
                    if let Some(v) = p.filename().and_then(|n| n.strip_prefix(&prefix)) {
                        values.push(v.to_string());
                    }
                }
            }
        }
        values.sort();
        Ok(values)
    }

    /// Whether `dataset` is a Delta table (its `_delta_log/` holds a version).
    pub async fn is_delta_table(&self, dataset: &str) -> Result<bool> {
        match self {
            // As the readers' listings see it (`commit::is_table_dir`).
            DataRoot::Local(root) => match std::fs::read_dir(root.join(dataset).join("_delta_log"))
            {
                Ok(entries) => Ok(entries.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(crate::commit::is_log_version)
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io(root.join(dataset), e)),
            },
            DataRoot::ObjectStore { store, .. } => {
                crate::commit::is_table_dir(store.as_ref(), &self.object_path(dataset)).await
            }
        }
    }

    /// The names of the directories directly in `<root>/<rel_dir>/` (none when it does not
    /// exist), sorted.
    pub async fn list_dirs(&self, rel_dir: &str) -> Result<Vec<String>> {
        self.list_entries(rel_dir, true).await
    }

    /// The names of the files directly in `<root>/<rel_dir>/` (none when it does not exist),
    /// sorted, as our readers see them: hidden files (temporaries of unfinished writes) are left
    /// out, and on an object store a committed partition's files are those its markers name.
    pub async fn list_files(&self, rel_dir: &str) -> Result<Vec<String>> {
        let mut names = self.list_entries(rel_dir, false).await?;
        names.retain(|n| !n.starts_with('.'));
        Ok(names)
    }

    /// The directories (`dirs`) or the files directly in `<root>/<rel_dir>/`, sorted. The files
    /// of a Delta table's partition are those its log names.
    async fn list_entries(&self, rel_dir: &str, dirs: bool) -> Result<Vec<String>> {
        let logged = if dirs {
            None
        } else {
            crate::commit::table_file_names(self, rel_dir).await?
        };
        let mut names = Vec::new();
        match self {
            DataRoot::Local(root) => {
                let dir = root.join(rel_dir);
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(e) => return Err(Error::io(dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&dir, e))?;
                    let path = entry.path();
                    if let Some(n) = entry.file_name().to_str()
                        && (if dirs { path.is_dir() } else { path.is_file() })
                    {
                        names.push(n.to_string());
                    }
                }
            }
            DataRoot::ObjectStore { store, .. } => {
                let listing = store
                    .list_with_delimiter(Some(&self.object_path(rel_dir)))
                    .await?;
                if dirs {
                    names.extend(
                        listing
                            .common_prefixes
                            .iter()
                            .filter_map(|p| p.filename().map(String::from)),
                    );
                } else if logged.is_some() {
                    names.extend(
                        listing
                            .objects
                            .iter()
                            .filter_map(|o| o.location.filename().map(String::from)),
                    );
                } else {
                    // As our readers see them: a committed partition's files (commit::objects).
                    let files =
                        crate::commit::objects::visible(store.as_ref(), listing.objects).await?;
                    names.extend(
                        files
                            .iter()
                            .filter_map(|o| o.location.filename().map(String::from)),
                    );
                }
            }
        }
        if let Some(logged) = logged {
            names.retain(|n| logged.contains(n));
        }
        names.sort();
        Ok(names)
    }

    /// The size of the file `<root>/<rel>`, or `None` when there is none.
    pub async fn file_size(&self, rel: &str) -> Result<Option<u64>> {
        match self {
            DataRoot::Local(root) => match std::fs::metadata(root.join(rel)) {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(root.join(rel), e)),
            },
            DataRoot::ObjectStore { store, .. } => match store.head(&self.object_path(rel)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The bytes of `<root>/<rel>` as a blocking reader, streamed from an object store (a few
    /// chunks ahead, never the whole object in memory). Call it from the async runtime; read it
    /// from a blocking thread.
    pub fn reader(&self, rel: &str) -> Result<Box<dyn std::io::Read + Send>> {
        match self {
            DataRoot::Local(root) => {
                let path = root.join(rel);
                let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::InputMissing(path.display().to_string()),
                    _ => Error::io(&path, e),
                })?;
                Ok(Box::new(file))
            }
            DataRoot::ObjectStore { store, .. } => {
                use futures::StreamExt;
                let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
                let (store, path) = (store.clone(), self.object_path(rel));
                tokio::runtime::Handle::try_current()
                    .map_err(|e| Error::Internal(format!("streaming {path}: {e}")))?
                    .spawn(async move {
                        let mut chunks = match store.get(&path).await {
                            Ok(got) => got.into_stream(),
                            Err(e) => {
                                let _ = tx.send(Err(std::io::Error::other(e))).await;
                                return;
                            }
                        };
                        while let Some(chunk) = chunks.next().await {
                            let failed = chunk.is_err();
                            if tx.send(chunk.map_err(std::io::Error::other)).await.is_err()
                                || failed
                            {
                                return;
                            }
                        }
                    });
                Ok(Box::new(ChannelReader {
                    rx,
                    chunk: bytes::Bytes::new(),
                }))
            }
        }
    }

    /// The store path of `<root>/<rel>` (object-store roots; a local root has none).
    pub(crate) fn object_path(&self, rel: &str) -> ObjectPath {
        match self {
            DataRoot::ObjectStore { prefix, .. } => {
                let mut p = prefix.clone();
                for part in rel.split('/').filter(|p| !p.is_empty()) {
                    p = p.join(part);
                }
                p
            }
            DataRoot::Local(_) => ObjectPath::from(rel),
        }
    }

    /// The bytes of `<root>/<rel>`.
    pub async fn read_file(&self, rel: &str) -> Result<Vec<u8>> {
        match self {
            DataRoot::Local(root) => {
                let path = root.join(rel);
                std::fs::read(&path).map_err(|e| Error::io(&path, e))
            }
            DataRoot::ObjectStore { store, .. } => Ok(store
                .get(&self.object_path(rel))
                .await?
                .bytes()
                .await?
                .to_vec()),
        }
    }

    /// Publishes a fully written local staging directory into `<dataset>/<partition>/` of an
    /// object store, as [`crate::commit::objects`] describes (a local root publishes through
    /// [`crate::commit::publish`]).
    pub(crate) async fn publish_objects(&self, staged: &StagedPartition) -> Result<()> {
        let DataRoot::ObjectStore { store, .. } = self else {
            return Err(Error::Internal(
                "a local partition is published by a commit".into(),
            ));
        };
        let base = self.object_path(&format!(
            "{}/{}",
            staged.dataset,
            staged.partition.dir_name()
        ));
        let writer = match &staged.stale {
            None => Writer::Whole,
            Some(b) => Writer::Beside {
                id: &b.writer,
                stale: &b.stale,
            },
        };
        crate::commit::objects::publish(store.as_ref(), &base, &staged.dir, writer).await?;
        Ok(())
    }

    /// Puts the local file `src` at `<root>/<rel>` whole or not at all, and gives its URL or
    /// path: on an object store a streamed multipart upload, on a local root a copy renamed into
    /// place. A file that is not a partition's (a CSV export); partitions are published by
    /// [`crate::commit::publish`].
    pub async fn upload(&self, rel: &str, src: &Path) -> Result<String> {
        match self {
            DataRoot::Local(root) => {
                let dest = root.join(rel);
                if let Some(dir) = dest.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let tmp = temp_sibling(&dest);
                std::fs::copy(src, &tmp).map_err(|e| Error::io(&tmp, e))?;
                std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
                Ok(dest.display().to_string())
            }
            DataRoot::ObjectStore { store, url, .. } => {
                crate::commit::objects::upload_file(store.as_ref(), src, &self.object_path(rel))
                    .await?;
                Ok(format!("{}/{rel}", url.as_str().trim_end_matches('/')))
            }
        }
    }

    /// Writes one small file (run record, rejects, report) atomically at `<root>/<rel>`.
    pub async fn put_file(&self, rel: &str, bytes: &[u8]) -> Result<String> {
        match self {
            DataRoot::Local(root) => {
                let path = root.join(rel);
                write_atomic(&path, bytes)?;
                Ok(path.display().to_string())
            }
            DataRoot::ObjectStore { store, url, .. } => {
                store
                    .put(&self.object_path(rel), bytes.to_vec().into())
                    .await?;
                Ok(format!("{}/{rel}", url.as_str().trim_end_matches('/')))
            }
        }
    }
}

/// Why an S3 client would find no credentials, when it would not: with the instance-metadata
/// service disabled (`AWS_EC2_METADATA_DISABLED=true`, as in tests and outside the cloud), only
/// the environment's keys, a web identity (Kubernetes IRSA) or a container credentials endpoint
/// can provide them, and a run without any fails here, at once, instead of probing the network.
fn missing_credentials() -> Option<String> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let metadata_disabled =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let have = (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    (metadata_disabled && !have).then(|| {
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a web identity), \
         the instance metadata service being disabled (AWS_EC2_METADATA_DISABLED)"
            .to_string()
    })
}

/// A blocking reader over chunks an async task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so readers never see a
/// half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = temp_sibling(path);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        // A full disk must not leave the half-written temporary behind as well.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `dir/.name.tmp-<pid>`: hidden, so DataFusion listings and Hive readers skip it.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// A staging directory for a partition: in the process's staging area under a local root
/// (same file system as the target, outside every dataset directory: see [`crate::commit`]),
/// else in the spill directory.
pub fn staging_dir(
    root: &DataRoot,
    spill_dir: &Path,
    dataset: &str,
    partition: &Partition,
) -> Result<PathBuf> {
    // Unique within the process too: runs of one process (shards run together) stage side by side.
    static STAGED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = match root {
        DataRoot::Local(p) => crate::commit::area(p)?.join(format!(
            "{}-{}-{n}",
            dataset.replace('/', "-"),
            partition.dir_name()
        )),
        DataRoot::ObjectStore { .. } => spill_dir.join(format!(
            "sp-staging-{}-{}-{}-{n}",
            dataset.replace('/', "-"),
            partition.dir_name(),
            std::process::id()
        )),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary() {
        // /dev/full: every write fails with ENOSPC, like a full data disk.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("record.json");
        std::os::unix::fs::symlink("/dev/full", temp_sibling(&target)).unwrap();
        let err = write_atomic(&target, b"{}").unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::TempFail, "{err}");
        assert!(!temp_sibling(&target).exists(), "the temporary is removed");
        assert!(!target.exists());
    }

    #[tokio::test]
    async fn an_empty_partition_directory_is_no_partition() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(tmp.path().to_str().unwrap()).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let dir = tmp.path().join("plays/date=2026-11-26");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(root.date_partition("plays", day).await.unwrap(), None);
        std::fs::write(dir.join(".part-0.parquet.tmp-1"), b"x").unwrap();
        assert_eq!(
            root.date_partition("plays", day).await.unwrap(),
            None,
            "a temporary is no data"
        );
        std::fs::write(dir.join("part-0.parquet"), b"x").unwrap();
        assert!(root.date_partition("plays", day).await.unwrap().is_some());
    }

    #[test]
    fn roots_parse_paths_and_reject_unknown_schemes() {
        assert!(DataRoot::parse("./data").unwrap().is_local());
        assert!(DataRoot::parse("file:///tmp/x").unwrap().is_local());
        assert!(matches!(
            DataRoot::parse("ftp://x/y"),
            Err(Error::Config(_))
        ));
    }
}
