//! `vacuum`: see the crate docs and README for what it removes; `--help` for flags and exit
//! codes.

fn main() -> std::process::ExitCode {
    streampulse_core::runner::main::<vacuum::Args>()
}
