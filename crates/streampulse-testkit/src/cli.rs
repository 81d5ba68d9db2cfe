//! The command-line contract every binary keeps, checked on the built binary itself: `--help`
//! and `--version` exit 0, a bad flag exits 64 (not clap's 2), and `--help` never prints the
//! value of a secret taken from the environment.

use std::path::Path;
use std::process::Command;

/// Checks the contract for the binary at `bin`, with `secrets` (variable, value) set in its
/// environment. Panics with what broke.
pub fn assert_command_line_contract(bin: &Path, secrets: &[(&str, &str)]) {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
    };
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert_eq!(help.status.code(), Some(0), "--help exits 0");
    assert!(
        text.contains("Exit codes:"),
        "--help documents the exit codes:\n{text}"
    );
    for (name, value) in secrets {
        assert!(
            text.contains(name),
            "--help names the variable {name} of a secret flag:\n{text}"
        );
        assert!(
            !text.contains(value),
            "--help must not print the value of {name}:\n{text}"
        );
    }
    assert_eq!(
        run(&["--version"]).status.code(),
        Some(0),
        "--version exits 0"
    );
    let bad = run(&["--no-such-flag"]);
    assert_eq!(
        bad.status.code(),
        Some(64),
        "an unknown flag is a usage error (64): {}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
