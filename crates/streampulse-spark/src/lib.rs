//! The Spark engine: a pipeline's heavy aggregation run on a Spark cluster through Spark Connect
//! (Apache Spark 3.5/4.x, Databricks, EMR, or Sail), its results streamed back as Arrow batches.
//!
//! What stays ours: the inputs are read by the cluster where they are (the data root, shared with
//! it), the SQL is the pipeline's, and what comes back (aggregates, a few thousand chart rows,
//! the bad rows for the rejects file) is published by the same writer as the embedded engine's,
//! so outputs, run records and rejects do not depend on the engine.
//!
//! The client is Apache's own transport (`apache-spark-connect-core`) and generated protocol
//! (`-proto`), with the Arrow IPC batches decoded here by the workspace's arrow: the full client
//! crate would bring a second Arrow version into the build (docs/architecture.md, "Engines").
//! Its API is async, so it runs on our runtime.
//!
//! Inputs reach the cluster as views with the data contract's types ([`Session::contract_view`]),
//! checked by the same rules as the embedded reader's.
//!
//! Failures map to the documented exit codes: a server that cannot be reached or refuses the
//! token is "unavailable" (69); a session lost mid-job is worth a retry (75); a query the server
//! rejects is our bug (70), unless it is about the input (a value out of range: 65).
//! When a query is dropped before it completes (SIGTERM, an error elsewhere), the operation is
//! interrupted on the server before the process goes on.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::Stream;
use spark_connect_core::{ChannelBuilder, SparkConnectClient, SparkError, SparkErrorKind};
use spark_connect_proto as proto;
use streampulse_core::conform;
use streampulse_core::error::RemoteFailure;

/// Which engine runs a pipeline's aggregation, for a pipeline with these two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// In this process (DataFusion and our own operators): the default.
    #[default]
    #[value(alias = "datafusion")]
    Embedded,
    /// On a Spark cluster, through Spark Connect (`--spark-remote`).
    Spark,
}

/// The flags of the Spark engine, for a pipeline's `--engine spark`.
#[derive(Debug, Clone, clap::Args)]
pub struct SparkArgs {
    /// With --engine spark, the Spark Connect server: `sc://HOST:PORT`, with parameters as
    /// Spark Connect clients take them (`sc://HOST:443/;use_ssl=true;token=SECRET;user_id=NAME`).
    /// The token is a secret: never logged, and sent only over TLS (or to localhost).
    #[arg(long, env = "SP_SPARK_REMOTE", hide_env_values = true)]
    pub spark_remote: Option<String>,

    /// With --engine spark, how the cluster names the data root's paths, as `FROM=TO`: every
    /// input path that starts with FROM is given to the cluster with TO instead (`s3://=s3a://`
    /// for Hadoop's S3 connector, or `/data=/mnt/data` where the cluster mounts the root
    /// elsewhere).
    #[arg(long, env = "SP_SPARK_PATH_PREFIX")]
    pub spark_path_prefix: Option<String>,
}

impl SparkArgs {
    /// The Spark configuration when the pipeline's engine is Spark (`spark`), else `None`; a
    /// usage error as text. The flags without --engine spark are an error: they would do
    /// nothing.
    pub fn validate(&self, spark: bool) -> Result<Option<SparkConfig>, String> {
        if !spark {
            if self.spark_remote.is_some() || self.spark_path_prefix.is_some() {
                return Err("--spark-remote and --spark-path-prefix need --engine spark".into());
            }
            return Ok(None);
        }
        let Some(url) = &self.spark_remote else {
            return Err(
                "--engine spark needs --spark-remote sc://HOST:PORT (or SP_SPARK_REMOTE)".into(),
            );
        };
        let remote = Remote::parse(url)?;
        let prefix = match &self.spark_path_prefix {
            None => None,
            Some(p) => match p.split_once('=') {
                Some((from, to)) if !from.is_empty() => Some((from.to_string(), to.to_string())),
                _ => {
                    return Err(format!(
                        "--spark-path-prefix {p:?}: expected FROM=TO, such as s3://=s3a://"
                    ));
                }
            },
        };
        Ok(Some(SparkConfig { remote, prefix }))
    }
}

/// A Spark Connect URL, parsed. Its `Debug` and `Display` leave the parameters out (a token).
#[derive(Clone)]
pub struct Remote {
    builder: ChannelBuilder,
    endpoint: String,
}

impl Remote {
    pub fn parse(url: &str) -> Result<Remote, String> {
        let builder = ChannelBuilder::parse(url).map_err(|e| {
            // The message may quote the URL, and the URL may hold the token.
            let _ = e;
            "--spark-remote: not a Spark Connect URL (expected sc://HOST:PORT[/;param=value...])"
                .to_string()
        })?;
        let endpoint = format!("sc://{}", builder.endpoint());
        Ok(Remote { builder, endpoint })
    }

    /// `sc://HOST:PORT`, without parameters: what logs and messages name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)
    }
}

/// A validated `--engine spark` configuration.
#[derive(Debug, Clone)]
pub struct SparkConfig {
    pub remote: Remote,
    prefix: Option<(String, String)>,
}

impl SparkConfig {
    /// `url` (a local path, a `file://` URL or an object-store URL under the data root) as the
    /// cluster names it: local files by their path (as `--data-root` gives it), then mapped by
    /// `--spark-path-prefix`.
    pub fn cluster_path(&self, url: &str) -> String {
        let url = url.strip_prefix("file://").unwrap_or(url);
        match &self.prefix {
            Some((from, to)) if url.starts_with(from.as_str()) => {
                format!("{to}{}", &url[from.len()..])
            }
            _ => url.to_string(),
        }
    }
}

/// A failure of the Spark engine, classified as the core's [`RemoteFailure`].
#[derive(Debug, thiserror::Error)]
#[error("spark at {endpoint}: {message}")]
pub struct Error {
    pub endpoint: String,
    pub failure: RemoteFailure,
    pub message: String,
}

impl From<Error> for streampulse_core::Error {
    fn from(e: Error) -> Self {
        streampulse_core::Error::Remote {
            engine: "spark".into(),
            endpoint: e.endpoint,
            failure: e.failure,
            message: e.message,
        }
    }
}

impl From<Error> for streampulse_core::error::PipelineError {
    fn from(e: Error) -> Self {
        streampulse_core::error::PipelineError::Core(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// gRPC status codes (google.rpc.Code) the classification reads.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const PERMISSION_DENIED: i32 = 7;
const ABORTED: i32 = 10;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

/// How long connecting (the first RPC) may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Retries of a failed RPC (and reattaches of a dropped result stream): a few, over about 15 s.
/// The client's default (15 retries backing off to 64 s, for an interactive session) would hold
/// a nightly task for ten minutes before it failed; a server gone longer than this is the
/// scheduler's to retry (75), with nothing published.
fn retry_policy() -> spark_connect_core::RetryPolicy {
    spark_connect_core::RetryPolicy {
        max_retries: Some(4),
        initial_backoff_ms: 500,
        max_backoff_ms: Some(8_000),
        max_retry_exception_elapsed_time_ms: Some(30_000),
        ..Default::default()
    }
}

/// A Spark Connect session: one per run, every query of the run in it (its temporary views
/// and settings are the session's).
/// A cluster as a run measured it, for the run record (see [`Session::describe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub version: String,
    pub cores: Option<u64>,
}

impl Cluster {
    /// `spark_version` and `cluster_cores` in the run record; the audit reads them back.
    pub fn record(&self, meter: &mut streampulse_core::run_record::RunMeter) {
        meter.set("spark_version", self.version.clone());
        if let Some(cores) = self.cores {
            meter.set(streampulse_core::run_record::CLUSTER_CORES, cores);
        }
    }
}

pub struct Session {
    client: SparkConnectClient,
    builder: ChannelBuilder,
    endpoint: String,
    /// Every operation of the run carries this tag, so that one interrupt stops them all.
    tag: String,
    /// The server's Spark version, as it reports it.
    pub version: String,
}

impl Session {
    /// Opens a session, sets what our SQL relies on (UTC session time, ANSI arithmetic: an
    /// overflow fails the query instead of wrapping) and asks the server's version: the first
    /// RPCs, which tell whether the server answers and accepts us.
    pub async fn connect(cfg: &SparkConfig) -> Result<Session> {
        let endpoint = cfg.remote.endpoint().to_string();
        let tag = format!("streampulse-{}-{}", std::process::id(), unique());
        let mut builder = cfg.remote.builder.clone();
        let mut client = SparkConnectClient::connect(&builder)
            .await
            .map_err(|e| classify(&endpoint, e, true))?;
        client.set_retry_policy(retry_policy());
        // Later clients (the interrupt on drop) join this session, not a new one.
        builder.set("session_id", client.session_id());
        // Boxed: the client's RPC futures are large, and would sit in every caller's future.
        let answered = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Box::pin(async {
                Box::pin(client.set_config("spark.sql.session.timeZone", "UTC")).await?;
                Box::pin(client.set_config("spark.sql.ansi.enabled", "true")).await?;
                Box::pin(client.analyze_plan(proto::AnalyzePlanRequest {
                    session_id: client.session_id().to_string(),
                    user_context: Some(user_context(&client)),
                    analyze: Some(proto::analyze_plan_request::Analyze::SparkVersion(
                        proto::analyze_plan_request::SparkVersion {},
                    )),
                    ..Default::default()
                }))
                .await
            }),
        )
        .await
        .map_err(|_| Error {
            endpoint: endpoint.clone(),
            failure: RemoteFailure::Unavailable,
            message: format!(
                "no answer within {}s (is a Spark Connect server listening there?)",
                CONNECT_TIMEOUT.as_secs()
            ),
        })?
        .map_err(|e| classify(&endpoint, e, true))?;
        let version = match answered.result {
            Some(proto::analyze_plan_response::Result::SparkVersion(v)) => v.version,
            _ => "unknown".into(),
        };
        tracing::info!(%endpoint, spark_version = %version, session = client.session_id(), "spark session open");
        Ok(Session {
            client,
            builder,
            endpoint,
            tag,
            version,
        })
    }

    /// Registers the result of `sql` as the session's temporary view `name` (lazily: the
    /// cluster computes it as part of the queries that read it).
    pub async fn create_view(&self, name: &str, sql: &str) -> Result<()> {
        let command = proto::Command {
            command_type: Some(proto::command::CommandType::CreateDataframeView(
                proto::CreateDataFrameViewCommand {
                    input: Some(sql_relation(sql)),
                    name: name.into(),
                    is_global: false,
                    replace: true,
                },
            )),
        };
        let mut batches = self
            .execute(proto::plan::OpType::Command(command), name)
            .await?;
        while batches.next().await?.is_some() {}
        Ok(())
    }

    /// Registers the Parquet files of `urls` (files or partition directories, as our process
    /// names them) as the temporary view `name`: the contract's `columns` in the contract's
    /// types, plus `_file`, the index of the row's file in the returned list.
    ///
    /// The same rules as the embedded reader ([`streampulse_core::engine::read_parquet`]): our
    /// process reads each file's footer and checks it with [`conform::check_columns`] (so a
    /// column that cannot convert fails with the same error, before the cluster reads a row);
    /// each file is read on its own and cast (files with different schemas are fine: Sail, for
    /// one, refuses to merge them); where a cast could lose information (a timestamp to a date,
    /// a decimal to fewer digits, a float to a decimal), the cluster first counts the values
    /// that would change and any is an error naming the file and the column (65).
    pub async fn contract_view(
        &self,
        spark: &SparkConfig,
        ctx: &SessionContext,
        name: &str,
        urls: &[String],
        contract: &Schema,
        columns: &[&str],
    ) -> streampulse_core::Result<Vec<String>> {
        let mut files = Vec::new();
        for url in urls {
            files.extend(streampulse_core::engine::parquet_files(ctx, url).await?);
        }
        if files.is_empty() {
            return Err(streampulse_core::Error::InputMissing(format!(
                "no Parquet files in {}",
                urls.join(", ")
            )));
        }
        let mut union = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            let df = ctx
                .read_parquet(file.clone(), ParquetReadOptions::default())
                .await?;
            let found: Schema = df.schema().as_arrow().clone();
            conform::check_columns(&found, contract, columns, file)?;
            let path = format!("parquet.`{}`", spark.cluster_path(file).replace('`', "``"));
            let mut select = vec![format!("{i} AS _file")];
            for &column in columns {
                let expected = contract.field_with_name(column)?.data_type();
                let from = found.field_with_name(column)?.data_type();
                let to = sql_type(expected).ok_or_else(|| {
                    streampulse_core::Error::Internal(format!(
                        "the Spark engine has no SQL type for {column} ({expected})"
                    ))
                })?;
                if lossy(from, expected) {
                    let back = sql_type(from).unwrap_or_else(|| "STRING".into());
                    let changed = Box::pin(self.counts(&format!(
                        "SELECT count(*) FROM {path} \
                         WHERE CAST(CAST({column} AS {to}) AS {back}) <> {column}"
                    )))
                    .await?;
                    let n = changed.first().copied().unwrap_or(0);
                    if n > 0 {
                        return Err(streampulse_core::Error::InputType {
                            file: file.clone(),
                            column: column.to_string(),
                            found: from.to_string(),
                            expected: expected.to_string(),
                            detail: format!("{n} values would change in the conversion"),
                        });
                    }
                }
                select.push(format!("CAST({column} AS {to}) AS {column}"));
            }
            union.push(format!("SELECT {} FROM {path}", select.join(", ")));
        }
        self.create_view(name, &union.join(" UNION ALL ")).await?;
        Ok(files)
    }

    /// Runs `sql` and streams its result as Arrow batches, as the server sends them.
    pub async fn query(&self, sql: &str) -> Result<Batches> {
        let what = sql
            .split_whitespace()
            .take(12)
            .collect::<Vec<_>>()
            .join(" ");
        self.execute(proto::plan::OpType::Root(sql_relation(sql)), &what)
            .await
    }

    /// Runs `sql` and gathers its (small) result.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut batches = self.query(sql).await?;
        let mut out = Vec::new();
        while let Some(b) = batches.next().await? {
            out.push(b);
        }
        Ok(out)
    }

    /// What the run record says of the cluster: its version, and the cores it runs a job on
    /// now (the partitions it splits a range into by its default parallelism: the executors'
    /// cores on Spark; Sail, one process, runs a range as one partition and says 1), from which
    /// the audit projects the cluster
    /// a pipeline needs. A cluster that cannot say gives no cores, not a failed run.
    pub async fn describe(&self) -> Cluster {
        let cores = match self
            // The partition id in a subquery: Spark refuses a non-deterministic expression
            // inside an aggregate.
            .counts(
                "SELECT count(DISTINCT p) FROM \
                 (SELECT spark_partition_id() AS p FROM range(0, 1048576))",
            )
            .await
        {
            Ok(n) => n
                .first()
                .and_then(|&c| u64::try_from(c).ok())
                .filter(|&c| c > 0),
            Err(e) => {
                tracing::warn!(error = %e, "could not measure the cluster's cores");
                None
            }
        };
        Cluster {
            version: self.version.clone(),
            cores,
        }
    }

    /// Runs `sql`, a query of one row of integer columns (counts), and gives that row.
    pub async fn counts(&self, sql: &str) -> Result<Vec<i64>> {
        let batches = self.collect(sql).await?;
        let row = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| Error {
                endpoint: self.endpoint.clone(),
                failure: RemoteFailure::Internal,
                message: format!("no row from {sql}"),
            })?;
        row.columns()
            .iter()
            .map(|c| {
                let c = arrow::compute::cast(c, &DataType::Int64).map_err(|e| Error {
                    endpoint: self.endpoint.clone(),
                    failure: RemoteFailure::Internal,
                    message: format!("a count that is not an integer: {e}"),
                })?;
                Ok(c.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .map_or(0, |a| a.value(0)))
            })
            .collect()
    }

    async fn execute(&self, op: proto::plan::OpType, what: &str) -> Result<Batches> {
        let request = proto::ExecutePlanRequest {
            session_id: self.client.session_id().to_string(),
            user_context: Some(user_context(&self.client)),
            plan: Some(proto::Plan { op_type: Some(op) }),
            client_type: Some(format!("streampulse/{}", env!("CARGO_PKG_VERSION"))),
            tags: vec![self.tag.clone()],
            ..Default::default()
        };
        tracing::debug!(query = what, "spark: executing");
        let stream = self
            .client
            .execute_plan_reattachable(request)
            .await
            .map_err(|e| classify(&self.endpoint, e, false))?;
        Ok(Batches {
            stream,
            endpoint: self.endpoint.clone(),
            guard: Interrupt {
                builder: self.builder.clone(),
                tag: self.tag.clone(),
                endpoint: self.endpoint.clone(),
                done: AtomicBool::new(false),
            },
        })
    }
}

/// Who the requests are from: the URL's `user_id`, else `streampulse`.
fn user_context(client: &SparkConnectClient) -> proto::UserContext {
    proto::UserContext {
        user_id: client.user_id().unwrap_or("streampulse").to_string(),
        ..Default::default()
    }
}

fn sql_relation(sql: &str) -> proto::Relation {
    proto::Relation {
        rel_type: Some(proto::relation::RelType::Sql(proto::Sql {
            query: sql.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The Spark SQL type of a contract type, where the contract uses it.
fn sql_type(t: &DataType) -> Option<String> {
    use DataType::*;
    Some(
        match t {
            Int64 | UInt32 => "BIGINT",
            Int32 | UInt16 => "INT",
            Int16 | UInt8 => "SMALLINT",
            Int8 => "TINYINT",
            Boolean => "BOOLEAN",
            Float64 => "DOUBLE",
            Float32 => "FLOAT",
            Utf8 | LargeUtf8 | Utf8View => "STRING",
            Date32 | Date64 => "DATE",
            Timestamp(..) => "TIMESTAMP",
            Decimal128(p, s) | Decimal256(p, s) => return Some(format!("DECIMAL({p},{s})")),
            _ => return None,
        }
        .to_string(),
    )
}

/// Whether casting `from` to `to` can change a value without failing (Spark rounds decimals
/// and truncates timestamps to dates silently; integer overflow fails under ANSI by itself).
fn lossy(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Timestamp(..), Date32 | Date64) => true,
        (Float32 | Float64, Decimal128(..)) => true,
        (Decimal128(_, fs) | Decimal256(_, fs), Decimal128(_, ts)) => fs > ts,
        _ => false,
    }
}

/// A process-unique number for operation tags.
fn unique() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The result of one query, batch by batch. Dropped before its end (the run cancelled, an
/// error elsewhere), it interrupts the operation on the server.
pub struct Batches {
    stream: spark_connect_core::client::ReattachableResponseStream,
    endpoint: String,
    guard: Interrupt,
}

impl Batches {
    /// The next batch, or `None` at the end of the result.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let message = match self.stream.message().await {
                Ok(m) => m,
                Err(e) => {
                    let e = classify(&self.endpoint, e, false);
                    // A query the server failed is over there; one whose connection dropped
                    // may still run, and is interrupted when this is dropped.
                    if e.failure != RemoteFailure::Lost {
                        self.guard.done.store(true, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            };
            let Some(response) = message else {
                self.guard.done.store(true, Ordering::Relaxed);
                return Ok(None);
            };
            use proto::execute_plan_response::ResponseType;
            match response.response_type {
                Some(ResponseType::ArrowBatch(batch)) => {
                    let decoded = self.decode(&batch.data)?;
                    if decoded.is_empty() {
                        continue;
                    }
                    return Ok(Some(
                        arrow::compute::concat_batches(&decoded[0].schema(), &decoded)
                            .map_err(|e| self.protocol(format!("an Arrow batch: {e}")))?,
                    ));
                }
                Some(ResponseType::ResultComplete(_)) => {
                    self.guard.done.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                _ => continue,
            }
        }
    }

    /// One Arrow IPC stream (a schema message and record batches) as batches.
    fn decode(&self, data: &[u8]) -> Result<Vec<RecordBatch>> {
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(data), None)
            .map_err(|e| self.protocol(format!("an Arrow IPC stream: {e}")))?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.protocol(format!("an Arrow IPC batch: {e}")))
    }

    fn protocol(&self, what: String) -> Error {
        Error {
            endpoint: self.endpoint.clone(),
            failure: RemoteFailure::Internal,
            message: format!("could not decode {what}"),
        }
    }

    /// The batches as a stream (for writers that take one).
    pub fn into_stream(self) -> impl Stream<Item = Result<RecordBatch>> + Send {
        futures::stream::try_unfold(self, |mut b| async move {
            Ok(b.next().await?.map(|batch| (batch, b)))
        })
    }
}

/// Interrupts the run's operations on the server when a query is dropped before its end.
struct Interrupt {
    builder: ChannelBuilder,
    tag: String,
    endpoint: String,
    done: AtomicBool,
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        // Dropped inside our runtime (which may be shutting down): the interrupt gets a thread
        // and a runtime of its own, and a few seconds, so the process can still exit promptly.
        let builder = self.builder.clone();
        let tag = self.tag.clone();
        let endpoint = self.endpoint.clone();
        let sent = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    let client = SparkConnectClient::connect(&builder).await.ok()?;
                    client.interrupt_tag(&tag).await.ok()
                })
                .await
                .ok()
                .flatten()
            })
        })
        .join();
        match sent {
            Ok(Some(ids)) => {
                tracing::warn!(%endpoint, operations = ids.len(), "spark: query interrupted")
            }
            _ => tracing::warn!(%endpoint, "spark: could not interrupt the query"),
        }
    }
}

/// A Spark Connect error as one of ours. `connecting`: the session is not open yet, so a
/// server that does not answer is unreachable (69) rather than lost mid-job (75).
fn classify(endpoint: &str, e: SparkError, connecting: bool) -> Error {
    let code = e.grpc_code();
    let class = e.get_error_class().unwrap_or_default();
    let failure = match code {
        Some(UNAUTHENTICATED | PERMISSION_DENIED) => RemoteFailure::Unavailable,
        Some(UNAVAILABLE | DEADLINE_EXCEEDED) if connecting => RemoteFailure::Unavailable,
        Some(UNAVAILABLE | DEADLINE_EXCEEDED | ABORTED | CANCELLED) => RemoteFailure::Lost,
        // The connection broke under a result stream ("h2 protocol error: error reading a body
        // from connection"): tonic reports transport failures as UNKNOWN with no error class
        // or details, which an error from the server itself always carries.
        Some(UNKNOWN) if class.is_empty() && e.grpc_details().is_none() => {
            if connecting {
                RemoteFailure::Unavailable
            } else {
                RemoteFailure::Lost
            }
        }
        _ if class.starts_with("INVALID_HANDLE") || class.starts_with("INVALID_CURSOR") => {
            RemoteFailure::Lost
        }
        _ if matches!(e.kind, SparkErrorKind::SessionNotSame) => RemoteFailure::Lost,
        // The value does not fit its type (ANSI arithmetic or casts): the input's fault.
        _ if matches!(
            e.kind,
            SparkErrorKind::Arithmetic | SparkErrorKind::NumberFormat | SparkErrorKind::DateTime
        ) || class.starts_with("CAST_")
            || class.contains("OVERFLOW") =>
        {
            RemoteFailure::BadInput
        }
        // A file the engine's reader refuses (Apache Spark does not read nanosecond timestamps).
        _ if class.starts_with("PARQUET_TYPE_ILLEGAL") || class.starts_with("PARQUET_TYPE_NOT") => {
            RemoteFailure::BadInput
        }
        _ if connecting && matches!(e.kind, SparkErrorKind::ValueError) => RemoteFailure::Config,
        _ => RemoteFailure::Internal,
    };
    let mut message = e.message();
    if message.is_empty() {
        message = class;
    }
    // Keep the first lines: a JVM stack trace helps nobody reading a task log.
    let message: String = message.lines().take(6).collect::<Vec<_>>().join(" | ");
    Error {
        endpoint: endpoint.to_string(),
        failure,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(engine: Engine, remote: Option<&str>, prefix: Option<&str>) -> Checked {
        Checked(
            engine,
            SparkArgs {
                spark_remote: remote.map(String::from),
                spark_path_prefix: prefix.map(String::from),
            },
        )
    }

    struct Checked(Engine, SparkArgs);

    impl Checked {
        fn validate(&self) -> Result<Option<SparkConfig>, String> {
            self.1.validate(self.0 == Engine::Spark)
        }
    }

    #[test]
    fn the_token_is_never_in_what_gets_logged() {
        let cfg = args(
            Engine::Spark,
            Some("sc://spark.example:15002/;token=s3cr3t;user_id=etl"),
            None,
        )
        .validate()
        .unwrap()
        .unwrap();
        for shown in [format!("{cfg:?}"), cfg.remote.to_string()] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("spark.example:15002"), "{shown}");
        }
        let bad = args(Engine::Spark, Some("http://x/;token=s3cr3t"), None)
            .validate()
            .unwrap_err();
        assert!(!bad.contains("s3cr3t"), "{bad}");
    }

    #[test]
    fn engine_flags_are_checked_together() {
        assert!(
            args(Engine::Embedded, None, None)
                .validate()
                .unwrap()
                .is_none()
        );
        assert!(args(Engine::Spark, None, None).validate().is_err());
        assert!(
            args(Engine::Embedded, Some("sc://h:1"), None)
                .validate()
                .is_err()
        );
        assert!(
            args(Engine::Spark, Some("sc://h:1"), Some("s3a://"))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn only_casts_that_spark_makes_silently_lossy_are_checked_first() {
        use arrow::datatypes::TimeUnit;
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert!(lossy(&ts, &DataType::Date32));
        assert!(lossy(
            &DataType::Decimal128(38, 10),
            &DataType::Decimal128(18, 6)
        ));
        assert!(lossy(&DataType::Float64, &DataType::Decimal128(18, 6)));
        assert!(!lossy(
            &DataType::Decimal128(18, 2),
            &DataType::Decimal128(18, 6)
        ));
        // Integer overflow fails by itself under ANSI casts.
        assert!(!lossy(&DataType::Int64, &DataType::Int32));
        assert_eq!(
            sql_type(&DataType::Decimal128(18, 6)).as_deref(),
            Some("DECIMAL(18,6)")
        );
        assert_eq!(sql_type(&ts).as_deref(), Some("TIMESTAMP"));
        assert_eq!(sql_type(&DataType::Utf8View).as_deref(), Some("STRING"));
    }

    #[test]
    fn paths_are_mapped_to_the_clusters_names() {
        let cfg = args(Engine::Spark, Some("sc://h:1"), Some("s3://=s3a://"))
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(
            cfg.cluster_path("s3://lake/root/plays/date=2026-01-01"),
            "s3a://lake/root/plays/date=2026-01-01"
        );
        assert_eq!(cfg.cluster_path("/data/plays"), "/data/plays");
        assert_eq!(
            cfg.cluster_path("file:///data/plays/a.parquet"),
            "/data/plays/a.parquet"
        );
    }
}
