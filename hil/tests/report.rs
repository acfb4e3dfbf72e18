//! The reports, from a run built by hand: JUnit and JSON snapshots, the timeline picture's
//! well-formedness and content, and the log folder's files.
//!
//! Set `HIL_REPORT_KEEP=1` to keep the log folder the test writes (its path is printed) and look
//! at the pictures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ota_hil::report::{self, json, junit, logdir, timeline};
use ota_hil::result::{EventKind, Lane, Outcome, Run, RunInfo, StepRecord, TimelineEvent, Trial};

const FAILING_MESSAGE: &str = "expected running version 2.0.0 & committed, found 1.0.0 in slot 0 <rolled back after commit_timeout 300 s>";

fn step(index: usize, line: usize, summary: &str, passed: bool, start_ms: u64, end_ms: u64) -> StepRecord {
    StepRecord { index, line, summary: summary.into(), passed, start_ms, end_ms }
}

fn at(at_ms: u64, step: usize, kind: EventKind) -> TimelineEvent {
    TimelineEvent { at_ms, step, kind }
}

fn write(lane: Lane, ops: u32, bytes: u64, first_op: u64) -> EventKind {
    EventKind::Write { lane, ops, bytes, first_op, last_op: first_op + u64::from(ops) - 1 }
}

fn erase(lane: Lane, ops: u32, first_op: u64) -> EventKind {
    EventKind::Erase { lane, ops, first_op, last_op: first_op + u64::from(ops) - 1 }
}

fn boot(slot: u8, reason: &str) -> EventKind {
    EventKind::Boot { slot, reason: reason.into() }
}

/// Provision, push 2.0.0 (erases and writes to app slot 1 and fs slot 1, then the finalize
/// record), reboot into it, merge, commit, check.
fn passed_trial() -> Trial {
    Trial {
        scenario: "commit".into(),
        file: "scenarios/commit.toml".into(),
        board: "sim".into(),
        outcome: Outcome::Passed,
        duration: Duration::from_millis(84),
        device_ms: 5_012,
        seed: 42,
        steps: vec![
            step(0, 4, "provision 1.0.0 (fixtures/app-1.0.0.zip)", true, 0, 2),
            step(1, 8, "push 2.0.0 over rpc", true, 2, 40),
            step(2, 12, "reboot", true, 40, 1_050),
            step(3, 15, "commit over rpc", true, 5_000, 5_000),
            step(4, 18, "expect running 2.0.0, committed, conf9.json intact", true, 5_000, 5_012),
        ],
        console: vec![
            "[      0 ms] boot: slot 0, committed image".into(),
            "[     12 ms] rpc OTA.Begin {\"size\": 77824}".into(),
            "[     40 ms] rpc OTA.End -> update applied to slot 1".into(),
            "[   1040 ms] boot: slot 1, first boot of an uncommitted image".into(),
            "[   5000 ms] rpc OTA.Commit".into(),
        ],
        timeline: vec![
            at(0, 0, EventKind::PowerOn),
            at(0, 0, boot(0, "committed image")),
            at(12, 1, erase(Lane::App(1), 16, 1)),
            at(12, 1, write(Lane::App(1), 230, 58_880, 17)),
            at(30, 1, erase(Lane::Fs(1), 4, 247)),
            at(30, 1, write(Lane::Fs(1), 64, 16_384, 251)),
            at(40, 1, write(Lane::BootState, 1, 256, 315)),
            at(40, 1, EventKind::UpdateApplied { slot: 1 }),
            at(1_040, 2, EventKind::PowerOn),
            at(1_040, 2, boot(1, "first boot of an uncommitted image")),
            at(1_040, 2, write(Lane::BootState, 1, 256, 316)),
            at(1_050, 2, EventKind::Merge { copied: 1 }),
            at(1_050, 2, write(Lane::Fs(1), 6, 1_536, 317)),
            at(5_000, 3, write(Lane::BootState, 1, 256, 323)),
            at(5_000, 3, EventKind::Commit),
            at(5_012, 4, EventKind::Note { text: "running 2.0.0 in slot 1, committed".into() }),
        ],
    }
}

/// A power cut at op 57 in the middle of the app write, a clean second push, then no commit: the
/// commit timer reverts to slot 0 and the last expectation fails.
fn failed_trial() -> Trial {
    Trial {
        scenario: "power_loss".into(),
        file: "scenarios/power_loss.toml".into(),
        board: "sim".into(),
        outcome: Outcome::Failed { step: 5, line: 24, message: FAILING_MESSAGE.into() },
        duration: Duration::from_millis(131),
        device_ms: 301_062,
        seed: 42,
        steps: vec![
            step(0, 5, "provision 1.0.0", true, 0, 2),
            step(1, 9, "push 2.0.0 over rpc, cut power at flash op 57", true, 2, 20),
            step(2, 13, "power on; expect running 1.0.0", true, 20, 22),
            step(3, 16, "push 2.0.0 over rpc", true, 22, 60),
            step(4, 20, "reboot; wait 300 s", true, 60, 301_061),
            step(5, 24, "expect running 2.0.0, committed", false, 301_061, 301_062),
        ],
        console: vec![
            "[      0 ms] boot: slot 0, committed image".into(),
            "[     18 ms] power cut at flash op 57 (during: torn program)".into(),
            "[ 301060 ms] commit timer expired: reverting to slot 0".into(),
        ],
        timeline: vec![
            at(0, 0, EventKind::PowerOn),
            at(0, 0, boot(0, "committed image")),
            at(10, 1, erase(Lane::App(1), 4, 1)),
            at(10, 1, write(Lane::App(1), 53, 13_568, 5)),
            at(18, 1, EventKind::PowerCut { op: Some(57), how: "during: torn program".into() }),
            at(20, 2, EventKind::PowerOn),
            at(20, 2, boot(0, "committed image; slot 1 never finished")),
            at(30, 3, erase(Lane::App(1), 16, 58)),
            at(30, 3, write(Lane::App(1), 230, 58_880, 74)),
            at(50, 3, write(Lane::Fs(1), 64, 16_384, 304)),
            at(60, 3, write(Lane::BootState, 1, 256, 368)),
            at(60, 3, EventKind::UpdateApplied { slot: 1 }),
            at(1_060, 4, EventKind::PowerOn),
            at(1_060, 4, boot(1, "first boot of an uncommitted image")),
            at(301_060, 4, EventKind::Revert { why: "commit timer expired after 300 s".into() }),
            at(301_060, 4, write(Lane::BootState, 1, 256, 369)),
            at(301_061, 4, boot(0, "revert: slot 1 was never committed")),
        ],
    }
}

fn skipped_trial() -> Trial {
    Trial {
        scenario: "http_push".into(),
        file: "scenarios/http_push.toml".into(),
        board: "virtual".into(),
        outcome: Outcome::Skipped { reason: "board virtual has no http transport".into() },
        duration: Duration::ZERO,
        device_ms: 0,
        seed: 42,
        steps: vec![],
        console: vec![],
        timeline: vec![],
    }
}

fn error_trial() -> Trial {
    Trial {
        scenario: "snapshot".into(),
        file: "scenarios/snapshot.toml".into(),
        board: "virtual".into(),
        outcome: Outcome::Error { message: "the virtual board's process exited with status 101".into() },
        duration: Duration::from_millis(7),
        device_ms: 3,
        seed: 42,
        steps: vec![step(0, 4, "provision 1.0.0", true, 0, 3)],
        console: vec!["[      3 ms] virtual: thread 'main' panicked".into()],
        timeline: vec![at(0, 0, EventKind::PowerOn)],
    }
}

fn sample_run() -> Run {
    Run {
        trials: vec![passed_trial(), failed_trial(), skipped_trial(), error_trial()],
        seed: 42,
        duration: Duration::from_millis(2_500),
        log_dir: None,
        info: RunInfo::default(),
    }
}

#[test]
fn junit_report() {
    insta::assert_snapshot!(junit::to_string(&sample_run()));
}

#[test]
fn json_report() {
    let run = sample_run();
    let text = json::to_string(&run);
    insta::assert_snapshot!(text);
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, json::to_value(&run), "to_string and to_value carry the same document");
    let counts = &parsed["counts"];
    assert_eq!(
        (&counts["passed"], &counts["failed"], &counts["skipped"], &counts["error"]),
        (&1.into(), &1.into(), &1.into(), &1.into())
    );
}

#[test]
fn timeline_of_a_failed_trial_shows_the_cut_the_lanes_and_the_message() {
    let svg = timeline::svg(&failed_trial());
    well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    for lane in ["boot state", "app slot 0", "app slot 1", "fs slot 0", "fs slot 1", "device"] {
        assert!(svg.contains(&format!(">{lane}</text>")), "lane {lane} is labelled");
    }
    assert!(svg.contains(r##"stroke="#d4111b" stroke-width="4""##), "the power cut is a bold red line");
    assert!(svg.contains("POWER CUT"), "the cut is named in the device lane");
    assert!(svg.contains("struck app slot 1 write (ops 5..=57)"), "the cut names the operation it struck");
    assert!(svg.contains(&timeline::esc(FAILING_MESSAGE)), "the failing message is shown, escaped");
    assert!(svg.contains("+300.000 s later"), "the 300 s wait is marked on the axis");
}

#[test]
fn timelines_of_every_outcome_are_well_formed() {
    for trial in sample_run().trials {
        let svg = timeline::svg(&trial);
        well_formed(&svg).unwrap_or_else(|e| panic!("{}: {e}", trial.scenario));
        assert!(
            svg.contains(&format!("{} on {}", trial.scenario, trial.board)),
            "{} has a title",
            trial.scenario
        );
    }
}

#[test]
fn html_lists_failures_first() {
    let html = timeline::html(&sample_run());
    well_formed(&html).unwrap();
    let position = |scenario: &str| html.find(&format!("<h2>{scenario} on")).unwrap();
    assert!(position("power_loss") < position("snapshot"));
    assert!(position("snapshot") < position("http_push"));
    assert!(position("http_push") < position("commit"));
    assert_eq!(html.matches("<svg ").count(), 4, "every trial's picture is inline");
}

#[test]
fn escaping_covers_markup_and_drops_control_characters() {
    assert_eq!(
        timeline::esc("a<b & \"c\" > 'd'\u{1b}[0m"),
        "a&lt;b &amp; &quot;c&quot; &gt; &apos;d&apos;[0m"
    );
}

#[test]
fn slugs_are_filesystem_safe() {
    let check = |input: &str, expect: &str| assert_eq!(logdir::slug(input), expect, "slug of {input:?}");
    check("power_loss", "power-loss");
    check("Power loss / finalize!", "power-loss-finalize");
    check("../../etc/passwd", "etc-passwd");
    check("", "x");
    check("éé", "x");
    check(&"a".repeat(100), &"a".repeat(48));
}

#[test]
fn logdir_writes_the_run_and_every_trial() {
    let base = unique_temp_dir("logdir");
    let run = sample_run();
    let root = logdir::write(&run, &base).unwrap();
    assert_eq!(root, base.join("run-seed-42"));
    let mut files = list(&root, &root);
    files.sort();
    let expect: Vec<String> = [
        "01-commit-sim/console.txt",
        "01-commit-sim/events.txt",
        "01-commit-sim/steps.txt",
        "01-commit-sim/timeline.svg",
        "02-power-loss-sim/console.txt",
        "02-power-loss-sim/events.txt",
        "02-power-loss-sim/steps.txt",
        "02-power-loss-sim/timeline.svg",
        "03-http-push-virtual/console.txt",
        "03-http-push-virtual/events.txt",
        "03-http-push-virtual/steps.txt",
        "03-http-push-virtual/timeline.svg",
        "04-snapshot-virtual/console.txt",
        "04-snapshot-virtual/events.txt",
        "04-snapshot-virtual/steps.txt",
        "04-snapshot-virtual/timeline.svg",
        "junit.xml",
        "report.json",
        "summary.txt",
        "timeline.html",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(files, expect);
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    assert_eq!(read("report.json"), json::to_string(&run));
    assert_eq!(read("junit.xml"), junit::to_string(&run));
    assert_eq!(read("02-power-loss-sim/events.txt"), report::events_text(&run.trials[1]));
    insta::assert_snapshot!("summary_txt", read("summary.txt"));
    insta::assert_snapshot!("power_loss_steps_txt", read("02-power-loss-sim/steps.txt"));
    insta::assert_snapshot!("power_loss_events_txt", read("02-power-loss-sim/events.txt"));

    let again = logdir::write(&run, &base).unwrap();
    assert_eq!(again, base.join("run-seed-42-2"), "a second run does not overwrite the first");
    if std::env::var_os("HIL_REPORT_KEEP").is_some() {
        println!("kept {}", base.display());
    } else {
        std::fs::remove_dir_all(&base).unwrap();
    }
}

/// `latest` names the newest run's folder; the older runs stay beside it.
#[test]
fn latest_names_the_newest_run_and_older_runs_stay() {
    let base = unique_temp_dir("latest");
    let run = sample_run();
    let first = logdir::write(&run, &base).unwrap();
    let latest = base.join(logdir::LATEST);
    assert_eq!(std::fs::canonicalize(&latest).unwrap(), std::fs::canonicalize(&first).unwrap());
    let second = logdir::write(&run, &base).unwrap();
    assert_eq!(std::fs::canonicalize(&latest).unwrap(), std::fs::canonicalize(&second).unwrap());
    assert_eq!(
        std::fs::read_to_string(latest.join("report.json")).unwrap(),
        json::to_string(&run),
        "the link leads to the run's files"
    );
    assert!(first.join("summary.txt").is_file(), "the older run is kept");
    let mut names: Vec<String> =
        std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, ["latest", "run-seed-42", "run-seed-42-2"], "no temporary link is left behind");
    std::fs::remove_dir_all(&base).unwrap();
}

/// The JUnit report carries what CI tools expect when the run knows it: a timestamp, the host,
/// the tool's version and the board.
#[test]
fn junit_carries_timestamp_hostname_version_and_board() {
    let mut run = sample_run();
    run.info = RunInfo {
        started_unix_ms: Some(1_795_000_000_123),
        hostname: Some("ci-runner-7".into()),
        tool_version: Some("0.1.0".into()),
        board_kind: Some("qemu".into()),
    };
    let xml = junit::to_string(&run);
    well_formed(&xml).unwrap();
    assert!(xml.contains(r#"timestamp="2026-11-18T"#), "{}", head(&xml));
    assert!(xml.contains(r#"hostname="ci-runner-7""#), "{}", head(&xml));
    assert!(xml.contains(r#"<property name="hil_version" value="0.1.0"/>"#));
    assert!(xml.contains(r#"<property name="board" value="sim"/>"#));
    assert!(xml.contains(r#"<property name="board_kind" value="qemu"/>"#));
    let json = json::to_value(&run);
    assert_eq!(json["hostname"], "ci-runner-7");
    assert_eq!(json["started_unix_ms"], 1_795_000_000_123u64);
}

fn unique_temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ota-hil-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn list(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(list(root, &path));
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
    out
}

/// A small well-formedness check, enough to catch what a browser's XML parser would refuse:
/// tags balance, attribute values are quoted and unique per tag, and `&`, `<` and `>` appear in
/// text and values only as entities. Comments, `<?…?>` and `<!DOCTYPE …>` are skipped.
fn well_formed(xml: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        check_text(&rest[..lt])?;
        let tag = &rest[lt..];
        let skip = [("<!--", "-->"), ("<?", "?>"), ("<!", ">")]
            .into_iter()
            .find(|(start, _)| tag.starts_with(start));
        if let Some((_, end)) = skip {
            let close = tag.find(end).ok_or_else(|| format!("unclosed markup at {:?}", head(tag)))?;
            rest = &tag[close + end.len()..];
            continue;
        }
        let close = tag_end(tag).ok_or_else(|| format!("unclosed tag at {:?}", head(tag)))?;
        let inner = &tag[1..close];
        rest = &tag[close + 1..];
        if let Some(name) = inner.strip_prefix('/') {
            match open.pop() {
                Some(top) if top == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let self_closing = inner.ends_with('/');
        let body = inner.trim_end_matches('/');
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
            return Err(format!("bad tag name {name:?}"));
        }
        check_attributes(name, &body[name_end..])?;
        if !self_closing {
            open.push(name);
        }
    }
    check_text(rest)?;
    match open.last() {
        Some(name) => Err(format!("<{name}> is never closed")),
        None => Ok(()),
    }
}

/// The index of the `>` that ends the tag at the start of `tag`, skipping quoted values.
fn tag_end(tag: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in tag.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn check_attributes(tag: &str, mut attrs: &str) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::new();
    loop {
        attrs = attrs.trim_start();
        if attrs.is_empty() {
            return Ok(());
        }
        let eq = attrs.find('=').ok_or_else(|| format!("<{tag}>: attribute without a value in {attrs:?}"))?;
        let name = attrs[..eq].trim();
        if seen.contains(&name) {
            return Err(format!("<{tag}>: attribute {name} twice"));
        }
        seen.push(name);
        let value = &attrs[eq + 1..];
        let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'');
        let quote = quote.ok_or_else(|| format!("<{tag}>: unquoted value of {name}"))?;
        let end = value[1..].find(quote).ok_or_else(|| format!("<{tag}>: unterminated value of {name}"))?;
        check_text(&value[1..1 + end]).map_err(|e| format!("<{tag}> {name}: {e}"))?;
        attrs = &value[end + 2..];
    }
}

fn check_text(text: &str) -> Result<(), String> {
    if let Some(i) = text.find(['<', '>']) {
        return Err(format!("unescaped {:?} in {:?}", &text[i..i + 1], head(text)));
    }
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let entity = &rest[amp..];
        let end = entity.find(';').ok_or_else(|| format!("bare & in {:?}", head(text)))?;
        let name = &entity[1..end];
        let numeric =
            name.strip_prefix('#').is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&name) {
            return Err(format!("unknown entity &{name}; in {:?}", head(text)));
        }
        rest = &entity[end + 1..];
    }
    Ok(())
}

fn head(text: &str) -> String {
    text.chars().take(60).collect()
}

#[test]
fn the_well_formedness_check_refuses_broken_markup() {
    well_formed(r#"<a x="1"><b/>t &amp; u</a>"#).unwrap();
    for broken in [
        "<a><b></a>",
        "<a>t & u</a>",
        "<a>1 > 0</a>",
        r#"<a x=1/>"#,
        r#"<a x="<"/>"#,
        "<a>",
        r#"<a x="1" x="2"/>"#,
    ] {
        assert!(well_formed(broken).is_err(), "{broken} is refused");
    }
}
