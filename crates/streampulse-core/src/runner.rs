//! The life of a pipeline process, shared by every `main.rs`: a tokio runtime sized by
//! `--threads`, the run's root span, cancellation on SIGTERM/ctrl-c, the run record written
//! whatever happened, the XCom summary, and the exit code.

use crate::config::CommonConfig;
use crate::exit::ExitCode;
use crate::run_record::RunMeter;
use crate::{shutdown, telemetry};

/// An error that knows which documented exit code it ends the process with.
pub trait ExitStatus: std::fmt::Display {
    fn exit_code(&self) -> ExitCode;
}

impl ExitStatus for crate::Error {
    fn exit_code(&self) -> ExitCode {
        crate::Error::exit_code(self)
    }
}

impl ExitStatus for crate::error::PipelineError {
    fn exit_code(&self) -> ExitCode {
        crate::error::PipelineError::exit_code(self)
    }
}

/// Runs `body` for one logical date and returns the exit code for `main`. A signal drops the
/// body (nothing is published: publishing is a run's last step) and exits 75.
pub fn execute<T, E>(
    pipeline: &str,
    logical_date: &str,
    cfg: &CommonConfig,
    body: impl AsyncFnOnce(&mut RunMeter) -> Result<T, E>,
) -> ExitCode
where
    T: serde::Serialize,
    E: ExitStatus,
{
    run(pipeline, logical_date, cfg, None, async |meter, _stop| {
        body(meter).await
    })
}

/// Like [`execute`] for a body that stops itself: a signal flips the watch it is given, and the
/// body finishes its work in hand (a consumer flushing and committing) and returns normally.
pub fn execute_graceful<T, E>(
    pipeline: &str,
    logical_date: &str,
    cfg: &CommonConfig,
    body: impl AsyncFnOnce(&mut RunMeter, tokio::sync::watch::Receiver<bool>) -> Result<T, E>,
) -> ExitCode
where
    T: serde::Serialize,
    E: ExitStatus,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    run(pipeline, logical_date, cfg, Some((tx, rx)), body)
}

type StopChannel = (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<bool>,
);

fn run<T, E>(
    pipeline: &str,
    logical_date: &str,
    cfg: &CommonConfig,
    graceful: Option<StopChannel>,
    body: impl AsyncFnOnce(&mut RunMeter, tokio::sync::watch::Receiver<bool>) -> Result<T, E>,
) -> ExitCode
where
    T: serde::Serialize,
    E: ExitStatus,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .thread_name(format!("{pipeline}-worker"))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::Internal;
        }
    };
    runtime.block_on(async {
        let mut meter = RunMeter::start(pipeline, logical_date);
        let span = telemetry::run_span(pipeline, logical_date, &meter.run_id);
        let _enter = span.enter();
        tracing::info!(config = ?cfg, "starting");
        let result = match graceful {
            None => {
                let (_tx, rx) = tokio::sync::watch::channel(false);
                tokio::select! {
                    r = body(&mut meter, rx) => r.map_err(|e| (e.exit_code(), e.to_string())),
                    _ = shutdown::signal() => Err((ExitCode::TempFail, "interrupted by a signal; nothing was published".to_string())),
                }
            }
            Some((tx, rx)) => {
                tokio::spawn(async move {
                    shutdown::signal().await;
                    tracing::info!("signal received: finishing the work in hand");
                    let _ = tx.send(true);
                });
                body(&mut meter, rx)
                    .await
                    .map_err(|e| (e.exit_code(), e.to_string()))
            }
        };
        let (code, outputs, error) = match result {
            Ok(outputs) => (ExitCode::Ok, serde_json::to_value(&outputs).unwrap_or_default(), None),
            Err((code, msg)) => (code, serde_json::Value::Null, Some(msg)),
        };
        let record = meter.finish(code as u8, error.clone());
        match record.write(&cfg.data_root).await {
            Ok(path) => tracing::info!(%path, "run record written"),
            Err(e) => tracing::warn!(error = %e, "could not write the run record"),
        }
        if let (Some(path), None) = (&cfg.xcom_path, &error)
            && let Err(e) = record.write_xcom(path, &outputs)
        {
            tracing::warn!(error = %e, "could not write the XCom summary");
        }
        match error {
            None => tracing::info!(
                wall_s = format!("{:.2}", record.wall_seconds),
                cpu_s = format!("{:.2}", record.cpu_seconds),
                peak_rss_mib = record.peak_rss_bytes >> 20,
                rows_in = record.rows_in,
                rows_out = record.rows_out,
                rows_rejected = record.rows_rejected,
                "finished"
            ),
            Some(msg) => tracing::error!(exit_code = code as u8, "{msg}"),
        }
        code
    })
}
