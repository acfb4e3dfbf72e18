//! Reports written from a [`crate::result::Run`]: JUnit XML for CI ([`junit`]), JSON for tools
//! ([`json`]), a per-run log folder ([`logdir`]), and a timeline picture of each trial
//! ([`timeline`]).
//!
//! Every report is a function of the `Run` alone: no clock, no environment, no file reads. The
//! same `Run` gives the same bytes, so reports diff cleanly and snapshot-test.
//!
//! The plain-text pieces shared by the reports live here: a step list, the event trace, the
//! summary. Texts for people number steps from 1 (`step 3`); the JSON keeps the 0-based index.

use std::fmt::Write as _;

use crate::result::{EventKind, Lane, Outcome, Run, Trial};

pub mod json;
pub mod junit;
pub mod logdir;
pub mod timeline;

/// Device time for people: `850 ms` below a second, `300.012 s` above.
pub fn fmt_ms(ms: u64) -> String {
    if ms < 1000 { format!("{ms} ms") } else { format!("{}.{:03} s", ms / 1000, ms % 1000) }
}

/// A byte count for people: `256 B`, `57.5 KiB`, `1.2 MiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    let (value, unit) = match bytes {
        b if b < KIB => return format!("{b} B"),
        b if b < KIB * KIB => (b as f64 / KIB as f64, "KiB"),
        b => (b as f64 / (KIB * KIB) as f64, "MiB"),
    };
    let text = format!("{value:.1}");
    format!("{} {unit}", text.strip_suffix(".0").unwrap_or(&text))
}

/// One event as a line of text, without its time: `write app slot 1: 57.5 KiB in 230 ops
/// (ops 12..=241)`.
pub fn event_text(kind: &EventKind) -> String {
    match kind {
        EventKind::Write { lane, ops, bytes, first_op, last_op } => format!(
            "write {}: {} in {} (ops {first_op}..={last_op})",
            lane.name(),
            fmt_bytes(*bytes),
            plural(u64::from(*ops), "op")
        ),
        EventKind::Erase { lane, ops, first_op, last_op } => {
            format!("erase {}: {} (ops {first_op}..={last_op})", lane.name(), plural(u64::from(*ops), "op"))
        }
        EventKind::PowerOn => "power on".into(),
        EventKind::PowerCut { op, how } => {
            let at = op.map(|op| format!(" at op {op}")).unwrap_or_default();
            let how = if how.is_empty() { String::new() } else { format!(" ({how})") };
            format!("POWER CUT{at}{how}")
        }
        EventKind::Boot { slot, reason } => format!("boot slot {slot} ({reason})"),
        EventKind::Merge { copied } => format!("fs merge: {} copied", plural(u64::from(*copied), "file")),
        EventKind::Commit => "commit".into(),
        EventKind::Revert { why } => format!("revert ({why})"),
        EventKind::UpdateApplied { slot } => format!("update applied to slot {slot}"),
        EventKind::Refused { message } => format!("update refused: {message}"),
        EventKind::Crash => "firmware crashed".into(),
        EventKind::WatchdogReset => "watchdog reset".into(),
        EventKind::Bricked { why } => format!("BRICKED: {why}"),
        EventKind::Note { text } => format!("note: {text}"),
    }
}

/// The flash operation a power cut struck, when the trace shows it: the write or erase whose
/// operation range holds `op`, as `app slot 1 write (ops 40..=57)`.
pub fn struck_by(trial: &Trial, op: u64) -> Option<String> {
    trial.timeline.iter().find_map(|event| {
        let (lane, what, first, last) = flash_range(&event.kind)?;
        (first..=last).contains(&op).then(|| format!("{} {what} (ops {first}..={last})", lane.name()))
    })
}

fn flash_range(kind: &EventKind) -> Option<(Lane, &'static str, u64, u64)> {
    match *kind {
        EventKind::Write { lane, first_op, last_op, .. } => Some((lane, "write", first_op, last_op)),
        EventKind::Erase { lane, first_op, last_op, .. } => Some((lane, "erase", first_op, last_op)),
        _ => None,
    }
}

/// The outcome in one line: `passed`, `failed at step 3 (line 23): …`, `skipped: …`, `error: …`.
pub fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "passed".into(),
        Outcome::Failed { step, line, message } => {
            format!("failed at step {} (line {line}): {message}", step + 1)
        }
        Outcome::Skipped { reason } => format!("skipped: {reason}"),
        Outcome::Error { message } => format!("error: {message}"),
    }
}

/// The trial's steps, one a line: number, line, verdict, device times, summary.
pub fn steps_text(trial: &Trial) -> String {
    let mut out = String::new();
    for step in &trial.steps {
        let verdict = if step.passed { "ok    " } else { "FAILED" };
        let span = format!("{} .. {}", fmt_ms(step.start_ms), fmt_ms(step.end_ms));
        let _ = writeln!(
            out,
            "step {:>2}  line {:>3}  {verdict}  {span:<24}  {}",
            step.index + 1,
            step.line,
            step.summary
        );
    }
    out
}

/// The trial's timeline, one event a line, with device time and step.
pub fn events_text(trial: &Trial) -> String {
    let mut out = String::new();
    for event in &trial.timeline {
        let text = event_line(trial, &event.kind);
        let _ = writeln!(out, "{:>12}  step {:>2}  {text}", fmt_ms(event.at_ms), event.step + 1);
    }
    out
}

/// [`event_text`], and for a power cut the operation it struck when the trace shows it.
pub fn event_line(trial: &Trial, kind: &EventKind) -> String {
    let mut text = event_text(kind);
    if let EventKind::PowerCut { op: Some(op), .. } = *kind
        && let Some(struck) = struck_by(trial, op)
    {
        let _ = write!(text, ", struck {struck}");
    }
    text
}

/// The console, one line each, as the board and the runner wrote it.
pub fn console_text(trial: &Trial) -> String {
    let mut out = String::new();
    for line in &trial.console {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// One line per trial, then the totals.
pub fn summary_text(run: &Run) -> String {
    let mut out = String::new();
    for trial in &run.trials {
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:<10} {:>10}  {}",
            trial.outcome.label(),
            trial.scenario,
            trial.board,
            fmt_seconds(trial.duration.as_secs_f64()),
            match &trial.outcome {
                Outcome::Passed => format!("({})", trial.file.display()),
                other => outcome_text(other),
            }
        );
    }
    let _ =
        writeln!(out, "{}; seed {}; {}", totals_text(run), run.seed, fmt_seconds(run.duration.as_secs_f64()));
    out
}

/// `3 passed, 1 failed, 1 skipped, 0 errors`.
pub fn totals_text(run: &Run) -> String {
    format!(
        "{} passed, {} failed, {} skipped, {}",
        run.count("passed"),
        run.count("failed"),
        run.count("skipped"),
        plural(run.count("error") as u64, "error")
    )
}

/// `1 op`, `2 ops`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 { format!("{n} {noun}") } else { format!("{n} {noun}s") }
}

fn fmt_seconds(seconds: f64) -> String {
    format!("{seconds:.3} s")
}
