//! The scenario engine: runs a [`Scenario`] on a [`Board`], one step at a time, and records a
//! [`Trial`]. It never asks which backend it has: what the board cannot do (a transport, a kind
//! of cut, a sweep) skips the scenario with the reason, before anything runs.

use std::time::Instant;

use crate::board::{Activity, Board, BoardError, OtaReport, PushRequest, PushResult, ShadowSet, Status};
use crate::bundles;
use crate::duration::format_ms;
use crate::progress::Progress;
use crate::result::{Outcome, StepRecord, TimelineEvent, Trial};
use crate::scenario::model::{
    Action, BundleSource, CallExpect, Cut, Expect, Push, PushExpect, ReportedExpect, Scenario, ShadowDesired,
    Step,
};

/// The seed of one scenario's trial: derived from the run's master seed and the scenario's name,
/// so adding a scenario does not change the others' seeds.
pub fn trial_seed(master: u64, scenario: &str) -> u64 {
    ota_sim::rng::Rng::new(master).derive(scenario).seed()
}

/// Why the board cannot run this scenario, if it cannot.
pub fn unsupported(scenario: &Scenario, board: &dyn Board) -> Option<String> {
    let caps = board.capabilities();
    let name = &board.info().name;
    if scenario.devices > board.devices() {
        return Some(format!(
            "board {name} drives {} device(s); the scenario needs {}",
            board.devices(),
            scenario.devices
        ));
    }
    for step in &scenario.steps {
        let at = format!("line {}", step.line);
        let shadow = match &step.action {
            Action::Shadow(_) => true,
            Action::Expect(e) => e.reported.is_some(),
            _ => false,
        };
        if shadow && !board.has_shadow() {
            return Some(format!("board {name} has no MQTT shadow ({at})"));
        }
        if let Action::Push(push) = &step.action
            && !caps.transports.contains(&push.transport)
        {
            return Some(format!("board {name} has no {} transport ({at})", push.transport.name()));
        }
        let cuts_power = step.cut.is_some() || matches!(step.action, Action::PowerCut);
        if let (true, Some(why)) = (cuts_power, &caps.no_power_cut) {
            return Some(format!("board {name} cannot cut the power: {why} ({at})"));
        }
        if matches!(step.action, Action::Sweep(_)) && !caps.sweep {
            return Some(format!("board {name} cannot run exhaustive sweeps ({at})"));
        }
        let missing = match step.cut {
            Some(Cut::AtOp { .. }) if !caps.cut_at_op => Some("at a flash operation"),
            Some(Cut::AtEveryOp) if !caps.cut_at_every_op => Some("at every flash operation of a push"),
            Some(Cut::AtFraction(_)) if !caps.cut_at_fraction => Some("at a fraction of an upload"),
            Some(Cut::AtPhase(_)) if !caps.cut_at_phase => Some("at a named phase"),
            _ => None,
        };
        if let Some(what) = missing {
            return Some(format!("board {name} cannot cut the power {what} ({at})"));
        }
    }
    None
}

/// A step's expectation that did not hold.
struct Failed(String);

enum StepError {
    Failed(Failed),
    Board(BoardError),
}

impl From<BoardError> for StepError {
    fn from(e: BoardError) -> Self {
        StepError::Board(e)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, StepError> {
    Err(StepError::Failed(Failed(message.into())))
}

/// What the boards of a parallel run say while it runs, in the order it happens.
enum Note {
    Started(usize),
    Finished(usize, Box<Trial>),
}

/// Runs every scenario, on `jobs` boards at once, and returns the trials in the order of
/// `scenarios` whatever order they finished in. Each worker opens its own board with
/// `open(worker)` (so boards need not be `Send`, and each has its own flash) and takes the next
/// scenario not yet started. A trial's seed comes from the master seed and the scenario's name,
/// never from the worker or the order, so the trials, and the reports made from them, are the
/// same for any number of jobs; only wall-clock durations differ.
///
/// With one job the trials run on this thread and `progress` sees every step; with more it sees
/// trials start and finish, in the order they do.
pub fn run_trials(
    scenarios: &[Scenario],
    jobs: usize,
    master_seed: u64,
    open: &(dyn Fn(usize) -> Box<dyn Board> + Sync),
    progress: &mut dyn Progress,
) -> Vec<Trial> {
    let total = scenarios.len();
    if jobs <= 1 || total <= 1 {
        let mut board = open(0);
        return (scenarios.iter().enumerate())
            .map(|(i, scenario)| {
                progress.trial_started(i, total, &scenario.name, &board.info().name.clone());
                let trial = run_trial(scenario, board.as_mut(), master_seed, progress);
                progress.trial_finished(&trial);
                trial
            })
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut trials: Vec<Option<Trial>> = vec![None; total];
    std::thread::scope(|scope| {
        for worker in 0..jobs.min(total) {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                let mut board = open(worker);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(scenario) = scenarios.get(i) else { break };
                    let _ = tx.send(Note::Started(i));
                    let trial = run_trial(scenario, board.as_mut(), master_seed, &mut crate::progress::Quiet);
                    let _ = tx.send(Note::Finished(i, Box::new(trial)));
                }
            });
        }
        drop(tx);
        for note in rx {
            match note {
                Note::Started(i) => progress.trial_started(i, total, &scenarios[i].name, ""),
                Note::Finished(i, trial) => {
                    progress.trial_finished(&trial);
                    trials[i] = Some(*trial);
                }
            }
        }
    });
    trials.into_iter().map(|t| t.expect("every scenario ran on some worker")).collect()
}

/// Runs one scenario on `board`.
pub fn run_trial(
    scenario: &Scenario,
    board: &mut dyn Board,
    master_seed: u64,
    progress: &mut dyn Progress,
) -> Trial {
    let started = Instant::now();
    let seed = trial_seed(master_seed, &scenario.name);
    let mut trial = Trial {
        scenario: scenario.name.clone(),
        file: scenario.file.clone(),
        board: board.info().name.clone(),
        outcome: Outcome::Passed,
        duration: Default::default(),
        device_ms: 0,
        seed,
        steps: Vec::new(),
        console: Vec::new(),
        timeline: Vec::new(),
    };
    if let Some(reason) = unsupported(scenario, board) {
        trial.outcome = Outcome::Skipped { reason };
        return trial;
    }
    trial.outcome = run_steps(scenario, board, seed, &mut trial, progress);
    trial.device_ms = board.device_ms();
    trial.duration = started.elapsed();
    trial
}

fn run_steps(
    scenario: &Scenario,
    board: &mut dyn Board,
    seed: u64,
    trial: &mut Trial,
    progress: &mut dyn Progress,
) -> Outcome {
    if let Err(e) = board.start_trial(seed) {
        return Outcome::Error { message: e.to_string() };
    }
    trial.console.push(format!("hil: {} on {} (seed {seed})", scenario.name, board.info().name));
    // The status before each step, for `unchanged`: it compares with the status before the
    // step being checked, the previous one.
    let mut before: Vec<Status> = Vec::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        let start_ms = board.device_ms();
        let summary = summarize(step);
        trial.console.push(format!("hil: step {} (line {}): {summary}", index + 1, step.line));
        let result = if step.cut == Some(Cut::AtEveryOp) {
            board.status().map_err(StepError::Board).and_then(|status| {
                before.push(status);
                every_op(scenario, index, board, seed)
            })
        } else {
            run_on_devices(step, board, seed, &mut before)
        };
        collect(board, index, trial);
        let passed = result.is_ok();
        let record =
            StepRecord { index, line: step.line, summary, passed, start_ms, end_ms: board.device_ms() };
        progress.step_finished(&record);
        trial.steps.push(record);
        match result {
            Ok(lines) => trial.console.extend(lines),
            Err(StepError::Failed(Failed(message))) => {
                trial.console.push(format!("hil: FAILED: {message}"));
                return Outcome::Failed { step: index, line: step.line, message };
            }
            Err(StepError::Board(e)) => {
                trial.console.push(format!("hil: ERROR: {e}"));
                return Outcome::Error { message: format!("step {} (line {}): {e}", index + 1, step.line) };
            }
        }
    }
    Outcome::Passed
}

/// Runs the step on each of its devices in turn.
fn run_on_devices(
    step: &Step,
    board: &mut dyn Board,
    seed: u64,
    before: &mut Vec<Status>,
) -> Result<Vec<String>, StepError> {
    let mut lines = Vec::new();
    for &device in &step.devices {
        board.select_device(device)?;
        before.push(board.status()?);
        lines.extend(run_step(step, board, seed, before)?);
    }
    Ok(lines)
}

/// Points an exhaustive cut visits at most: far past any update's flash operations.
const EVERY_OP_POINTS_MAX: u64 = 100_000;

/// A push cut before each of its flash operations in turn (`cut = { at_every_op = true }`).
/// For point `n` the board starts afresh, the steps before the push run again, the push is cut
/// before its operation `n`, and the board powers on: it must run a whole image (not hang, not
/// be bricked) whose boot state reads, with every file the earlier steps wrote intact. The
/// first push that completes uncut ends the sweep, leaving the updated device to the steps
/// after it. Only the points' verdicts reach the console; their timelines are dropped.
fn every_op(
    scenario: &Scenario,
    index: usize,
    board: &mut dyn Board,
    seed: u64,
) -> Result<Vec<String>, StepError> {
    let step = &scenario.steps[index];
    let Action::Push(push) = &step.action else {
        return fail("at_every_op goes with a push only");
    };
    let prefix = &scenario.steps[..index];
    let files: Vec<(&String, &Vec<u8>)> = (prefix.iter())
        .filter_map(|s| match &s.action {
            Action::WriteFile { name, content } => Some((name, content)),
            _ => None,
        })
        .collect();
    let started = Instant::now();
    board.step_timeout(std::time::Duration::from_millis(step.timeout_ms));
    let built = build(&push.bundle, board)?;
    let request = PushRequest {
        bundle: &built.bytes,
        transport: push.transport,
        commit_timeout_s: push.commit_timeout_s,
        ignore_same_version: push.ignore_same_version,
        chunk_bytes: push.chunk_bytes,
    };
    if let Some((result, points)) = board.push_recorded(&request)? {
        return every_recorded_op(scenario, index, board, seed, &request, (result, points), &files, started);
    }
    let mut lines = Vec::new();
    for n in 0..EVERY_OP_POINTS_MAX {
        if n > 0 {
            start_afresh(board, prefix, seed)?;
        }
        board.step_timeout(std::time::Duration::from_millis(step.timeout_ms));
        board.arm_cut(Cut::AtOp { op: n, when: crate::scenario::model::CutWhen::Before })?;
        let result = board.push(&request)?;
        board.disarm_cut()?;
        match result {
            PushResult::PowerLost => {}
            PushResult::Applied => {
                lines.push(format!(
                    "hil: every flash op: {n} cut points, each recovered; the uncut push applied ({:.2} s)",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(lines);
            }
            other => return fail(format!("cut before flash op {n}: the push answered {}", answer(&other))),
        }
        lines.push(recovered(board, n, &files)?);
    }
    fail(format!("the push still had flash operations after {EVERY_OP_POINTS_MAX} cut points"))
}

/// A new trial on the board with the steps before an exhaustive cut run again: the device as the
/// cut push finds it.
fn start_afresh(board: &mut dyn Board, prefix: &[Step], seed: u64) -> Result<(), StepError> {
    board.start_trial(seed)?;
    for earlier in prefix {
        run_step(earlier, board, seed, &[])?;
    }
    Ok(())
}

/// After a cut before flash operation `n`: powers on, and the device must run a whole image
/// whose boot state reads, with every file the earlier steps wrote intact. The verdict's line;
/// the point's own timeline and console are dropped (they would drown the trial's).
fn recovered(board: &mut dyn Board, n: u64, files: &[(&String, &Vec<u8>)]) -> Result<String, StepError> {
    board.power_on()?;
    let status = board.status()?;
    let verdict = match (&status.activity, status.boot_state) {
        (Activity::Running { slot, version }, Some(_)) => format!("runs {version} in slot {slot}"),
        (other, _) => {
            return fail(format!(
                "cut before flash op {n}: after power on the device is {}, expected a running image with its boot state",
                activity(other)
            ));
        }
    };
    for (name, content) in files {
        let mut wrong = Vec::new();
        check_file(board, name, Some(content.as_slice()), &mut wrong)?;
        if !wrong.is_empty() {
            return fail(format!("cut before flash op {n}: {}", wrong.join("; ")));
        }
    }
    board.drain_events();
    board.drain_console();
    Ok(format!("hil: cut before flash op {n}: {verdict}, files intact"))
}

/// Cut points literally checked against a recorded push: the first, one picked by the seed, and
/// the last.
const LITERAL_CUTS: usize = 3;

/// [`every_op`] on a board that records a push ([`Board::push_recorded`]): one uncut push keeps
/// the flash as it stood before each flash operation, and the board powers on from each of those
/// points, instead of pushing again up to every one. A few points are also cut for real (the
/// push again, the power gone before that operation), and the flash left must be the recorded
/// point byte for byte. Then the board starts afresh and the push runs uncut for the steps after.
#[allow(clippy::too_many_arguments)]
fn every_recorded_op(
    scenario: &Scenario,
    index: usize,
    board: &mut dyn Board,
    seed: u64,
    request: &PushRequest<'_>,
    (result, points): (PushResult, u64),
    files: &[(&String, &Vec<u8>)],
    started: Instant,
) -> Result<Vec<String>, StepError> {
    let step = &scenario.steps[index];
    let prefix = &scenario.steps[..index];
    if result != PushResult::Applied {
        return fail(format!("the recorded uncut push answered {}", answer(&result)));
    }
    if points == 0 {
        return fail("the recorded push made no flash operation");
    }
    let mut lines =
        vec![format!("hil: every flash op: the uncut push made {points} flash operations, recorded")];
    let mut literal: Vec<u64> = vec![0, seed % points, points - 1];
    literal.dedup();
    literal.truncate(LITERAL_CUTS);
    for &n in &literal {
        start_afresh(board, prefix, seed)?;
        board.step_timeout(std::time::Duration::from_millis(step.timeout_ms));
        board.arm_cut(Cut::AtOp { op: n, when: crate::scenario::model::CutWhen::Before })?;
        let result = board.push(request)?;
        board.disarm_cut()?;
        if result != PushResult::PowerLost {
            return fail(format!(
                "cut before flash op {n} (of {points} recorded): the push answered {}",
                answer(&result)
            ));
        }
        if !board.flash_is_point(n)? {
            return fail(format!(
                "cut before flash op {n}: the flash left differs from the recorded point, so the recording is not what a cut leaves"
            ));
        }
        lines.push(format!("hil: cut before flash op {n}: the flash left is the recorded point"));
        board.drain_events();
        board.drain_console();
    }
    for n in 0..points {
        board.start_trial_at_point(seed, n)?;
        board.step_timeout(std::time::Duration::from_millis(step.timeout_ms));
        lines.push(recovered(board, n, files)?);
    }
    start_afresh(board, prefix, seed)?;
    board.step_timeout(std::time::Duration::from_millis(step.timeout_ms));
    let result = board.push(request)?;
    if result != PushResult::Applied {
        return fail(format!("the uncut push after the sweep answered {}", answer(&result)));
    }
    lines.push(format!(
        "hil: every flash op: {points} cut points, each recovered ({} also cut for real); the uncut push applied ({:.2} s)",
        literal.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(lines)
}

/// Moves the board's new events and console lines into the trial.
fn collect(board: &mut dyn Board, step: usize, trial: &mut Trial) {
    for (at_ms, kind) in board.drain_events() {
        trial.timeline.push(TimelineEvent { at_ms, step, kind });
    }
    trial.console.extend(board.drain_console());
}

/// Carries out one step; returns console lines worth keeping.
fn run_step(
    step: &Step,
    board: &mut dyn Board,
    seed: u64,
    before: &[Status],
) -> Result<Vec<String>, StepError> {
    board.step_timeout(std::time::Duration::from_millis(step.timeout_ms));
    if let Some(cut) = step.cut {
        board.arm_cut(cut)?;
    }
    let result = act(step, board, seed, before);
    board.disarm_cut()?;
    result
}

fn act(step: &Step, board: &mut dyn Board, seed: u64, before: &[Status]) -> Result<Vec<String>, StepError> {
    match &step.action {
        Action::Provision { bundle } => {
            let built = build(bundle, board)?;
            board.provision(&built.bytes)?;
        }
        Action::WriteFile { name, content } => {
            if let Err(refusal) = board.write_file(name, content)? {
                return fail(format!("writing {name} was refused: {refusal}"));
            }
        }
        Action::Push(push) => return run_push(push, step, board),
        Action::PowerCut => board.power_cut()?,
        Action::PowerOn => board.power_on()?,
        Action::Wait { ms } => board.wait(*ms)?,
        Action::Reboot => board.reboot()?,
        Action::Commit { expect } => check_call("commit", board.commit()?, expect)?,
        Action::Revert { expect } => check_call("revert", board.revert()?, expect)?,
        Action::Snapshot { set_as_revert, commit_timeout_s, expect } => {
            let result = board.snapshot(*set_as_revert, *commit_timeout_s)?;
            check_call("snapshot", result.map(|_| ()), expect)?;
        }
        Action::Expect(expect) => check_expect(expect, board, before)?,
        Action::Shadow(desired) => {
            let built;
            let set = match desired {
                ShadowDesired::Bundle(source) => {
                    built = build(source, board)?;
                    ShadowSet::Bundle(&built.bytes)
                }
                ShadowDesired::Url(url) => ShadowSet::Url(url),
                ShadowDesired::Doc(doc) => ShadowSet::Doc(doc),
            };
            board.shadow_set(&set)?;
        }
        Action::Sweep(spec) => {
            let report = board.sweep(spec, seed)?;
            let mut lines = report.lines;
            lines.push(format!("{} points in {:.2} s", report.points, report.seconds));
            if !report.failures.is_empty() {
                return fail(format!(
                    "{} points broke an invariant:\n{}",
                    report.failures.len(),
                    report.failures.join("\n")
                ));
            }
            return Ok(lines);
        }
    }
    Ok(Vec::new())
}

fn build(source: &BundleSource, board: &dyn Board) -> Result<bundles::Built, StepError> {
    bundles::build(source, board.info()).map_err(|e| StepError::Board(BoardError::new(e)))
}

fn run_push(push: &Push, step: &Step, board: &mut dyn Board) -> Result<Vec<String>, StepError> {
    let built = build(&push.bundle, board)?;
    let request = PushRequest {
        bundle: &built.bytes,
        transport: push.transport,
        commit_timeout_s: push.commit_timeout_s,
        ignore_same_version: push.ignore_same_version,
        chunk_bytes: push.chunk_bytes,
    };
    let result = board.push(&request)?;
    let line = format!(
        "push of {} ({} bytes) over {}: {}",
        built.label,
        built.bytes.len(),
        push.transport.name(),
        answer(&result)
    );
    let ok = match (&push.expect, &result) {
        (PushExpect::Applied, PushResult::Applied)
        | (PushExpect::UpToDate, PushResult::UpToDate)
        | (PushExpect::PowerLost, PushResult::PowerLost) => true,
        (PushExpect::Refused { message }, PushResult::Refused { message: got }) => {
            got.contains(message.as_str())
        }
        _ => false,
    };
    if !ok {
        let cut = if step.cut.is_some() { " (the step cuts the power)" } else { "" };
        return fail(format!("{line}; expected {}{cut}", expected(&push.expect)));
    }
    Ok(vec![format!("hil: {line}")])
}

fn answer(result: &PushResult) -> String {
    match result {
        PushResult::Applied => "applied".into(),
        PushResult::UpToDate => "up to date".into(),
        PushResult::Refused { message } => format!("refused: {message}"),
        PushResult::PowerLost => "the power went".into(),
    }
}

fn expected(expect: &PushExpect) -> String {
    match expect {
        PushExpect::Applied => "applied".into(),
        PushExpect::UpToDate => "up to date".into(),
        PushExpect::Refused { message } => format!("a refusal containing {message:?}"),
        PushExpect::PowerLost => "the power to go".into(),
    }
}

fn check_call(what: &str, result: Result<(), String>, expect: &CallExpect) -> Result<(), StepError> {
    match (expect, result) {
        (CallExpect::Ok, Ok(())) => Ok(()),
        (CallExpect::Ok, Err(refusal)) => fail(format!("{what} was refused: {refusal}")),
        (CallExpect::Error { message }, Err(refusal)) if refusal.contains(message.as_str()) => Ok(()),
        (CallExpect::Error { message }, Err(refusal)) => {
            fail(format!("{what} was refused with {refusal:?}, expected a message containing {message:?}"))
        }
        (CallExpect::Error { message }, Ok(())) => {
            fail(format!("{what} succeeded, expected an error containing {message:?}"))
        }
    }
}

/// Checks every given field, and reports every mismatch at once.
fn check_expect(expect: &Expect, board: &mut dyn Board, before: &[Status]) -> Result<(), StepError> {
    let mut wrong = Vec::new();
    // First: waiting for the report lets the update (and its reboots) run.
    if let Some(want) = &expect.reported {
        check_reported(want, board.shadow_reported(&|r| reported_matches(want, r))?, &mut wrong);
    }
    let status = board.status()?;
    let running = match &status.activity {
        Activity::Running { slot, version } => Some((*slot, version.clone())),
        _ => None,
    };
    if let Some(version) = &expect.version {
        match &running {
            Some((_, v)) if v == version => {}
            Some((_, v)) => wrong.push(format!("version is {v:?}, expected {version:?}")),
            None => wrong.push(format!(
                "no firmware runs ({}), expected version {version:?}",
                activity(&status.activity)
            )),
        }
    }
    check_state(expect, &status, &mut wrong);
    if let Some(bricked) = expect.bricked {
        let is = matches!(status.activity, Activity::Bricked { .. });
        if is != bricked {
            wrong.push(format!(
                "the device is {}, expected {}",
                activity(&status.activity),
                if bricked { "bricked" } else { "not bricked" }
            ));
        }
    }
    if expect.unchanged {
        // `before` ends with the status before this expect step; the one before it is the status
        // before the step being checked.
        match before.len().checked_sub(2).map(|i| &before[i]) {
            Some(previous) if *previous == status => {}
            Some(previous) => {
                wrong.push(format!("the device changed: it was {}, it is {}", show(previous), show(&status)))
            }
            None => wrong.push("`unchanged` needs a step before the one it checks".into()),
        }
    }
    for (name, content) in &expect.files {
        check_file(board, name, content.as_deref(), &mut wrong)?;
    }
    if wrong.is_empty() { Ok(()) } else { fail(wrong.join("; ")) }
}

fn reported_matches(want: &ReportedExpect, report: &OtaReport) -> bool {
    want.code.is_none_or(|code| code == report.code)
        && want.message.as_deref().is_none_or(|m| report.message.contains(m))
}

fn check_reported(want: &ReportedExpect, report: Option<OtaReport>, wrong: &mut Vec<String>) {
    let expected = match (&want.code, &want.message) {
        (Some(code), Some(m)) => format!("code {code} with a message containing {m:?}"),
        (Some(code), None) => format!("code {code}"),
        (None, Some(m)) => format!("a message containing {m:?}"),
        (None, None) => "any report".into(),
    };
    match report {
        Some(r) if reported_matches(want, &r) => {}
        Some(r) => {
            wrong.push(format!("the shadow reports ota.code {} {:?}, expected {expected}", r.code, r.message))
        }
        None => wrong.push(format!("the device reported nothing to the shadow, expected {expected}")),
    }
}

fn check_state(expect: &Expect, status: &Status, wrong: &mut Vec<String>) {
    let wants_state =
        expect.active_slot.is_some() || expect.revert_slot.is_some() || expect.committed.is_some();
    let Some(state) = status.boot_state else {
        if wants_state {
            wrong.push(format!("the boot state cannot be read ({})", activity(&status.activity)));
        }
        return;
    };
    if let Some(slot) = expect.active_slot
        && state.active_slot != slot
    {
        wrong.push(format!("active slot is {}, expected {slot}", state.active_slot));
    }
    if let Some(slot) = expect.revert_slot
        && state.revert_slot != slot
    {
        wrong.push(format!("revert slot is {}, expected {}", slot_name(state.revert_slot), slot_name(slot)));
    }
    if let Some(committed) = expect.committed
        && state.committed != committed
    {
        wrong.push(format!("committed is {}, expected {committed}", state.committed));
    }
}

fn check_file(
    board: &mut dyn Board,
    name: &str,
    content: Option<&[u8]>,
    wrong: &mut Vec<String>,
) -> Result<(), StepError> {
    match (board.read_file(name)?, content) {
        (Err(refusal), _) => wrong.push(format!("{name} cannot be read: {refusal}")),
        (Ok(None), None) => {}
        (Ok(Some(_)), None) => wrong.push(format!("{name} exists, expected it absent")),
        (Ok(None), Some(_)) => wrong.push(format!("{name} is absent")),
        (Ok(Some(got)), Some(want)) if got == want => {}
        (Ok(Some(got)), Some(want)) => wrong.push(format!(
            "{name} holds {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        )),
    }
    Ok(())
}

fn slot_name(slot: Option<u8>) -> String {
    slot.map_or("none".into(), |s| s.to_string())
}

fn activity(activity: &Activity) -> String {
    match activity {
        Activity::Off => "off".into(),
        Activity::Running { slot, version } => format!("running {version} in slot {slot}"),
        Activity::Hung { slot } => format!("hung in slot {slot}"),
        Activity::Bricked { why } => format!("bricked: {why}"),
    }
}

fn show(status: &Status) -> String {
    let state = status.boot_state.map_or("no boot state".into(), |s| {
        format!("active {}, revert {}, committed {}", s.active_slot, slot_name(s.revert_slot), s.committed)
    });
    format!("{} ({state})", activity(&status.activity))
}

/// A one-line summary of a step, for progress, reports and the timeline.
pub fn summarize(step: &Step) -> String {
    let action = match &step.action {
        Action::Provision { bundle } => format!("provision {}", bundle_name(bundle)),
        Action::WriteFile { name, content } => format!("write {name} ({} bytes)", content.len()),
        Action::Push(p) => format!("push {} over {}", bundle_name(&p.bundle), p.transport.name()),
        Action::PowerCut => "power cut".into(),
        Action::PowerOn => "power on".into(),
        Action::Wait { ms } => format!("wait {}", format_ms(*ms)),
        Action::Commit { .. } => "commit".into(),
        Action::Revert { .. } => "revert".into(),
        Action::Reboot => "reboot".into(),
        Action::Snapshot { set_as_revert: true, .. } => "snapshot, as the revert slot".into(),
        Action::Snapshot { .. } => "snapshot".into(),
        Action::Expect(e) => expect_summary(e),
        Action::Sweep(s) => format!("sweep {} KiB, depth {}", s.app_kib, s.depth),
        Action::Shadow(ShadowDesired::Bundle(b)) => format!("shadow desired ota.url: {}", bundle_name(b)),
        Action::Shadow(ShadowDesired::Url(url)) => format!("shadow desired ota.url: {url}"),
        Action::Shadow(ShadowDesired::Doc(_)) => "shadow delta document".into(),
    };
    let action = match step.devices.as_slice() {
        [0] => action,
        [one] => format!("device {one}: {action}"),
        many => format!("devices {many:?}: {action}"),
    };
    let cut = match step.cut {
        None => String::new(),
        Some(Cut::AtOp { op, when }) => format!(", cut {when:?} flash op {op}").to_lowercase(),
        Some(Cut::AtFraction(f)) => format!(", cut at {:.0}% of the upload", f * 100.0),
        Some(Cut::AtPhase(p)) => format!(", cut in the {} phase", p.name()),
        Some(Cut::AtEveryOp) => ", cut before every flash op in turn".into(),
    };
    action + &cut
}

fn expect_summary(e: &Expect) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &e.version {
        parts.push(format!("version {v}"));
    }
    if let Some(slot) = e.active_slot {
        parts.push(format!("active slot {slot}"));
    }
    if let Some(slot) = e.revert_slot {
        parts.push(format!("revert slot {}", slot_name(slot)));
    }
    match e.committed {
        Some(true) => parts.push("committed".into()),
        Some(false) => parts.push("uncommitted".into()),
        None => {}
    }
    if e.unchanged {
        parts.push("unchanged".into());
    }
    if let Some(bricked) = e.bricked {
        parts.push(if bricked { "bricked" } else { "not bricked" }.into());
    }
    for (name, content) in &e.files {
        parts.push(if content.is_some() { name.clone() } else { format!("no {name}") });
    }
    if let Some(r) = &e.reported {
        let code = r.code.map_or(String::new(), |c| format!(" code {c}"));
        parts.push(format!("reported{code}"));
    }
    format!("expect {}", parts.join(", "))
}

fn bundle_name(source: &BundleSource) -> String {
    match source {
        BundleSource::File(path) => {
            path.file_name().map_or("bundle".into(), |n| n.to_string_lossy().into_owned())
        }
        BundleSource::Spec(spec) => match spec.defect {
            Some(d) => format!("{} ({})", spec.version, bundles::defect_name(d)),
            None => spec.version.clone(),
        },
    }
}
