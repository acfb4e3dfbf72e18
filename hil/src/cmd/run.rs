//! `hil run PATH...`: every scenario × the board, with live progress, a summary, reports, and
//! exit code 0 (all passed), 1 (a scenario failed) or 2 (bad input or broken infrastructure).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::CommandError;
use crate::board::{self, config};
use crate::engine;
use crate::progress::Progress;
use crate::report;
use crate::result::{Outcome, Run, RunInfo, StepRecord, Trial};
use crate::scenario::{self, Scenario};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files, or folders of them (`*.toml`, not recursive).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A board file (boards/*.toml). Default: the built-in simulator.
    #[arg(long, value_name = "FILE")]
    pub board: Option<PathBuf>,
    /// The run's master seed; each scenario's seed is derived from it and its name.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run only scenarios whose name or file name contains this text.
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// List the trials (scenario × board) and exit.
    #[arg(long)]
    pub list: bool,
    /// Where the run's log folder goes: DIR/run-seed-<N> (-2, -3... when taken). Default: hil-runs.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Write no log folder.
    #[arg(long, conflicts_with = "log_dir")]
    pub no_logs: bool,
    /// Run trials on this many boards at once (each its own process and flash file). The
    /// reports come out the same as with one.
    #[arg(long, short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let scenarios = load(&args)?;
    let board_config = match &args.board {
        Some(path) => config::load(path).map_err(|e| {
            CommandError::new(e.to_string()).help("see boards/README.md for the keys of a board file")
        })?,
        None => config::BoardConfig::default_sim(),
    };
    if args.list {
        print!("{}", list(&scenarios, &board_config));
        return Ok(ExitCode::SUCCESS);
    }
    if let config::Backend::Esp32c3(esp) = &board_config.backend {
        // A real board that is not attached: one line, exit 2, before any trial starts.
        board::esp32c3::attached(esp)
            .map_err(|e| CommandError::new(format!("board {}: {e}; no scenario ran", board_config.name)))?;
    }
    let jobs = usize::from(args.jobs);
    let info = RunInfo::here_and_now(board_config.kind());
    let started = Instant::now();
    // A live line per trial only when one runs at a time.
    let mut progress = Terminal::new(std::io::stderr().is_terminal() && jobs == 1, &board_config.name);
    let open = |worker: usize| board::open(&board_config.for_worker(worker));
    let trials = engine::run_trials(&scenarios, jobs, args.seed, &open, &mut progress);
    let mut run = Run { trials, seed: args.seed, duration: started.elapsed(), log_dir: None, info };
    write_reports(&args, &mut run)?;
    Ok(summarize(&run))
}

/// The trials a run would make, each with the reason it would be skipped; opening a board
/// starts nothing (no process, no port), so this needs no board attached.
fn list(scenarios: &[Scenario], board_config: &config::BoardConfig) -> String {
    let board = board::open(board_config);
    let mut out = String::new();
    let mut skipped = 0;
    for s in scenarios {
        out += &format!("{} × {}  ({})", s.name, board_config.name, s.file.display());
        if let Some(reason) = engine::unsupported(s, board.as_ref()) {
            skipped += 1;
            out += &format!("  SKIP: {reason}");
        }
        out += "\n";
    }
    out +=
        &format!("{} trials, {} would run, {skipped} skipped\n", scenarios.len(), scenarios.len() - skipped);
    out
}

/// Loads every scenario; reports every bad file, not only the first.
fn load(args: &Args) -> Result<Vec<Scenario>, CommandError> {
    let files = scenario::collect(&args.paths).map_err(|e| CommandError::new(e.to_string()))?;
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match scenario::load(&file) {
            Ok(s) => scenarios.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(CommandError::new(errors.join("\n")).help("scenarios/README.md documents every key"));
    }
    if let Some(pattern) = &args.filter {
        let stem =
            |s: &Scenario| s.file.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        scenarios.retain(|s| s.name.contains(pattern.as_str()) || stem(s).contains(pattern.as_str()));
    }
    if scenarios.is_empty() {
        return Err(CommandError::new("no scenario to run").help("check the paths and --filter"));
    }
    Ok(scenarios)
}

fn write_reports(args: &Args, run: &mut Run) -> Result<(), CommandError> {
    let io = |what: &str, path: &PathBuf, e: std::io::Error| {
        CommandError::new(format!("cannot write the {what} {}: {e}", path.display()))
    };
    if let Some(path) = &args.junit {
        report::junit::write(run, path).map_err(|e| io("JUnit report", path, e))?;
    }
    if let Some(path) = &args.json {
        report::json::write(run, path).map_err(|e| io("JSON report", path, e))?;
    }
    if !args.no_logs {
        let dir = args.log_dir.clone().unwrap_or_else(|| PathBuf::from("hil-runs"));
        let written = report::logdir::write(run, &dir).map_err(|e| io("log folder", &dir, e))?;
        run.log_dir = Some(written);
    }
    Ok(())
}

fn summarize(run: &Run) -> ExitCode {
    let (passed, failed, skipped, errors) =
        (run.count("passed"), run.count("failed"), run.count("skipped"), run.count("error"));
    println!();
    for trial in &run.trials {
        if let Outcome::Failed { line, message, .. } = &trial.outcome {
            println!(
                "FAILED {} on {} ({}:{line}):\n  {}",
                trial.scenario,
                trial.board,
                trial.file.display(),
                message.replace('\n', "\n  ")
            );
        }
        if let Outcome::Error { message } = &trial.outcome {
            println!("ERROR {} on {}: {}", trial.scenario, trial.board, message.replace('\n', "\n  "));
        }
    }
    if let Some(dir) = &run.log_dir {
        println!("logs and timelines: {}", dir.display());
    }
    if errors > 0 {
        println!("{errors} trials could not run (broken infrastructure)");
    }
    println!(
        "hil: {passed} passed, {failed} failed, {errors} errors, {skipped} skipped ({:.2} s, seed {})",
        run.duration.as_secs_f64(),
        run.seed
    );
    match (failed, errors) {
        (_, e) if e > 0 => ExitCode::from(2),
        (f, _) if f > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

/// Progress on the terminal: a live line per trial on a TTY, a line per finished trial always.
struct Terminal {
    live: bool,
    board: String,
    label: String,
    /// How many trials there are, and how many finished.
    total: usize,
    finished: usize,
}

impl Terminal {
    fn new(live: bool, board: &str) -> Terminal {
        Terminal { live, board: board.into(), label: String::new(), total: 0, finished: 0 }
    }
}

impl Progress for Terminal {
    fn trial_started(&mut self, index: usize, total: usize, scenario: &str, _board: &str) {
        self.total = total;
        self.label = format!("[{:>2}/{total}] {scenario} on {}", index + 1, self.board);
        if self.live {
            eprint!("\r\x1b[2K{} ...", self.label);
            let _ = std::io::stderr().flush();
        }
    }

    fn step_finished(&mut self, step: &StepRecord) {
        if self.live {
            eprint!("\r\x1b[2K{}: step {} {}", self.label, step.index + 1, step.summary);
            let _ = std::io::stderr().flush();
        }
    }

    fn trial_finished(&mut self, trial: &Trial) {
        if self.live {
            eprint!("\r\x1b[2K");
        }
        self.finished += 1;
        if !self.live {
            // Trials may finish out of order: number them as they finish.
            self.label =
                format!("[{:>2}/{}] {} on {}", self.finished, self.total, trial.scenario, trial.board);
        }
        let mark = match trial.outcome {
            Outcome::Passed => "PASS ",
            Outcome::Failed { .. } => "FAIL ",
            Outcome::Skipped { .. } => "SKIP ",
            Outcome::Error { .. } => "ERROR",
        };
        let detail = match &trial.outcome {
            Outcome::Skipped { reason } => format!(": {reason}"),
            Outcome::Failed { line, .. } => format!(": step at line {line}"),
            _ => String::new(),
        };
        eprintln!(
            "{mark} {} ({} steps, {:.2} s, device time {}){detail}",
            self.label,
            trial.steps.len(),
            trial.duration.as_secs_f64(),
            report::fmt_ms(trial.device_ms)
        );
    }
}
