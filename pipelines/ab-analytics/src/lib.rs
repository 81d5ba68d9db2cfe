//! Pipeline E, `ab-analytics`: experiment statistics from `assignments` and `user_metrics`.
//!
//! This crate so far holds the statistics the pipeline is built on, not yet the binary (issue 6):
//!
//! * [`stats`]: comparisons computed from running sufficient statistics ([`stats::Moments`]:
//!   n, Σy, Σy², Σx, Σx², Σxy), so one streaming pass suffices and memory does not grow with users;
//!   Welch t, two-proportion z, delta-method relative lift, CUPED, sample-ratio mismatch, Holm and
//!   Benjamini-Hochberg. Unit tests pin them to values printed by SciPy and statsmodels (1e-9).
//! * [`analysis`]: one experiment's per-variant statistics to the rows of `ab_results` (DATA.md).
//!
//! Still to come: reading the Parquet inputs, the JSON/HTML/Parquet outputs and the binary.

pub mod analysis;
pub mod stats;

pub const PIPELINE: &str = "ab-analytics";
