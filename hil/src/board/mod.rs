//! Boards: where a scenario runs. Every backend sits behind [`Board`]; the engine never asks
//! which one it has, only what it can do ([`Capabilities`]).

use std::fmt;

use crate::result::EventKind;
use crate::scenario::model::{Cut, SweepSpec, Transport};

pub mod config;
pub mod device;
pub mod esp32c3;
pub mod fleet;
pub mod http_push;
pub mod qemu;
pub mod sim;
pub mod virtual_board;

/// What a board can do. A scenario step that needs something missing here skips the scenario
/// on this board, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    pub transports: Vec<Transport>,
    pub cut_at_op: bool,
    pub cut_at_fraction: bool,
    pub cut_at_phase: bool,
    /// `at_every_op`: the board answers a push whose armed operation never came with the push's
    /// own result and leaves nothing armed, so the engine knows when the sweep is done.
    pub cut_at_every_op: bool,
    /// Exhaustive sweeps (the board can snapshot and restore its flash).
    pub sweep: bool,
    /// Time is simulated: waits cost nothing.
    pub virtual_time: bool,
    /// Why the board cannot cut its power at all, when it cannot (a real board without a relay
    /// or hub port): every scenario with a power cut is skipped with this reason.
    pub no_power_cut: Option<String>,
}

/// A board's name and platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardInfo {
    /// The board file's stem, or "sim" for the built-in simulator.
    pub name: String,
    /// The backend kind, as in the board file: "sim", "virtual", "qemu", "esp32".
    pub kind: String,
    /// What the device answers for its platform; bundles built by the runner use it.
    pub platform: String,
    /// Slot sizes: bundles built by the runner size their filesystem image for the fs slot, and
    /// a "too big" app for the app slot.
    pub app_slot_bytes: u32,
    pub fs_slot_bytes: u32,
    /// The built firmware image a bundle's app part is made from, its app descriptor patched
    /// per version and behaviour (the QEMU board); `None`: a simulated image.
    pub app_image: Option<std::sync::Arc<Vec<u8>>>,
}

/// A push, as the engine asks for it.
#[derive(Clone, Debug)]
pub struct PushRequest<'a> {
    pub bundle: &'a [u8],
    pub transport: Transport,
    pub commit_timeout_s: u32,
    pub ignore_same_version: bool,
    pub chunk_bytes: usize,
}

/// How a push ended, as the device reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushResult {
    /// Applied; the device rebooted into the new image.
    Applied,
    /// "Version is the same as current".
    UpToDate,
    /// The device refused it, with its message.
    Refused { message: String },
    /// The power went during the push.
    PowerLost,
}

/// The boot state as `OTA.GetBootState` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootStateView {
    pub active_slot: u8,
    pub revert_slot: Option<u8>,
    pub committed: bool,
    pub commit_timeout_s: u32,
}

/// What the device is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    Off,
    /// A firmware runs: its slot and version.
    Running {
        slot: u8,
        version: String,
    },
    /// A firmware hangs (the watchdog will reset it).
    Hung {
        slot: u8,
    },
    Bricked {
        why: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub activity: Activity,
    /// `None` when it cannot be read (no power, nothing running to ask).
    pub boot_state: Option<BootStateView>,
}

/// A sweep's figures, as a board reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepReport {
    pub points: u64,
    pub seconds: f64,
    /// One line per broken invariant, each with its replay command.
    pub failures: Vec<String>,
    /// One line per sweep, for the console.
    pub lines: Vec<String>,
}

/// Something the device refused (a commit of a committed image, a write with no firmware
/// running). A scenario may expect it.
pub type Refusal = String;

/// The board or the runner broke: not a device answer. `help` tells the user what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardError {
    pub message: String,
    pub help: Option<String>,
}

impl BoardError {
    pub fn new(message: impl Into<String>) -> BoardError {
        BoardError { message: message.into(), help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> BoardError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

pub type BoardResult<T> = Result<T, BoardError>;

/// What a `shadow` step sets, as the board carries it out.
#[derive(Clone, Copy, Debug)]
pub enum ShadowSet<'a> {
    /// A bundle for the board to serve; `desired.ota.url` names it.
    Bundle(&'a [u8]),
    /// `desired.ota.url` as given.
    Url(&'a str),
    /// The delta document as given.
    Doc(&'a str),
}

/// The device's reported `ota` state (`ota_proto::mqtt::OtaReport`).
pub use ota_proto::mqtt::OtaReport;

/// A device the engine can drive.
pub trait Board {
    fn info(&self) -> &BoardInfo;
    fn capabilities(&self) -> &Capabilities;

    /// Starts a trial on a blank device (flash erased, power off), seeded with `seed`.
    fn start_trial(&mut self, seed: u64) -> BoardResult<()>;

    /// Factory-flashes a bundle into slot 0, committed. The device is off afterwards.
    fn provision(&mut self, bundle: &[u8]) -> BoardResult<()>;

    fn power_on(&mut self) -> BoardResult<()>;
    fn power_cut(&mut self) -> BoardResult<()>;

    /// Arms a power cut for the next action only.
    fn arm_cut(&mut self, cut: Cut) -> BoardResult<()>;
    /// Disarms a cut that did not strike.
    fn disarm_cut(&mut self) -> BoardResult<()>;

    fn push(&mut self, request: &PushRequest<'_>) -> BoardResult<PushResult>;
    fn wait(&mut self, ms: u64) -> BoardResult<()>;
    fn commit(&mut self) -> BoardResult<Result<(), Refusal>>;
    fn revert(&mut self) -> BoardResult<Result<(), Refusal>>;
    fn reboot(&mut self) -> BoardResult<()>;
    /// `OTA.CreateSnapshot`; the slot that holds the snapshot.
    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>>;

    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>>;
    /// A file of the running firmware's filesystem; `None` when absent.
    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>>;

    fn status(&mut self) -> BoardResult<Status>;

    /// Device time now, in milliseconds.
    fn device_ms(&self) -> u64;

    /// The step about to run may take at most `timeout` of real time: every wait the board
    /// does for it ends by then, saying what it was still waiting for. Boards whose steps never
    /// wait (the simulator, on virtual time) ignore it.
    fn step_timeout(&mut self, timeout: std::time::Duration) {
        let _ = timeout;
    }

    /// Timeline events since the last call, with their device time.
    fn drain_events(&mut self) -> Vec<(u64, EventKind)>;
    /// Console lines since the last call.
    fn drain_console(&mut self) -> Vec<String>;

    /// Runs a push uncut while keeping the flash as it stood before each of its flash
    /// operations, which is what a cut there leaves: the push's result and the number of points
    /// kept. `None`: the board cannot record, and did not push. An exhaustive cut
    /// (`at_every_op`) then powers on from each point instead of pushing again up to it.
    fn push_recorded(&mut self, request: &PushRequest<'_>) -> BoardResult<Option<(PushResult, u64)>> {
        let _ = request;
        Ok(None)
    }

    /// Starts a trial from point `n` of the last [`Board::push_recorded`]: the flash as it stood
    /// before that flash operation, the power off.
    fn start_trial_at_point(&mut self, seed: u64, n: u64) -> BoardResult<()> {
        let _ = (seed, n);
        Err(BoardError::new(format!("the {} board records no pushes", self.info().kind)))
    }

    /// Whether the flash now is byte for byte point `n` of the last recorded push (after a cut
    /// before that operation: the check that the recording is what a cut leaves).
    fn flash_is_point(&mut self, n: u64) -> BoardResult<bool> {
        let _ = n;
        Err(BoardError::new(format!("the {} board records no pushes", self.info().kind)))
    }

    /// Capability: how many devices the board drives (a fleet of virtual boards on one broker
    /// has several). A scenario that needs more is skipped with the reason.
    fn devices(&self) -> usize {
        1
    }

    /// Capability: ota-shadow (a broker the devices are on). Scenarios with `shadow` steps or
    /// `reported` expectations are skipped without it.
    fn has_shadow(&self) -> bool {
        false
    }

    /// The device the following calls act on (0-based, below [`Board::devices`]).
    fn select_device(&mut self, index: usize) -> BoardResult<()> {
        match index {
            0 => Ok(()),
            _ => {
                Err(BoardError::new(format!("board {} has one device, not {}", self.info().name, index + 1)))
            }
        }
    }

    /// Sets the selected device's desired `ota` state; returns at once, whether the device is
    /// online or not.
    fn shadow_set(&mut self, desired: &ShadowSet<'_>) -> BoardResult<()> {
        let _ = desired;
        Err(BoardError::new(format!("board {} has no shadow", self.info().name)))
    }

    /// Waits (within the step's timeout) until the selected device reports an `ota` state that
    /// `accept` takes or that is final (a code of 0 or below), letting device time pass across
    /// the reboots an update needs; the last report, if any came.
    fn shadow_reported(&mut self, accept: &dyn Fn(&OtaReport) -> bool) -> BoardResult<Option<OtaReport>> {
        let _ = accept;
        Err(BoardError::new(format!("board {} has no shadow", self.info().name)))
    }

    /// An exhaustive sweep; only boards whose capabilities say `sweep`.
    fn sweep(&mut self, spec: &SweepSpec, seed: u64) -> BoardResult<SweepReport> {
        let _ = (spec, seed);
        Err(BoardError::new(format!("board {} cannot run sweeps", self.info().name)))
    }
}

/// The board a board file describes.
pub fn open(config: &config::BoardConfig) -> Box<dyn Board> {
    match &config.backend {
        config::Backend::Sim(sim) => {
            Box::new(sim::SimBoard::new(&config.name, &config.platform, sim.clone()))
        }
        config::Backend::Virtual(v) if v.mqtt || v.devices > 1 => {
            Box::new(fleet::Fleet::new(&config.name, &config.platform, v.clone()))
        }
        config::Backend::Virtual(v) => {
            Box::new(virtual_board::VirtualBoard::new(&config.name, &config.platform, v.clone()))
        }
        config::Backend::Qemu(q) => Box::new(qemu::QemuBoard::new(&config.name, &config.platform, q.clone())),
        config::Backend::Esp32c3(c) => {
            Box::new(esp32c3::Esp32c3Board::new(&config.name, &config.platform, c.clone()))
        }
    }
}

/// The timeline event for a device event, when it marks one (phases, progress and the like do
/// not). Every board turns the device's typed events into the timeline through this one place.
pub(crate) fn timeline_event(event: &ota_app::Event, cut_how: &str) -> Option<EventKind> {
    use ota_app::Event;
    Some(match event {
        Event::PowerOn => EventKind::PowerOn,
        Event::PowerLost { op } => {
            let how =
                if op.is_some() && !cut_how.is_empty() { cut_how.to_string() } else { "power cut".into() };
            EventKind::PowerCut { op: *op, how }
        }
        Event::Boot { slot, reason } => EventKind::Boot { slot: *slot, reason: reason.to_string() },
        Event::Merged { copied, .. } => EventKind::Merge { copied: *copied },
        Event::MergeFailed { why } => EventKind::Note { text: format!("merge failed: {why}") },
        Event::Crashed => EventKind::Crash,
        Event::Hung { slot } => EventKind::Note { text: format!("firmware in slot {slot} hangs") },
        Event::WatchdogReset => EventKind::WatchdogReset,
        Event::Committed => EventKind::Commit,
        Event::TimerExpired => EventKind::Note { text: "commit timer expired".into() },
        Event::Reverted => EventKind::Revert { why: "revert".into() },
        Event::UpdateApplied { slot } => EventKind::UpdateApplied { slot: *slot },
        Event::UpToDate => EventKind::Note { text: "up to date: nothing written".into() },
        Event::UpdateRefused { why } | Event::UpdateAborted { why } => {
            EventKind::Refused { message: why.clone() }
        }
        Event::Snapshot { slot } => EventKind::Note { text: format!("snapshot in slot {slot}") },
        Event::Bricked { why } => EventKind::Bricked { why: why.clone() },
        Event::Running { .. }
        | Event::UpdateStarted { .. }
        | Event::Phase { .. }
        | Event::UpdateProgress { .. }
        | Event::Rebooting { .. } => return None,
    })
}
