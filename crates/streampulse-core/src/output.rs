//! Writing datasets: Parquet files in a staging directory, published as a whole partition only
//! when every output of the run is complete (so a failed or cancelled run leaves nothing behind).
//!
//! Reruns give the same bytes: rows arrive sorted from the plan, are re-cut into fixed-size
//! batches (so page and row-group boundaries do not depend on how the engine happened to batch
//! them) and written with fixed writer properties.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::location::{DataRoot, Partition, staging_dir};

/// Rows per write batch and per row group / file: fixed so that output bytes are reproducible.
const WRITE_BATCH_ROWS: usize = 64 * 1024;
const ROW_GROUP_ROWS: usize = 1024 * 1024;
const FILE_ROWS: usize = 32 * 1024 * 1024;

/// A written, not yet published, partition of one dataset. Publish it with the run's others
/// through [`crate::commit::publish`].
pub struct StagedPartition {
    pub dataset: String,
    pub partition: Partition,
    pub dir: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub files: usize,
    /// `None`: the partition is replaced whole. `Some`: the files join the partition beside what
    /// it holds (one shard of several), as one writer, and the existing files it replaces go.
    pub(crate) stale: Option<Beside>,
}

/// Which of a partition's files a shard's publish removes (by the names runs gave them).
pub(crate) type StaleFiles = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One writer of several in a partition.
#[derive(Clone)]
pub(crate) struct Beside {
    /// Names the writer (its commit marker on an object store: [`crate::commit::objects`]).
    pub writer: String,
    pub stale: StaleFiles,
}

impl std::fmt::Debug for StagedPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedPartition")
            .field("dataset", &self.dataset)
            .field("partition", &self.partition)
            .field("dir", &self.dir)
            .field("rows", &self.rows)
            .field("files", &self.files)
            .field("beside", &self.stale.as_ref().map(|b| b.writer.as_str()))
            .finish()
    }
}

impl StagedPartition {
    /// A partition that a writer of its own (datagen's generator) wrote into the local directory
    /// `dir`, to be published like a run's: replacing the partition whole. Its rows are read from
    /// the Parquet footers. The directory's files go when it is dropped unpublished.
    pub fn from_dir(dataset: &str, partition: Partition, dir: PathBuf) -> Result<Self> {
        let mut staged = StagedPartition {
            dataset: dataset.into(),
            partition,
            dir,
            rows: 0,
            bytes: 0,
            files: 0,
            stale: None,
        };
        for entry in std::fs::read_dir(&staged.dir).map_err(|e| Error::io(&staged.dir, e))? {
            let path = entry.map_err(|e| Error::io(&staged.dir, e))?.path();
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            staged.bytes += file.metadata().map_err(|e| Error::io(&path, e))?.len();
            staged.files += 1;
            if path.extension().is_some_and(|x| x == "parquet") {
                let reader = parquet::file::reader::SerializedFileReader::new(file)?;
                use parquet::file::reader::FileReader;
                staged.rows += reader.metadata().file_metadata().num_rows().max(0) as u64;
            }
        }
        Ok(staged)
    }

    /// Publishes the files beside the partition's others instead of replacing it (each shard of
    /// a sharded run adds its own), as `writer` (one name per shard); the partition's files for
    /// which `stale` is true are removed (the shard's earlier files, files of another layout).
    pub fn beside(
        mut self,
        writer: impl Into<String>,
        stale: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.stale = Some(Beside {
            writer: writer.into(),
            stale: Arc::new(stale),
        });
        self
    }
}

/// A staged partition that is never published (failed or cancelled run) removes its files.
impl Drop for StagedPartition {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The Parquet settings of every file we write (zstd, row groups of `ROW_GROUP_ROWS`).
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("streampulse".into())
        .build()
}

/// Writes a sorted stream as `part-N.parquet` files of `schema` (the contract schema: columns are
/// cast to it, and a null in a non-null column is an error, not a silent change of contract).
pub async fn write_partition(
    root: &DataRoot,
    spill_dir: &std::path::Path,
    dataset: &str,
    partition: &Partition,
    schema: &SchemaRef,
    mut stream: SendableRecordBatchStream,
) -> Result<StagedPartition> {
    let dir = staging_dir(root, spill_dir, dataset, partition)?;
    let mut staged = StagedPartition {
        dataset: dataset.into(),
        partition: partition.clone(),
        dir,
        rows: 0,
        bytes: 0,
        files: 0,
        stale: None,
    };
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut rows_in_file = 0usize;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;

    let mut write = |batch: RecordBatch,
                     staged: &mut StagedPartition,
                     writer: &mut Option<ArrowWriter<std::fs::File>>|
     -> Result<()> {
        if writer.is_none() {
            let path = staged.dir.join(format!("part-{}.parquet", staged.files));
            let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            *writer = Some(ArrowWriter::try_new(
                file,
                schema.clone(),
                Some(writer_properties()),
            )?);
            staged.files += 1;
            rows_in_file = 0;
        }
        if let Some(w) = writer.as_mut() {
            w.write(&batch)?;
        }
        rows_in_file += batch.num_rows();
        staged.rows += batch.num_rows() as u64;
        if rows_in_file >= FILE_ROWS {
            close(writer.take(), staged)?;
        }
        Ok(())
    };

    loop {
        let next = stream.next().await.transpose()?;
        let done = next.is_none();
        if let Some(batch) = next
            && batch.num_rows() > 0
        {
            pending_rows += batch.num_rows();
            pending.push(conform(batch, schema)?);
        }
        while pending_rows >= WRITE_BATCH_ROWS || (done && pending_rows > 0) {
            let all = concat_batches(schema, &pending)?;
            let take = all.num_rows().min(WRITE_BATCH_ROWS);
            write(all.slice(0, take), &mut staged, &mut writer)?;
            let rest = all.slice(take, all.num_rows() - take);
            pending_rows = rest.num_rows();
            pending = if pending_rows > 0 { vec![rest] } else { vec![] };
        }
        if done {
            break;
        }
    }
    if staged.files == 0 {
        // An empty partition is still a partition: one file with the schema and no rows.
        write(
            RecordBatch::new_empty(schema.clone()),
            &mut staged,
            &mut writer,
        )?;
    }
    close(writer.take(), &mut staged)?;
    Ok(staged)
}

fn close(writer: Option<ArrowWriter<std::fs::File>>, staged: &mut StagedPartition) -> Result<()> {
    if let Some(w) = writer {
        let file = w.into_inner()?;
        file.sync_all().map_err(|e| Error::io(&staged.dir, e))?;
        staged.bytes += file
            .metadata()
            .map_err(|e| Error::io(&staged.dir, e))?
            .len();
    }
    Ok(())
}

/// Casts a batch's columns to the contract schema, by position.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::Internal(format!(
            "a plan produced {} columns where the contract has {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(col, field)| {
            if col.data_type() == field.data_type() {
                Ok(Arc::clone(col))
            } else {
                arrow::compute::cast(col, field.data_type())
            }
        })
        .collect::<std::result::Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(format!("output breaks its contract: {e}")))
}
