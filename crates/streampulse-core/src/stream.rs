//! Glue between our producers and DataFusion plans: blocking iterators as record-batch streams,
//! single-use stream tables, and a tee that feeds one input to several plans in one pass.

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Runs a blocking batch producer on tokio's blocking pool and exposes it as a stream. At most
/// `capacity` batches wait between producer and consumer (back-pressure bounds memory).
pub fn blocking_stream<I>(
    schema: SchemaRef,
    capacity: usize,
    produce: I,
) -> SendableRecordBatchStream
where
    I: FnOnce(&mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::task::spawn_blocking(move || produce(&tx));
    Box::pin(RecordBatchStreamAdapter::new(schema, receiver_stream(rx)))
}

fn receiver_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A table over streams that can each be read once: how a one-pass input enters a SQL plan.
pub fn one_shot_table(
    schema: SchemaRef,
    streams: Vec<SendableRecordBatchStream>,
) -> Result<StreamingTable> {
    let partitions: Vec<Arc<dyn PartitionStream>> = streams
        .into_iter()
        .map(|s| {
            Arc::new(OneShot {
                schema: schema.clone(),
                stream: Mutex::new(Some(s)),
            }) as _
        })
        .collect();
    Ok(StreamingTable::try_new(schema, partitions)?)
}

struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneShot")
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| {
            let err =
                DataFusionError::Execution("a one-shot input stream was executed twice".into());
            Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async { Err(err) }),
            ))
        })
    }
}

/// Feeds every batch of `input` to `n` consumers: one pass over the input, several plans. The
/// slowest consumer paces the input (each channel holds `capacity` batches), so memory stays
/// bounded; batches are shared, not copied.
pub fn tee(
    mut input: SendableRecordBatchStream,
    n: usize,
    capacity: usize,
) -> Vec<SendableRecordBatchStream> {
    let schema = input.schema();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..n).map(|_| mpsc::channel(capacity.max(1))).unzip();
    tokio::spawn(async move {
        while let Some(item) = input.next().await {
            match item {
                Ok(batch) => {
                    for tx in &senders {
                        // A consumer that hung up has failed or finished; the others go on.
                        let _ = tx.send(Ok(batch.clone())).await;
                    }
                }
                Err(e) => {
                    let shared = Arc::new(e);
                    for tx in &senders {
                        let _ = tx.send(Err(DataFusionError::Shared(shared.clone()))).await;
                    }
                    return;
                }
            }
        }
    });
    receivers
        .into_iter()
        .map(|rx| {
            Box::pin(RecordBatchStreamAdapter::new(
                schema.clone(),
                receiver_stream(rx),
            )) as SendableRecordBatchStream
        })
        .collect()
}

/// Maps a core error into the engine's error type for a stream item.
pub fn to_df(e: Error) -> DataFusionError {
    e.into()
}
