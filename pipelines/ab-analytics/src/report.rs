//! What a data scientist reads: per experiment, a JSON document with every number of the
//! analysis and a self-contained HTML page (no scripts, no external assets) with the tables and a
//! forest plot of the relative lifts. Both are pure functions of the results, so a rerun writes
//! the same bytes.

use std::fmt::Write;

use crate::analysis::{METRICS, ResultRow, VariantStats};
use crate::winsor::Caps;

/// The sample-ratio check of one experiment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Srm {
    pub p_value: f64,
    pub threshold: f64,
    /// True when `p_value < threshold`: the assignment is broken and the lifts are not to be
    /// trusted until it is explained.
    pub flagged: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MetricSummary {
    pub metric: &'static str,
    pub n: u64,
    pub mean: f64,
    pub sd: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantSummary {
    pub variant: String,
    pub is_control: bool,
    /// Planned share of traffic (weights normalised to 1).
    pub planned_share: f64,
    pub assigned: u64,
    /// Users expected under the plan, for the SRM check.
    pub expected: f64,
    pub missing_metrics: u64,
    pub metrics: Vec<MetricSummary>,
}

/// One row of the results: treatment vs control for one metric.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResultJson {
    pub metric: &'static str,
    pub variant: String,
    pub cuped: bool,
    pub test: &'static str,
    pub n_control: u64,
    pub n_treatment: u64,
    pub control_mean: f64,
    pub treatment_mean: f64,
    pub diff: f64,
    pub diff_ci_low: f64,
    pub diff_ci_high: f64,
    pub rel_lift: f64,
    pub rel_ci_low: f64,
    pub rel_ci_high: f64,
    pub p_value: f64,
    pub p_holm: f64,
    pub p_bh: f64,
    /// Holm-adjusted p below `1 - confidence` (family-wise error controlled).
    pub significant: bool,
}

/// Everything about one experiment's analysis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExperimentReport {
    pub experiment_id: String,
    pub date: String,
    pub confidence: f64,
    /// Whether variants, weights and control come from the `experiments` table (else: the
    /// variants seen, weighted equally, `control` as control).
    pub planned: bool,
    pub winsorize_percentile: Option<f64>,
    pub caps: Option<Caps>,
    pub srm: Srm,
    pub variants: Vec<VariantSummary>,
    pub results: Vec<ResultJson>,
}

fn test_name(metric: &str, cuped: bool) -> &'static str {
    let binary = METRICS
        .iter()
        .any(|(m, kind, _)| *m == metric && *kind == crate::analysis::MetricKind::Binary);
    match (binary, cuped) {
        (true, _) => "two-proportion z-test",
        (false, true) => "Welch t-test on CUPED-adjusted values",
        (false, false) => "Welch t-test",
    }
}

/// Assembles the report of one experiment.
#[allow(clippy::too_many_arguments)]
pub fn build(
    experiment_id: &str,
    date: &str,
    confidence: f64,
    planned: bool,
    winsorize: Option<(f64, Caps)>,
    srm_threshold: f64,
    variants: &[(VariantStats, u64)],
    rows: &[ResultRow],
) -> ExperimentReport {
    let total: u64 = variants.iter().map(|(v, _)| v.assigned).sum();
    let weights: f64 = variants.iter().map(|(v, _)| v.weight).sum();
    let srm_p = rows.first().map_or(f64::NAN, |r| r.srm_p_value);
    ExperimentReport {
        experiment_id: experiment_id.to_string(),
        date: date.to_string(),
        confidence,
        planned,
        winsorize_percentile: winsorize.map(|w| w.0),
        caps: winsorize.map(|w| w.1),
        srm: Srm {
            p_value: srm_p,
            threshold: srm_threshold,
            flagged: srm_p < srm_threshold,
        },
        variants: variants
            .iter()
            .map(|(v, missing)| VariantSummary {
                variant: v.name.clone(),
                is_control: v.is_control,
                planned_share: v.weight / weights,
                assigned: v.assigned,
                expected: total as f64 * v.weight / weights,
                missing_metrics: *missing,
                metrics: METRICS
                    .iter()
                    .zip(&v.metrics)
                    .map(|(&(metric, _, _), m)| MetricSummary {
                        metric,
                        n: m.n,
                        mean: m.mean_y(),
                        sd: m.var_y().sqrt(),
                    })
                    .collect(),
            })
            .collect(),
        results: rows
            .iter()
            .map(|r| {
                let c = &r.comparison;
                ResultJson {
                    metric: r.metric,
                    variant: r.variant.clone(),
                    cuped: r.cuped,
                    test: test_name(r.metric, r.cuped),
                    n_control: c.n_control,
                    n_treatment: c.n_treatment,
                    control_mean: c.control_mean,
                    treatment_mean: c.treatment_mean,
                    diff: c.diff,
                    diff_ci_low: c.diff_ci_low,
                    diff_ci_high: c.diff_ci_high,
                    rel_lift: c.rel_lift,
                    rel_ci_low: c.rel_ci_low,
                    rel_ci_high: c.rel_ci_high,
                    p_value: c.p_value,
                    p_holm: r.p_holm,
                    p_bh: r.p_bh,
                    significant: r.p_holm < 1.0 - confidence,
                }
            })
            .collect(),
    }
}

/// The JSON document (pretty, with a final newline).
pub fn json(report: &ExperimentReport) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(report)?;
    out.push(b'\n');
    Ok(out)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for a table cell: 4 significant digits, "n/a" when undefined.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else {
        let decimals = if a >= 100.0 {
            1
        } else if a >= 1.0 {
            3
        } else {
            4
        };
        format!("{v:.decimals$}")
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:+.2}%", 100.0 * v)
    } else {
        "n/a".into()
    }
}

fn p(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v < 1e-4 {
        format!("{v:.1e}")
    } else {
        format!("{v:.4}")
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2433;padding:0 1rem}\
h1{font-size:1.5rem;margin-bottom:.25rem}h2{font-size:1.15rem;margin-top:2rem}.sub{color:#5b6478;margin-top:0}\
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.5rem 0}th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ec;text-align:right;white-space:nowrap}\
th{background:#f5f6f9;font-weight:600}td:first-child,th:first-child,td.l,th.l{text-align:left}\
tr.sig td{background:#eefaf0}.up{color:#12733a}.down{color:#b42318}\
.banner{padding:.75rem 1rem;border-radius:.4rem;margin:1rem 0}.bad{background:#fdecea;border:1px solid #f5c2bd;color:#8a1c12}.ok{background:#eef6ff;border:1px solid #c9defa}\
.note{color:#5b6478;font-size:.85rem;line-height:1.45}svg text{font-family:inherit;font-size:12px}";

/// The self-contained HTML page of one experiment.
pub fn html(r: &ExperimentReport) -> String {
    let mut h = String::new();
    let level = format!("{:.0}%", 100.0 * r.confidence);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{id}: A/B results {date}</title><style>{STYLE}</style></head><body>\n\
         <h1>Experiment {id}</h1><p class=\"sub\">Results as of {date} · {level} confidence intervals · \
         p-values adjusted over {n} comparisons (Holm and Benjamini-Hochberg)</p>",
        id = escape(&r.experiment_id),
        date = escape(&r.date),
        n = r.results.iter().filter(|x| !x.cuped).count(),
    );
    // Sample-ratio mismatch first: when it fires, nothing below should be trusted.
    if r.srm.flagged {
        let _ = writeln!(
            h,
            "<div class=\"banner bad\"><strong>Sample-ratio mismatch</strong> (χ² p = {}, below {}): \
             the variants did not receive the planned traffic. The assignment is broken or users \
             were lost unevenly; do not act on the results below until this is explained.</div>",
            p(r.srm.p_value),
            r.srm.threshold
        );
    } else {
        let _ = writeln!(
            h,
            "<div class=\"banner ok\">Traffic split matches the plan (sample-ratio χ² p = {}).</div>",
            p(r.srm.p_value)
        );
    }
    h.push_str("<h2>Variants</h2><table><tr><th>variant</th><th>planned share</th><th>users assigned</th><th>expected</th><th>without metrics</th>");
    for (m, _, _) in METRICS {
        let _ = write!(h, "<th>mean {}</th>", escape(m));
    }
    h.push_str("</tr>\n");
    for v in &r.variants {
        let _ = write!(
            h,
            "<tr><td>{}{}</td><td>{:.1}%</td><td>{}</td><td>{:.0}</td><td>{}</td>",
            escape(&v.variant),
            if v.is_control { " (control)" } else { "" },
            100.0 * v.planned_share,
            v.assigned,
            v.expected,
            v.missing_metrics
        );
        for m in &v.metrics {
            let _ = write!(h, "<td>{}</td>", num(m.mean));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<h2>Relative lift against control</h2>\n");
    h.push_str(&forest_plot(r));
    h.push_str(
        "<h2>Results</h2><table><tr><th>metric</th><th class=\"l\">variant</th><th>control</th><th>treatment</th>\
         <th>difference</th><th>CI</th><th>lift</th><th>lift CI</th><th>p</th><th>p Holm</th><th>p BH</th></tr>\n",
    );
    for x in &r.results {
        let class = if x.significant { " class=\"sig\"" } else { "" };
        let dir = if !x.significant {
            ""
        } else if x.diff > 0.0 {
            " class=\"up\""
        } else {
            " class=\"down\""
        };
        let _ = writeln!(
            h,
            "<tr{class}><td>{metric}{cuped}</td><td class=\"l\">{variant}</td><td>{c}</td><td>{t}</td>\
             <td{dir}>{d}</td><td>[{dl}, {dh}]</td><td{dir}>{l}</td><td>[{ll}, {lh}]</td><td>{p}</td><td>{ph}</td><td>{pb}</td></tr>",
            metric = escape(x.metric),
            cuped = if x.cuped { " (CUPED)" } else { "" },
            variant = escape(&x.variant),
            c = num(x.control_mean),
            t = num(x.treatment_mean),
            d = num(x.diff),
            dl = num(x.diff_ci_low),
            dh = num(x.diff_ci_high),
            l = pct(x.rel_lift),
            ll = pct(x.rel_ci_low),
            lh = pct(x.rel_ci_high),
            p = p(x.p_value),
            ph = p(x.p_holm),
            pb = p(x.p_bh),
        );
    }
    h.push_str("</table>\n");
    let winsor = match (r.winsorize_percentile, &r.caps) {
        (Some(pc), Some(c)) => format!(
            " Continuous metrics were winsorized at their {pc}th percentile within the experiment \
             (minutes_listened ≤ {}, sessions ≤ {}, pre_minutes_listened ≤ {}).",
            num(c.minutes_listened),
            num(c.sessions),
            num(c.pre_minutes_listened)
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        h,
        "<h2>Method</h2><p class=\"note\">Continuous metrics: Welch's t-test and its \
         Welch-Satterthwaite {level} interval. Binary metrics: two-proportion z-test (pooled \
         variance) with a Wald interval. Relative lift = difference / control mean, interval by \
         the delta method. CUPED rows adjust minutes_listened by the pre-period minutes \
         (θ pooled over both groups), which narrows the interval without biasing the estimate. \
         Highlighted rows are significant after Holm's correction over every metric × treatment \
         (a CUPED row stands in for its raw row). Users without a metrics row count towards the \
         sample-ratio check but not the metrics.{winsor}</p>\n</body></html>"
    );
    h
}

/// An SVG forest plot: one line per comparison, the point estimate of the relative lift and its
/// interval, against a zero line.
fn forest_plot(r: &ExperimentReport) -> String {
    let rows: Vec<&ResultJson> = r.results.iter().collect();
    let finite = |x: &&ResultJson| {
        x.rel_lift.is_finite() && x.rel_ci_low.is_finite() && x.rel_ci_high.is_finite()
    };
    let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
    for x in rows.iter().filter(|x| finite(x)) {
        lo = lo.min(x.rel_ci_low);
        hi = hi.max(x.rel_ci_high);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (-0.01, 0.01);
    }
    let pad = (hi - lo) * 0.08;
    let (lo, hi) = (lo - pad, hi + pad);
    let (label_w, plot_w, row_h, top) = (260.0, 520.0, 26.0, 30.0);
    let width = label_w + plot_w + 200.0;
    let height = top + row_h * rows.len() as f64 + 30.0;
    let x = |v: f64| label_w + (v - lo) / (hi - lo) * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"100%\" \
         role=\"img\" aria-label=\"Forest plot of relative lifts with confidence intervals\">"
    );
    // Axis ticks: five evenly spaced, labelled in percent.
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2:.1}\" stroke=\"#eceef3\"/>\
             <text x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"middle\" fill=\"#5b6478\">{4}</text>",
            x(v),
            top - 10.0,
            height - 25.0,
            height - 8.0,
            pct(v)
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2:.1}\" stroke=\"#1d2433\" stroke-dasharray=\"4 3\"/>",
        x(0.0),
        top - 10.0,
        height - 25.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = top + row_h * (i as f64 + 0.5);
        let label = format!(
            "{} · {}{}",
            row.metric,
            row.variant,
            if row.cuped { " (CUPED)" } else { "" }
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>",
            label_w - 12.0,
            y,
            escape(&label)
        );
        if !finite(row) {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{y:.1}\" dominant-baseline=\"middle\" fill=\"#5b6478\">not estimable</text>",
                label_w + 8.0
            );
            continue;
        }
        let color = match (row.significant, row.rel_lift > 0.0) {
            (false, _) => "#6b7385",
            (true, true) => "#12733a",
            (true, false) => "#b42318",
        };
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"{}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" dominant-baseline=\"middle\" fill=\"{color}\">{} [{}, {}]</text>",
            x(row.rel_ci_low),
            x(row.rel_ci_high),
            x(row.rel_lift),
            if row.cuped { 5 } else { 4 },
            label_w + plot_w + 10.0,
            pct(row.rel_lift),
            pct(row.rel_ci_low),
            pct(row.rel_ci_high),
        );
    }
    s.push_str("</svg>\n");
    s
}
