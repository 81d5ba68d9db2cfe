//! Documented process exit codes, shared by every pipeline (BSD `sysexits.h` values, which Airflow
//! operators and shell scripts already know).

/// How a pipeline run ended, as seen by its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The run finished and its outputs are in place.
    Ok = 0,
    /// Wrong command line or configuration: fix the invocation, do not retry.
    Usage = 64,
    /// Input rejected: too many bad rows, a missing input or an unreadable file. Fix the data.
    DataErr = 65,
    /// An input that should be there is not (yet): the upstream partition or export is missing.
    /// Worth retrying later, once upstream has delivered; distinct from bad data (65).
    NoInput = 66,
    /// A required service (database, broker, API) is unavailable.
    Unavailable = 69,
    /// An internal error: a bug, please report it with the log.
    Internal = 70,
    /// A temporary failure (I/O, memory budget exhausted, interrupted): worth a retry.
    TempFail = 75,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// The exit-code table for `--help` (clap `after_help`), so the docs cannot drift from the code.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success: outputs are in place
  64  usage: invalid flags or configuration
  65  input rejected: bad rows over --max-reject-share, or an unreadable input (a column's
      type, a malformed file)
  66  an input is missing (an upstream partition or export has not arrived): retry later
  69  a required service is unavailable
  70  internal error (a bug)
  75  temporary failure worth a retry (I/O, memory budget exhausted, interrupted)";
