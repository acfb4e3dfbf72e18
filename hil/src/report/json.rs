//! JSON for tools: one document per run. The schema is stable; a change that removes or renames a
//! key bumps `schema`. Keys marked `?` are left out when they do not apply.
//!
//! **Run**
//!
//! | key          | type            | meaning                                                    |
//! |--------------|-----------------|------------------------------------------------------------|
//! | `schema`     | integer         | `1`                                                        |
//! | `seed`       | integer         | the run's master seed                                      |
//! | `duration_s` | number          | wall-clock seconds for the whole run                       |
//! | `counts`     | object          | `passed`, `failed`, `skipped`, `error`: trials per outcome |
//! | `log_dir?`   | string          | the per-run log folder, when one was written               |
//! | `started_unix_ms?` | integer   | when the run started, milliseconds since the Unix epoch    |
//! | `hostname?`  | string          | the machine it ran on                                      |
//! | `hil_version?` | string        | the runner's version                                       |
//! | `board_kind?` | string         | the board's backend kind (`sim`, `virtual`, `qemu`)        |
//! | `trials`     | array of Trial  | in run order                                               |
//!
//! **Trial**
//!
//! | key          | type            | meaning                                                    |
//! |--------------|-----------------|------------------------------------------------------------|
//! | `scenario`   | string          | the scenario's name                                        |
//! | `file`       | string          | the scenario file, as the runner was given it              |
//! | `board`      | string          | the board's name (`sim` for the built-in simulator)        |
//! | `outcome`    | string          | `passed`, `failed`, `skipped` or `error`                   |
//! | `message?`   | string          | failed: the expectation's text; skipped: the reason; error: what broke |
//! | `step?`      | integer         | failed: 0-based index of the failing step                  |
//! | `line?`      | integer         | failed: the failing step's line in `file`                  |
//! | `duration_s` | number          | wall-clock seconds                                         |
//! | `device_ms`  | integer         | device (virtual) time at the end, milliseconds             |
//! | `seed`       | integer         | the trial's seed                                           |
//! | `steps`      | array of Step   | the steps that ran, in order                               |
//! | `events`     | array of Event  | the device's timeline, in order                            |
//!
//! **Step**: `index` (0-based), `line`, `summary`, `passed` (bool), `start_ms`, `end_ms` (device
//! time).
//!
//! **Event**: `at_ms` (device time), `step` (0-based index), `kind`, then the kind's fields:
//!
//! | `kind`           | fields                                                            |
//! |------------------|-------------------------------------------------------------------|
//! | `write`          | `lane`, `ops`, `bytes`, `first_op`, `last_op`                     |
//! | `erase`          | `lane`, `ops`, `first_op`, `last_op`                              |
//! | `power_on`       |                                                                   |
//! | `power_cut`      | `op` (integer, or null when unknown), `how`                       |
//! | `boot`           | `slot`, `reason`                                                  |
//! | `merge`          | `copied`                                                          |
//! | `commit`         |                                                                   |
//! | `revert`         | `why`                                                             |
//! | `update_applied` | `slot`                                                            |
//! | `refused`        | `message`                                                         |
//! | `crash`          |                                                                   |
//! | `watchdog_reset` |                                                                   |
//! | `bricked`        | `why`                                                             |
//! | `note`           | `text`                                                            |
//!
//! `lane` is `boot_state`, `app_<n>` or `fs_<n>` (`app_1` is app slot 1). Operation indices
//! (`first_op`, `last_op`, `op`) count the device's flash operations, as `power_cut_at_op` does.

use std::io;
use std::path::Path;

use serde::Serialize;

use crate::result::{EventKind, Lane, Outcome, Run, StepRecord, TimelineEvent, Trial};

/// The schema version written in `schema`.
pub const SCHEMA: u32 = 1;

/// The run as a JSON value (keys sorted, as `serde_json::Value` keeps them).
pub fn to_value(run: &Run) -> serde_json::Value {
    serde_json::to_value(RunDoc::new(run)).expect("the report types always serialise")
}

/// The run as pretty-printed JSON, keys in the order of the tables above.
pub fn to_string(run: &Run) -> String {
    let mut text =
        serde_json::to_string_pretty(&RunDoc::new(run)).expect("the report types always serialise");
    text.push('\n');
    text
}

/// Writes the JSON document to `path`.
pub fn write(run: &Run, path: &Path) -> io::Result<()> {
    std::fs::write(path, to_string(run))
}

#[derive(Serialize)]
struct RunDoc<'a> {
    schema: u32,
    seed: u64,
    duration_s: f64,
    counts: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hil_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    board_kind: Option<&'a str>,
    trials: Vec<TrialDoc<'a>>,
}

#[derive(Serialize)]
struct Counts {
    passed: usize,
    failed: usize,
    skipped: usize,
    error: usize,
}

#[derive(Serialize)]
struct TrialDoc<'a> {
    scenario: &'a str,
    file: String,
    board: &'a str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    duration_s: f64,
    device_ms: u64,
    seed: u64,
    steps: Vec<StepDoc<'a>>,
    events: Vec<EventDoc<'a>>,
}

#[derive(Serialize)]
struct StepDoc<'a> {
    index: usize,
    line: usize,
    summary: &'a str,
    passed: bool,
    start_ms: u64,
    end_ms: u64,
}

#[derive(Serialize)]
struct EventDoc<'a> {
    at_ms: u64,
    step: usize,
    #[serde(flatten)]
    kind: KindDoc<'a>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum KindDoc<'a> {
    Write { lane: String, ops: u32, bytes: u64, first_op: u64, last_op: u64 },
    Erase { lane: String, ops: u32, first_op: u64, last_op: u64 },
    PowerOn,
    PowerCut { op: Option<u64>, how: &'a str },
    Boot { slot: u8, reason: &'a str },
    Merge { copied: u32 },
    Commit,
    Revert { why: &'a str },
    UpdateApplied { slot: u8 },
    Refused { message: &'a str },
    Crash,
    WatchdogReset,
    Bricked { why: &'a str },
    Note { text: &'a str },
}

impl<'a> RunDoc<'a> {
    fn new(run: &'a Run) -> RunDoc<'a> {
        RunDoc {
            schema: SCHEMA,
            seed: run.seed,
            duration_s: run.duration.as_secs_f64(),
            counts: Counts {
                passed: run.count("passed"),
                failed: run.count("failed"),
                skipped: run.count("skipped"),
                error: run.count("error"),
            },
            log_dir: run.log_dir.as_ref().map(|p| p.display().to_string()),
            started_unix_ms: run.info.started_unix_ms,
            hostname: run.info.hostname.as_deref(),
            hil_version: run.info.tool_version.as_deref(),
            board_kind: run.info.board_kind.as_deref(),
            trials: run.trials.iter().map(TrialDoc::new).collect(),
        }
    }
}

impl<'a> TrialDoc<'a> {
    fn new(trial: &'a Trial) -> TrialDoc<'a> {
        let (message, step, line) = match &trial.outcome {
            Outcome::Passed => (None, None, None),
            Outcome::Failed { step, line, message } => (Some(message.as_str()), Some(*step), Some(*line)),
            Outcome::Skipped { reason } => (Some(reason.as_str()), None, None),
            Outcome::Error { message } => (Some(message.as_str()), None, None),
        };
        TrialDoc {
            scenario: &trial.scenario,
            file: trial.file.display().to_string(),
            board: &trial.board,
            outcome: trial.outcome.label(),
            message,
            step,
            line,
            duration_s: trial.duration.as_secs_f64(),
            device_ms: trial.device_ms,
            seed: trial.seed,
            steps: trial.steps.iter().map(StepDoc::new).collect(),
            events: trial.timeline.iter().map(EventDoc::new).collect(),
        }
    }
}

impl<'a> StepDoc<'a> {
    fn new(step: &'a StepRecord) -> StepDoc<'a> {
        StepDoc {
            index: step.index,
            line: step.line,
            summary: &step.summary,
            passed: step.passed,
            start_ms: step.start_ms,
            end_ms: step.end_ms,
        }
    }
}

impl<'a> EventDoc<'a> {
    fn new(event: &'a TimelineEvent) -> EventDoc<'a> {
        EventDoc { at_ms: event.at_ms, step: event.step, kind: KindDoc::new(&event.kind) }
    }
}

impl<'a> KindDoc<'a> {
    fn new(kind: &'a EventKind) -> KindDoc<'a> {
        match kind {
            &EventKind::Write { lane, ops, bytes, first_op, last_op } => {
                KindDoc::Write { lane: lane_key(lane), ops, bytes, first_op, last_op }
            }
            &EventKind::Erase { lane, ops, first_op, last_op } => {
                KindDoc::Erase { lane: lane_key(lane), ops, first_op, last_op }
            }
            EventKind::PowerOn => KindDoc::PowerOn,
            EventKind::PowerCut { op, how } => KindDoc::PowerCut { op: *op, how },
            EventKind::Boot { slot, reason } => KindDoc::Boot { slot: *slot, reason },
            EventKind::Merge { copied } => KindDoc::Merge { copied: *copied },
            EventKind::Commit => KindDoc::Commit,
            EventKind::Revert { why } => KindDoc::Revert { why },
            EventKind::UpdateApplied { slot } => KindDoc::UpdateApplied { slot: *slot },
            EventKind::Refused { message } => KindDoc::Refused { message },
            EventKind::Crash => KindDoc::Crash,
            EventKind::WatchdogReset => KindDoc::WatchdogReset,
            EventKind::Bricked { why } => KindDoc::Bricked { why },
            EventKind::Note { text } => KindDoc::Note { text },
        }
    }
}

/// `boot_state`, `app_1`, `fs_0`: a lane as a JSON key.
pub fn lane_key(lane: Lane) -> String {
    match lane {
        Lane::BootState => "boot_state".into(),
        Lane::App(n) => format!("app_{n}"),
        Lane::Fs(n) => format!("fs_{n}"),
    }
}
