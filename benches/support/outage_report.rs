//! The outage bench's figures: what each proxy answered in each phase of
//! the outage, as tables, and over time, as one SVG.
//!
//! The samples come from the open-loop load generator
//! ([`super::http_load::open_loop`]), one per request, stamped with the
//! instant it was due; everything here is computed from them and from the
//! upstream's request counts at the phase boundaries.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use super::Result;
use super::http_load::{Connections, Latencies, Sample, ms};

/// One phase of the outage: what the upstream does, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub start: Duration,
    pub end: Duration,
    /// The shade of the phase in the figure (`None`: not shaded).
    pub shade: Option<RGBColor>,
}

impl Phase {
    pub fn length(&self) -> Duration {
        self.end - self.start
    }

    fn contains(&self, sent: Duration) -> bool {
        sent >= self.start && sent < self.end
    }
}

/// One proxy's run under one way of connecting.
pub struct ProxyRun {
    pub proxy: &'static str,
    pub color: RGBColor,
    pub connections: Connections,
    pub samples: Vec<Sample>,
    /// Requests that reached the upstream in each phase.
    pub upstream_calls: Vec<u64>,
}

/// What a proxy answered in one phase.
pub struct PhaseFigures {
    pub requests: usize,
    pub good_share: f64,
    pub stale_share: f64,
    pub latencies: Latencies,
    pub answers_per_second: f64,
    pub upstream_calls: u64,
}

impl ProxyRun {
    /// The figures of `phase` (number `index`), over the requests due in it.
    pub fn phase(&self, index: usize, phase: &Phase) -> PhaseFigures {
        let due: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| phase.contains(sample.sent))
            .collect();
        let requests = due.len();
        let share = |count: usize| {
            if requests == 0 {
                0.0
            } else {
                count as f64 / requests as f64
            }
        };
        PhaseFigures {
            requests,
            good_share: share(due.iter().filter(|s| s.outcome.is_success()).count()),
            stale_share: share(due.iter().filter(|s| s.outcome.is_stale()).count()),
            latencies: Latencies::new(due.iter().map(|s| s.latency).collect()),
            answers_per_second: due.iter().filter(|s| s.outcome.is_answer()).count() as f64
                / phase.length().as_secs_f64(),
            upstream_calls: self.upstream_calls.get(index).copied().unwrap_or_default(),
        }
    }

    /// The share of 2xx answers and the p99 latency of the requests due in
    /// each `bucket` from the start.
    fn timeline(&self, bucket: Duration, end: Duration) -> Vec<(f64, f64, Duration)> {
        let buckets = (end.as_secs_f64() / bucket.as_secs_f64()).ceil() as usize;
        let mut grouped: Vec<Vec<&Sample>> = vec![Vec::new(); buckets];
        for sample in &self.samples {
            let index = (sample.sent.as_secs_f64() / bucket.as_secs_f64()) as usize;
            if let Some(group) = grouped.get_mut(index) {
                group.push(sample);
            }
        }
        grouped
            .iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(index, group)| {
                let middle = (index as f64 + 0.5) * bucket.as_secs_f64();
                let good = group.iter().filter(|s| s.outcome.is_success()).count();
                let latencies = Latencies::new(group.iter().map(|s| s.latency).collect());
                (
                    middle,
                    100.0 * good as f64 / group.len() as f64,
                    latencies.p99(),
                )
            })
            .collect()
    }
}

/// The per-phase tables of `runs` (all under one way of connecting), as
/// Markdown.
pub fn phase_tables(runs: &[&ProxyRun], phases: &[Phase]) -> String {
    let mut text = String::new();
    for (index, phase) in phases.iter().enumerate() {
        text.push_str(&format!(
            "\n{} ({}–{} s):\n\n",
            phase.name,
            seconds(phase.start),
            seconds(phase.end)
        ));
        text.push_str(
            "| proxy | 2xx | stale | p50 ms | p99 ms | max ms | answers/s | calls to upstream |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for run in runs {
            let figures = run.phase(index, phase);
            text.push_str(&format!(
                "| {} | {:.1} % | {:.1} % | {:.2} | {:.2} | {:.1} | {:.0} | {} |\n",
                run.proxy,
                100.0 * figures.good_share,
                100.0 * figures.stale_share,
                ms(figures.latencies.p50()),
                ms(figures.latencies.p99()),
                ms(figures.latencies.max()),
                figures.answers_per_second,
                figures.upstream_calls,
            ));
        }
    }
    text
}

/// Seconds as the tables print them: whole when whole (`10`), else to a
/// tenth (`2.5`).
pub fn seconds(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds.fract() == 0.0 {
        format!("{seconds:.0}")
    } else {
        format!("{seconds:.1}")
    }
}

/// Width of the figure's time buckets.
const BUCKET: Duration = Duration::from_millis(500);
/// The lowest and highest latency the figure's log scale shows (ms).
const LATENCY_RANGE_MS: (f64, f64) = (0.1, 20_000.0);

/// Draws `runs` to `path`: one column per way of connecting, the share of
/// 2xx answers above and the p99 latency below, one line per proxy,
/// phases shaded.
pub fn draw(path: &Path, title: &str, runs: &[ProxyRun], phases: &[Phase]) -> Result<()> {
    let end = phases.last().map_or(Duration::ZERO, |phase| phase.end);
    let end_s = end.as_secs_f64();
    let root = SVGBackend::new(path, (1400, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title_area, body) = root.split_vertically(50);
    title_area.titled(title, ("sans-serif", 22))?;
    let columns = [Connections::KeepAlive, Connections::PerRequest];
    let panels = body.split_evenly((2, columns.len()));
    for (column, connections) in columns.iter().enumerate() {
        let runs: Vec<&ProxyRun> = runs
            .iter()
            .filter(|run| run.connections == *connections)
            .collect();
        // Good answers.
        let mut chart = ChartBuilder::on(&panels[column])
            .caption(
                format!("2xx answers, {} (share per 0.5 s)", connections.label()),
                ("sans-serif", 17),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..end_s, 0.0..105.0)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("% 2xx")
            .draw()?;
        shade_phases(&mut chart, phases, (0.0, 105.0))?;
        for run in &runs {
            let color = run.color;
            let points = run.timeline(BUCKET, end);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(t, good, _)| (*t, *good)),
                    color.stroke_width(2),
                ))?
                .label(run.proxy)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        // p99 latency.
        let mut chart = ChartBuilder::on(&panels[columns.len() + column])
            .caption(
                format!("p99 latency, {} (per 0.5 s)", connections.label()),
                ("sans-serif", 17),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(
                0.0..end_s,
                (LATENCY_RANGE_MS.0..LATENCY_RANGE_MS.1).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("ms (log)")
            .draw()?;
        shade_phases(&mut chart, phases, LATENCY_RANGE_MS)?;
        for run in &runs {
            let color = run.color;
            let points = run.timeline(BUCKET, end);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(t, _, p99)| {
                        (*t, ms(*p99).clamp(LATENCY_RANGE_MS.0, LATENCY_RANGE_MS.1))
                    }),
                    color.stroke_width(2),
                ))?
                .label(run.proxy)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Shades the phases that have a shade, with their names at the top.
fn shade_phases<DB: DrawingBackend, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    phases: &[Phase],
    (bottom, top): (f64, f64),
) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
    DB::ErrorType: 'static,
{
    for phase in phases {
        let Some(shade) = phase.shade else { continue };
        let (from, to) = (phase.start.as_secs_f64(), phase.end.as_secs_f64());
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(from, bottom), (to, top)],
                shade.mix(0.18).filled(),
            )))
            .map_err(|err| err.to_string())?;
    }
    Ok(())
}
