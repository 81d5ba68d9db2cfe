//! Delta Lake tables (`--table-format delta`): each dataset is one Delta table at
//! `<root>/<dataset>/`, partitioned as the Hive layout is (`date=`, `month=`, `experiment=`), and a
//! run's partition is replaced in **one Delta commit** (`replaceWhere` semantics): the commit adds
//! the run's files and removes every file the partition held (or, for one shard of several, the
//! files of that shard). Readers of the table see the old partition or the new one, never a mix,
//! on a local root and on an object store alike; a run that dies before its commit leaves files
//! that no commit names, which no Delta reader reads and `vacuum` removes.
//!
//! The data files are the ones our writer staged (the same bytes as plain Parquet), put into the
//! partition's directory under names unique to the commit; the transaction log is written by the
//! `deltalake` crate (delta-rs), never by hand. On S3, a commit is a conditional PUT of the next
//! log entry (`If-None-Match: *`), so concurrent writers (the shards of a run) cannot overwrite
//! each other's commits: the loser reloads the table and commits again.
//!
//! Reading: a dataset directory that holds `_delta_log/` is read through its log ([`Tables`]),
//! whatever `--table-format` says; files the log does not name are never read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Once};

use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{
    CommitBuilder, CommitProperties, TableReference, TransactionError,
};
use deltalake::kernel::{Action, Add, DataType, StructField, StructType};
use deltalake::logstore::{LogStoreFactory, StorageConfig, default_logstore, logstore_factories};
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};
use url::Url;

use crate::error::{Error, Result};
use crate::location::{DataRoot, Partition};
use crate::output::StagedPartition;

/// How often a commit that lost the race to another writer's is made again on the new table.
const COMMIT_ATTEMPTS: usize = 20;

/// Registers the log store of `s3://` (and `s3a://`) tables, once: delta-rs's default log store,
/// whose commits are conditional PUTs (`PutMode::Create`), which S3 and S3-compatible stores
/// honour. It takes our own object store (credentials and endpoint from the usual AWS variables,
/// built by [`DataRoot::parse`]), so no second AWS client is built or linked.
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = logstore_factories();
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                factories.insert(url, Arc::new(ConditionalPut));
            }
        }
    });
}

struct ConditionalPut;

impl LogStoreFactory for ConditionalPut {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<deltalake::logstore::LogStoreRef> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// The table at `url` (a dataset's directory) on `store` (rooted at the URL's bucket, or at `/`
/// for `file://`), loaded; `None` when there is no table there yet.
async fn open(store: Arc<dyn ObjectStore>, url: &Url) -> Result<(DeltaTable, bool)> {
    register_log_stores();
    let mut table = DeltaTableBuilder::from_url(url.clone())?
        .with_storage_backend(store, url.clone())
        .build()?;
    match table.load().await {
        Ok(()) => Ok((table, true)),
        Err(DeltaTableError::NotATable(_)) => Ok((table, false)),
        Err(e) => Err(e.into()),
    }
}

/// A table's active files by partition directory name (`date=2026-11-26`): each file's path
/// relative to the table root, and its size.
type ActiveFiles = BTreeMap<String, Vec<(String, u64)>>;

/// The active files of a loaded table.
fn active_files(table: &DeltaTable) -> Result<ActiveFiles> {
    let snapshot = table.snapshot()?;
    let mut by_dir = ActiveFiles::new();
    for file in snapshot.snapshot().try_log_data()? {
        let path = file.path().to_string();
        let dir = path
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        by_dir
            .entry(dir)
            .or_default()
            .push((path, file.size().max(0) as u64));
    }
    Ok(by_dir)
}

/// The Delta tables met by one reader's listing, loaded once each.
#[derive(Default)]
pub(crate) struct Tables {
    /// By the table's object path: its active files by partition directory, or `None` when the
    /// directory is no table.
    tables: HashMap<String, Option<ActiveFiles>>,
}

impl Tables {
    /// Whether `dataset` (an object path on `store`, whose URL is `base` + the path) is a Delta
    /// table, and if so the files its log names in the partition directory `dir_name`. `None`:
    /// no table there (the directory is read as plain Parquet).
    pub(crate) async fn files(
        &mut self,
        store: &Arc<dyn ObjectStore>,
        base: &Url,
        dataset: &ObjectPath,
        dir_name: &str,
    ) -> Result<Option<Vec<(String, u64)>>> {
        let key = dataset.to_string();
        if !self.tables.contains_key(&key) {
            let loaded = if super::is_table_dir(store.as_ref(), dataset).await? {
                let url = table_url(base, dataset)?;
                let (table, exists) = open(store.clone(), &url).await?;
                if !exists {
                    // A version listed a moment ago that does not load: never read as empty.
                    return Err(object_store::Error::Generic {
                        store: "delta",
                        source: format!(
                            "{url}: the log lists a version that does not load; a retry reads it"
                        )
                        .into(),
                    }
                    .into());
                }
                Some(active_files(&table)?)
            } else {
                None
            };
            self.tables.insert(key.clone(), loaded);
        }
        Ok(self.tables[&key].as_ref().map(|by_dir| {
            by_dir
                .get(dir_name)
                .map(|files| {
                    files
                        .iter()
                        .map(|(rel, size)| (format!("{key}/{rel}"), *size))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

/// The URL of the object path `path` under `base` (`s3://bucket/`, `file:///`).
fn table_url(base: &Url, path: &ObjectPath) -> Result<Url> {
    // `base` ends in `/` (`file:///`, `s3://bucket/`); object paths never start with one.
    let text = format!(
        "{}/{path}",
        base.as_str().strip_suffix('/').unwrap_or(base.as_str())
    );
    Url::parse(&text).map_err(|e| Error::Internal(format!("table URL {text}: {e}")))
}

/// Where a data root's tables live: the store (rooted at the bucket, or `/` for a local root),
/// its base URL, and the object path of the root.
fn root_store(root: &DataRoot) -> Result<(Arc<dyn ObjectStore>, Url, ObjectPath)> {
    match root {
        DataRoot::Local(path) => {
            // A root that does not exist yet (a first publish) has no symlinks to resolve.
            let abs = std::fs::canonicalize(path)
                .or_else(|_| std::path::absolute(path))
                .map_err(|e| Error::io(path, e))?;
            let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
            let prefix = ObjectPath::from_absolute_path(&abs)
                .map_err(|e| Error::Internal(format!("{}: {e}", abs.display())))?;
            let base = Url::parse("file:///").map_err(|e| Error::Internal(e.to_string()))?;
            Ok((store, base, prefix))
        }
        DataRoot::ObjectStore { url, store, prefix } => {
            let base = Url::parse(&format!(
                "{}://{}/",
                url.scheme(),
                url.host_str().unwrap_or_default()
            ))
            .map_err(|e| Error::Config(format!("--data-root {url}: {e}")))?;
            Ok((store.clone(), base, prefix.clone()))
        }
    }
}

/// The Delta type of a partition column: `date=` holds dates, the others strings.
fn partition_type(partition: &Partition) -> DataType {
    if partition.key == "date" {
        DataType::DATE
    } else {
        DataType::STRING
    }
}

/// Replaces a staged partition in the dataset's Delta table, in one commit (see the module
/// docs); creates the table on its first publish. The staged files stay where they are (the
/// local copy the run's messages are sent from).
pub(crate) async fn publish(root: &DataRoot, staged: &StagedPartition) -> Result<()> {
    let (store, base, prefix) = root_store(root)?;
    let dataset_path = prefix.clone().join(staged.dataset.as_str());
    let url = table_url(&base, &dataset_path)?;
    let dir_name = staged.partition.dir_name();
    let commit = super::objects::commit_id();

    // The staged Parquet files, in name order.
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&staged.dir).map_err(|e| Error::io(&staged.dir, e))? {
        let entry = entry.map_err(|e| Error::io(&staged.dir, e))?;
        if let Some(name) = entry.file_name().to_str()
            && name.ends_with(".parquet")
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    // The files as the table stores them (Delta's types), converted before anything is put.
    let files: Vec<(std::path::PathBuf, String)> = names
        .iter()
        .map(|name| Ok((delta_file(&staged.dir.join(name))?, name.clone())))
        .collect::<Result<_>>()?;

    // A first publish creates the table before any file of this commit is put: until then the
    // directory is plain Parquet to every reader (on a local root, unfiltered), and our files
    // in it would show beside the old ones. Created, the table holds the plain partitions as
    // they were, and our uploads are invisible until the commit names them.
    if let Some(dir) = root.local_path(&staged.dataset) {
        // delta-rs refuses to open a local table location that does not exist yet.
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let (mut table, exists) = open(store.clone(), &url).await?;
    if !exists {
        let Some((schema_file, _)) = files.first() else {
            // Nothing to write and no table yet: the partition stays absent.
            return Ok(());
        };
        if let Err(e) = create(
            root,
            &table,
            &staged.dataset,
            schema_file,
            &staged.partition,
            &commit,
        )
        .await
        {
            // Another writer (a shard) may have created it first.
            let (reloaded, exists) = open(store.clone(), &url).await?;
            if !exists {
                return Err(e);
            }
            table = reloaded;
        } else {
            table = open(store.clone(), &url).await?.0;
        }
    }

    // The run's files, under names unique to this commit, in the partition's directory.
    let mut adds = Vec::with_capacity(files.len());
    for (src, name) in &files {
        let stored = super::objects::stored_name(name, &commit);
        let rel = format!("{dir_name}/{stored}");
        put_file(root, store.as_ref(), src, &staged.dataset, &rel).await?;
        let (size, rows) = footer(src)?;
        adds.push(Add {
            path: rel,
            partition_values: HashMap::from([(
                staged.partition.key.to_string(),
                Some(staged.partition.value.clone()),
            )]),
            size: size as i64,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        });
    }
    for attempt in 1..=COMMIT_ATTEMPTS {
        let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        let snapshot = table.snapshot()?;
        let now = chrono::Utc::now().timestamp_millis();
        let files: Vec<_> = snapshot.snapshot().try_log_data()?.into_iter().collect();
        // A "lost" race may be our own commit, whose answer was lost (the store retried the
        // conditional PUT that had landed): the table then names our files, which carry this
        // commit's id, and committing again would remove them. It is done.
        if attempt > 1 && files.iter().any(|f| f.path().contains(commit.as_str())) {
            tracing::info!(table = %url, partition = %dir_name, "delta commit (found committed on retry)");
            return Ok(());
        }
        for file in files {
            let path = file.path();
            let Some((dir, name)) = path.rsplit_once('/') else {
                continue;
            };
            let replaced = dir == dir_name
                && match &staged.stale {
                    None => true,
                    Some(beside) => (beside.stale)(&super::objects::run_name(name).0),
                };
            if replaced {
                let mut remove = file.remove_action(true);
                remove.deletion_timestamp = Some(now);
                actions.push(Action::Remove(remove));
            }
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: Some(vec![staged.partition.key.to_string()]),
            predicate: Some(format!(
                "{} = '{}'",
                staged.partition.key, staged.partition.value
            )),
        };
        // A checkpoint every `delta.checkpointInterval` (100) versions, so that opening a table
        // with a long history reads one Parquet file and a few JSON entries, not every entry.
        let properties = CommitProperties::default()
            // Our own loop retries a lost race, on the table as the winner left it.
            .with_max_retries(0)
            .with_create_checkpoint(true);
        let prepared = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(snapshot as &dyn TableReference),
                table.log_store(),
                operation,
            )
            .into_prepared_commit_future()
            .await?;
        match prepared.await {
            Ok(durable) => {
                let version = durable.version;
                // The commit is in the log: the partition is replaced, whatever comes after.
                // What comes after (the checkpoint, the expired logs' cleanup) is upkeep, and
                // its failure must not fail a run whose output readers already see: the next
                // commit's upkeep covers it.
                if let Err(e) = durable.await {
                    tracing::warn!(
                        table = %url,
                        version,
                        error = %e,
                        "committed; the upkeep after the commit (checkpoint, log cleanup) failed"
                    );
                }
                tracing::info!(
                    table = %url,
                    partition = %dir_name,
                    version,
                    files = adds.len(),
                    "delta commit"
                );
                return Ok(());
            }
            Err(e) if lost_race(&e) && attempt < COMMIT_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "commit lost to another writer; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
                table.update_state().await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(
        DeltaTableError::Generic(format!("{url}: no commit after {COMMIT_ATTEMPTS} attempts"))
            .into(),
    )
}

/// Whether a commit failed because another writer committed first.
fn lost_race(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::VersionAlreadyExists(_)
                | TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
        } | DeltaTableError::VersionAlreadyExists(_)
    )
}

/// Creates the table: the columns of the staged file `file`, then the partition column. The
/// partitions the dataset already holds as plain Parquet (written before the switch to Delta)
/// join the table in its first commit, as our readers saw them, so that switching a root to
/// Delta hides none of its history.
async fn create(
    root: &DataRoot,
    table: &DeltaTable,
    dataset: &str,
    file: &Path,
    partition: &Partition,
    commit: &str,
) -> Result<DeltaTable> {
    let reader = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(reader)?;
    let schema = StructType::try_from_arrow(builder.schema().as_ref())?;
    let mut columns: Vec<StructField> = schema
        .fields()
        .filter(|f| f.name() != partition.key)
        .cloned()
        .collect();
    columns.push(StructField::new(
        partition.key,
        partition_type(partition),
        true,
    ));
    let mut adopted = Vec::new();
    for value in root.list_partitions(dataset, partition.key).await? {
        let dir_name = format!("{}={value}", partition.key);
        for name in root.list_files(&format!("{dataset}/{dir_name}")).await? {
            // Not this commit's own files (its commit adds them), and on a local root (where
            // plain partitions are renamed into place, never uploaded) no upload of another
            // Delta commit: a shard's that is committing now, a dead run's.
            let upload = super::objects::run_name(&name).1;
            if !name.ends_with(".parquet") || name.contains(commit) || (root.is_local() && upload) {
                continue;
            }
            let rel = format!("{dir_name}/{name}");
            let Some(size) = root.file_size(&format!("{dataset}/{rel}")).await? else {
                continue;
            };
            adopted.push(Action::Add(Add {
                path: rel,
                partition_values: HashMap::from([(partition.key.to_string(), Some(value.clone()))]),
                size: size as i64,
                modification_time: chrono::Utc::now().timestamp_millis(),
                data_change: true,
                stats: None,
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            }));
        }
    }
    if !adopted.is_empty() {
        tracing::info!(
            dataset,
            files = adopted.len(),
            "plain Parquet partitions join the new Delta table"
        );
    }
    Ok(CreateBuilder::new()
        .with_log_store(table.log_store())
        .with_columns(columns)
        .with_partition_columns([partition.key])
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_actions(adopted)
        .await?)
}

/// Puts one staged file at `<dataset>/<rel>`: a hard link on a local root (the staging area is
/// on the same file system; the staged copy stays for the run's messages), an upload on an
/// object store.
async fn put_file(
    root: &DataRoot,
    store: &dyn ObjectStore,
    src: &Path,
    dataset: &str,
    rel: &str,
) -> Result<()> {
    let rel = format!("{dataset}/{rel}");
    match root {
        DataRoot::Local(_) => {
            let path = root
                .local_path(&rel)
                .ok_or_else(|| Error::Internal("a local root has local paths".into()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            if std::fs::hard_link(src, &path).is_err() {
                std::fs::copy(src, &path).map_err(|e| Error::io(&path, e))?;
            }
            Ok(())
        }
        DataRoot::ObjectStore { .. } => {
            super::objects::upload_file(store, src, &root.object_path(&rel)).await
        }
    }
}

/// The file to put in the table for the staged file `src`: `src` itself, unless it holds a type
/// that Delta's type system lacks, which a reader may hold the file to (Polars refuses a file
/// whose column types differ from the table's):
/// * timestamps coarser than microseconds (the data contract's `played_at` is milliseconds):
///   Delta's `timestamp` is microseconds;
/// * fixed-size lists (the embeddings): Delta's `array` has no length.
///
/// Such a file is rewritten beside it with those columns as Delta types (the same values), with
/// the same writer properties (a rerun gives the same bytes). Our readers convert them back to
/// the contract's types, exactly.
fn delta_file(src: &Path) -> Result<std::path::PathBuf> {
    use arrow::datatypes::{DataType as Arrow, Field, Schema, TimeUnit};
    let file = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.schema().clone();
    let delta_type = |t: &Arrow| match t {
        Arrow::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, tz) => {
            Some(Arrow::Timestamp(TimeUnit::Microsecond, tz.clone()))
        }
        Arrow::FixedSizeList(item, _) => Some(Arrow::List(item.clone())),
        _ => None,
    };
    if !schema
        .fields()
        .iter()
        .any(|f| delta_type(f.data_type()).is_some())
    {
        return Ok(src.to_path_buf());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match delta_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    let target = Arc::new(Schema::new(fields));
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = src.with_file_name(format!(".{name}.delta"));
    let dest = std::fs::File::create(&out).map_err(|e| Error::io(&out, e))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        dest,
        target.clone(),
        Some(crate::output::writer_properties()),
    )?;
    for batch in builder.with_batch_size(64 * 1024).build()? {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        writer.write(&arrow::record_batch::RecordBatch::try_new(
            target.clone(),
            columns,
        )?)?;
    }
    writer.close()?;
    Ok(out)
}

/// A staged Parquet file's size and rows (its footer).
fn footer(path: &Path) -> Result<(u64, i64)> {
    use parquet::file::reader::FileReader;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let reader = parquet::file::reader::SerializedFileReader::new(file)?;
    Ok((size, reader.metadata().file_metadata().num_rows()))
}

/// What `vacuum` did to one table.
#[derive(Debug, serde::Serialize)]
pub struct Vacuumed {
    pub table: String,
    pub files_deleted: usize,
}

/// Deletes the files of `dataset`'s table that no version younger than `retention` needs: files
/// that commits removed, and files that no commit names (uploads of runs that died before their
/// commit). Readers of versions older than `retention` (time travel) lose them.
pub async fn vacuum(
    root: &DataRoot,
    dataset: &str,
    retention: std::time::Duration,
    dry_run: bool,
) -> Result<Option<Vacuumed>> {
    let (store, base, prefix) = root_store(root)?;
    let path = prefix.join(dataset);
    if !super::is_table_dir(store.as_ref(), &path).await? {
        return Ok(None);
    }
    let url = table_url(&base, &path)?;
    let (table, exists) = open(store, &url).await?;
    if !exists {
        return Ok(None);
    }
    let retention = chrono::Duration::from_std(retention)
        .map_err(|e| Error::Config(format!("--retention: {e}")))?;
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .with_dry_run(dry_run)
        .await?;
    Ok(Some(Vacuumed {
        table: url.to_string(),
        files_deleted: metrics.files_deleted.len(),
    }))
}

/// The names of the files that the log of the table above `rel_dir` (`<dataset>/<partition>`,
/// relative to the root) names in that partition; `None` when `<dataset>` is no Delta table.
pub(crate) async fn partition_file_names(
    root: &DataRoot,
    rel_dir: &str,
) -> Result<Option<Vec<String>>> {
    let Some((dataset, dir_name)) = rel_dir.trim_matches('/').rsplit_once('/') else {
        return Ok(None);
    };
    let (store, base, prefix) = root_store(root)?;
    let mut path = prefix;
    for part in dataset.split('/').filter(|p| !p.is_empty()) {
        path = path.join(part);
    }
    let files = Tables::default()
        .files(&store, &base, &path, dir_name)
        .await?;
    Ok(files.map(|files| {
        files
            .iter()
            .filter_map(|(p, _)| p.rsplit('/').next().map(String::from))
            .collect()
    }))
}

/// Of a listing, the objects the Delta tables among their parents name; objects of directories
/// of no table are given back untouched in the second list. The first also says whether any
/// directory was a table's.
pub(crate) async fn split_listing(
    store: &Arc<dyn ObjectStore>,
    base: &Url,
    objects: Vec<ObjectMeta>,
) -> Result<super::TableSplit> {
    let mut tables = Tables::default();
    let by_dir = super::by_directory(objects);
    let (mut named, mut plain, mut any) = (Vec::new(), Vec::new(), false);
    for (dir, files) in by_dir {
        let (parent, dir_name) = dir.rsplit_once('/').unwrap_or(("", dir.as_str()));
        let parent = ObjectPath::from(parent);
        // (A table's `_delta_log/` itself, in a listing of the dataset's directory, names no
        // file of the log: its entries and checkpoints are never data.)
        let Some(log_files) = tables.files(store, base, &parent, dir_name).await? else {
            plain.extend(files);
            continue;
        };
        any = true;
        let listed: HashMap<&str, &ObjectMeta> =
            files.iter().map(|m| (m.location.as_ref(), m)).collect();
        for (path, _) in &log_files {
            match listed.get(path.as_str()) {
                Some(meta) => named.push((*meta).clone()),
                None => {
                    return Err(object_store::Error::Generic {
                        store: "delta",
                        source: format!(
                            "{path} is named by the table's log but was not listed: the table \
                             was vacuumed or committed to while being read; a retry reads it"
                        )
                        .into(),
                    }
                    .into());
                }
            }
        }
    }
    Ok((named, plain, any))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType as ArrowType, Field, Schema};

    use super::*;
    use crate::config::TableFormat;
    use crate::location::staging_dir;

    const DAY: &str = "2026-11-26";

    fn day() -> Partition {
        Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap())
    }

    /// A staged partition of `dataset` with one Parquet file per entry of `files`, of `rows` rows.
    fn staged(root: &DataRoot, dataset: &str, files: &[&str], rows: i64) -> StagedPartition {
        let partition = day();
        let dir = staging_dir(root, Path::new("/nonexistent"), dataset, &partition).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", ArrowType::Int64, false)]));
        for f in files {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(0..rows))],
            )
            .unwrap();
            let file = std::fs::File::create(dir.join(f)).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
        StagedPartition {
            dataset: dataset.into(),
            partition,
            dir,
            rows: rows as u64 * files.len() as u64,
            bytes: 0,
            files: files.len(),
            stale: None,
        }
    }

    async fn table(root: &DataRoot, dataset: &str) -> DeltaTable {
        let (store, base, prefix) = root_store(root).unwrap();
        let url = table_url(&base, &prefix.join(dataset)).unwrap();
        let (table, exists) = open(store, &url).await.unwrap();
        assert!(exists, "{url} is a table");
        table
    }

    /// The run names (`part-0.parquet`) of the files our readers see in the day's partition.
    async fn visible(root: &DataRoot, dataset: &str) -> Vec<String> {
        let mut names: Vec<String> = root
            .list_files(&format!("{dataset}/date={DAY}"))
            .await
            .unwrap()
            .iter()
            .map(|n| super::super::objects::run_name(n).0)
            .collect();
        names.sort();
        names
    }

    /// Every object under `<root>/<rel>`, as the store has them (no reader's rule).
    async fn raw(root: &DataRoot, rel: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let (store, _, mut path) = root_store(root).unwrap();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        store
            .list(Some(&path))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    }

    async fn roots() -> Vec<(tempfile::TempDir, DataRoot)> {
        let local = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(local.path().to_str().unwrap()).unwrap();
        // An object store as S3 is one to delta-rs (the s3 scheme, our store, conditional puts).
        let mem = tempfile::tempdir().unwrap();
        let store = DataRoot::ObjectStore {
            url: Url::parse("s3://bucket/root").unwrap(),
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: ObjectPath::from("root"),
        };
        vec![(local, root), (mem, store)]
    }

    #[tokio::test]
    async fn each_publish_replaces_the_partition_in_one_commit() {
        for (_tmp, root) in roots().await {
            for files in [
                &["part-0.parquet", "part-1.parquet"][..],
                &["part-0.parquet"][..],
            ] {
                let out = crate::commit::publish(
                    &root,
                    TableFormat::Delta,
                    vec![staged(&root, "counts", files, 3)],
                )
                .await
                .unwrap();
                assert_eq!(out.len(), 1);
            }
            let t = table(&root, "counts").await;
            // Create, then two writes.
            assert_eq!(t.version(), Some(2), "{}", root.display());
            let files = active_files(&t).unwrap();
            assert_eq!(files.len(), 1, "one partition");
            assert_eq!(
                files[&format!("date={DAY}")].len(),
                1,
                "only the last run's file"
            );
            assert_eq!(visible(&root, "counts").await, ["part-0.parquet"]);
            // The readers' listing reads the log, not the directory (which still holds the
            // first run's files, until vacuum).
            let dir = raw(&root, &format!("counts/date={DAY}")).await;
            assert_eq!(dir.len(), 3, "{dir:?}");
            // A plain publish into the table would be invisible to its readers: refused.
            let err = crate::commit::publish(
                &root,
                TableFormat::Parquet,
                vec![staged(&root, "counts", &["part-0.parquet"], 1)],
            )
            .await
            .unwrap_err();
            assert_eq!(err.exit_code(), crate::exit::ExitCode::Usage, "{err}");
        }
    }

    #[tokio::test]
    async fn shards_commit_beside_each_other_and_replace_their_own() {
        for (_tmp, root) in roots().await {
            for shard in ["s0-", "s1-"] {
                let name = format!("{shard}part-0.parquet");
                let s = staged(&root, "recs", &[name.as_str()], 2)
                    .beside(shard, move |n| n.starts_with(shard));
                crate::commit::publish(&root, TableFormat::Delta, vec![s])
                    .await
                    .unwrap();
            }
            let again = staged(&root, "recs", &["s0-part-1.parquet"], 2)
                .beside("s0-", |n| n.starts_with("s0-"));
            crate::commit::publish(&root, TableFormat::Delta, vec![again])
                .await
                .unwrap();
            assert_eq!(
                visible(&root, "recs").await,
                ["s0-part-1.parquet", "s1-part-0.parquet"]
            );
        }
    }

    #[tokio::test]
    async fn concurrent_writers_all_commit() {
        for (_tmp, root) in roots().await {
            // The table exists first; then eight shards commit at once: each loses the race to
            // the log's next entry but one, and commits again on the table the winner left.
            let first = staged(&root, "recs", &["s0-part-0.parquet"], 1)
                .beside("s0-", |n| n.starts_with("s0-"));
            crate::commit::publish(&root, TableFormat::Delta, vec![first])
                .await
                .unwrap();
            let mut runs = Vec::new();
            for i in 1..8 {
                let root = root.clone();
                runs.push(tokio::spawn(async move {
                    let shard: &'static str = Box::leak(format!("s{i}-").into_boxed_str());
                    let name = format!("{shard}part-0.parquet");
                    let s = staged(&root, "recs", &[name.as_str()], 1)
                        .beside(shard, move |n| n.starts_with(shard));
                    crate::commit::publish(&root, TableFormat::Delta, vec![s]).await
                }));
            }
            for r in runs {
                r.await.unwrap().unwrap();
            }
            assert_eq!(visible(&root, "recs").await.len(), 8, "{}", root.display());
            assert_eq!(table(&root, "recs").await.version(), Some(8));
        }
    }

    #[tokio::test]
    async fn plain_partitions_join_the_table_when_a_root_switches_to_delta() {
        for (_tmp, root) in roots().await {
            let mut old = staged(&root, "charts", &["part-0.parquet"], 4);
            old.partition = Partition::date(chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
            crate::commit::publish(&root, TableFormat::Parquet, vec![old])
                .await
                .unwrap();
            if let Some(dir) = root.local_path("charts/date=2026-11-25") {
                // The upload of a Delta run that died before its commit: not history.
                std::fs::write(dir.join("part-0.sp1.parquet"), b"dead").unwrap();
            }
            crate::commit::publish(
                &root,
                TableFormat::Delta,
                vec![staged(&root, "charts", &["part-0.parquet"], 4)],
            )
            .await
            .unwrap();
            let files = active_files(&table(&root, "charts").await).unwrap();
            assert_eq!(
                files.keys().collect::<Vec<_>>(),
                ["date=2026-11-25", "date=2026-11-26"],
                "the plain day is in the table"
            );
            assert_eq!(files["date=2026-11-25"].len(), 1, "{files:?}");
        }
    }

    #[tokio::test]
    async fn vacuum_deletes_the_replaced_files_and_a_dead_run_s_uploads() {
        for (_tmp, root) in roots().await {
            for _ in 0..2 {
                crate::commit::publish(
                    &root,
                    TableFormat::Delta,
                    vec![staged(&root, "counts", &["part-0.parquet"], 3)],
                )
                .await
                .unwrap();
            }
            // A run that died after its upload, before its commit.
            let dead = staged(&root, "counts", &["part-0.parquet"], 5);
            let (store, _, _) = root_store(&root).unwrap();
            put_file(
                &root,
                store.as_ref(),
                &dead.dir.join("part-0.parquet"),
                "counts",
                &format!("date={DAY}/part-0.sp1.parquet"),
            )
            .await
            .unwrap();
            let listed = |root: DataRoot| async move {
                raw(&root, &format!("counts/date={DAY}")).await.len()
            };
            assert_eq!(listed(root.clone()).await, 3);
            let dry = vacuum(&root, "counts", std::time::Duration::ZERO, true)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                dry.files_deleted, 2,
                "the replaced file and the dead upload"
            );
            assert_eq!(listed(root.clone()).await, 3, "a dry run deletes nothing");
            let done = vacuum(&root, "counts", std::time::Duration::ZERO, false)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(done.files_deleted, 2);
            assert_eq!(listed(root.clone()).await, 1);
            assert_eq!(visible(&root, "counts").await, ["part-0.parquet"]);
            assert!(
                vacuum(&root, "nothing", std::time::Duration::ZERO, false)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    /// The table's version, `None` when the dataset is no table.
    async fn version_of(root: &DataRoot, dataset: &str) -> Option<u64> {
        if root.is_delta_table(dataset).await.unwrap() {
            table(root, dataset).await.version()
        } else {
            None
        }
    }

    /// A publish that dies after any number of writes leaves the old partition, into a table
    /// (the old version) and into a plain dataset switching to Delta (the plain files: the
    /// table, if it was created, holds them), until a publish succeeds.
    #[tokio::test]
    async fn a_publish_that_dies_at_any_write_leaves_the_old_partition_on_s3() {
        use crate::commit::objects::tests::Failing;
        use object_store::ObjectStoreExt;
        for seed_format in [TableFormat::Delta, TableFormat::Parquet] {
            let base = object_store::memory::InMemory::new();
            let seed = root_on(Arc::new(base.fork()));
            crate::commit::publish(
                &seed,
                seed_format,
                vec![staged(&seed, "counts", &["part-0.parquet"], 3)],
            )
            .await
            .unwrap();
            let DataRoot::ObjectStore { store: seeded, .. } = &seed else {
                unreachable!()
            };
            let old = visible(&seed, "counts").await;
            assert_eq!(old, ["part-0.parquet"]);
            let old_version = version_of(&seed, "counts").await;
            let mut budget = 0;
            loop {
                // The seeded bucket as it is, behind a store that dies after `budget` writes.
                let copy = object_store::memory::InMemory::new();
                for meta in raw(&seed, "").await {
                    let path = ObjectPath::from(meta.as_str());
                    let bytes = seeded.get(&path).await.unwrap().bytes().await.unwrap();
                    copy.put(&path, bytes.into()).await.unwrap();
                }
                let root = root_on(Arc::new(Failing::new(copy, budget)));
                let run = staged(&root, "counts", &["part-0.parquet", "part-1.parquet"], 4);
                let done = crate::commit::publish(&root, TableFormat::Delta, vec![run]).await;
                let now = visible(&root, "counts").await;
                let version = version_of(&root, "counts").await;
                let label = format!("{seed_format:?} seed, died after {budget} writes");
                match done {
                    Ok(_) => {
                        assert_eq!(now, ["part-0.parquet", "part-1.parquet"], "{label}");
                        // Into a table: one more version; a switch: the create and the write.
                        assert_eq!(version, Some(old_version.map_or(1, |v| v + 1)), "{label}");
                        assert!(budget >= 3, "two uploads and the commit: {label}");
                        break;
                    }
                    Err(e) => {
                        assert_eq!(now, old, "{label}: {e}");
                        match old_version {
                            Some(_) => assert_eq!(version, old_version, "{label}"),
                            // Created (version 0, the plain files) or not at all.
                            None => assert!(version.is_none_or(|v| v == 0), "{label}"),
                        }
                    }
                }
                budget += 1;
                assert!(budget < 20, "the publish never succeeded");
            }
        }
    }

    fn root_on(store: Arc<dyn ObjectStore>) -> DataRoot {
        DataRoot::ObjectStore {
            url: Url::parse("s3://bucket/root").unwrap(),
            store,
            prefix: ObjectPath::from("root"),
        }
    }

    /// A `_delta_log/` holding no version (the temporary of a first commit that died while being
    /// written) is no table: the dataset reads and publishes as plain Parquet, and a Delta
    /// publish then creates the table.
    #[tokio::test]
    async fn a_log_without_a_version_is_no_table() {
        use object_store::ObjectStoreExt;
        for (_tmp, root) in roots().await {
            let publish = |format, file: &'static str| {
                let root = root.clone();
                async move {
                    let s = staged(&root, "counts", &[file], 3);
                    crate::commit::publish(&root, format, vec![s]).await
                }
            };
            publish(TableFormat::Parquet, "part-0.parquet")
                .await
                .unwrap();
            let (store, _, prefix) = root_store(&root).unwrap();
            let temporary = prefix
                .join("counts")
                .join("_delta_log")
                .join("_commit_3f2a.json.tmp");
            store.put(&temporary, b"{}".to_vec().into()).await.unwrap();
            let label = root.display();
            assert!(!root.is_delta_table("counts").await.unwrap(), "{label}");
            assert_eq!(
                visible(&root, "counts").await,
                ["part-0.parquet"],
                "{label}"
            );
            publish(TableFormat::Parquet, "part-1.parquet")
                .await
                .unwrap();
            assert_eq!(
                visible(&root, "counts").await,
                ["part-1.parquet"],
                "{label}"
            );
            publish(TableFormat::Delta, "part-2.parquet").await.unwrap();
            assert!(root.is_delta_table("counts").await.unwrap(), "{label}");
            assert_eq!(
                visible(&root, "counts").await,
                ["part-2.parquet"],
                "{label}"
            );
            assert_eq!(version_of(&root, "counts").await, Some(1), "{label}");
        }
    }

    /// On a local root a plain dataset's directory is read unfiltered: the first Delta publish
    /// must create the table before it puts any file there, or a plain reader would see the
    /// new files beside the old ones (and forever, after a crash). Here the table cannot be
    /// created (a file holds its log's place): the publish fails having put nothing.
    #[tokio::test]
    async fn a_first_delta_publish_puts_no_file_before_the_table_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::parse(tmp.path().to_str().unwrap()).unwrap();
        let s = staged(&root, "counts", &["part-0.parquet"], 3);
        crate::commit::publish(&root, TableFormat::Parquet, vec![s])
            .await
            .unwrap();
        std::fs::write(tmp.path().join("counts/_delta_log"), b"").unwrap();
        let s = staged(&root, "counts", &["part-0.parquet", "part-1.parquet"], 4);
        assert!(
            crate::commit::publish(&root, TableFormat::Delta, vec![s])
                .await
                .is_err()
        );
        let dir = std::fs::read_dir(tmp.path().join(format!("counts/date={DAY}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(dir, ["part-0.parquet"]);
    }

    /// Every 100th version (`delta.checkpointInterval`) writes a checkpoint, so opening a long
    /// history reads one Parquet file, not every entry; a checkpoint that cannot be written
    /// fails no run: its commit is in the log, the partition published.
    #[tokio::test]
    async fn every_hundredth_version_is_checkpointed_and_a_failed_checkpoint_fails_no_run() {
        use crate::commit::objects::tests::Failing;
        for checkpoints_fail in [false, true] {
            let inner = object_store::memory::InMemory::new();
            let store: Arc<dyn ObjectStore> = if checkpoints_fail {
                Arc::new(Failing::writes_to(inner, "checkpoint"))
            } else {
                Arc::new(inner)
            };
            let root = root_on(store);
            for _ in 0..99 {
                let s = staged(&root, "counts", &["part-0.parquet"], 1);
                crate::commit::publish(&root, TableFormat::Delta, vec![s])
                    .await
                    .unwrap();
            }
            assert_eq!(version_of(&root, "counts").await, Some(99));
            let log = raw(&root, "counts/_delta_log").await;
            let checkpointed = log
                .iter()
                .any(|p| p.ends_with("00000000000000000099.checkpoint.parquet"));
            assert_eq!(checkpointed, !checkpoints_fail, "{log:?}");
            assert_eq!(visible(&root, "counts").await, ["part-0.parquet"]);
        }
    }
}
