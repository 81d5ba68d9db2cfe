//! From per-variant sufficient statistics of one experiment to the rows of `ab_results`
//! (docs/data.md): one row per (metric, treatment variant), CUPED rows beside the raw ones, p-values
//! adjusted across the experiment's whole family of metrics x treatments.

use crate::stats::{
    Comparison, Moments, benjamini_hochberg, compare_continuous, compare_cuped,
    compare_proportions, holm, srm_p_value,
};

/// How a metric of `user_metrics` is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Continuous,
    Binary,
}

/// The metrics of `user_metrics`, in report order. `minutes_listened` has a pre-period covariate
/// (`pre_minutes_listened`), so it also gets a CUPED row.
pub const METRICS: [(&str, MetricKind, bool); 4] = [
    ("minutes_listened", MetricKind::Continuous, true),
    ("sessions", MetricKind::Continuous, false),
    ("converted", MetricKind::Binary, false),
    ("retained_d7", MetricKind::Binary, false),
];

/// One variant's statistics: users assigned and, per metric of [`METRICS`], its moments.
#[derive(Debug, Clone, Default)]
pub struct VariantStats {
    pub name: String,
    pub weight: f64,
    pub is_control: bool,
    pub assigned: u64,
    pub metrics: [Moments; METRICS.len()],
}

/// One row of `ab_results`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub metric: &'static str,
    pub variant: String,
    pub cuped: bool,
    pub comparison: Comparison,
    pub p_holm: f64,
    pub p_bh: f64,
    pub srm_p_value: f64,
}

/// Compares every treatment with the control for every metric. `variants` must hold exactly one
/// control; rows come out in metric order, then variant order, so the output is deterministic.
pub fn analyse(variants: &[VariantStats], level: f64) -> Option<Vec<ResultRow>> {
    let control = variants.iter().find(|v| v.is_control)?;
    let observed: Vec<u64> = variants.iter().map(|v| v.assigned).collect();
    let weights: Vec<f64> = variants.iter().map(|v| v.weight).collect();
    let srm = srm_p_value(&observed, &weights);
    let mut rows = Vec::new();
    for (m, &(metric, kind, has_covariate)) in METRICS.iter().enumerate() {
        for treatment in variants.iter().filter(|v| !v.is_control) {
            let (c, t) = (&control.metrics[m], &treatment.metrics[m]);
            let raw = match kind {
                MetricKind::Continuous => compare_continuous(c, t, level),
                MetricKind::Binary => compare_proportions(c, t, level),
            };
            let mut push = |comparison, cuped| {
                rows.push(ResultRow {
                    metric,
                    variant: treatment.name.clone(),
                    cuped,
                    comparison,
                    p_holm: f64::NAN,
                    p_bh: f64::NAN,
                    srm_p_value: srm,
                })
            };
            push(raw, false);
            if has_covariate {
                push(compare_cuped(c, t, level), true);
            }
        }
    }
    // The family is every metric x treatment, counted once: a CUPED row is another estimate of
    // the same hypothesis as its raw row, so the raw rows form the family and CUPED rows are
    // adjusted within the family where they replace their raw row.
    let raw_p: Vec<f64> = rows
        .iter()
        .filter(|r| !r.cuped)
        .map(|r| r.comparison.p_value)
        .collect();
    let (raw_holm, raw_bh) = (holm(&raw_p), benjamini_hochberg(&raw_p));
    let mut family_index = 0;
    for row in &mut rows {
        if row.cuped {
            // Its raw twin was pushed just before it: swap the twin's p-value for this one.
            let mut p = raw_p.clone();
            p[family_index - 1] = row.comparison.p_value;
            row.p_holm = holm(&p)[family_index - 1];
            row.p_bh = benjamini_hochberg(&p)[family_index - 1];
        } else {
            row.p_holm = raw_holm[family_index];
            row.p_bh = raw_bh[family_index];
            family_index += 1;
        }
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, is_control: bool, shift: f64) -> VariantStats {
        let mut v = VariantStats {
            name: name.to_string(),
            weight: 1.0,
            is_control,
            ..VariantStats::default()
        };
        for i in 0..400 {
            let pre = 20.0 + 10.0 * (i as f64 * 0.37).cos();
            let minutes = pre * 0.8 + 5.0 * (i as f64 * 1.7).sin() + shift;
            let binary = |cut: f64| f64::from(u8::from((i as f64 * 0.91 + shift).sin() > cut));
            v.assigned += 1;
            v.metrics[0].push(minutes, pre);
            v.metrics[1].push((i % 7) as f64 + shift, 0.0);
            v.metrics[2].push(binary(0.6), 0.0);
            v.metrics[3].push(binary(-0.2), 0.0);
        }
        v
    }

    #[test]
    fn one_row_per_metric_and_treatment_plus_cuped_rows() {
        let variants = [
            variant("control", true, 0.0),
            variant("a", false, 0.5),
            variant("b", false, 1.0),
        ];
        let rows = analyse(&variants, 0.95).expect("has a control");
        // 4 metrics x 2 treatments, plus a CUPED row per treatment for minutes_listened.
        assert_eq!(rows.len(), 10);
        let raw: Vec<&ResultRow> = rows.iter().filter(|r| !r.cuped).collect();
        let p: Vec<f64> = raw.iter().map(|r| r.comparison.p_value).collect();
        let expected = holm(&p);
        for (row, h) in raw.iter().zip(expected) {
            assert_eq!(row.p_holm, h);
            assert!(row.p_bh <= row.p_holm);
        }
        // CUPED removes the covariate's variance, so its CI is narrower than the raw one.
        let width = |r: &ResultRow| r.comparison.diff_ci_high - r.comparison.diff_ci_low;
        assert!(width(&rows[1]) < width(&rows[0]));
        assert!(rows[1].cuped && rows.iter().all(|r| r.srm_p_value == 1.0));
    }

    #[test]
    fn no_control_no_result() {
        assert!(analyse(&[variant("a", false, 0.0)], 0.95).is_none());
    }
}
