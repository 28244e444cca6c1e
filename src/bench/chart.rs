//! `ringway bench chart`: draw latency against delivered rate for every server of a
//! `scripts/bench-compare.sh` run, as SVG (plotters).

use std::path::PathBuf;

use clap::Args;
use plotters::prelude::*;
use serde::Deserialize;

/// `ringway bench chart` arguments.
#[derive(Debug, Clone, Args)]
pub struct ChartArgs {
    /// The comparison JSON written by scripts/bench-compare.sh.
    #[arg(long)]
    pub input: PathBuf,
    /// The SVG to write.
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Deserialize)]
struct Compare {
    servers: Vec<Server>,
}

#[derive(Deserialize)]
struct Server {
    name: String,
    fanout: Vec<Point>,
}

#[derive(Deserialize)]
struct Point {
    deliveries_per_sec: f64,
    p99_ms: f64,
    delivered: f64,
    expected: f64,
}

/// Draw the chart.
pub fn run(args: ChartArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.input.display()))?;
    let data: Compare = serde_json::from_str(&text)?;
    let max_x = data
        .servers
        .iter()
        .flat_map(|s| s.fanout.iter().map(|p| p.deliveries_per_sec))
        .fold(1.0, f64::max);
    let max_y = data
        .servers
        .iter()
        .flat_map(|s| s.fanout.iter().map(|p| p.p99_ms))
        .fold(10.0, f64::max);
    let root = SVGBackend::new(&args.output, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "fan-out to 5,000 subscribers: p99 latency vs delivered rate",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x * 1.05, (1.0..max_y * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("deliveries per second (hollow: not every message delivered)")
        .y_desc("p99 latency, ms (log)")
        .x_label_formatter(&|x| format!("{:.1}M", x / 1e6))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 200.0), (max_x * 1.05, 200.0)],
            ShapeStyle::from(&BLACK.mix(0.3)).stroke_width(1),
        ))?
        .label("p99 = 200 ms")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.3)));
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN];
    for (i, server) in data.servers.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(f64, f64, bool)> = server
            .fanout
            .iter()
            .map(|p| {
                (
                    p.deliveries_per_sec,
                    p.p99_ms.max(1.0),
                    p.delivered >= 0.999 * p.expected,
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))?
            .label(server.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|(x, y, all)| {
            let style = if all {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            Circle::new((x, y), 4, style)
        }))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    println!("chart written to {}", args.output.display());
    Ok(())
}
