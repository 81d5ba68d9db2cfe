//! The embedded relational engine: a DataFusion session whose memory is a budget, not a hope.
//!
//! Every operator that can grow with the input (hash aggregation, sort, join) draws from a
//! `FairSpillPool` of the configured size and spills to the spill directory when the pool is
//! full, so a 10x larger day takes longer, not 10x more memory.

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, ParquetReadOptions};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};

use crate::config::CommonConfig;
use crate::conform;
use crate::error::{Error, Result};
use crate::location::DataRoot;

/// Memory the engine pool gets out of `--memory-limit`: the rest covers what the pool does not
/// see (input decode buffers, Parquet writers, the allocator's slack, the binary itself).
pub fn pool_bytes(memory_limit: u64, outside_pool: u64) -> u64 {
    memory_limit
        .saturating_sub(outside_pool)
        .max(memory_limit / 4)
        .max(8 << 20)
}

/// Pool bytes each engine partition needs: every partition of a plan adds a handful of spilling
/// operators (partial and final aggregation, sort), and the fair pool splits itself evenly
/// between them; below a few MiB each, an operator cannot hold even one batch and fails.
pub const POOL_PER_PARTITION: u64 = 48 << 20;

/// Engine partitions for a pool: all threads when the budget allows, fewer (down to one) when
/// splitting the pool further would starve the operators. The input decoders keep using every
/// thread either way.
pub fn partitions_for(pool: u64, threads: usize) -> usize {
    ((pool / POOL_PER_PARTITION) as usize).clamp(1, threads.max(1))
}

/// Builds the session: `threads` partitions, a spilling pool of `pool` bytes, spill files in
/// the configured directory, and the data root's object store registered.
pub fn session(cfg: &CommonConfig, pool: u64) -> Result<SessionContext> {
    std::fs::create_dir_all(&cfg.spill_dir).map_err(|e| Error::io(&cfg.spill_dir, e))?;
    let partitions = partitions_for(pool, cfg.threads);
    if partitions < cfg.threads {
        tracing::info!(
            partitions,
            threads = cfg.threads,
            pool,
            "fewer engine partitions to fit the memory budget"
        );
    }
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(8192)
        .with_information_schema(false);
    let options = config.options_mut();
    // Sorts keep this much back for their merge phase; the default (10 MiB per partition) would
    // eat a small budget whole.
    options.execution.sort_spill_reservation_bytes =
        (pool / 16 / cfg.threads as u64).clamp(1 << 20, 10 << 20) as usize;
    options.execution.parquet.pushdown_filters = true;
    // Spilled aggregation state is mostly integers that LZ4 halves: measured on a 20 M-row day,
    // writing spill files was the largest single cost (kernel page-cache copies).
    options.execution.spill_compression = datafusion::common::config::SpillCompression::Lz4Frame;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(BoundedPool::new(pool as usize)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![cfg.spill_dir.clone()])),
        )
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if let DataRoot::ObjectStore { url, store, .. } = &cfg.data_root {
        let base = url::Url::parse(&format!(
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ))
        .map_err(|e| Error::Config(format!("--data-root {url}: {e}")))?;
        ctx.register_object_store(&base, store.clone());
    }
    Ok(ctx)
}

/// Reads Parquet inputs (files, or directories of them) as the data contract's `columns`, in
/// that order, whoever wrote them: where every file already has the contract's types, the plain
/// listing scan (projection and filter pushdown as usual); otherwise each file is read on its own
/// and its batches converted to the contract's types by [`conform`] (exactly, or exit 65 naming
/// the file and the column). Files with different schemas are fine then too.
pub async fn read_parquet(
    ctx: &SessionContext,
    urls: Vec<String>,
    contract: &SchemaRef,
    columns: &[&str],
) -> Result<DataFrame> {
    let what = match urls.as_slice() {
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
        [] => return Err(Error::Internal("read_parquet of no input".into())),
    };
    // The files a listing reads, as our readers see them (on an object store, the committed ones:
    // see `visible`). A directory is scanned as one listing unless it holds commit markers or
    // files not to be read; where listing fails, the scan of `urls` reports why.
    let mut files = Vec::new();
    let mut scanned = Vec::new();
    let mut hidden = false;
    for url in &urls {
        match list_url(ctx, url).await {
            Ok((table_url, store, objects)) => {
                // A commit marker that cannot be read fails the read: never a plain scan.
                let listed = committed(&table_url, &store, objects).await?;
                hidden |= listed.hidden;
                if listed.hidden {
                    scanned.extend(listed.files.iter().map(|(f, _)| f.clone()));
                } else {
                    scanned.push(url.clone());
                }
                files.extend(listed.files.into_iter().map(|(f, _)| f));
            }
            Err(_) => {
                // The plain scan of every URL reports why (never the empty answer below).
                files.clear();
                hidden = false;
                scanned = urls.clone();
                break;
            }
        }
    }
    let target = conform::contract_schema(contract, columns)?;
    if files.is_empty() {
        if hidden {
            // Only files no commit names (a run that died before its first commit): the
            // partition holds nothing yet, and a plain scan would read them.
            let table = StreamingTable::try_new(target, Vec::new())?;
            return Ok(ctx.read_table(Arc::new(table))?);
        }
        scanned = urls.clone();
    }
    let listing = ctx
        .read_parquet(scanned, ParquetReadOptions::default())
        .await;
    if let Ok(df) = &listing {
        let found = df.schema().as_arrow();
        if !conform::check_columns(found, contract, columns, &what)? {
            return Ok(df.clone().select_columns(columns)?);
        }
    }
    // Something to convert, or files whose schemas do not merge: one stream per file.
    let mut partitions: Vec<Arc<dyn PartitionStream>> = Vec::new();
    for file in files {
        let df = ctx
            .read_parquet(file.clone(), ParquetReadOptions::default())
            .await?;
        conform::check_columns(df.schema().as_arrow(), contract, columns, &file)?;
        partitions.push(Arc::new(Conformed {
            df: df.select_columns(columns)?,
            target: target.clone(),
            source: file,
        }));
    }
    if partitions.is_empty() {
        // No file at all: the listing's own error says so (or an empty table).
        return Ok(listing?.select_columns(columns)?);
    }
    let table = StreamingTable::try_new(target, partitions)?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// The Parquet files of `url` (a file, or a directory listed recursively), as URLs: the files
/// every reader here reads (the embedded engine's scans, the Spark engine's per-file reads).
pub async fn parquet_files(ctx: &SessionContext, url: &str) -> Result<Vec<String>> {
    Ok(parquet_objects(ctx, url)
        .await?
        .into_iter()
        .map(|(url, _)| url)
        .collect())
}

/// Bytes of the Parquet files behind `urls` (files or partition directories, local or in an
/// object store), as the readers above would read them: the run record's `bytes_in`.
pub async fn parquet_bytes(ctx: &SessionContext, urls: &[String]) -> Result<u64> {
    let mut total = 0;
    for url in urls {
        total += parquet_objects(ctx, url)
            .await?
            .iter()
            .map(|(_, size)| size)
            .sum::<u64>();
    }
    Ok(total)
}

/// The files a listing of `url` reads, with their sizes, sorted by URL.
async fn parquet_objects(ctx: &SessionContext, url: &str) -> Result<Vec<(String, u64)>> {
    let (table_url, store, listed) = list_url(ctx, url).await?;
    Ok(committed(&table_url, &store, listed).await?.files)
}

/// Every object under one input URL (a file, or a directory listed recursively).
async fn list_url(
    ctx: &SessionContext,
    url: &str,
) -> Result<(ListingTableUrl, Arc<dyn ObjectStore>, Vec<ObjectMeta>)> {
    let table_url = ListingTableUrl::parse(url)?;
    let store = ctx.runtime_env().object_store(table_url.object_store())?;
    let listed: Vec<_> = table_url
        .list_all_files(&ctx.state(), store.as_ref(), "")
        .await?
        .try_collect()
        .await?;
    Ok((table_url, store, listed))
}

/// The Parquet files under one input URL that our readers read.
struct Listed {
    /// With their sizes, sorted by URL.
    files: Vec<(String, u64)>,
    /// Whether the URL is to be scanned as this file list, not listed again: it holds commit
    /// markers (a listing made later could see another commit's uploads) or `.parquet` files
    /// that are not to be read (the replaced or dead uploads of an object-store commit).
    hidden: bool,
}

/// Of one URL's objects, the Parquet files our readers read: in a Delta table's partition, the
/// files its log names ([`crate::commit::delta`]); elsewhere on an object store, through the
/// commit markers ([`crate::commit::objects::visible`]); a local root has no markers (its
/// partitions are replaced by renames), and every file there is read.
async fn committed(
    table_url: &ListingTableUrl,
    store: &Arc<dyn ObjectStore>,
    listed: Vec<ObjectMeta>,
) -> Result<Listed> {
    let parquet_listed = listed
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .count();
    let marked = listed.iter().any(|m| {
        m.location
            .filename()
            .is_some_and(|n| n.starts_with(crate::commit::objects::MARKER_PREFIX))
    });
    let store_url = url::Url::parse(table_url.object_store().as_str())
        .map_err(|e| Error::Internal(format!("{}: {e}", table_url.object_store().as_str())))?;
    let (mut files, listed, in_tables) =
        crate::commit::split_tables(store, &store_url, listed).await?;
    files.extend(if table_url.scheme() == "file" {
        listed
    } else {
        crate::commit::objects::visible(store.as_ref(), listed).await?
    });
    let parquet_visible = files
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .count();
    let base = table_url.object_store();
    // What the listing scan reads: a named file, or a directory's visible `.parquet` files
    // (not Spark's `_SUCCESS`, not a writer's hidden temporaries).
    let directory = table_url.is_collection();
    let mut urls: Vec<(String, u64)> = files
        .iter()
        .map(|meta| (meta.location.to_string(), meta.size))
        .filter(|(p, _)| {
            let name = p.rsplit('/').next().unwrap_or(p);
            !directory
                || (!name.starts_with('.') && !name.starts_with('_') && name.ends_with(".parquet"))
        })
        .map(|(p, size)| (format!("{}{p}", base.as_str()), size))
        .collect();
    urls.sort();
    Ok(Listed {
        files: urls,
        hidden: marked || in_tables || parquet_visible < parquet_listed,
    })
}

/// One input file's batches in the contract's types.
#[derive(Debug)]
struct Conformed {
    df: DataFrame,
    target: SchemaRef,
    source: String,
}

impl PartitionStream for Conformed {
    fn schema(&self) -> &SchemaRef {
        &self.target
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (df, target, source) = (self.df.clone(), self.target.clone(), self.source.clone());
        let batches = futures::stream::once(async move { df.execute_stream().await })
            .try_flatten()
            .map(move |batch| {
                conform::batch(&batch?, &target, &source).map_err(DataFusionError::from)
            });
        Box::pin(RecordBatchStreamAdapter::new(self.target.clone(), batches))
    }
}

/// A `FairSpillPool` that never refuses `RepartitionExec` buffers.
///
/// Why: in DataFusion 55.2, a `RepartitionExec` whose reservation is refused spills batches to a
/// spill pool, and with two spill files open its reader can wait forever for a batch that sits
/// in the newer file: the query hangs with every thread parked (apache/datafusion#24883, fixed
/// by #24891 after 55.2). We reproduced it here with a 32 MiB budget. Repartition buffers are
/// bounded anyway (a batch per channel while the distribution gate is closed), so they are kept
/// out of the pool, like the other in-flight batches the budget reserves room for outside it:
/// not registered (they would shrink every spilling operator's fair share), not counted, never
/// refused. Everything that grows with the input (aggregation, sort) still draws from the pool
/// and spills. Drop this wrapper once the fix ships in a release.
#[derive(Debug)]
pub struct BoundedPool {
    inner: FairSpillPool,
}

impl BoundedPool {
    pub fn new(size: usize) -> Self {
        BoundedPool {
            inner: FairSpillPool::new(size),
        }
    }
}

fn outside_pool(consumer: &MemoryConsumer) -> bool {
    consumer.name().starts_with("RepartitionExec")
}

impl std::fmt::Display for BoundedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bounded({})", self.inner)
    }
}

impl MemoryPool for BoundedPool {
    fn name(&self) -> &str {
        "bounded-fair-spill"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        if !outside_pool(consumer) {
            self.inner.register(consumer)
        }
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        if !outside_pool(consumer) {
            self.inner.unregister(consumer)
        }
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        if !outside_pool(reservation.consumer()) {
            self.inner.grow(reservation, additional)
        }
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        if !outside_pool(reservation.consumer()) {
            self.inner.shrink(reservation, shrink)
        }
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if outside_pool(reservation.consumer()) {
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repartition_buffers_stay_out_of_the_pool_and_the_rest_is_bounded() {
        let pool: Arc<dyn MemoryPool> = Arc::new(BoundedPool::new(1000));
        let repartition = MemoryConsumer::new("RepartitionExec[0]")
            .with_can_spill(true)
            .register(&pool);
        repartition.try_grow(10_000).unwrap();
        assert_eq!(pool.reserved(), 0);
        let agg = MemoryConsumer::new("GroupedHashAggregateStream[0]")
            .with_can_spill(true)
            .register(&pool);
        agg.try_grow(900).unwrap();
        assert!(
            agg.try_grow(200).is_err(),
            "the pool still refuses what would exceed it"
        );
        drop(repartition);
        assert_eq!(pool.reserved(), 900);
    }
}
