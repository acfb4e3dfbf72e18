//! A picture of one trial that a person reads at a glance: what the device did, in order.
//!
//! From top to bottom: the title, a pass/fail banner, the scenario's steps as a band (the
//! failing step red), one lane per flash region (boot state, app slot 0 and 1, fs slot 0 and 1)
//! with write and erase bursts annotated with the bytes written, a lane of device events (power
//! on, boots with the slot and the reason, merge, commit, revert, crash, watchdog, update
//! applied, refused with its message, bricked, and the failed check with its message), the
//! device-time axis and a legend. A pale band in an app lane shows which slot's firmware runs.
//! A power cut is a bold red line down through every lane, labelled with the operation it struck,
//! which is also ticked red on its burst's bar. A merge is an arrow between the fs lanes.
//!
//! Device time jumps (a 300 s wait with nothing happening, then a burst within one millisecond),
//! so x is *order*, not time: one column per device event (a power-on and the boot right after
//! it share one) and one per burst of flash operations (consecutive writes and erases in one
//! step), with the device time as the column's tick label. A jump of a second or more is marked
//! on the axis with its size. Bars share one scale in pixels per flash operation, so their widths
//! compare across the picture, and inside a burst x is the operation index, so the order of
//! writes across lanes shows (the finalize record after the slot it makes bootable).
//!
//! The SVG is self-contained (presentation attributes only: no `<style>`, no scripts, no
//! external fonts, no ids, so several pictures can share one HTML page), every text is escaped,
//! every shortened text has its full version as a tooltip, and the width is 1200 px unless the
//! columns need more.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{event_line, event_text, fmt_bytes, fmt_ms, outcome_text, plural, struck_by};
use crate::result::{EventKind, Lane, Outcome, Run, StepRecord, TimelineEvent, Trial};

const WIDTH_MIN: f64 = 1200.0;
const LABEL_W: f64 = 104.0;
const MARGIN_R: f64 = 16.0;
const POINT_W: f64 = 84.0;
/// Power cuts and refusals: their text matters most.
const WIDE_W: f64 = 136.0;
/// How far from a power cut column's left edge its red line runs.
const CUT_INSET: f64 = 16.0;
const QUIET_W: f64 = 90.0;
const VERDICT_W: f64 = 136.0;
const BURST_W_MIN: f64 = 84.0;
/// Space between a burst column's edges and its bars.
const BURST_MARGIN: f64 = 6.0;
/// Most room a column gets beyond its own width, so that a short run stays compact on the left.
const PAD_MAX: f64 = 80.0;
/// Bounds of the one scale of every burst: wide enough to see, narrow enough to fit.
const PX_PER_OP_MIN: f64 = 0.2;
const PX_PER_OP_MAX: f64 = 3.0;
/// Widest burst, in flash operations, so that odd operation indices cannot make a huge picture.
const OP_SPAN_MAX: u64 = 20_000;
const STEPS_H: f64 = 46.0;
const FLASH_LANE_H: f64 = 46.0;
const DEVICE_LANE_H: f64 = 96.0;
const AXIS_H: f64 = 40.0;
const LEGEND_H: f64 = 52.0;
/// Average advance of a sans-serif character, as a fraction of the font size; used to wrap.
const CHAR_EM: f64 = 0.56;

const INK: &str = "#222";
const MUTED: &str = "#666";
const WRITE: &str = "#2f6fd0";
const ERASE: &str = "#f08c1a";
const CUT: &str = "#d4111b";
const RUNNING: &str = "#d9f2dc";
const BOOT: &str = "#2e9e44";
const COMMIT: &str = "#0f6b2a";
const REVERT: &str = "#8e44ad";
const CRASH: &str = "#a31515";
const REFUSED: &str = "#c99400";
const MERGE: &str = "#138f8f";
const NOTE: &str = "#8a8a8a";
/// A white outline under a text, so that it reads across a cut line.
const HALO: &str = r##"stroke="#fff" stroke-width="3" stroke-linejoin="round" paint-order="stroke""##;

/// The timeline of one trial as a self-contained SVG document.
pub fn svg(trial: &Trial) -> String {
    let mut columns = columns(trial);
    let (width, px_per_op) = place(&mut columns);
    let lanes = lanes(trial);
    let banner = banner_lines(trial, width);
    let frame = Frame::new(width, px_per_op, &lanes, banner.len());
    let mut s = Svg::new(frame.width, frame.height);
    title(&mut s, trial);
    banner_box(&mut s, &trial.outcome, &banner, &frame);
    lane_backgrounds(&mut s, &frame);
    running_bands(&mut s, &columns, &frame);
    steps_band(&mut s, trial, &columns, &frame);
    cut_lines(&mut s, &columns, &frame);
    for column in &columns {
        match &column.body {
            Body::Burst(events) => burst(&mut s, trial, column, events, &frame),
            Body::Point(events) => point(&mut s, trial, column, events, &columns, &frame),
            Body::Verdict(message) => verdict(&mut s, column, message, &frame),
            Body::Quiet => {}
        }
    }
    if columns.is_empty() {
        let y = frame.lanes_y + frame.lanes.len() as f64 * FLASH_LANE_H / 2.0;
        s.text(LABEL_W + 12.0, y, &format!(r#"font-size="13" fill="{MUTED}""#), "no device events recorded");
    }
    axis(&mut s, &columns, &frame);
    legend(&mut s, &frame);
    s.finish()
}

/// One page with every trial of the run: a table (name, board, outcome, message) and each
/// trial's timeline, failures first.
pub fn html(run: &Run) -> String {
    let mut order: Vec<(usize, &Trial)> = run.trials.iter().enumerate().collect();
    order.sort_by_key(|(i, t)| (rank(&t.outcome), *i));
    let mut out = String::new();
    let title = format!("hil run, seed {}: {}", run.seed, super::totals_text(run));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n\
         <style>\nbody {{ font-family: sans-serif; margin: 24px; color: {INK}; }}\n\
         table {{ border-collapse: collapse; margin-bottom: 24px; }}\n\
         th, td {{ text-align: left; padding: 4px 12px 4px 0; vertical-align: top; }}\n\
         .passed {{ color: {BOOT}; }} .failed, .error {{ color: {CUT}; font-weight: bold; }} .skipped {{ color: {MUTED}; }}\n\
         section {{ margin-bottom: 32px; }} .picture {{ overflow-x: auto; }}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    out.push_str(
        "<table>\n<tr><th>#</th><th>scenario</th><th>board</th><th>outcome</th><th>message</th></tr>\n",
    );
    for (i, trial) in &order {
        let message = match &trial.outcome {
            Outcome::Passed => String::new(),
            other => outcome_text(other),
        };
        let label = trial.outcome.label();
        let _ = writeln!(
            out,
            "<tr><td>{n}</td><td><a href=\"#trial-{n}\">{}</a></td><td>{}</td><td class=\"{label}\">{label}</td><td>{}</td></tr>",
            esc(&trial.scenario),
            esc(&trial.board),
            esc(&message),
            n = i + 1
        );
    }
    out.push_str("</table>\n");
    for (i, trial) in &order {
        let _ = write!(
            out,
            "<section id=\"trial-{}\">\n<h2>{} on {} <span class=\"{label}\">{label}</span></h2>\n<div class=\"picture\">\n{}</div>\n</section>\n",
            i + 1,
            esc(&trial.scenario),
            esc(&trial.board),
            svg(trial),
            label = trial.outcome.label()
        );
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn rank(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Failed { .. } => 0,
        Outcome::Error { .. } => 1,
        Outcome::Skipped { .. } => 2,
        Outcome::Passed => 3,
    }
}

/// Escapes text for XML and HTML: markup characters become entities, tabs and line breaks
/// spaces, and other control characters (which XML 1.0 mostly forbids) are dropped.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Columns: x is order.

struct Column<'a> {
    step: usize,
    at_ms: u64,
    body: Body<'a>,
    x: f64,
    w: f64,
}

enum Body<'a> {
    /// Consecutive writes and erases in one step.
    Burst(Vec<&'a TimelineEvent>),
    /// One device event, or a power-on and the boot that followed it in the same millisecond.
    Point(Vec<&'a TimelineEvent>),
    /// A step during which nothing happened on the device, so that the band still shows it.
    Quiet,
    /// Where the failing step's expectation did not hold, with its message.
    Verdict(&'a str),
}

impl Column<'_> {
    /// Where the column's marker, tick and cut line sit: the centre, or near the left edge for a
    /// power cut so that its label reads to the right of the line.
    fn anchor(&self) -> f64 {
        if self.is_cut() { self.x + CUT_INSET } else { self.x + self.w / 2.0 }
    }

    /// A refusal's message is what a bad-bundle scenario is about: it gets a wide column.
    fn is_refusal(&self) -> bool {
        self.points().any(|e| matches!(e.kind, EventKind::Refused { .. }))
    }

    fn is_cut(&self) -> bool {
        self.points().any(|e| matches!(e.kind, EventKind::PowerCut { .. }))
    }

    /// The device events of a point column (none for bursts and quiet steps).
    fn points(&self) -> impl Iterator<Item = &TimelineEvent> {
        let events: &[&TimelineEvent] = match &self.body {
            Body::Point(events) => events,
            _ => &[],
        };
        events.iter().copied()
    }

    /// The operation indices a burst spans, first to last, at most [`OP_SPAN_MAX`].
    fn op_span(&self) -> u64 {
        let Body::Burst(events) = &self.body else { return 0 };
        let ranges = || events.iter().filter_map(|e| flash_ops(&e.kind));
        let first = ranges().map(|r| r.3).min().unwrap_or(0);
        let last = ranges().map(|r| r.4).max().unwrap_or(0);
        last.saturating_sub(first).saturating_add(1).min(OP_SPAN_MAX)
    }

    fn min_w(&self) -> f64 {
        match self.body {
            Body::Burst(_) => BURST_W_MIN,
            Body::Point(_) if self.is_cut() || self.is_refusal() => WIDE_W,
            Body::Point(_) => POINT_W,
            Body::Quiet => QUIET_W,
            Body::Verdict(_) => VERDICT_W,
        }
    }
}

/// The columns in order: the events, a quiet column for each step without any, and the
/// failure's verdict at the end of its step. x and widths are set by [`place`].
fn columns(trial: &Trial) -> Vec<Column<'_>> {
    let mut columns = event_columns(trial);
    if let Outcome::Failed { step, message, .. } = &trial.outcome {
        let at = columns.iter().position(|c| c.step > *step).unwrap_or(columns.len());
        let record = trial.steps.iter().find(|r| r.index == *step);
        let at_ms = record.map(|r| r.end_ms).or(at.checked_sub(1).map(|i| columns[i].at_ms)).unwrap_or(0);
        let body = Body::Verdict(message);
        columns.insert(at, Column { step: *step, at_ms, body, x: 0.0, w: 0.0 });
    }
    columns
}

fn event_columns(trial: &Trial) -> Vec<Column<'_>> {
    let failed_step = match trial.outcome {
        Outcome::Failed { step, .. } => Some(step),
        _ => None,
    };
    let mut stepped: BTreeSet<usize> = trial.timeline.iter().map(|e| e.step).collect();
    stepped.extend(failed_step);
    let mut quiet = trial.steps.iter().filter(|s| !stepped.contains(&s.index)).peekable();
    let mut columns: Vec<Column> = Vec::new();
    let quiet_column =
        |s: &StepRecord| Column { step: s.index, at_ms: s.start_ms, body: Body::Quiet, x: 0.0, w: 0.0 };
    for event in &trial.timeline {
        while let Some(s) = quiet.next_if(|s| s.index < event.step) {
            columns.push(quiet_column(s));
        }
        if let Some(last) = columns.last_mut()
            && joins(last, event)
            && let Body::Burst(events) | Body::Point(events) = &mut last.body
        {
            events.push(event);
            continue;
        }
        let body = if flash_ops(&event.kind).is_some() {
            Body::Burst(vec![event])
        } else {
            Body::Point(vec![event])
        };
        columns.push(Column { step: event.step, at_ms: event.at_ms, body, x: 0.0, w: 0.0 });
    }
    columns.extend(quiet.map(quiet_column));
    columns
}

/// Whether `event` belongs in the column before it: a write or erase continuing a burst of the
/// same step (within a second), or the boot right after a power-on.
fn joins(column: &Column, event: &TimelineEvent) -> bool {
    if column.step != event.step {
        return false;
    }
    match &column.body {
        Body::Burst(_) => flash_ops(&event.kind).is_some() && event.at_ms < column.at_ms.saturating_add(1000),
        Body::Point(events) => {
            let after_power_on = matches!(events[..], [TimelineEvent { kind: EventKind::PowerOn, .. }]);
            after_power_on && matches!(event.kind, EventKind::Boot { .. }) && event.at_ms == column.at_ms
        }
        Body::Quiet | Body::Verdict(_) => false,
    }
}

/// Sets each column's x and width; returns the picture's width and the pixels per flash
/// operation, one scale for every burst so that bar widths compare across the picture.
/// Device events and quiet steps get fixed widths; the bursts get the largest scale (within
/// bounds) at which everything fits in 1200 px, and what room remains is shared evenly, up to
/// a bound.
fn place(columns: &mut [Column]) -> (f64, f64) {
    let plot_w = WIDTH_MIN - LABEL_W - MARGIN_R;
    let fixed: f64 = columns.iter().filter(|c| !matches!(c.body, Body::Burst(_))).map(Column::min_w).sum();
    let spans: Vec<u64> =
        columns.iter().filter(|c| matches!(c.body, Body::Burst(_))).map(Column::op_span).collect();
    let bursts_w = |px_per_op: f64| spans.iter().map(|&span| burst_w(span, px_per_op)).sum::<f64>();
    let room = plot_w - fixed;
    let px_per_op = if spans.is_empty() || bursts_w(PX_PER_OP_MAX) <= room {
        PX_PER_OP_MAX
    } else if bursts_w(PX_PER_OP_MIN) >= room {
        PX_PER_OP_MIN
    } else {
        // bursts_w grows with the scale: bisect for the scale that fills the room.
        let (mut low, mut high) = (PX_PER_OP_MIN, PX_PER_OP_MAX);
        for _ in 0..40 {
            let mid = (low + high) / 2.0;
            if bursts_w(mid) <= room { low = mid } else { high = mid }
        }
        low
    };
    let left = (room - bursts_w(px_per_op)).max(0.0);
    let pad = if columns.is_empty() { 0.0 } else { (left / columns.len() as f64).min(PAD_MAX) };
    let mut x = LABEL_W;
    for column in columns.iter_mut() {
        let w = match column.body {
            Body::Burst(_) => burst_w(column.op_span(), px_per_op),
            _ => column.min_w(),
        };
        column.x = x;
        column.w = w + pad;
        x += column.w;
    }
    ((x + MARGIN_R).max(WIDTH_MIN), px_per_op)
}

/// A burst's width: its bars at the common scale with a margin, or enough for its labels.
fn burst_w(op_span: u64, px_per_op: f64) -> f64 {
    (op_span as f64 * px_per_op + 2.0 * BURST_MARGIN).max(BURST_W_MIN)
}

/// (lane, is_write, ops, first_op, last_op) of a write or an erase.
fn flash_ops(kind: &EventKind) -> Option<(Lane, bool, u64, u64, u64)> {
    match *kind {
        EventKind::Write { lane, ops, first_op, last_op, .. } => {
            Some((lane, true, ops.into(), first_op, last_op))
        }
        EventKind::Erase { lane, ops, first_op, last_op } => {
            Some((lane, false, ops.into(), first_op, last_op))
        }
        _ => None,
    }
}

/// The five standard lanes, plus any other the trial wrote.
fn lanes(trial: &Trial) -> Vec<Lane> {
    let mut lanes: BTreeSet<Lane> =
        [Lane::BootState, Lane::App(0), Lane::App(1), Lane::Fs(0), Lane::Fs(1)].into();
    lanes.extend(trial.timeline.iter().filter_map(|e| flash_ops(&e.kind)).map(|(lane, ..)| lane));
    lanes.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Geometry.

struct Frame {
    width: f64,
    height: f64,
    banner_y: f64,
    banner_h: f64,
    steps_y: f64,
    lanes_y: f64,
    lanes: Vec<Lane>,
    device_y: f64,
    axis_y: f64,
    legend_y: f64,
    /// The one scale of every burst.
    px_per_op: f64,
}

impl Frame {
    fn new(width: f64, px_per_op: f64, lanes: &[Lane], banner_lines: usize) -> Frame {
        let banner_y = 58.0;
        let banner_h = 12.0 + 17.0 * banner_lines as f64;
        let steps_y = banner_y + banner_h + 12.0;
        let lanes_y = steps_y + STEPS_H + 6.0;
        let device_y = lanes_y + lanes.len() as f64 * FLASH_LANE_H;
        let axis_y = device_y + DEVICE_LANE_H;
        let legend_y = axis_y + AXIS_H;
        let height = legend_y + LEGEND_H;
        let lanes = lanes.to_vec();
        Frame {
            width,
            height,
            banner_y,
            banner_h,
            steps_y,
            lanes_y,
            lanes,
            device_y,
            axis_y,
            legend_y,
            px_per_op,
        }
    }

    fn lane_y(&self, lane: Lane) -> Option<f64> {
        let i = self.lanes.iter().position(|l| *l == lane)?;
        Some(self.lanes_y + i as f64 * FLASH_LANE_H)
    }

    fn plot_right(&self) -> f64 {
        self.width - MARGIN_R
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing.

fn title(s: &mut Svg, trial: &Trial) {
    let heading = format!("{} on {}", trial.scenario, trial.board);
    s.text(16.0, 26.0, &format!(r#"font-size="18" font-weight="bold" fill="{INK}""#), &heading);
    let sub = format!(
        "{} · seed {} · device time {} · wall {:.3} s · {} steps, {} events",
        trial.file.display(),
        trial.seed,
        fmt_ms(trial.device_ms),
        trial.duration.as_secs_f64(),
        trial.steps.len(),
        trial.timeline.len()
    );
    s.text(16.0, 46.0, &format!(r#"font-size="12" fill="{MUTED}""#), &sub);
}

fn banner_lines(trial: &Trial, width: f64) -> Vec<String> {
    let text = match &trial.outcome {
        Outcome::Passed => format!("PASSED: all {} steps held", trial.steps.len()),
        other => shout_first_word(&outcome_text(other)),
    };
    let chars = ((width - 48.0) / (14.0 * CHAR_EM)) as usize;
    wrap(&text, chars, 4)
}

fn banner_box(s: &mut Svg, outcome: &Outcome, lines: &[String], frame: &Frame) {
    let (fill, ink) = match outcome {
        Outcome::Passed => (BOOT, "#fff"),
        Outcome::Failed { .. } => (CUT, "#fff"),
        Outcome::Skipped { .. } => ("#bbb", INK),
        Outcome::Error { .. } => (ERASE, INK),
    };
    s.open_titled(&outcome_text(outcome));
    s.rect(16.0, frame.banner_y, frame.width - 32.0, frame.banner_h, &format!(r#"fill="{fill}" rx="4""#));
    for (i, line) in lines.iter().enumerate() {
        let y = frame.banner_y + 20.0 + 17.0 * i as f64;
        s.text(28.0, y, &format!(r#"font-size="14" font-weight="bold" fill="{ink}""#), line);
    }
    s.close_titled();
}

fn lane_backgrounds(s: &mut Svg, frame: &Frame) {
    let right = frame.plot_right();
    for (i, lane) in frame.lanes.iter().enumerate() {
        let y = frame.lanes_y + i as f64 * FLASH_LANE_H;
        let fill = if i % 2 == 0 { "#f6f7f9" } else { "#ffffff" };
        s.rect(LABEL_W, y, right - LABEL_W, FLASH_LANE_H, &format!(r#"fill="{fill}""#));
        s.text(
            LABEL_W - 8.0,
            y + 27.0,
            &format!(r##"font-size="12" text-anchor="end" fill="{INK}""##),
            &lane.name(),
        );
    }
    s.rect(LABEL_W, frame.device_y, right - LABEL_W, DEVICE_LANE_H, r##"fill="#fbfaf4""##);
    s.text(
        LABEL_W - 8.0,
        frame.device_y + 18.0,
        &format!(r#"font-size="12" font-weight="bold" text-anchor="end" fill="{INK}""#),
        "device",
    );
    s.text(
        LABEL_W - 8.0,
        frame.steps_y + 24.0,
        &format!(r#"font-size="12" font-weight="bold" text-anchor="end" fill="{INK}""#),
        "steps",
    );
    let frame_attrs = r##"fill="none" stroke="#c8ccd2""##;
    s.rect(LABEL_W, frame.lanes_y, right - LABEL_W, frame.axis_y - frame.lanes_y, frame_attrs);
    s.line(LABEL_W, frame.device_y, right, frame.device_y, r##"stroke="#c8ccd2""##);
}

/// A pale band in the app lane of the slot that runs, from its boot to the next power cut,
/// crash, watchdog reset, brick or boot.
fn running_bands(s: &mut Svg, columns: &[Column], frame: &Frame) {
    let mut open: Option<(u8, f64)> = None;
    let mut bands: Vec<(u8, f64, f64)> = Vec::new();
    for column in columns {
        for event in column.points() {
            if stops_firmware(&event.kind)
                && let Some((slot, x0)) = open.take()
            {
                bands.push((slot, x0, column.anchor()));
            }
            if let EventKind::Boot { slot, .. } = event.kind {
                open = Some((slot, column.anchor()));
            }
        }
    }
    if let Some((slot, x0)) = open {
        bands.push((slot, x0, columns.last().map_or(x0, |c| c.x + c.w)));
    }
    for (slot, x0, x1) in bands {
        let Some(y) = frame.lane_y(Lane::App(slot)) else { continue };
        s.rect(x0, y + 3.0, x1 - x0, FLASH_LANE_H - 6.0, &format!(r##"fill="{RUNNING}" stroke="#9fd3a6""##));
        s.text(x0 + 4.0, y + FLASH_LANE_H - 7.0, &format!(r#"font-size="9" fill="{BOOT}""#), "running");
    }
}

/// Whether the firmware that ran stops here: a new boot, a power-on (so it was off), a power
/// cut, a crash, a watchdog reset, a brick.
fn stops_firmware(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Boot { .. }
            | EventKind::PowerOn
            | EventKind::PowerCut { .. }
            | EventKind::Crash
            | EventKind::WatchdogReset
            | EventKind::Bricked { .. }
    )
}

/// The steps as a band of segments over their columns, each with its number and summary; the
/// failing step red. Dashed lines carry the step boundaries down through the lanes.
fn steps_band(s: &mut Svg, trial: &Trial, columns: &[Column], frame: &Frame) {
    let mut start = 0;
    while start < columns.len() {
        let step = columns[start].step;
        let end = start + columns[start..].iter().take_while(|c| c.step == step).count();
        let (x0, x1) = (columns[start].x, columns[end - 1].x + columns[end - 1].w);
        let record = trial.steps.iter().find(|r| r.index == step);
        let failed = record.is_some_and(|r| !r.passed);
        let (fill, stroke) = if failed { ("#f9d2d2", CUT) } else { ("#e6ecf5", "#aab8cc") };
        s.rect(
            x0 + 1.0,
            frame.steps_y,
            x1 - x0 - 2.0,
            STEPS_H,
            &format!(r#"fill="{fill}" stroke="{stroke}" rx="3""#),
        );
        let summary = record.map_or("(no step record)", |r| r.summary.as_str());
        let label = match record {
            Some(r) if !r.passed => format!("{}. FAILED: {summary}", step + 1),
            _ => format!("{}. {summary}", step + 1),
        };
        let chars = ((x1 - x0 - 10.0) / (10.5 * CHAR_EM)).max(3.0) as usize;
        let lines = wrap(&label, chars, 3);
        let ink = if failed { CUT } else { INK };
        s.open_titled(&format!("step {}, line {}: {summary}", step + 1, record.map_or(0, |r| r.line)));
        for (i, line) in lines.iter().enumerate() {
            let y = frame.steps_y + 14.0 + 13.0 * i as f64;
            s.text(x0 + 6.0, y, &format!(r#"font-size="10.5" fill="{ink}""#), line);
        }
        s.close_titled();
        if start > 0 {
            s.line(x0, frame.steps_y, x0, frame.axis_y, r##"stroke="#9aa5b5" stroke-dasharray="4 3""##);
        }
        start = end;
    }
}

/// A burst: in each lane, its writes and erases at their operation indices, the bytes written
/// above and the operation counts below; the operation a power cut struck as a red tick.
fn burst(s: &mut Svg, trial: &Trial, column: &Column, events: &[&TimelineEvent], frame: &Frame) {
    let ranges: Vec<_> = events.iter().filter_map(|e| flash_ops(&e.kind)).collect();
    let op_min = ranges.iter().map(|r| r.3).min().unwrap_or(0);
    let x0 = column.x + BURST_MARGIN;
    let op_x = |op: u64| x0 + op.saturating_sub(op_min).min(OP_SPAN_MAX) as f64 * frame.px_per_op;
    for &(lane, is_write, _, first, last) in &ranges {
        let Some(y) = frame.lane_y(lane) else { continue };
        let w = ((last.saturating_sub(first) + 1).min(OP_SPAN_MAX) as f64 * frame.px_per_op).max(2.5);
        let fill = if is_write { WRITE } else { ERASE };
        s.rect(op_x(first), y + 16.0, w, 14.0, &format!(r#"fill="{fill}""#));
    }
    for lane in &frame.lanes {
        let Some(first) = ranges.iter().filter(|r| r.0 == *lane).map(|r| r.3).min() else { continue };
        // The labels start over the lane's first bar, as far right as leaves them room.
        let x = op_x(first).min(column.x + column.w - BURST_W_MIN + BURST_MARGIN);
        lane_annotation(s, *lane, events, x, frame);
    }
    for op in cut_ops(trial) {
        let Some(&(lane, ..)) = ranges.iter().find(|r| (r.3..=r.4).contains(&op)) else { continue };
        let y = frame.lane_y(lane).unwrap_or(0.0);
        let x = op_x(op) + frame.px_per_op / 2.0;
        s.line(x, y + 13.0, x, y + 33.0, &format!(r#"stroke="{CUT}" stroke-width="3""#));
    }
}

/// The bytes a burst wrote into `lane` (above its bars) and its operation counts (below).
fn lane_annotation(s: &mut Svg, lane: Lane, events: &[&TimelineEvent], x: f64, frame: &Frame) {
    let (mut writes, mut erases, mut bytes) = (0u64, 0u64, 0u64);
    for event in events {
        match event.kind {
            EventKind::Write { lane: l, ops, bytes: b, .. } if l == lane => {
                (writes, bytes) = (writes + u64::from(ops), bytes + b)
            }
            EventKind::Erase { lane: l, ops, .. } if l == lane => erases += u64::from(ops),
            _ => {}
        }
    }
    let y = frame.lane_y(lane).unwrap_or(0.0);
    let counts: Vec<String> = [(writes, "wr"), (erases, "er")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    let tip = format!(
        "{}: {} written in {}, {}",
        lane.name(),
        fmt_bytes(bytes),
        plural(writes, "write"),
        plural(erases, "erase")
    );
    s.open_titled(&tip);
    if writes > 0 {
        s.text(
            x,
            y + 12.0,
            &format!(r#"font-size="10" font-weight="bold" fill="{WRITE}""#),
            &fmt_bytes(bytes),
        );
    }
    s.text(x, y + 41.0, &format!(r#"font-size="9.5" fill="{MUTED}""#), &counts.join(" + "));
    s.close_titled();
}

fn cut_ops(trial: &Trial) -> impl Iterator<Item = u64> + '_ {
    trial.timeline.iter().filter_map(|e| match e.kind {
        EventKind::PowerCut { op, .. } => op,
        _ => None,
    })
}

/// A device event: a marker in the device lane with a short bold name and its detail wrapped
/// below (to the right of the line for a power cut); a power-on before a boot is a black dot
/// beside the boot's. A merge also draws its copy between the fs lanes.
fn point(
    s: &mut Svg,
    trial: &Trial,
    column: &Column,
    events: &[&TimelineEvent],
    columns: &[Column],
    frame: &Frame,
) {
    let Some(event) = events.last() else { return };
    let (name, detail, color) = describe(trial, &event.kind);
    let cx = column.anchor();
    let cy = frame.device_y + 14.0;
    let tip: Vec<String> =
        events.iter().map(|e| format!("{}: {}", fmt_ms(e.at_ms), event_line(trial, &e.kind))).collect();
    s.open_titled(&tip.join("; "));
    let marker_x = if events.len() > 1 { cx + 8.0 } else { cx };
    if events.len() > 1 {
        s.circle(cx - 8.0, cy, 5.0, &format!(r##"fill="{INK}" stroke="#fff" stroke-width="1.5""##));
    }
    match event.kind {
        EventKind::PowerCut { .. } => {}
        EventKind::Crash | EventKind::WatchdogReset | EventKind::Bricked { .. } => {
            s.rect(marker_x - 6.0, cy - 6.0, 12.0, 12.0, &format!(r#"fill="{color}""#));
        }
        _ => s.circle(marker_x, cy, 6.5, &format!(r##"fill="{color}" stroke="#fff" stroke-width="1.5""##)),
    }
    let (text_x, anchor, room) = if column.is_cut() {
        (cx + 8.0, "start", column.x + column.w - cx - 12.0)
    } else {
        (cx, "middle", column.w - 6.0)
    };
    let weight = if matches!(event.kind, EventKind::PowerCut { .. } | EventKind::Bricked { .. }) {
        "bold"
    } else {
        "600"
    };
    let name_attrs =
        format!(r#"font-size="11" font-weight="{weight}" text-anchor="{anchor}" fill="{color}" {HALO}"#);
    s.text(text_x, cy + 22.0, &name_attrs, &name);
    let detail_attrs = format!(r#"font-size="10" text-anchor="{anchor}" fill="{INK}" {HALO}"#);
    for (i, line) in wrap(&detail, (room / (10.0 * CHAR_EM)) as usize, 4).iter().enumerate() {
        s.text(text_x, cy + 36.0 + 12.0 * i as f64, &detail_attrs, line);
    }
    s.close_titled();
    if let EventKind::Merge { .. } = event.kind
        && let Some(slot) = running_slot(columns, column)
    {
        merge_arrow(s, cx, slot, frame);
    }
}

/// The failed expectation, in the device lane at the end of its step.
fn verdict(s: &mut Svg, column: &Column, message: &str, frame: &Frame) {
    let (cx, cy) = (column.anchor(), frame.device_y + 14.0);
    s.open_titled(message);
    s.rect(cx - 6.0, cy - 6.0, 12.0, 12.0, &format!(r#"fill="{CUT}""#));
    let name_attrs = format!(r#"font-size="11" font-weight="bold" text-anchor="middle" fill="{CUT}" {HALO}"#);
    s.text(cx, cy + 22.0, &name_attrs, "CHECK FAILED");
    let detail_attrs = format!(r#"font-size="10" text-anchor="middle" fill="{CUT}" {HALO}"#);
    for (i, line) in wrap(message, ((column.w - 6.0) / (10.0 * CHAR_EM)) as usize, 4).iter().enumerate() {
        s.text(cx, cy + 36.0 + 12.0 * i as f64, &detail_attrs, line);
    }
    s.close_titled();
}

/// The name, detail and colour of a device event.
fn describe(trial: &Trial, kind: &EventKind) -> (String, String, &'static str) {
    match kind {
        EventKind::PowerOn => ("power on".into(), String::new(), INK),
        EventKind::PowerCut { op, how } => {
            let mut detail = match op {
                Some(op) => format!("at op {op}"),
                None => "op unknown".into(),
            };
            if !how.is_empty() {
                let _ = write!(detail, " ({how})");
            }
            if let Some(struck) = op.and_then(|op| struck_by(trial, op)) {
                let _ = write!(detail, "; struck {struck}");
            }
            ("POWER CUT".into(), detail, CUT)
        }
        EventKind::Boot { slot, reason } => (format!("boot slot {slot}"), reason.clone(), BOOT),
        EventKind::Merge { copied } => {
            ("fs merge".into(), format!("{} copied", plural(u64::from(*copied), "file")), MERGE)
        }
        EventKind::Commit => ("commit".into(), "image committed".into(), COMMIT),
        EventKind::Revert { why } => ("revert".into(), why.clone(), REVERT),
        EventKind::UpdateApplied { slot } => {
            ("update applied".into(), format!("slot {slot} boots next"), WRITE)
        }
        EventKind::Refused { message } => ("refused".into(), message.clone(), REFUSED),
        EventKind::Crash => ("crash".into(), "firmware crashed".into(), CRASH),
        EventKind::WatchdogReset => ("watchdog".into(), "watchdog reset".into(), CRASH),
        EventKind::Bricked { why } => ("BRICKED".into(), why.clone(), "#000"),
        EventKind::Note { text } => ("note".into(), text.clone(), NOTE),
        EventKind::Write { .. } | EventKind::Erase { .. } => (event_text(kind), String::new(), WRITE),
    }
}

/// The slot running at `column`: the slot of the last boot before it, unless the firmware
/// stopped since.
fn running_slot(columns: &[Column], column: &Column) -> Option<u8> {
    let mut slot = None;
    for event in columns.iter().take_while(|c| c.x < column.x).flat_map(Column::points) {
        match event.kind {
            EventKind::Boot { slot: s, .. } => slot = Some(s),
            ref kind if stops_firmware(kind) => slot = None,
            _ => {}
        }
    }
    slot
}

/// An arrow from the other fs slot to the running one: the merge copies old files forward.
fn merge_arrow(s: &mut Svg, x: f64, slot: u8, frame: &Frame) {
    let (Some(to), Some(from)) = (frame.lane_y(Lane::Fs(slot)), frame.lane_y(Lane::Fs(1 - slot.min(1))))
    else {
        return;
    };
    let (y0, y1) = (from + FLASH_LANE_H / 2.0, to + FLASH_LANE_H / 2.0);
    let dir = if y1 > y0 { 1.0 } else { -1.0 };
    s.line(x, y0, x, y1 - dir * 7.0, &format!(r#"stroke="{MERGE}" stroke-width="2.5""#));
    let head =
        format!("{x:.1},{y1:.1} {:.1},{:.1} {:.1},{:.1}", x - 5.0, y1 - dir * 8.0, x + 5.0, y1 - dir * 8.0);
    let _ = writeln!(s.out, r#"<polygon points="{head}" fill="{MERGE}"/>"#);
}

/// Power cuts: a bold red line across every lane, with a bolt in the device lane. Drawn before
/// the events so that their labels (haloed in white) stay readable across it.
fn cut_lines(s: &mut Svg, columns: &[Column], frame: &Frame) {
    for column in columns.iter().filter(|c| c.is_cut()) {
        let x = column.anchor();
        s.line(x, frame.lanes_y, x, frame.axis_y, &format!(r#"stroke="{CUT}" stroke-width="4""#));
        let bolt = format!(
            "{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
            x - 7.0,
            frame.device_y + 6.0,
            x + 7.0,
            frame.device_y + 6.0,
            x,
            frame.device_y + 22.0,
            x - 7.0,
            frame.device_y + 6.0
        );
        let _ = writeln!(s.out, r#"<polygon points="{bolt}" fill="{CUT}"/>"#);
    }
}

/// The device-time axis: each column's time as its tick (repeated times left out), and a
/// marked break where time jumped by a second or more.
fn axis(s: &mut Svg, columns: &[Column], frame: &Frame) {
    let y = frame.axis_y;
    s.text(
        LABEL_W - 8.0,
        y + 16.0,
        &format!(r#"font-size="11" text-anchor="end" fill="{MUTED}""#),
        "device time",
    );
    let mut previous: Option<u64> = None;
    for column in columns {
        if previous == Some(column.at_ms) {
            continue;
        }
        if let Some(before) = previous
            && column.at_ms >= before.saturating_add(1000)
        {
            let x = column.x;
            s.line(x - 4.0, y + 6.0, x + 0.0, y - 6.0, &format!(r#"stroke="{MUTED}" stroke-width="1.5""#));
            s.line(x + 0.0, y + 6.0, x + 4.0, y - 6.0, &format!(r#"stroke="{MUTED}" stroke-width="1.5""#));
            let gap = format!("+{} later", fmt_ms(column.at_ms - before));
            s.text(x + 3.0, y + 31.0, &format!(r#"font-size="10" font-style="italic" fill="{MUTED}""#), &gap);
        }
        let x = column.anchor();
        s.line(x, y, x, y + 5.0, &format!(r#"stroke="{MUTED}""#));
        s.text(
            x,
            y + 16.0,
            &format!(r#"font-size="10" text-anchor="middle" fill="{INK}""#),
            &fmt_ms(column.at_ms),
        );
        previous = Some(column.at_ms);
    }
}

/// Two rows: what the flash lanes show, then the device lane's markers.
fn legend(s: &mut Svg, frame: &Frame) {
    let bar = |color: &'static str| Swatch::Bar(color);
    let dot = |color: &'static str| Swatch::Dot(color);
    let flash = [
        (bar(WRITE), "write (width ∝ flash operations)"),
        (bar(ERASE), "erase"),
        (Swatch::Running, "slot running"),
        (Swatch::Cut, "power cut"),
    ];
    let device = [
        (dot(INK), "power on"),
        (dot(BOOT), "boot"),
        (dot(COMMIT), "commit"),
        (dot(REVERT), "revert"),
        (dot(MERGE), "fs merge"),
        (dot(WRITE), "update applied"),
        (dot(REFUSED), "refused"),
        (Swatch::Square(CRASH), "crash, watchdog"),
        (Swatch::Square("#000"), "bricked"),
        (dot(NOTE), "note"),
    ];
    for (row, items) in [("flash", &flash[..]), ("device", &device[..])].into_iter().enumerate() {
        let y = frame.legend_y + 12.0 + 20.0 * row as f64;
        s.text(
            LABEL_W - 8.0,
            y + 4.0,
            &format!(r#"font-size="11" text-anchor="end" fill="{MUTED}""#),
            items.0,
        );
        let mut x = LABEL_W;
        for (swatch, label) in items.1 {
            swatch.draw(s, x, y);
            s.text(x + 18.0, y + 4.0, &format!(r#"font-size="11" fill="{INK}""#), label);
            x += 30.0 + label.chars().count() as f64 * 11.0 * CHAR_EM;
        }
    }
}

enum Swatch {
    Bar(&'static str),
    Dot(&'static str),
    Square(&'static str),
    Running,
    Cut,
}

impl Swatch {
    fn draw(&self, s: &mut Svg, x: f64, y: f64) {
        match *self {
            Swatch::Bar(color) => s.rect(x, y - 5.0, 14.0, 10.0, &format!(r#"fill="{color}""#)),
            Swatch::Dot(color) => s.circle(x + 7.0, y, 5.5, &format!(r#"fill="{color}""#)),
            Swatch::Square(color) => s.rect(x + 2.0, y - 5.0, 10.0, 10.0, &format!(r#"fill="{color}""#)),
            Swatch::Running => {
                s.rect(x, y - 5.0, 14.0, 10.0, &format!(r##"fill="{RUNNING}" stroke="#9fd3a6""##))
            }
            Swatch::Cut => {
                s.line(x + 7.0, y - 8.0, x + 7.0, y + 8.0, &format!(r#"stroke="{CUT}" stroke-width="4""#))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text and SVG primitives.

/// Greedy word wrap to `chars` per line and at most `lines_max` lines; a longer text ends in `…`.
fn wrap(text: &str, chars: usize, lines_max: usize) -> Vec<String> {
    let chars = chars.max(4);
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while !word.is_empty() {
            let used = current.chars().count();
            let sep = usize::from(used > 0);
            if used + sep + word.len() <= chars {
                if sep == 1 {
                    current.push(' ');
                }
                current.extend(word.drain(..));
            } else if used == 0 {
                current.extend(word.drain(..chars));
            } else {
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > lines_max {
        lines.truncate(lines_max);
        let last = &mut lines[lines_max - 1];
        let keep: String = last.chars().take(chars - 1).collect();
        *last = format!("{keep}…");
    }
    lines
}

/// `failed at …` → `FAILED at …`: the outcome's first word in capitals, for the banner.
fn shout_first_word(text: &str) -> String {
    match text.split_once(' ') {
        Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
        None => text.to_uppercase(),
    }
}

/// An SVG document under construction. Callers pass attributes they wrote themselves; every
/// text goes through [`esc`].
struct Svg {
    out: String,
}

impl Svg {
    fn new(width: f64, height: f64) -> Svg {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
        );
        let _ = writeln!(out, r##"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#fff"/>"##);
        Svg { out }
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, attrs: &str) {
        let _ = writeln!(self.out, r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" {attrs}/>"#);
    }

    fn circle(&mut self, cx: f64, cy: f64, r: f64, attrs: &str) {
        let _ = writeln!(self.out, r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r:.1}" {attrs}/>"#);
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, attrs: &str) {
        let _ = writeln!(self.out, r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {attrs}/>"#);
    }

    fn text(&mut self, x: f64, y: f64, attrs: &str, text: &str) {
        let _ = writeln!(self.out, r#"<text x="{x:.1}" y="{y:.1}" {attrs}>{}</text>"#, esc(text));
    }

    /// Opens a group whose tooltip is `title` (the full text of what it shows shortened).
    fn open_titled(&mut self, title: &str) {
        let _ = writeln!(self.out, "<g><title>{}</title>", esc(title));
    }

    fn close_titled(&mut self) {
        self.out.push_str("</g>\n");
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}
