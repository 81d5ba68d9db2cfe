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

use crate::error::Result;

/// Runs a blocking batch producer on tokio's blocking pool and exposes it as a stream. At most
/// `capacity` batches wait between producer and consumer (back-pressure bounds memory).
///
/// A producer that panics ends the stream with an error, not a silent end of input: a
/// watchdog holds a sender until the producer's task is joined.
pub fn blocking_stream<I>(
    schema: SchemaRef,
    capacity: usize,
    produce: I,
) -> SendableRecordBatchStream
where
    I: FnOnce(&mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>) + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let watchdog = tx.clone();
    let task = tokio::task::spawn_blocking(move || produce(&tx));
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let _ = watchdog
                .send(Err(DataFusionError::Internal(format!(
                    "the input producer failed: {e}"
                ))))
                .await;
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, receiver_stream(rx)))
}

/// A stream fed through a channel by any async producer (a database cursor, an HTTP download):
/// the producer sends batches (or an error) and drops the sender at the end. At most `capacity`
/// batches wait in between.
pub fn channel_stream(
    schema: SchemaRef,
    capacity: usize,
) -> (
    mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>,
    SendableRecordBatchStream,
) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, receiver_stream(rx)));
    (tx, stream)
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
    let watchdog = senders.clone();
    let task = tokio::spawn(async move {
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
    // If the input panics, every branch gets an error: a closed channel alone would look like
    // the end of the input, and the run would publish partial results.
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let shared = Arc::new(DataFusionError::Internal(format!(
                "the shared input failed: {e}"
            )));
            for tx in &watchdog {
                let _ = tx.send(Err(DataFusionError::Shared(shared.clone()))).await;
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

/// Runs a query on its own tokio task and hands its batches over a bounded channel (`capacity`
/// batches), so the query's decoding overlaps with whatever consumes the stream. Dropping the
/// stream stops the task.
pub fn spawned(df: datafusion::prelude::DataFrame, capacity: usize) -> SendableRecordBatchStream {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut builder =
        datafusion::physical_plan::stream::RecordBatchReceiverStream::builder(schema, capacity);
    let tx = builder.tx();
    builder.spawn(async move {
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            if tx.send(batch).await.is_err() {
                break; // the consumer stopped early (an error elsewhere)
            }
        }
        Ok(())
    });
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2]))],
        )
        .unwrap()
    }

    async fn drain(mut s: SendableRecordBatchStream) -> (usize, Option<String>) {
        let mut rows = 0;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => rows += b.num_rows(),
                Err(e) => return (rows, Some(e.to_string())),
            }
        }
        (rows, None)
    }

    #[tokio::test]
    async fn a_panicking_producer_is_an_error_not_the_end_of_input() {
        let s = blocking_stream(schema(), 1, |tx| {
            let _ = tx.blocking_send(Ok(batch()));
            panic!("decoder bug");
        });
        let (rows, err) = drain(s).await;
        assert_eq!(rows, 2);
        assert!(err.unwrap().contains("input producer failed"));
    }

    #[tokio::test]
    async fn every_tee_branch_sees_every_batch_and_every_failure() {
        let ok = blocking_stream(schema(), 1, |tx| {
            for _ in 0..5 {
                let _ = tx.blocking_send(Ok(batch()));
            }
        });
        // Branches are consumed concurrently, as the plans that read them are.
        let results = futures::future::join_all(tee(ok, 3, 1).into_iter().map(drain)).await;
        assert_eq!(results, vec![(10, None); 3]);
        let failing = blocking_stream(schema(), 1, |tx| {
            let _ = tx.blocking_send(Ok(batch()));
            panic!("boom");
        });
        for (_, err) in futures::future::join_all(tee(failing, 2, 1).into_iter().map(drain)).await {
            assert!(err.is_some(), "a failed input must fail every branch");
        }
    }
}
