//! `metadata-sync`: see the crate docs and README; `--help` for flags and exit codes.

fn main() -> std::process::ExitCode {
    streampulse_core::runner::main::<metadata_sync::Args>()
}
