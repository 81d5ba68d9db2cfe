//! `datagen`: synthetic StreamPulse data for one logical date (`--help` for flags).

fn main() -> std::process::ExitCode {
    streampulse_core::runner::main::<datagen::Args>()
}
