//! `play-ingest`: see the crate docs and README; `--help` for flags and exit codes.

use clap::Parser;
use play_ingest::{Args, PIPELINE, run};
use streampulse_core::runner::execute_graceful;
use streampulse_core::{exit::ExitCode, telemetry};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    telemetry::init(args.common.log_format);
    let cfg = match args.validate() {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::Usage.into();
        }
    };
    let date = cfg.date.format("%Y-%m-%d").to_string();
    // SIGTERM is not an error here: the consumer writes what it holds, commits, and exits 0.
    execute_graceful(PIPELINE, &date, &cfg.common, async |meter, stop| {
        run(&cfg, meter, stop).await
    })
    .into()
}
