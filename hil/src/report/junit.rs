//! JUnit XML for CI, written with `quick-junit`.
//!
//! | JUnit            | from the run                                                        |
//! |------------------|---------------------------------------------------------------------|
//! | `testsuites`     | name `hil`, time = the run's wall time                              |
//! | `testsuite`      | one per board, in order of first appearance; name = the board       |
//! | `testcase`       | one per trial: name = scenario, classname = `<board>.<file stem>`   |
//! | `time`           | the trial's wall-clock duration, in seconds                         |
//! | `failure`        | message = the expectation's text, type `expectation`, text = `file:line`, the step |
//! | `skipped`        | message = the reason                                                |
//! | `error`          | message = what broke, type `infrastructure`                         |
//! | `properties`     | `seed`, `device_ms`, `file`                                         |
//! | `system-out`     | the outcome, the steps with device times, the console, the trace    |
//!
//! From the run's [`RunInfo`](crate::result::RunInfo), each when known: `timestamp` (UTC) on
//! `testsuites` and every `testsuite`, `hostname` on every `testsuite`, and the suite properties
//! `board` (the board's name), `board_kind` and `hil_version`.
//!
//! No UUIDs and no clock read here: the same run gives the same bytes.

use std::io;
use std::path::Path;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{console_text, events_text, fmt_ms, outcome_text, steps_text};
use crate::result::{Outcome, Run, Trial};

/// The run as a `quick-junit` report.
pub fn report(run: &Run) -> Report {
    let mut report = Report::new("hil");
    report.set_time(run.duration);
    let timestamp = run
        .info
        .started_unix_ms
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.fixed_offset()));
    if let Some(timestamp) = timestamp {
        report.set_timestamp(timestamp);
    }
    let mut boards: Vec<&str> = Vec::new();
    for trial in &run.trials {
        if !boards.contains(&trial.board.as_str()) {
            boards.push(&trial.board);
        }
    }
    for board in boards {
        let mut suite = TestSuite::new(board);
        let trials = run.trials.iter().filter(|t| t.board == board);
        suite.set_time(trials.clone().map(|t| t.duration).sum());
        suite.add_property(Property::new("seed", run.seed.to_string()));
        suite.add_property(Property::new("board", board));
        if let Some(kind) = &run.info.board_kind {
            suite.add_property(Property::new("board_kind", kind.as_str()));
        }
        if let Some(version) = &run.info.tool_version {
            suite.add_property(Property::new("hil_version", version.as_str()));
        }
        if let Some(timestamp) = timestamp {
            suite.set_timestamp(timestamp);
        }
        if let Some(hostname) = &run.info.hostname {
            suite.extra.insert("hostname".into(), hostname.as_str().into());
        }
        suite.add_test_cases(trials.map(test_case));
        report.add_test_suite(suite);
    }
    report
}

/// The JUnit XML text.
pub fn to_string(run: &Run) -> String {
    report(run).to_string().expect("serialising JUnit XML into memory cannot fail")
}

/// Writes the JUnit XML to `path`.
pub fn write(run: &Run, path: &Path) -> io::Result<()> {
    std::fs::write(path, to_string(run))
}

fn test_case(trial: &Trial) -> TestCase {
    let mut case = TestCase::new(trial.scenario.as_str(), status(trial));
    let stem = trial.file.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    case.set_classname(format!("{}.{stem}", trial.board));
    case.set_time(trial.duration);
    case.add_properties([
        Property::new("seed", trial.seed.to_string()),
        Property::new("device_ms", trial.device_ms.to_string()),
        Property::new("file", trial.file.display().to_string()),
    ]);
    case.set_system_out(system_out(trial));
    case
}

fn status(trial: &Trial) -> TestCaseStatus {
    match &trial.outcome {
        Outcome::Passed => TestCaseStatus::success(),
        Outcome::Failed { step, line, message } => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let summary = trial.steps.iter().find(|s| s.index == *step).map(|s| s.summary.as_str());
            let description = format!(
                "{}:{line}: step {}: {}\n{message}",
                trial.file.display(),
                step + 1,
                summary.unwrap_or("(step not recorded)")
            );
            status.set_message(message.as_str()).set_type("expectation").set_description(description);
            status
        }
        Outcome::Skipped { reason } => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(reason.as_str());
            status
        }
        Outcome::Error { message } => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(message.as_str()).set_type("infrastructure");
            status
        }
    }
}

/// What a CI page shows under the test: the outcome, the steps, the console, the trace.
fn system_out(trial: &Trial) -> String {
    format!(
        "{} on {} ({}), seed {}, device time {}: {}\n\n== steps ==\n{}\n== console ==\n{}\n== trace ==\n{}",
        trial.scenario,
        trial.board,
        trial.file.display(),
        trial.seed,
        fmt_ms(trial.device_ms),
        outcome_text(&trial.outcome),
        steps_text(trial),
        console_text(trial),
        events_text(trial)
    )
}
