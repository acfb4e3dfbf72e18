//! What the device did, as typed events stamped with device milliseconds.
//!
//! Every port sends them the same way: one JSON object a line on the console, after
//! [`CONSOLE_PREFIX`], and as the result of the `Sys.Events` RPC method for transports without a
//! console. The runner deserializes them ([`Stamped::from_console_line`]); it never matches
//! English text.
//!
//! | event            | fields                       | when |
//! |------------------|------------------------------|------|
//! | `power_on`       |                              | the port powers the device on |
//! | `power_lost`     | `op`                         | the simulator cut the power (at a flash operation) |
//! | `boot`           | `slot`, `reason`             | the boot loader chose a slot (`Trial`, `Committed`, `Reverted { .. }`, …) |
//! | `merged`         | `copied`, `kept_new`         | the first-boot merge finished |
//! | `merge_failed`   | `why`                        | the merge failed; the state reverts |
//! | `crashed`        |                              | the firmware reset before it ran |
//! | `hung`           | `slot`                       | the firmware stopped; the watchdog will reset it |
//! | `running`        | `slot`, `version`            | the firmware runs |
//! | `watchdog_reset` |                              | the watchdog reset a hung firmware |
//! | `committed`      |                              | the running image is committed |
//! | `timer_expired`  |                              | the commit deadline passed |
//! | `reverted`       |                              | the state points back at the revert slot |
//! | `update_started` | `source`, `commit_timeout_s` | an update session opened |
//! | `phase`          | `phase`                      | an update or control step starts (`write`, `finalize`, `boot`, `merge`, `commit`, `revert`, `snapshot`) |
//! | `update_progress`| `received_bytes`, `percent`  | at most one per 10 % of a bundle of known size |
//! | `update_applied` | `slot`                       | the record that makes `slot` active is written |
//! | `up_to_date`     |                              | same version, nothing written |
//! | `update_refused` | `why`                        | the update ended with an error; nothing is marked bootable |
//! | `update_aborted` | `why`                        | the session was abandoned (timeout, `OTA.End` without data, a cut-off upload) |
//! | `snapshot`       | `slot`                       | `OTA.CreateSnapshot` copied the running image |
//! | `rebooting`      | `why`                        | the firmware resets itself |
//! | `bricked`        | `why`                        | nothing boots: what the project exists to prevent |

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// What starts an event line on the console.
pub const CONSOLE_PREFIX: &str = "@ota ";

/// A step whose start is marked with [`Event::Phase`], so that a runner can cut the power there.
///
/// A bare-metal port passes the phase to its `ota_phase_marker(phase: u32)` as `phase as u32`,
/// for a debugger's breakpoint: these numbers are fixed (write 0, finalize 1, boot 2, merge 3,
/// commit 4, revert 5, snapshot 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum Phase {
    Write = 0,
    Finalize = 1,
    /// The boot loader's decision (the trial record of a new image).
    Boot = 2,
    Merge = 3,
    Commit = 4,
    Revert = 5,
    Snapshot = 6,
}

impl Phase {
    /// The phase's name, as scenario files and `Board.CutAtPhase` write it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Write => "write",
            Phase::Finalize => "finalize",
            Phase::Boot => "boot",
            Phase::Merge => "merge",
            Phase::Commit => "commit",
            Phase::Revert => "revert",
            Phase::Snapshot => "snapshot",
        }
    }
}

/// Who started an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `OTA.Begin`, `OTA.Write`, `OTA.End`.
    Rpc,
    /// `POST /update`.
    Push,
    /// `OTA.Update {url}`, `/update?url=`, or polling.
    Pull,
}

/// Why the boot loader chose a slot (`ota_core::boot::BootReason`, without the error detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BootReason {
    /// The active image is committed.
    Committed,
    /// The first boot of a new, uncommitted image: its one trial.
    Trial,
    /// An uncommitted image booted again without a commit: back to the revert slot.
    Reverted { from: u8 },
    /// The chosen slot's image did not verify; the other one did.
    FellBack { from: u8 },
    /// The state could not be written, so the new image did not get its trial.
    TrialSkipped,
    /// No boot-state record decoded; an image that verifies against its slot's descriptor boots.
    Recovered,
}

impl From<ota_core::boot::BootReason> for BootReason {
    fn from(reason: ota_core::boot::BootReason) -> BootReason {
        use ota_core::boot::BootReason as Core;
        match reason {
            Core::Committed => BootReason::Committed,
            Core::Trial => BootReason::Trial,
            Core::Reverted { from } => BootReason::Reverted { from: from.index() as u8 },
            Core::FellBack { from } => BootReason::FellBack { from: from.index() as u8 },
            Core::TrialSkipped { .. } => BootReason::TrialSkipped,
            Core::Recovered => BootReason::Recovered,
        }
    }
}

impl fmt::Display for BootReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootReason::Committed => f.write_str("Committed"),
            BootReason::Trial => f.write_str("Trial"),
            BootReason::Reverted { from } => write!(f, "Reverted from slot {from}"),
            BootReason::FellBack { from } => write!(f, "FellBack from slot {from}"),
            BootReason::TrialSkipped => f.write_str("TrialSkipped"),
            BootReason::Recovered => f.write_str("Recovered"),
        }
    }
}

/// Something the device did. Slots are indices (0 or 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PowerOn,
    PowerLost { op: Option<u64> },
    Boot { slot: u8, reason: BootReason },
    Merged { copied: u32, kept_new: u32 },
    MergeFailed { why: String },
    Crashed,
    Hung { slot: u8 },
    Running { slot: u8, version: String },
    WatchdogReset,
    Committed,
    TimerExpired,
    Reverted,
    UpdateStarted { source: Source, commit_timeout_s: u32 },
    Phase { phase: Phase },
    UpdateProgress { received_bytes: u64, percent: u32 },
    UpdateApplied { slot: u8 },
    UpToDate,
    UpdateRefused { why: String },
    UpdateAborted { why: String },
    Snapshot { slot: u8 },
    Rebooting { why: String },
    Bricked { why: String },
}

impl Event {
    /// An event that reports a failure: after a power cut, the failure is the cut's echo.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Event::MergeFailed { .. }
                | Event::UpdateRefused { .. }
                | Event::UpdateAborted { .. }
                | Event::Bricked { .. }
                | Event::Crashed
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PowerOn => f.write_str("power on"),
            Event::PowerLost { op: Some(op) } => write!(f, "power lost at flash op {op}"),
            Event::PowerLost { op: None } => f.write_str("power lost"),
            Event::Boot { slot, reason } => write!(f, "boot slot {slot} ({reason})"),
            Event::Merged { copied, kept_new } => {
                write!(f, "fs merged: {copied} copied, {kept_new} kept from the image")
            }
            Event::MergeFailed { why } => write!(f, "fs merge failed: {why}"),
            Event::Crashed => f.write_str("firmware crashed at boot"),
            Event::Hung { slot } => write!(f, "firmware in slot {slot} hangs"),
            Event::Running { slot, version } => write!(f, "running {version} in slot {slot}"),
            Event::WatchdogReset => f.write_str("watchdog reset"),
            Event::Committed => f.write_str("committed"),
            Event::TimerExpired => f.write_str("commit timer expired"),
            Event::Reverted => f.write_str("reverted"),
            Event::UpdateStarted { source, commit_timeout_s } => {
                write!(f, "update started ({source:?}, commit timeout {commit_timeout_s} s)")
            }
            Event::Phase { phase } => write!(f, "phase {phase:?}"),
            Event::UpdateProgress { received_bytes, percent } => {
                write!(f, "update progress: {received_bytes} bytes, {percent} %")
            }
            Event::UpdateApplied { slot } => write!(f, "update applied to slot {slot}"),
            Event::UpToDate => f.write_str("version is the same as current; nothing written"),
            Event::UpdateRefused { why } => write!(f, "update refused: {why}"),
            Event::UpdateAborted { why } => write!(f, "update aborted: {why}"),
            Event::Snapshot { slot } => write!(f, "snapshot in slot {slot}"),
            Event::Rebooting { why } => write!(f, "reboot: {why}"),
            Event::Bricked { why } => write!(f, "BRICKED: {why}"),
        }
    }
}

/// An event with the device time it happened at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub ms: u64,
    /// Mutating flash operations done when it happened (0 where the port does not count them):
    /// the operations between two events belong to the later one.
    #[serde(default)]
    pub ops: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Stamped {
    /// The console line, without the line end: [`CONSOLE_PREFIX`] then one JSON object.
    pub fn console_line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        alloc::format!("{CONSOLE_PREFIX}{json}")
    }

    /// The event of a console line, if the line is one (any text may precede the prefix, as a
    /// log line's timestamp does).
    pub fn from_console_line(line: &str) -> Option<Stamped> {
        let at = line.find(CONSOLE_PREFIX)?;
        serde_json::from_str(line[at + CONSOLE_PREFIX.len()..].trim_end()).ok()
    }
}

/// The last [`Journal::CAPACITY`] events since the firmware started, numbered, for transports
/// without a console: `Sys.Events {since}` returns those numbered `since` and later.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    /// The number of the first event kept.
    first: u64,
    kept: VecDeque<Stamped>,
}

impl Journal {
    /// Events kept; older ones are dropped, and `Sys.Events` says how many were.
    pub const CAPACITY: usize = 256;

    pub fn push(&mut self, stamped: Stamped) {
        if self.kept.len() == Self::CAPACITY {
            self.kept.pop_front();
            self.first += 1;
        }
        self.kept.push_back(stamped);
    }

    /// The number the next event will get.
    pub fn next(&self) -> u64 {
        self.first + self.kept.len() as u64
    }

    /// The events numbered `since` and later that are still kept, and how many of those asked
    /// for were dropped.
    pub fn since(&self, since: u64) -> (Vec<Stamped>, u64) {
        let dropped = self.first.saturating_sub(since);
        let skip = since.saturating_sub(self.first).min(self.kept.len() as u64) as usize;
        (self.kept.iter().skip(skip).cloned().collect(), dropped)
    }
}
