//! Glue between our producers and DataFusion plans: blocking iterators, channels and batches in
//! memory as record-batch streams, and queries run on their own task.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio::sync::mpsc;

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
    I: FnOnce(&mpsc::Sender<Result<RecordBatch, DataFusionError>>) + Send + 'static,
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

/// One batch already in memory, as a stream (for a writer or operator that takes streams).
pub fn batch_stream(batch: RecordBatch) -> SendableRecordBatchStream {
    Box::pin(RecordBatchStreamAdapter::new(
        batch.schema(),
        futures::stream::iter([Ok(batch)]),
    ))
}

/// A stream fed through a channel by any async producer (a database cursor, an HTTP download):
/// the producer sends batches (or an error) and drops the sender at the end. At most `capacity`
/// batches wait in between.
pub fn channel_stream(
    schema: SchemaRef,
    capacity: usize,
) -> (
    mpsc::Sender<Result<RecordBatch, DataFusionError>>,
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
}
