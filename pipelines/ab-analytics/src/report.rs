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
.note{color:#5b6478;font-size:.85rem;line-height:1.45}svg text{font-family:inherit;font-size:12px}.wide{overflow-x:auto}";

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
    h.push_str("<h2>Variants</h2><div class=\"wide\"><table><tr><th>variant</th><th>planned share</th><th>users assigned</th><th>expected</th><th>without metrics</th>");
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
    h.push_str("</table></div>\n<h2>Relative lift against control</h2>\n");
    h.push_str(&forest_plot(r));
    h.push_str(
        "<h2>Results</h2><div class=\"wide\"><table><tr><th>metric</th><th class=\"l\">variant</th><th>control</th><th>treatment</th>\
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
    h.push_str("</table></div>\n");
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

/// A forest plot (plotters' SVG backend): one row per comparison, the relative lift's point
/// estimate and interval on an axis of round percentages, against the zero line; each row's
/// label on the left and its estimate on the right, in areas sized to their text. A plot that
/// cannot be drawn says so in its place.
fn forest_plot(r: &ExperimentReport) -> String {
    let mut svg = String::new();
    match draw_forest_plot(&mut svg, &r.results) {
        // Shrinks to a narrow page, keeping its proportions.
        Ok(()) => svg.replacen("<svg ", "<svg style=\"max-width:100%;height:auto\" ", 1),
        Err(e) => format!(
            "<p class=\"note\">The forest plot could not be drawn ({}).</p>",
            escape(&e)
        ),
    }
}

/// Text widths for the label areas: an average sans-serif glyph at 13 px is about 7 px wide;
/// 8 leaves room for wide ones (the browser check in tests/e2e fails on any overflow).
const GLYPH_PX: u32 = 8;

fn draw_forest_plot(svg: &mut String, rows: &[ResultJson]) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let finite = |x: &ResultJson| {
        x.rel_lift.is_finite() && x.rel_ci_low.is_finite() && x.rel_ci_high.is_finite()
    };
    // The axis in percent, so that plotters' round ticks are round percentages.
    let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
    for x in rows.iter().filter(|x| finite(x)) {
        lo = lo.min(100.0 * x.rel_ci_low);
        hi = hi.max(100.0 * x.rel_ci_high);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (-1.0, 1.0);
    }
    let pad = (hi - lo) * 0.06;
    let (lo, hi) = (lo - pad, hi + pad);
    // Decimals enough to tell ticks about a tenth of the range apart.
    let decimals = (-((hi - lo) / 10.0).log10()).ceil().max(0.0) as usize;

    let label = |row: &ResultJson| {
        format!(
            "{} · {}{}",
            row.metric,
            row.variant,
            if row.cuped { " (CUPED)" } else { "" }
        )
    };
    let estimate = |row: &ResultJson| {
        if finite(row) {
            format!(
                "{} [{}, {}]",
                pct(row.rel_lift),
                pct(row.rel_ci_low),
                pct(row.rel_ci_high)
            )
        } else {
            "not estimable".to_string()
        }
    };
    let chars = |f: &dyn Fn(&ResultJson) -> String| {
        rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0) as u32
    };
    let (row_h, plot_w, axis_h, top) = (28u32, 480u32, 48u32, 16u32);
    let label_w = chars(&label) * GLYPH_PX + 20;
    let right_w = chars(&estimate) * GLYPH_PX + 24;
    let width = label_w + plot_w + right_w;
    let height = top + row_h * rows.len().max(1) as u32 + axis_h;
    let n = rows.len().max(1) as f64;

    let root = SVGBackend::with_string(svg, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .margin_top(top)
        .margin_right(right_w)
        .x_label_area_size(axis_h)
        .y_label_area_size(label_w)
        .build_cartesian_2d(lo..hi, 0.0..n)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(8)
        .x_label_formatter(&|v| format!("{v:.decimals$}%"))
        .x_desc("relative lift, treatment vs control")
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(|e| err(&e))?;
    let ink = RGBColor(0x1d, 0x24, 0x33);
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (0.0, n)], ink.stroke_width(1)))
        .map_err(|e| err(&e))?;
    let font = ("sans-serif", 13).into_font();
    let grey = RGBColor(0x5b, 0x64, 0x78);
    for (i, row) in rows.iter().enumerate() {
        // The first row at the top.
        let y = n - i as f64 - 0.5;
        let (left_px, y_px) = chart.backend_coord(&(lo, y));
        let right_px = chart.backend_coord(&(hi, y)).0;
        let color = match (finite(row), row.significant, row.rel_lift > 0.0) {
            (false, _, _) => grey,
            (true, false, _) => RGBColor(0x6b, 0x73, 0x85),
            (true, true, true) => RGBColor(0x12, 0x73, 0x3a),
            (true, true, false) => RGBColor(0xb4, 0x23, 0x18),
        };
        root.draw(&Text::new(
            label(row),
            (left_px - 10, y_px),
            font.color(&ink).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
        root.draw(&Text::new(
            estimate(row),
            (right_px + 12, y_px),
            font.color(&color).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
        if !finite(row) {
            continue;
        }
        let (low, lift, high) = (
            100.0 * row.rel_ci_low,
            100.0 * row.rel_lift,
            100.0 * row.rel_ci_high,
        );
        chart
            .draw_series(LineSeries::new(
                [(low, y), (high, y)],
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Circle::new(
                (lift, y),
                if row.cuped { 5 } else { 4 },
                color.filled(),
            )))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
