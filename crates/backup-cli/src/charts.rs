//! The report's charts: inline SVG drawn by plotters, each with axes, a time
//! scale in UTC, units, and a `<title>`/`<desc>` for screen readers. The same
//! description is printed under the chart, so the page says in words what
//! each picture shows.
//!
//! Busy histories are thinned to at most [`MAX_POINTS`] marks per chart, each
//! the largest value of its slice of time, and failures are never thinned
//! away: a page with a mark per run of a one-second daemon would weigh
//! megabytes and show nothing more.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::history::{Drill, Kind, Run};
use backup_core::duration::human as duration_text;

use crate::output::size;

const SIZE: (u32, u32) = (600, 230);
const MAX_POINTS: usize = 1200;
/// Room above the highest mark for the legend.
const HEADROOM: f64 = 1.5;
const FONT: &str = "sans-serif";

const OK: RGBColor = RGBColor(16, 122, 58);
const FAILED: RGBColor = RGBColor(179, 38, 30);
const GAP: RGBColor = RGBColor(245, 166, 35);
const GAP_TEXT: RGBColor = RGBColor(150, 85, 0);
const BASE: RGBColor = RGBColor(35, 70, 150);
const INCREMENTAL: RGBColor = RGBColor(110, 160, 235);
const SELF_CONTAINED: RGBColor = RGBColor(120, 120, 120);
const LIMIT: RGBColor = RGBColor(179, 38, 30);

type DrawError = DrawingAreaErrorKind<std::io::Error>;
type Drawn = Result<(), DrawError>;
/// A chart with time along x.
type Chart<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// One chart: the SVG and the sentence that describes it.
pub struct Figure {
    pub svg: String,
    pub caption: String,
}

/// The span of time the charts show, in UTC. The x axis counts minutes,
/// hours or days (by the span) from a whole hour or day, so that plotters'
/// round tick values land on round clock times.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Timestamp,
    pub to: Timestamp,
    origin: Timestamp,
    unit: f64,
}

impl Window {
    /// From the oldest event (at most `days` back) to `now`; at least an hour.
    pub fn ending(now: Timestamp, oldest: Option<Timestamp>, days: i64) -> Self {
        let earliest = now - SignedDuration::from_hours(24 * days);
        let hour = now - SignedDuration::from_hours(1);
        let from = oldest.map_or(hour, |o| o.max(earliest)).min(hour);
        let span = (now - from).as_secs();
        let (unit, floor_to) = if span <= 3 * 3600 {
            (60, 3600)
        } else if span <= 3 * 86400 {
            (3600, 3600)
        } else {
            (86400, 86400)
        };
        let origin = Timestamp::from_second(from.as_second().div_euclid(floor_to) * floor_to)
            .unwrap_or(from);
        Window {
            from,
            to: now,
            origin,
            unit: unit as f64,
        }
    }

    fn x(&self, t: Timestamp) -> f64 {
        t.duration_since(self.origin).as_secs_f64() / self.unit
    }

    /// The x range with a little room on both sides.
    fn range(&self) -> std::ops::Range<f64> {
        let (a, b) = (self.x(self.from), self.x(self.to));
        let pad = (b - a) * 0.02;
        a - pad..b + pad
    }

    fn contains(&self, t: Timestamp) -> bool {
        (self.from..=self.to).contains(&t)
    }

    fn tick(&self, x: f64) -> String {
        let t = self.origin + SignedDuration::from_secs_f64(x * self.unit);
        let format = if self.unit >= 86400.0 {
            "%m-%d"
        } else if self.to - self.from > SignedDuration::from_hours(36) {
            "%m-%d %H:%M"
        } else {
            "%H:%M"
        };
        t.strftime(format).to_string()
    }

    fn axis(&self) -> String {
        format!(
            "time (UTC), {} to {}",
            self.from.strftime("%Y-%m-%d %H:%M"),
            self.to.strftime("%Y-%m-%d %H:%M")
        )
    }
}

/// A span with no run at all, longer than the usual interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Spans between runs (and from the newest run to `window.to`) longer than
/// three times the median interval and two minutes: a missed schedule, or
/// backups that stopped.
pub fn gaps(runs: &[&Run], window: &Window) -> Vec<Gap> {
    let times: Vec<Timestamp> = runs.iter().map(|r| r.at).collect();
    let mut steps: Vec<SignedDuration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.is_empty() {
        return vec![];
    }
    steps.sort();
    let median = steps[steps.len() / 2];
    let longest = (median * 3).max(SignedDuration::from_mins(2));
    let mut out: Vec<Gap> = times
        .windows(2)
        .filter(|w| w[1] - w[0] > longest)
        .map(|w| Gap {
            from: w[0],
            to: w[1],
        })
        .collect();
    if let Some(&last) = times.last()
        && window.to - last > longest
    {
        out.push(Gap {
            from: last,
            to: window.to,
        });
    }
    out
}

/// How far behind the newest saved point was, just before and just after
/// each run finished: a sawtooth that climbs while nothing lands.
pub fn recovery_point(runs: &[&Run]) -> Vec<(Timestamp, f64)> {
    let mut out = Vec::new();
    let mut newest: Option<Timestamp> = None;
    for r in runs {
        if let Some(n) = newest {
            out.push((r.at, (r.at - n).as_secs_f64().max(0.0)));
        }
        if let (true, Some(s)) = (r.ok(), r.snapshot_at) {
            newest = Some(newest.map_or(s, |n| n.max(s)));
            out.push((r.at, (r.at - s).as_secs_f64().max(0.0)));
        }
    }
    out
}

/// A mark to draw: where, how big, and whether it stands for a failure.
#[derive(Debug, Clone, Copy)]
struct Mark {
    x: f64,
    y: f64,
    failed: bool,
    kind: Option<Kind>,
}

/// At most [`MAX_POINTS`] marks: per slice of time, the largest ok mark and
/// the largest failed one.
fn thin(marks: Vec<Mark>, window: &Window) -> Vec<Mark> {
    if marks.len() <= MAX_POINTS {
        return marks;
    }
    let r = window.range();
    let slice = (r.end - r.start) / (MAX_POINTS / 2) as f64;
    let mut kept: Vec<Mark> = Vec::new();
    for m in marks {
        let bucket = (m.x / slice).floor();
        match kept
            .iter_mut()
            .rev()
            .take(2)
            .find(|k| (k.x / slice).floor() == bucket && k.failed == m.failed)
        {
            Some(k) if k.y >= m.y => {}
            Some(k) => *k = m,
            None => kept.push(m),
        }
    }
    kept
}

/// `(unit name, divisor)` for a time in seconds.
fn time_unit(max_seconds: f64) -> (&'static str, f64) {
    if max_seconds < 120.0 {
        ("seconds", 1.0)
    } else if max_seconds < 2.0 * 3600.0 {
        ("minutes", 60.0)
    } else {
        ("hours", 3600.0)
    }
}

/// `(unit name, divisor)` for a size in bytes.
fn byte_unit(max: f64) -> (&'static str, f64) {
    [("GiB", 30), ("MiB", 20), ("KiB", 10)]
        .into_iter()
        .find(|(_, shift)| max >= (1u64 << shift) as f64)
        .map_or(("bytes", 1.0), |(name, shift)| {
            (name, (1u64 << shift) as f64)
        })
}

fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// Draw into an SVG string, then give it a role, title and description.
fn svg(title: &str, caption: &str, draw: impl FnOnce(&Area<'_>) -> Drawn) -> Figure {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present());
        if let Err(e) = drawn {
            tracing::warn!(chart = %title, error = %e, "chart not drawn");
        }
    }
    let labels = maud::html! { title { (title) } desc { (caption) } }.into_string();
    if let Some(open) = out.find("<svg")
        && let Some(end) = out[open..].find('>')
    {
        let end = open + end;
        out.insert_str(end + 1, &labels);
        out.insert_str(end, r#" role="img" preserveAspectRatio="xMinYMin meet""#);
    }
    Figure {
        svg: out,
        caption: caption.to_string(),
    }
}

/// What every chart shares: its title, margins and label areas, and time
/// along x.
fn frame<'a, 'b, Y>(
    root: &'a Area<'b>,
    title: &str,
    window: &Window,
    y: Y,
) -> Result<Chart<'a, 'b, Y::CoordDescType>, DrawError>
where
    Y: AsRangedCoord<Value = f64>,
{
    ChartBuilder::on(root)
        .caption(title, (FONT, 15))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(window.range(), y)
}

/// The time axis below, and a value axis in `unit` at the left.
fn axes<'a, 'b, Y>(chart: &mut Chart<'a, 'b, Y>, window: &Window, unit: &str) -> Drawn
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_labels(7)
        .x_label_formatter(&|x| window.tick(*x))
        .y_label_formatter(&|y| format!("{}", Short(*y)))
        .x_desc(window.axis())
        .y_desc(unit)
        .draw()
}

/// Runs over the window: ok runs above, failures below, gaps shaded.
pub fn timeline(runs: &[&Run], window: &Window) -> Figure {
    let title = "Backup runs";
    let gaps = gaps(runs, window);
    let failed: Vec<&&Run> = runs.iter().filter(|r| !r.ok()).collect();
    let mut caption = format!(
        "{} from {} to {}, {} failed",
        count(runs.len(), "run"),
        when(window.from),
        when(window.to),
        failed.len()
    );
    if let Some(f) = failed.last() {
        let _ = write!(caption, " (latest at {})", when(f.at));
    }
    if gaps.is_empty() {
        caption.push_str("; no gap longer than three usual intervals.");
    } else {
        caption.push_str("; no run ");
        let spans: Vec<String> = gaps
            .iter()
            .map(|g| {
                let len = duration_text((g.to - g.from).unsigned_abs());
                if g.to == window.to {
                    format!("since {} ({len}, until now)", when(g.from))
                } else {
                    format!("from {} to {} ({len})", when(g.from), when(g.to))
                }
            })
            .collect();
        caption.push_str(&spans.join(", "));
        caption.push('.');
    }
    let marks = thin(
        runs.iter()
            .map(|r| Mark {
                x: window.x(r.at),
                y: 0.0,
                failed: !r.ok(),
                kind: None,
            })
            .collect(),
        window,
    );
    svg(title, &caption, |root| {
        let mut chart = frame(root, title, window, -0.75f64..1.75f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(7)
            .x_label_formatter(&|x| window.tick(*x))
            .y_labels(6)
            .y_label_formatter(&|y| match y {
                y if (y - 1.0).abs() < 0.01 => "ok".into(),
                y if y.abs() < 0.01 => "failed".into(),
                _ => String::new(),
            })
            .x_desc(window.axis())
            .draw()?;
        for g in &gaps {
            let (a, b) = (window.x(g.from), window.x(g.to));
            chart.draw_series(std::iter::once(Rectangle::new(
                [(a, -0.75), (b, 1.75)],
                GAP.mix(0.25).filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("no run {}", duration_text((g.to - g.from).unsigned_abs())),
                (a + (b - a) * 0.05, 1.55),
                (FONT, 12).into_font().color(&GAP_TEXT),
            )))?;
        }
        chart.draw_series(
            marks
                .iter()
                .filter(|m| !m.failed)
                .map(|m| Circle::new((m.x, 1.0), 3, OK.filled())),
        )?;
        chart.draw_series(
            marks
                .iter()
                .filter(|m| m.failed)
                .map(|m| Cross::new((m.x, 0.0), 5, FAILED.stroke_width(2))),
        )?;
        Ok(())
    })
}

/// Bytes each run added, on a log scale so a few KiB of changed pages show
/// beside a full base of gigabytes.
pub fn stored(runs: &[&Run], window: &Window) -> Figure {
    let title = "Stored per run";
    let with_bytes: Vec<&&Run> = runs.iter().filter(|r| r.stored > 0).collect();
    let total: u64 = with_bytes.iter().map(|r| r.stored).sum();
    let of_kind = |k: Kind| with_bytes.iter().filter(|r| r.kind == Some(k)).count();
    let incremental: Vec<u64> = with_bytes
        .iter()
        .filter(|r| r.kind == Some(Kind::Incremental))
        .map(|r| r.stored)
        .collect();
    let mut caption = format!(
        "{} stored {} in all: {}, {} incremental, {} self-contained",
        count(with_bytes.len(), "run"),
        size(total),
        count(of_kind(Kind::Base), "full base"),
        of_kind(Kind::Incremental),
        of_kind(Kind::Full)
    );
    if !incremental.is_empty() {
        let mut sorted = incremental.clone();
        sorted.sort_unstable();
        let _ = write!(
            caption,
            "; an incremental run added {} at the median, {} at most",
            size(sorted[sorted.len() / 2]),
            size(*sorted.last().unwrap())
        );
    }
    caption.push('.');
    let marks = thin(
        with_bytes
            .iter()
            .map(|r| Mark {
                x: window.x(r.at),
                y: r.stored as f64,
                failed: false,
                kind: r.kind,
            })
            .collect(),
        window,
    );
    let max = marks.iter().map(|m| m.y).fold(1.0, f64::max);
    let min = marks.iter().map(|m| m.y).fold(max, f64::min);
    let (unit, div) = byte_unit(max);
    let (lo, hi) = ((min / div / 2.0).max(1e-3), max / div * 12.0);
    svg(title, &caption, |root| {
        let mut chart = frame(root, title, window, (lo..hi).log_scale())?;
        axes(&mut chart, window, &format!("{unit} (log scale)"))?;
        for (kind, color, name) in [
            (Kind::Base, BASE, "full base"),
            (Kind::Incremental, INCREMENTAL, "incremental"),
            (Kind::Full, SELF_CONTAINED, "self-contained"),
        ] {
            let of_kind: Vec<&Mark> = marks.iter().filter(|m| m.kind == Some(kind)).collect();
            if of_kind.is_empty() {
                continue;
            }
            chart
                .draw_series(of_kind.iter().map(|m| {
                    PathElement::new(vec![(m.x, lo), (m.x, m.y / div)], color.stroke_width(3))
                }))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        legend(&mut chart)
    })
}

/// How long each run took; failures marked apart.
pub fn duration(runs: &[&Run], window: &Window) -> Figure {
    let title = "Run duration";
    let mut ms: Vec<u64> = runs.iter().map(|r| r.ms).collect();
    ms.sort_unstable();
    let caption = match (ms.first(), ms.last()) {
        (Some(_), Some(&longest)) => format!(
            "Median {}, longest {} (run at {}).",
            seconds(ms[ms.len() / 2]),
            seconds(longest),
            when(runs.iter().max_by_key(|r| r.ms).map(|r| r.at).unwrap()),
        ),
        _ => "No runs.".into(),
    };
    let marks = thin(
        runs.iter()
            .map(|r| Mark {
                x: window.x(r.at),
                y: r.ms as f64 / 1000.0,
                failed: !r.ok(),
                kind: None,
            })
            .collect(),
        window,
    );
    let max = marks.iter().map(|m| m.y).fold(0.0, f64::max).max(0.001);
    let (unit, div) = time_unit(max);
    svg(title, &caption, |root| {
        let mut chart = frame(root, title, window, 0f64..max / div * HEADROOM)?;
        axes(&mut chart, window, unit)?;
        chart
            .draw_series(
                marks
                    .iter()
                    .filter(|m| !m.failed)
                    .map(|m| Circle::new((m.x, m.y / div), 3, OK.filled())),
            )?
            .label("ok")
            .legend(|(x, y)| Circle::new((x + 5, y), 3, OK.filled()));
        if marks.iter().any(|m| m.failed) {
            chart
                .draw_series(
                    marks
                        .iter()
                        .filter(|m| m.failed)
                        .map(|m| Cross::new((m.x, m.y / div), 5, FAILED.stroke_width(2))),
                )?
                .label("failed")
                .legend(|(x, y)| Cross::new((x + 5, y), 5, FAILED.stroke_width(2)));
        }
        legend(&mut chart)
    })
}

/// The recovery point over time, with the staleness limit when it fits.
pub fn lag(runs: &[&Run], window: &Window, max_age_hours: u32) -> Figure {
    let title = "Recovery point (how far behind the newest backup was)";
    let points: Vec<(Timestamp, f64)> = recovery_point(runs)
        .into_iter()
        .filter(|(t, _)| window.contains(*t))
        .collect();
    let worst = points.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    let caption = match worst {
        Some((t, s)) => format!(
            "Worst {} behind, just before the run at {}; stale after {max_age_hours} h.",
            duration_text(std::time::Duration::from_secs_f64(*s)),
            when(*t)
        ),
        None => "Needs two runs to draw.".into(),
    };
    let limit = f64::from(max_age_hours) * 3600.0;
    let max = worst.map_or(1.0, |w| w.1).max(1.0);
    let show_limit = limit <= max * 1.5;
    let top = if show_limit { limit.max(max) } else { max };
    let (unit, div) = time_unit(top);
    let line: Vec<(f64, f64)> = points
        .iter()
        .map(|(t, s)| (window.x(*t), s / div))
        .collect();
    svg(title, &caption, |root| {
        let mut chart = frame(root, title, window, 0f64..top / div * HEADROOM)?;
        axes(&mut chart, window, &format!("{unit} behind"))?;
        chart
            .draw_series(LineSeries::new(line, BASE.stroke_width(2)))?
            .label("recovery point")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BASE.stroke_width(2)));
        if show_limit {
            let r = window.range();
            chart
                .draw_series(LineSeries::new(
                    [(r.start, limit / div), (r.end, limit / div)],
                    LIMIT.stroke_width(1),
                ))?
                .label(format!("stale after {max_age_hours} h"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 12, y)], LIMIT.stroke_width(1))
                });
        }
        legend(&mut chart)
    })
}

/// Time to a verified restore, drill by drill.
pub fn drill_rto(drills: &[&Drill], window: &Window) -> Figure {
    let title = "Restore drill: time to a verified restore (RTO)";
    let failed = drills.iter().filter(|d| !d.ok).count();
    let caption = match drills.iter().filter_map(|d| d.rto_ms).max() {
        Some(worst) => format!(
            "{}, {failed} failed; slowest restore {}.",
            count(drills.len(), "drill"),
            seconds(worst)
        ),
        None if drills.is_empty() => "No drill in this window.".into(),
        None => format!(
            "{}, all failed before a restore.",
            count(drills.len(), "drill")
        ),
    };
    let max = drills
        .iter()
        .filter_map(|d| d.rto_ms)
        .max()
        .map_or(1.0, |ms| ms as f64 / 1000.0)
        .max(0.001);
    let (unit, div) = time_unit(max);
    svg(title, &caption, |root| {
        let mut chart = frame(root, title, window, 0f64..max / div * HEADROOM)?;
        axes(&mut chart, window, unit)?;
        let at = |d: &Drill| (window.x(d.at), d.rto_ms.unwrap_or(0) as f64 / 1000.0 / div);
        chart
            .draw_series(
                drills
                    .iter()
                    .filter(|d| d.ok)
                    .map(|d| Circle::new(at(d), 4, OK.filled())),
            )?
            .label("passed")
            .legend(|(x, y)| Circle::new((x + 5, y), 4, OK.filled()));
        if failed > 0 {
            chart
                .draw_series(
                    drills
                        .iter()
                        .filter(|d| !d.ok)
                        .map(|d| Cross::new(at(d), 5, FAILED.stroke_width(2))),
                )?
                .label("failed")
                .legend(|(x, y)| Cross::new((x + 5, y), 5, FAILED.stroke_width(2)));
        }
        legend(&mut chart)
    })
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> Drawn
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 12))
        .draw()
}

/// `1 run`, `3 runs`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn seconds(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        duration_text(std::time::Duration::from_millis(ms))
    }
}

/// An axis number without trailing zeros (`0.5`, `12`, `1.25`).
struct Short(f64);

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = format!("{:.3}", self.0);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        f.write_str(if text == "-0" { "0" } else { text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
    }

    fn run(minute: i64, ok: bool) -> Run {
        Run {
            run: format!("r{minute}"),
            at: at(minute),
            ms: 1500,
            error: (!ok).then(|| "disk full".into()),
            snapshot_at: ok.then(|| at(minute) - SignedDuration::from_secs(1)),
            kind: ok.then_some(Kind::Incremental),
            stored: if ok { 40_000 } else { 0 },
        }
    }

    #[test]
    fn a_missed_schedule_and_a_stop_are_gaps() {
        let runs: Vec<Run> = (0..10)
            .map(|i| run(i * 30, true))
            .chain((20..24).map(|i| run(i * 30, true)))
            .collect();
        let refs: Vec<&Run> = runs.iter().collect();
        let window = Window::ending(at(23 * 30 + 10), Some(at(0)), 7);
        assert_eq!(
            gaps(&refs, &window),
            vec![Gap {
                from: at(9 * 30),
                to: at(20 * 30)
            }]
        );
        let later = Window::ending(at(30 * 30), Some(at(0)), 7);
        assert_eq!(gaps(&refs, &later).last().unwrap().to, at(30 * 30));
    }

    #[test]
    fn the_recovery_point_climbs_through_a_failure() {
        let runs = [run(0, true), run(30, false), run(60, true)];
        let refs: Vec<&Run> = runs.iter().collect();
        let lag: Vec<f64> = recovery_point(&refs).iter().map(|p| p.1).collect();
        // after run 0: 1 s; before run 30 lands (it fails): 30 min + 1 s;
        // before run 60: an hour + 1 s; after it: 1 s.
        assert_eq!(lag, vec![1.0, 1801.0, 3601.0, 1.0]);
    }

    #[test]
    fn charts_carry_a_title_a_description_and_their_marks() {
        let runs: Vec<Run> = (0..48).map(|i| run(i * 30, i != 17)).collect();
        let refs: Vec<&Run> = runs.iter().collect();
        let window = Window::ending(at(48 * 30), Some(at(0)), 7);
        let t = timeline(&refs, &window);
        assert!(t.svg.contains("<title>Backup runs</title><desc>48 runs"));
        assert!(t.svg.contains(r#"role="img""#));
        assert!(t.caption.contains("1 failed"), "{}", t.caption);
        assert_eq!(t.svg.matches("<circle").count(), 47);
        let s = stored(&refs, &window);
        assert!(s.svg.contains("KiB (log scale)"), "{}", s.caption);
        assert!(s.caption.contains("47 incremental"), "{}", s.caption);
        assert!(duration(&refs, &window).caption.contains("Median 1.50 s"));
        let l = lag(&refs, &window, 26);
        assert!(l.caption.contains("Worst 1h 1s"), "{}", l.caption);
    }

    #[test]
    fn no_run_and_one_run_still_draw() {
        let window = Window::ending(at(100), None, 7);
        for f in [
            timeline(&[], &window),
            stored(&[], &window),
            duration(&[], &window),
            lag(&[], &window, 26),
            drill_rto(&[], &window),
        ] {
            assert!(
                f.svg.contains("</svg>") && f.svg.contains("<desc>"),
                "{}",
                f.caption
            );
        }
        let one = [run(90, true)];
        let refs: Vec<&Run> = one.iter().collect();
        let window = Window::ending(at(100), Some(at(90)), 7);
        assert!(timeline(&refs, &window).svg.contains("<circle"));
        assert!(stored(&refs, &window).svg.contains("<polyline"));
    }

    #[test]
    fn a_busy_history_is_thinned_but_keeps_every_failed_slice() {
        let runs: Vec<Run> = (0..20_000)
            .map(|i| Run {
                at: at(0) + SignedDuration::from_secs(i),
                ..run(0, i != 12_345)
            })
            .collect();
        let refs: Vec<&Run> = runs.iter().collect();
        let window = Window::ending(at(0) + SignedDuration::from_secs(20_000), Some(at(0)), 7);
        let t = timeline(&refs, &window);
        assert!(t.svg.matches("<circle").count() <= MAX_POINTS);
        assert!(t.svg.len() < 400_000, "{}", t.svg.len());
        assert!(t.caption.contains("20000 runs") && t.caption.contains("1 failed"));
        assert!(
            t.svg.contains(r##"stroke="#B3261E""##),
            "the failure is drawn"
        );
    }
}
