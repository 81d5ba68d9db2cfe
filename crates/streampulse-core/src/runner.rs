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

/// Runs `body` for one logical date and returns the exit code for `main`.
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
        let result = tokio::select! {
            r = body(&mut meter) => r.map_err(|e| (e.exit_code(), e.to_string())),
            _ = shutdown::signal() => Err((ExitCode::TempFail, "interrupted by a signal; nothing was published".to_string())),
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
