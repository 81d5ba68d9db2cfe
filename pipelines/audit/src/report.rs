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
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
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

/// One chart: a value per year against its limit, on a linear scale.
fn chart(title: &str, values: &[f64], limit: f64, label: &dyn Fn(f64) -> String) -> String {
    let (w, h, left, bottom) = (360.0, 180.0, 70.0, 30.0);
    let top = values.iter().copied().fold(limit, f64::max) * 1.1;
    let n = values.len().max(2) as f64 - 1.0;
    let x = |i: usize| left + (w - left - 10.0) * i as f64 / n;
    let y = |v: f64| (h - bottom) - (h - bottom - 20.0) * v / top.max(1e-12);
    let mut s = String::new();
    let (right, ly) = (w - 10.0, y(limit));
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\">\
         <text x=\"{left}\" y=\"14\" font-weight=\"600\">{title}</text>\
         <line x1=\"{left}\" x2=\"{right}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"#b42318\" stroke-dasharray=\"5 3\"/>\
         <text x=\"{right}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"#b42318\">limit {lim}</text>",
        title = escape(title),
        ty = ly - 4.0,
        lim = label(limit)
    );
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"#1d4ed8\" stroke-width=\"2\" points=\"{}\"/>",
        points.join(" ")
    );
    for (i, v) in values.iter().enumerate() {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1d4ed8\"/><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#5b6478\">y{i}</text>",
            x(i),
            y(*v),
            x(i),
            h - 10.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#5b6478\">{}</text></svg>",
        left - 6.0,
        y(*values.last().unwrap_or(&0.0)),
        label(*values.last().unwrap_or(&0.0))
    );
    s
}

pub fn html(doc: &Document) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Capacity audit</title><style>\
         body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1d2433}\
         table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #e3e6ec;padding:.35rem .6rem;text-align:left}\
         .CRITICAL{color:#b42318;font-weight:700}.HIGH{color:#b54708;font-weight:700}.LOW{color:#12733a}\
         svg text{font-size:11px}.warning{color:#b54708}.charts{display:flex;flex-wrap:wrap;gap:1rem}</style></head><body>\n",
    );
    let md = markdown(doc);
    let intro = md.lines().nth(2).unwrap_or_default();
    let _ = writeln!(s, "<h1>Capacity audit</h1><p>{}</p>", escape(intro));
    s.push_str("<table><tr><th>pipeline</th><th>bottleneck</th><th>rows in</th><th>bytes in</th><th>runtime</th><th>peak memory</th><th>risk</th><th>recommendation</th><th>verdict</th></tr>\n");
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
    s.push_str("</table>\n");
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
        let runtime: Vec<f64> = p.projections.iter().map(|y| y.runtime_seconds).collect();
        let memory: Vec<f64> = p.projections.iter().map(|y| y.peak_memory_bytes).collect();
        let _ = writeln!(
            s,
            "<h2>{}</h2><p>{}</p><div class=\"charts\">{}{}</div>",
            escape(&p.pipeline),
            escape(&p.method),
            chart(
                "runtime per year",
                &runtime,
                doc.machine.window_seconds,
                &duration
            ),
            chart(
                "peak memory per year",
                &memory,
                doc.machine.memory_bytes as f64,
                &bytes
            )
        );
    }
    if !doc.clusters.is_empty() {
        let _ = writeln!(
            s,
            "<h2>On a Spark cluster</h2><table><tr><th>pipeline</th><th>measured on</th><th>year</th><th>rows in</th><th>runtime (measured cores)</th><th>executor cores for the window</th></tr>"
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
        s.push_str("</table>\n");
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
