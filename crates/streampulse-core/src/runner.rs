//! The life of a pipeline process, shared by every `main.rs`: the command line (a parse error is
//! exit 64), validation, a tokio runtime sized by `--threads`, the run's root span, cancellation
//! on SIGTERM/ctrl-c, the panic boundary (a panic is exit 70 with a run record, never a bare
//! 101), the run record written whatever happened, the XCom summary, and the exit code.
//!
//! A pipeline implements [`Pipeline`] for its clap `Args`, and its `main.rs` is one line:
//! `streampulse_core::runner::main::<my_pipeline::Args>()`.

use std::future::Future;

use futures::FutureExt;

use crate::config::{CommonConfig, LogFormat};
use crate::exit::ExitCode;
use crate::run_record::RunMeter;
use crate::{shutdown, telemetry};

/// What a graceful run watches: it turns true when the process is asked to stop.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// A pipeline binary: its command line, validated configuration and run.
pub trait Pipeline: clap::Parser {
    /// The validated configuration.
    type Config;
    /// What a successful run returns (the XCom summary's `outputs`).
    type Output: serde::Serialize;
    type Error: ExitStatus;

    /// The pipeline's name: run records, logs, the root span.
    const NAME: &'static str;

    /// Whether a signal lets the run finish its work in hand (a consumer flushing and
    /// committing) rather than dropping it with exit 75.
    const GRACEFUL: bool = false;

    fn log_format(&self) -> LogFormat;

    /// Checks the command line as a whole; the error's exit code is the process's (64 for a
    /// bad invocation, 65 where the problem is really the input).
    fn validate(&self) -> Result<Self::Config, Self::Error>;

    fn common(cfg: &Self::Config) -> &CommonConfig;

    /// The logical date (or month) the run is for, as its run record names it.
    fn logical_date(cfg: &Self::Config) -> String;

    /// The run. `stop` turns true on a signal; only a [`Self::GRACEFUL`] pipeline need watch it.
    fn run(
        cfg: &Self::Config,
        meter: &mut RunMeter,
        stop: Stop,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>>;
}

/// Implements [`Pipeline`] for a pipeline crate's `Args` by the crates' conventions: `Args` has
/// `common: CommonArgs` and an inherent `validate`, `Config` has `common: CommonConfig`, and the
/// crate root has `PIPELINE`, `Error` and `run(cfg, meter)` (`run(cfg, meter, stop)` with
/// `graceful`).
///
/// ```ignore
/// streampulse_core::pipeline!(output = Outcome, logical_date = |cfg| cfg.date.to_string());
/// ```
#[macro_export]
macro_rules! pipeline {
    (output = $output:ty, logical_date = |$cfg:ident| $date:expr) => {
        $crate::pipeline!(@impl $output, $cfg, $date, false, |cfg, meter, _stop| run(cfg, meter));
    };
    (output = $output:ty, logical_date = |$cfg:ident| $date:expr, graceful) => {
        $crate::pipeline!(@impl $output, $cfg, $date, true, |cfg, meter, stop| run(cfg, meter, stop));
    };
    (@impl $output:ty, $cfg:ident, $date:expr, $graceful:expr, |$c:ident, $m:ident, $s:ident| $call:expr) => {
        impl $crate::runner::Pipeline for Args {
            type Config = Config;
            type Output = $output;
            type Error = Error;
            const NAME: &'static str = PIPELINE;
            const GRACEFUL: bool = $graceful;

            fn log_format(&self) -> $crate::config::LogFormat {
                self.common.log_format
            }

            fn validate(&self) -> ::std::result::Result<Config, Error> {
                Args::validate(self)
            }

            fn common(cfg: &Config) -> &$crate::config::CommonConfig {
                &cfg.common
            }

            fn logical_date($cfg: &Config) -> String {
                $date
            }

            async fn run(
                $c: &Config,
                $m: &mut $crate::run_record::RunMeter,
                $s: $crate::runner::Stop,
            ) -> ::std::result::Result<$output, Error> {
                $call.await
            }
        }
    };
}

/// The whole of a pipeline's `main`.
pub fn main<P: Pipeline>() -> std::process::ExitCode {
    main_from::<P>(std::env::args_os()).into()
}

/// [`main`] for an explicit command line (tests).
pub fn main_from<P: Pipeline>(
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> ExitCode {
    let args = match parse::<P>(argv) {
        Ok(args) => args,
        Err(code) => return code,
    };
    telemetry::init(args.log_format());
    let cfg = match args.validate() {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("invalid invocation: {e}");
            return e.exit_code();
        }
    };
    let graceful = P::GRACEFUL.then(|| tokio::sync::watch::channel(false));
    run(
        P::NAME,
        &P::logical_date(&cfg),
        P::common(&cfg),
        graceful,
        shutdown::signal(),
        async |meter, stop| P::run(&cfg, meter, stop).await,
    )
}

/// Parses a command line. `--help` and `--version` print and give exit 0; any other error
/// prints clap's message and gives exit 64 (the documented usage code), not clap's 2.
pub fn parse<A: clap::Parser>(
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<A, ExitCode> {
    A::try_parse_from(argv).map_err(|e| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::Ok,
            _ => ExitCode::Usage,
        }
    })
}

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

/// The body's result with its exit code, a panic included: a panic is a bug (70) whose run
/// still gets its record, and publishing never began (it is a run's last step) or, had it, the
/// publish protocol leaves nothing half-visible.
async fn guarded<T, E: ExitStatus>(
    body: impl Future<Output = Result<T, E>>,
) -> Result<T, (ExitCode, String)> {
    match std::panic::AssertUnwindSafe(body).catch_unwind().await {
        Ok(r) => r.map_err(|e| (e.exit_code(), e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err((
                ExitCode::Internal,
                format!("internal error: the run panicked ({what}); nothing was published"),
            ))
        }
    }
}

type StopChannel = (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<bool>,
);

/// The run itself; `signal` resolves when the process is asked to stop (the real signals in
/// production, anything in tests).
fn run<T, E>(
    pipeline: &str,
    logical_date: &str,
    cfg: &CommonConfig,
    graceful: Option<StopChannel>,
    signal: impl Future<Output = ()> + Send + 'static,
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
        // The fields every run record has, filled here so that no pipeline forgets one.
        meter.threads = cfg.threads;
        meter.memory_limit_bytes = cfg.budget();
        let span = telemetry::run_span(pipeline, logical_date, &meter.run_id);
        let _enter = span.enter();
        tracing::info!(
            data_root = %cfg.data_root.display(),
            threads = cfg.threads,
            memory_limit_bytes = cfg.memory_limit.map(|b| b.0),
            spill_dir = %cfg.spill_dir.display(),
            xcom = cfg.xcom_path.is_some(),
            "starting"
        );
        // Commits of runs that died publishing are completed, their leftovers removed, before
        // this run stages anything (see `commit`).
        match crate::commit::recover(&cfg.data_root) {
            Ok(done) if done != crate::commit::Recovered::default() => {
                tracing::info!(commits = done.commits, staging_areas = done.areas, "recovered dead runs");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not recover the staging areas of dead runs"),
        }
        match crate::commit::recover_spill(&cfg.spill_root) {
            Ok(0) => {}
            Ok(n) => tracing::info!(spill_areas = n, "removed the spill of dead runs"),
            Err(e) => tracing::warn!(error = %e, "could not remove the spill of dead runs"),
        }
        let result = match graceful {
            None => {
                let (_tx, rx) = tokio::sync::watch::channel(false);
                let mut body = std::pin::pin!(guarded(body(&mut meter, rx)));
                tokio::select! {
                    r = &mut body => r,
                    _ = signal => {
                        if crate::commit::publishing() {
                            // Dropping the run now would leave its commit to the next run's
                            // recovery: finish it (renames take milliseconds).
                            tracing::warn!("signal received while publishing: finishing the commit first");
                            body.await
                        } else {
                            Err((ExitCode::TempFail, "interrupted by a signal; nothing was published".to_string()))
                        }
                    }
                }
            }
            Some((tx, rx)) => {
                tokio::spawn(async move {
                    signal.await;
                    tracing::info!("signal received: finishing the work in hand");
                    let _ = tx.send(true);
                });
                guarded(body(&mut meter, rx)).await
            }
        };
        crate::commit::release();
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
                wall_s = (record.wall_seconds * 100.0).round() / 100.0,
                cpu_s = (record.cpu_seconds * 100.0).round() / 100.0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CommonArgs;

    fn config(root: &std::path::Path) -> CommonConfig {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            common: CommonArgs,
        }
        Cli::parse_from(["t", "--data-root", root.to_str().unwrap(), "--threads", "1"])
            .common
            .validate()
            .unwrap()
    }

    fn records(root: &std::path::Path) -> Vec<serde_json::Value> {
        let dir = root.join("runs/runner-test");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            out.push(serde_json::from_slice(&bytes).unwrap());
        }
        out
    }

    #[test]
    fn a_panic_is_exit_70_with_a_run_record() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let code = run(
            "runner-test",
            "2026-11-26",
            &cfg,
            None,
            std::future::pending(),
            async |_meter, _stop| -> Result<(), crate::Error> {
                let v: Vec<u8> = Vec::new();
                let _ = v[usize::from(v.is_empty())]; // index out of bounds
                Ok(())
            },
        );
        assert_eq!(code, ExitCode::Internal);
        let recs = records(dir.path());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0]["exit_code"], 70);
        let error = recs[0]["error"].as_str().unwrap();
        assert!(
            error.contains("panicked") && error.contains("index out of bounds"),
            "{error}"
        );
    }

    #[test]
    fn a_signal_drops_the_run_with_75_and_a_graceful_run_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let code = run(
            "runner-test",
            "2026-11-26",
            &cfg,
            None,
            async {},
            async |_meter, _stop| -> Result<(), crate::Error> {
                std::future::pending::<()>().await;
                Ok(())
            },
        );
        assert_eq!(code, ExitCode::TempFail);
        let code = run(
            "runner-test",
            "2026-11-27",
            &cfg,
            Some(tokio::sync::watch::channel(false)),
            async {},
            async |meter, mut stop| -> Result<u64, crate::Error> {
                stop.wait_for(|s| *s).await.unwrap();
                meter.rows_out = 7;
                Ok(7)
            },
        );
        assert_eq!(code, ExitCode::Ok);
        let recs = records(dir.path());
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().any(|r| r["exit_code"] == 75));
        assert!(
            recs.iter()
                .any(|r| r["exit_code"] == 0 && r["rows_out"] == 7)
        );
    }

    #[test]
    fn a_signal_during_publishing_waits_for_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let code = run(
            "runner-test",
            "2026-11-26",
            &cfg,
            None,
            // The signal comes once the commit has begun.
            async { tokio::time::sleep(std::time::Duration::from_millis(10)).await },
            async |meter, _stop| -> Result<(), crate::Error> {
                let _publishing = crate::commit::Publishing::begin();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                meter.rows_out = 3;
                Ok(())
            },
        );
        assert_eq!(
            code,
            ExitCode::Ok,
            "the commit finished and the run succeeded"
        );
        assert_eq!(records(dir.path())[0]["rows_out"], 3);
    }

    #[test]
    fn errors_end_the_run_with_their_own_code() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let code = run(
            "runner-test",
            "2026-11-26",
            &cfg,
            None,
            std::future::pending(),
            async |_meter, _stop| -> Result<(), crate::Error> {
                Err(crate::Error::InputMissing("plays/date=2026-11-26".into()))
            },
        );
        assert_eq!(code, ExitCode::NoInput);
    }
}
