//! What a run produced: one [`Trial`] per scenario × board, with the device's timeline. The
//! reports (JUnit, JSON, the log folder, the timeline picture) are written from these alone.

use std::path::PathBuf;
use std::time::Duration;

/// One scenario run on one board.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// The scenario's name.
    pub scenario: String,
    pub file: PathBuf,
    /// The board's name (its file stem, or "sim" for the built-in simulator).
    pub board: String,
    pub outcome: Outcome,
    /// Wall-clock time the trial took.
    pub duration: Duration,
    /// Virtual (or device) time at the end of the trial, in milliseconds.
    pub device_ms: u64,
    /// The seed the trial ran with.
    pub seed: u64,
    pub steps: Vec<StepRecord>,
    /// The device's console and the runner's own notes, in order.
    pub console: Vec<String>,
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    /// A step's expectation did not hold.
    Failed {
        step: usize,
        line: usize,
        message: String,
    },
    /// The board cannot run this scenario (a transport or a cut it lacks).
    Skipped {
        reason: String,
    },
    /// The runner or the board broke (a port that would not open, a process that died).
    Error {
        message: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Error { .. } => "error",
        }
    }
}

/// One step as it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// 0-based index in the scenario.
    pub index: usize,
    pub line: usize,
    /// A one-line summary, such as `push 2.0.0 over rpc, cut at 50% of the upload`.
    pub summary: String,
    pub passed: bool,
    /// Device time when the step started and ended.
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Something that happened on the device, for the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEvent {
    /// Device time, in milliseconds.
    pub at_ms: u64,
    /// Index of the step it happened in.
    pub step: usize,
    pub kind: EventKind,
}

/// Flash regions the timeline shows as lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    BootState,
    App(u8),
    Fs(u8),
}

impl Lane {
    pub fn name(self) -> String {
        match self {
            Lane::BootState => "boot state".into(),
            Lane::App(n) => format!("app slot {n}"),
            Lane::Fs(n) => format!("fs slot {n}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// Programs into a lane: how many operations and bytes, over which flash-op indices.
    Write {
        lane: Lane,
        ops: u32,
        bytes: u64,
        first_op: u64,
        last_op: u64,
    },
    /// Erases in a lane.
    Erase {
        lane: Lane,
        ops: u32,
        first_op: u64,
        last_op: u64,
    },
    PowerOn,
    /// The power went; `op` is the flash operation it struck, when known.
    PowerCut {
        op: Option<u64>,
        how: String,
    },
    /// The boot loader chose a slot, and why.
    Boot {
        slot: u8,
        reason: String,
    },
    Merge {
        copied: u32,
    },
    Commit,
    Revert {
        why: String,
    },
    UpdateApplied {
        slot: u8,
    },
    Refused {
        message: String,
    },
    Crash,
    WatchdogReset,
    Bricked {
        why: String,
    },
    /// A runner note worth a mark (an expectation checked, a push started).
    Note {
        text: String,
    },
}

/// A whole run: every trial, and where its files went.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub trials: Vec<Trial>,
    pub seed: u64,
    pub duration: Duration,
    /// The per-run log folder, when one was written.
    pub log_dir: Option<PathBuf>,
    /// Where and when it ran, for the reports CI tools read.
    pub info: RunInfo,
}

/// Where, when and with what a run ran. The reports carry it (JUnit's `timestamp` and
/// `hostname`, the tool version, the board), so they stay functions of the [`Run`] alone: the
/// command that starts the run reads the clock and the host name, the reports never do. Empty
/// fields are left out of the reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunInfo {
    /// When the run started: milliseconds since the Unix epoch, UTC.
    pub started_unix_ms: Option<u64>,
    pub hostname: Option<String>,
    /// `hil`'s version.
    pub tool_version: Option<String>,
    /// The board's backend kind (`sim`, `virtual`, `qemu`).
    pub board_kind: Option<String>,
}

impl RunInfo {
    /// This run, here and now, on a board of `board_kind`.
    pub fn here_and_now(board_kind: &str) -> RunInfo {
        let started_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        RunInfo {
            started_unix_ms,
            hostname: hostname(),
            tool_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            board_kind: Some(board_kind.to_string()),
        }
    }
}

/// The host's name, as the kernel knows it; `None` when it cannot be read.
fn hostname() -> Option<String> {
    let from_file = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
}

impl Run {
    pub fn count(&self, label: &str) -> usize {
        self.trials.iter().filter(|t| t.outcome.label() == label).count()
    }
}
