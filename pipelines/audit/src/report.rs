//! The audit as Markdown (the table people paste), JSON (for tools) and a self-contained HTML
//! page with one SVG chart per pipeline: projected runtime and memory per year against the limits.

use std::fmt::Write;

use crate::{ClusterAudit, Machine, PipelineAudit};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Document {
    pub growth: f64,
    pub years: u32,
    pub machine: Machine,
    pub pipelines: Vec<PipelineAudit>,
    /// The pipelines measured on the Spark engine, projected onto a cluster.
    pub clusters: Vec<ClusterAudit>,
}

pub fn json(doc: &Document) -> serde_json::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(doc)?;
    out.push(b'\n');
    Ok(out)
}

fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn bytes(b: f64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.0} MiB", b / MIB)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn rows(r: f64) -> String {
    if r >= 1e9 {
        format!("{:.2} G", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.1} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

pub fn markdown(doc: &Document) -> String {
    let m = &doc.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Capacity audit\n\nTarget: {} RAM, {} cores, a {} batch window; data growing {:.0} % a year, \
         projected over {} years.\n",
        bytes(m.memory_bytes as f64),
        m.cores,
        duration(m.window_seconds),
        100.0 * doc.growth,
        doc.years
    );
    s.push_str(
        "| pipeline | bottleneck | data (rows in, bytes in) | runtime | peak memory | risk | recommendation | verdict |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---|---|---|\n");
    for p in &doc.pipelines {
        let _ = writeln!(
            s,
            "| {} | {} (CPU {:.0} %) | {}, {} | {} | {} | **{}** | {} | {} |",
            p.pipeline,
            p.bottleneck,
            100.0 * p.cpu_utilisation,
            rows(crate::data_size(&p.latest)),
            bytes(p.latest.bytes_in as f64),
            duration(p.latest.wall_seconds),
            bytes(p.latest.peak_rss_bytes as f64),
            p.risk,
            p.recommendation,
            p.verdict
        );
    }
    let warned: Vec<_> = doc
        .pipelines
        .iter()
        .flat_map(|p| p.warnings.iter().map(move |w| (&p.pipeline, w)))
        .collect();
    if !warned.is_empty() {
        s.push_str("\n**Read before planning:**\n\n");
        for (pipeline, w) in warned {
            let _ = writeln!(s, "- {pipeline}: {w}.");
        }
    }
    s.push_str(
        "\n## Projections (on the target machine: runtime / peak memory, the band in brackets)\n\n| pipeline |",
    );
    for y in 0..=doc.years {
        let _ = write!(s, " year {y} |");
    }
    s.push_str("\n|---|");
    for _ in 0..=doc.years {
        s.push_str("---:|");
    }
    s.push('\n');
    for p in &doc.pipelines {
        let _ = write!(s, "| {} |", p.pipeline);
        for y in &p.projections {
            let _ = write!(
                s,
                " {} ({}–{}) / {} ({}–{}) |",
                duration(y.runtime_seconds),
                duration(y.runtime_low),
                duration(y.runtime_high),
                bytes(y.peak_memory_bytes),
                bytes(y.memory_low),
                bytes(y.memory_high)
            );
        }
        s.push('\n');
    }
    s.push_str("\nHow each projection was made:\n\n");
    for p in &doc.pipelines {
        let _ = writeln!(
            s,
            "- {}: {} (baseline run {} on {} threads, {} on the host).",
            p.pipeline,
            p.method,
            p.latest.logical_date,
            p.latest.threads,
            bytes(p.latest.host_memory_bytes as f64)
        );
    }
    s.push_str(&cluster_markdown(doc));
    s
}

/// The cluster section: for each pipeline measured on the Spark engine, the executor cores that
/// keep each year inside the window.
fn cluster_markdown(doc: &Document) -> String {
    let mut s = String::new();
    if doc.clusters.is_empty() {
        return s;
    }
    let _ = write!(
        s,
        "\n## On a Spark cluster (the Spark engine's runs: runtime on the cores measured / executor \
         cores for a {} window)\n\n| pipeline | measured on |",
        duration(doc.machine.window_seconds)
    );
    for y in 0..=doc.years {
        let _ = write!(s, " year {y} |");
    }
    s.push_str(" recommendation |\n|---|---|");
    for _ in 0..=doc.years {
        s.push_str("---:|");
    }
    s.push_str("---|\n");
    for c in &doc.clusters {
        let _ = write!(
            s,
            "| {} | {} cores, Spark {} |",
            c.pipeline, c.cores_measured, c.spark_version
        );
        for y in &c.projections {
            let cores = y
                .cores_needed
                .map_or_else(|| "does not fit".to_string(), crate::executor_cores);
            let _ = write!(
                s,
                " {} ({}) / {} |",
                duration(y.runtime_seconds),
                rows(y.rows_in),
                cores
            );
        }
        let _ = writeln!(s, " {} |", c.recommendation);
    }
    s.push('\n');
    for c in &doc.clusters {
        let _ = writeln!(s, "- {}: {}.", c.pipeline, c.method);
        for w in &c.warnings {
            let _ = writeln!(s, "- {}: {w}.", c.pipeline);
        }
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `v` to three significant digits, without trailing zeros: a log axis' ticks (powers of ten,
/// and their 2x and 5x) print as `0.01`, `20`, `5000`.
fn significant(v: f64) -> String {
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let scale = 10f64.powi(2 - v.log10().floor() as i32);
    format!("{}", (v * scale).round() / scale)
}

/// A runtime axis tick, in seconds (the ticks are round in seconds).
fn axis_seconds(v: f64) -> String {
    format!("{} s", significant(v))
}

/// A memory axis tick, in decimal units (the ticks are powers of ten of bytes).
fn axis_bytes(v: f64) -> String {
    let (unit, size) = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)]
        .into_iter()
        .find(|(_, size)| v >= *size)
        .unwrap_or(("B", 1.0));
    format!("{} {unit}", significant(v / size))
}

/// Pixels of one chart: the plot, and the strip below it that holds the legend.
const CHART_SIZE: (u32, u32) = (460, 300);
const LEGEND_HEIGHT: u32 = 48;

/// One chart (plotters' SVG backend): the projected value per year with the band the fit's error
/// allows, against the limit (the batch window, the machine's memory). The y axis is
/// logarithmic, because a projection and its limit often lie decades apart (a 2-minute job
/// against a 6-hour window: on a linear axis the projection is a flat line at zero); its ticks
/// are powers of ten (and their 2x, 5x), labelled by `label` ("100 s", "10 GB").
/// A chart plotters cannot draw says so in its place.
fn chart(
    title: &str,
    years: &[(f64, f64, f64)],
    limit: f64,
    label: &dyn Fn(f64) -> String,
    limit_text: &str,
) -> String {
    let mut svg = String::new();
    match draw_chart(&mut svg, title, years, limit, label, limit_text) {
        Ok(()) => svg,
        Err(e) => format!(
            "<p class=\"warning\">{}: the chart could not be drawn ({})</p>",
            escape(title),
            escape(&e)
        ),
    }
}

/// `years`: (projected, low, high) per year, in the quantity's own unit (seconds, bytes).
fn draw_chart(
    svg: &mut String,
    title: &str,
    years: &[(f64, f64, f64)],
    limit: f64,
    label: &dyn Fn(f64) -> String,
    limit_text: &str,
) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (plot_area, legend_area) = root.split_vertically(CHART_SIZE.1 - LEGEND_HEIGHT);
    // A log axis holds no zero: a zero (a run that measured nothing) is drawn a decade below
    // the smallest value measured, never a measured value moved.
    let floor = years
        .iter()
        .flat_map(|y| [y.0, y.1, y.2])
        .chain([limit])
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold(f64::INFINITY, f64::min)
        .min(1e300)
        / 10.0;
    let at = |v: f64| v.max(floor);
    let low = years.iter().map(|y| at(y.1)).fold(at(limit), f64::min);
    let high = years.iter().map(|y| at(y.2)).fold(at(limit), f64::max);
    let last = years.len().saturating_sub(1).max(1) as i32;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(title, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0..last, (low / 2.0..high * 2.0).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(years.len().max(2))
        .x_label_formatter(&|y| format!("{y}"))
        .x_desc("year")
        .y_labels(6)
        .y_label_formatter(&|v| label(*v))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(|e| err(&e))?;
    let blue = RGBColor(0x1d, 0x4e, 0xd8);
    let red = RGBColor(0xb4, 0x23, 0x18);
    let band: Vec<(i32, f64)> = years
        .iter()
        .enumerate()
        .map(|(i, y)| (i as i32, at(y.2)))
        .chain(
            years
                .iter()
                .enumerate()
                .rev()
                .map(|(i, y)| (i as i32, at(y.1))),
        )
        .collect();
    chart
        .draw_series(std::iter::once(Polygon::new(band, blue.mix(0.15).filled())))
        .map_err(|e| err(&e))?;
    let projected: Vec<(i32, f64)> = years
        .iter()
        .enumerate()
        .map(|(i, y)| (i as i32, at(y.0)))
        .collect();
    chart
        .draw_series(LineSeries::new(projected.clone(), blue.stroke_width(2)))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(projected.iter().map(|p| Circle::new(*p, 3, blue.filled())))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            [(0, at(limit)), (last, at(limit))],
            red.stroke_width(2),
        ))
        .map_err(|e| err(&e))?;

    // The legend, in its own strip: it never covers the limit or the projection.
    let font = ("sans-serif", 12).into_font().color(&BLACK.mix(0.8));
    let (mut x, mut y) = (82, 12);
    let items: [(&str, ShapeStyle, bool); 3] = [
        ("projected", blue.stroke_width(2), false),
        ("band of the fit", blue.mix(0.15).filled(), true),
        (limit_text, red.stroke_width(2), false),
    ];
    for (text, style, filled) in items {
        // 7 px a glyph at 12 px is generous (the browser check fails on any overflow).
        let width = 22 + 7 * text.chars().count() as i32;
        if x + width > CHART_SIZE.0 as i32 - 8 {
            (x, y) = (82, y + 18);
        }
        if filled {
            legend_area
                .draw(&Rectangle::new([(x, y - 5), (x + 16, y + 5)], style))
                .map_err(|e| err(&e))?;
        } else {
            legend_area
                .draw(&PathElement::new(vec![(x, y), (x + 16, y)], style))
                .map_err(|e| err(&e))?;
        }
        legend_area
            .draw(&Text::new(text.to_string(), (x + 22, y - 7), font.clone()))
            .map_err(|e| err(&e))?;
        x += width + 18;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

pub fn html(doc: &Document) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Capacity audit</title><style>\
         body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1d2433}\
         table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #e3e6ec;padding:.35rem .6rem;text-align:left}\
         .CRITICAL{color:#b42318;font-weight:700}.HIGH{color:#b54708;font-weight:700}.LOW{color:#12733a}\
         svg text{font-size:11px}.warning{color:#b54708}.charts{display:flex;flex-wrap:wrap;gap:1rem}.wide{overflow-x:auto}</style></head><body>\n",
    );
    let md = markdown(doc);
    let intro = md.lines().nth(2).unwrap_or_default();
    let _ = writeln!(s, "<h1>Capacity audit</h1><p>{}</p>", escape(intro));
    s.push_str("<div class=\"wide\"><table><tr><th>pipeline</th><th>bottleneck</th><th>rows in</th><th>bytes in</th><th>runtime</th><th>peak memory</th><th>risk</th><th>recommendation</th><th>verdict</th></tr>\n");
    for p in &doc.pipelines {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{} (CPU {:.0} %)</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.pipeline),
            p.bottleneck,
            100.0 * p.cpu_utilisation,
            rows(crate::data_size(&p.latest)),
            bytes(p.latest.bytes_in as f64),
            duration(p.latest.wall_seconds),
            bytes(p.latest.peak_rss_bytes as f64),
            p.risk,
            p.risk,
            escape(&p.recommendation),
            escape(&p.verdict)
        );
    }
    s.push_str("</table></div>\n");
    for p in &doc.pipelines {
        for w in &p.warnings {
            let _ = writeln!(
                s,
                "<p class=\"warning\"><strong>{}:</strong> {}.</p>",
                escape(&p.pipeline),
                escape(w)
            );
        }
    }
    for p in &doc.pipelines {
        let runtime: Vec<(f64, f64, f64)> = p
            .projections
            .iter()
            .map(|y| (y.runtime_seconds, y.runtime_low, y.runtime_high))
            .collect();
        let memory: Vec<(f64, f64, f64)> = p
            .projections
            .iter()
            .map(|y| (y.peak_memory_bytes, y.memory_low, y.memory_high))
            .collect();
        let window = doc.machine.window_seconds;
        let ram = doc.machine.memory_bytes as f64;
        let _ = writeln!(
            s,
            "<h2>{}</h2><p>{}</p><div class=\"charts\">{}{}</div>",
            escape(&p.pipeline),
            escape(&p.method),
            chart(
                "runtime per year",
                &runtime,
                window,
                &axis_seconds,
                &format!("batch window {}", duration(window))
            ),
            chart(
                "peak memory per year",
                &memory,
                ram,
                &axis_bytes,
                &format!("machine memory {}", bytes(ram))
            )
        );
    }
    if !doc.clusters.is_empty() {
        let _ = writeln!(
            s,
            "<h2>On a Spark cluster</h2><div class=\"wide\"><table><tr><th>pipeline</th><th>measured on</th><th>year</th><th>rows in</th><th>runtime (measured cores)</th><th>executor cores for the window</th></tr>"
        );
        for c in &doc.clusters {
            for y in &c.projections {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{} cores, Spark {}</td><td>{}</td><td>{}</td><td>{} (to {})</td><td>{}</td></tr>",
                    escape(&c.pipeline),
                    c.cores_measured,
                    escape(&c.spark_version),
                    y.year,
                    rows(y.rows_in),
                    duration(y.runtime_seconds),
                    duration(y.runtime_high),
                    y.cores_needed
                        .map_or_else(|| "does not fit".to_string(), |n| n.to_string())
                );
            }
        }
        s.push_str("</table></div>\n");
        for c in &doc.clusters {
            let _ = writeln!(
                s,
                "<p><strong>{}:</strong> {}; {}.</p>",
                escape(&c.pipeline),
                escape(&c.method),
                escape(&c.recommendation)
            );
            for w in &c.warnings {
                let _ = writeln!(
                    s,
                    "<p class=\"warning\"><strong>{}:</strong> {}.</p>",
                    escape(&c.pipeline),
                    escape(w)
                );
            }
        }
    }
    s.push_str("</body></html>\n");
    s
}
