//! `audit`: see the crate docs and README for what it computes; `--help` for flags and
//! exit codes.

use audit::{Args, PIPELINE, run};
use clap::Parser;
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
    // Not a job of one logical date: its run records are named "latest".
    let date = String::from("latest");
    execute(PIPELINE, &date, &cfg.common, async |meter| {
        run(&cfg, meter).await
    })
    .into()
}
