//! `metadata-sync`: see the crate docs and README; `--help` for flags and exit codes.

use clap::Parser;
use metadata_sync::{Args, PIPELINE, run};
use streampulse_core::runner::execute;
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
    execute(PIPELINE, &date, &cfg.common, async |meter| {
        run(&cfg, meter).await
    })
    .into()
}
