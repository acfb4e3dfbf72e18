//! The running application on any `NorFlash`: [`start`] after every reset, then [`App`].
//!
//! [`start`] runs the boot decision, the first-boot filesystem merge and the firmware's start.
//! On a board whose boot loader is a binary of its own, the boot loader decides and the
//! application starts with [`start_booted`] from its outcome ([`Booted`]): the same path after
//! the decision.
//! The returned [`App`] serves the OTA operations (one update session for every source, commit,
//! revert, the boot state, snapshots, files), and [`App::tick`] runs what falls due (the commit
//! deadline, a firmware's own commit, the update timeout, a scheduled reboot). Nothing here does
//! I/O, reads a clock or starts a thread: time comes in as `now_ms`, events go out through
//! [`App::take_events`], and the transports live in the port.
//!
//! # Whose commit timer runs
//!
//! | running slot vs. state     | state      | commit timer                                        |
//! |----------------------------|------------|-----------------------------------------------------|
//! | running = active           | committed  | none                                                |
//! | running = active           | uncommitted| this boot is the trial: commit at once (timeout 0) or revert at the deadline |
//! | running ≠ active           | any        | none: the new image has not run yet (an update was just applied, or its trial was skipped); it gets its own trial at its first boot |
//!
//! The rows are the core's `BootState::seen_from`: the running image sees itself committed whenever
//! the record names another slot.
//!
//! The third row is what keeps an image that never ran from being committed: a commit, by timer
//! or by `OTA.Commit`, commits only the image that is running.
//!
//! What the firmware does is read from its image ([`crate::image`]): an image with the
//! simulator's header behaves as the header says (a healthy one commits as soon as it has
//! started); an image without it is an ordinary application, which commits when told to
//! (`OTA.Commit`) or, with a commit timeout of 0, on its first healthy boot.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootOutcome};
use ota_core::control::{self, BootStatePatch, ControlError, SnapshotOptions, TimerVerdict};
use ota_core::flash::RegionDigests;
use ota_core::layout::{Layout, Slot};
use ota_core::manifest::Platform;
use ota_core::merge;
use ota_core::state::BootState;
use ota_core::updater::{self, Outcome, UpdateError, UpdateOptions, Updater};
use ota_lfs::Shared;

use crate::config::{self, Config};
use crate::event::{Event, Journal, Phase, Source, Stamped};
use crate::image::{self, Behaviour};

/// How long after "Update applied" or a revert the device reboots, as Mongoose OS does.
pub const REBOOT_DELAY_MS: u64 = 100;

/// The longest delay or timeout any input may ask for: one week. Larger values are refused with
/// this bound named, so no input can overflow the device's arithmetic.
pub const DELAY_MAX_MS: u64 = 7 * 24 * 3600 * 1000;

/// What the application asks of a port's flash beyond [`NorFlash`]: hooks for a simulator or
/// a test rig, and [`RegionDigests`] (image digests the flash may already know; each answer equals
/// hashing the bytes). A real flash takes the defaults (`impl Flash for MyFlash {}` and
/// `impl RegionDigests for MyFlash {}`).
pub trait Flash: NorFlash + RegionDigests {
    /// Mutating flash operations so far, to stamp each event with (0 when not counted).
    fn ops_done(&self) -> u64 {
        0
    }

    /// False once a simulated power cut has struck: what the code does after it is the cut's
    /// echo, not the device's behaviour, so no event reports it.
    fn powered(&self) -> bool {
        true
    }

    /// A step that [`Event::Phase`] marks starts now; a rig may arm a power cut at its first
    /// flash operation.
    fn phase_starts(&mut self, _phase: Phase) {}
}

/// A RAM flash counts nothing and never loses power.
impl<const W: usize, const E: usize> Flash for ota_core::flash::RamFlash<'_, W, E> {}

/// What the application is configured with at build time.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The platform a bundle's `platform` must match.
    pub platform: String,
    /// The application's name, as `Sys.GetInfo` reports it.
    pub app_name: String,
    /// The device id used when `conf9.json` sets none.
    pub default_device_id: String,
    /// How long a hung firmware runs before the watchdog resets it.
    pub watchdog_ms: u64,
    /// The updater's work buffer (the most one program writes; an update session holds at
    /// least `MANIFEST_MAX_BYTES` for the manifest); also the merge's copy buffer.
    pub work_buffer_bytes: usize,
    /// An update with no progress for this long is abandoned (`update.timeout`, 600 s).
    pub update_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            platform: "host".into(),
            app_name: "ota-firmware".into(),
            default_device_id: "virtual-board".into(),
            watchdog_ms: 10_000,
            work_buffer_bytes: 4096,
            update_timeout_ms: 600_000,
        }
    }
}

/// An error as the RPC layer reports it: `{code, message}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into() }
    }
}

impl core::fmt::Display for RpcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn control_error(e: ControlError) -> RpcError {
    RpcError::new(e.code(), e.to_string())
}

/// How [`start`] ended. Every variant gives the flash back to the port.
pub enum Start<F> {
    Running(Box<App<F>>),
    /// The firmware did not get to run (a crash at boot, a failed merge): boot again.
    Reset {
        flash: F,
    },
    /// The firmware hangs: the watchdog resets the device after `watchdog_ms`.
    Hung {
        flash: F,
        slot: Slot,
    },
    /// Nothing boots.
    Bricked {
        flash: F,
        why: String,
    },
}

/// Where the OTA machinery stands, as `OTA.Status` reports it (`mgos_ota_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtaState {
    Idle = 0,
    Progress = 1,
    Error = 2,
    Success = 3,
}

/// Names one update session. Every call that feeds or ends a session names it, so the bytes of
/// an upload whose session ended can never land in a session someone else opened later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionId(u64);

#[derive(Clone)]
struct Session {
    id: SessionId,
    updater: Updater<Vec<u8>>,
    source: Source,
    /// Bytes of the bundle taken so far.
    received: u64,
    /// The bundle's size when the sender said (`OTA.Begin {size}`, a Content-Length).
    size: Option<u64>,
    last_progress_ms: u64,
    timeout_ms: u64,
    /// The last progress event's tenth (0..=10).
    reported_tenths: u64,
}

fn no_snapshot() -> RpcError {
    RpcError::new(-1, "no snapshot in progress; nothing copied")
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("received", &self.received)
            .field("target", &self.updater.target())
            .finish_non_exhaustive()
    }
}

/// How a finished update ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// "Update applied, finalizing": the device reboots in [`REBOOT_DELAY_MS`].
    Applied { slot: Slot },
    /// "Version is the same as current": nothing written, no reboot.
    UpToDate,
}

impl Finished {
    /// Mongoose OS's status message for it.
    pub fn message(&self) -> &'static str {
        match self {
            Finished::Applied { .. } => "Update applied, finalizing",
            Finished::UpToDate => "Version is the same as current",
        }
    }
}

/// What [`App::tick`] asks of the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// Reboot now (a scheduled reboot, or the commit deadline passed and the state reverted).
    Reboot {
        why: String,
    },
    /// Polling is due (§6.2): the port runs this pull over its network.
    Pull(crate::service::PullRequest),
}

/// The running application. It owns the flash while it runs; [`App::into_flash`] gives it back
/// for a reboot.
pub struct App<F> {
    flash: F,
    /// Everything else a resumed application needs ([`Resume`]).
    ram: Resume,
    events: Vec<Stamped>,
    /// Every event since the firmware started, for `Sys.Events`.
    journal: Journal,
    /// `conf9.json` over the defaults, as last read.
    config: Option<Config>,
}

/// The application's RAM between calls, without the flash: what a simulator saves with a
/// flash snapshot to resume the same application later ([`App::resume`]), an update session in
/// progress included.
#[derive(Clone, Debug)]
pub struct Resume {
    /// The update session in progress.
    session: Option<Session>,
    /// The snapshot copy in progress.
    snapshot: Option<control::SnapshotCopy>,
    layout: Layout,
    settings: Settings,
    slot: Slot,
    boot_ms: u64,
    /// The running slot and when its commit timer was armed, for every boot-state call.
    running: control::Running,
    behaviour: Behaviour,
    version: String,
    /// The image carries the simulator's header.
    simulated: bool,
    sessions_opened: u64,
    state: OtaState,
    message: String,
    progress_percent: u32,
    reboot_at_ms: Option<u64>,
    /// Device time of the last poll, for `update.interval`.
    last_poll_ms: u64,
}

/// Where [`start`] puts its events, stamped with the time it ran at.
struct Events<'a> {
    out: &'a mut Vec<Stamped>,
    ms: u64,
}

impl Events<'_> {
    fn push<F: Flash>(&mut self, flash: &mut F, event: Event) {
        stamp(self.out, flash, self.ms, event);
    }
}

/// Adds `event` to `out`, unless the power is gone; a phase tells the flash first.
fn stamp<F: Flash>(out: &mut Vec<Stamped>, flash: &mut F, ms: u64, event: Event) {
    if !flash.powered() {
        return;
    }
    if let Event::Phase { phase } = event {
        flash.phase_starts(phase);
    }
    out.push(Stamped { ms, ops: flash.ops_done(), event });
}

/// What the boot loader decided, as the application needs it: on a board whose boot loader is
/// its own binary, this is what it hands over (the application must not decide again: a second
/// decision would count as the second boot and revert).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booted {
    /// The slot that runs.
    pub slot: Slot,
    pub reason: crate::event::BootReason,
    /// This is `slot`'s one trial boot ([`BootOutcome::Boot`]).
    pub first_boot: bool,
    /// Merge this slot's filesystem into `slot`'s first.
    pub merge_from: Option<Slot>,
}

/// Boots: the boot loader's decision, the first-boot merge, then the firmware's start. Events
/// go to `events`.
pub fn start<F: Flash>(
    mut flash: F,
    layout: Layout,
    settings: Settings,
    now_ms: u64,
    events: &mut Vec<Stamped>,
) -> Start<F> {
    let mut buf = vec![0u8; settings.work_buffer_bytes.max(1)];
    phase_boot(&mut flash, now_ms, events);
    let decision = boot::boot_with_known_digests(&mut flash, &layout, &mut buf);
    start_from_decision_in(flash, layout, settings, decision, now_ms, events, &mut buf)
}

/// Marks the boot decision's phase, before it runs.
pub(crate) fn phase_boot<F: Flash>(flash: &mut F, now_ms: u64, events: &mut Vec<Stamped>) {
    Events { out: events, ms: now_ms }.push(flash, Event::Phase { phase: Phase::Boot });
}

/// [`start`] after a boot decision taken elsewhere (`crate::otadata::early_start`).
pub(crate) fn start_from_decision<F: Flash>(
    flash: F,
    layout: Layout,
    settings: Settings,
    decision: Result<BootOutcome, ota_core::flash::FlashError>,
    now_ms: u64,
    events: &mut Vec<Stamped>,
) -> Start<F> {
    let mut buf = vec![0u8; settings.work_buffer_bytes.max(1)];
    start_from_decision_in(flash, layout, settings, decision, now_ms, events, &mut buf)
}

#[allow(clippy::too_many_arguments)]
fn start_from_decision_in<F: Flash>(
    mut flash: F,
    layout: Layout,
    settings: Settings,
    decision: Result<BootOutcome, ota_core::flash::FlashError>,
    now_ms: u64,
    events: &mut Vec<Stamped>,
    buf: &mut [u8],
) -> Start<F> {
    let mut out = Events { out: events, ms: now_ms };
    match decision {
        Err(e) => {
            let why = format!("the boot loader could not read the flash: {e}");
            out.push(&mut flash, Event::Bricked { why: why.clone() });
            Start::Bricked { flash, why }
        }
        Ok(BootOutcome::NotProvisioned) => {
            let why = String::from("no boot state: never provisioned");
            out.push(&mut flash, Event::Bricked { why: why.clone() });
            Start::Bricked { flash, why }
        }
        Ok(BootOutcome::NoBootableImage) => {
            let why = String::from("no slot holds an image that verifies");
            out.push(&mut flash, Event::Bricked { why: why.clone() });
            Start::Bricked { flash, why }
        }
        Ok(BootOutcome::Boot { slot, reason, state, first_boot, merge_from }) => {
            let booted = Booted { slot, reason: reason.into(), first_boot, merge_from };
            run_booted(flash, layout, settings, booted, &state.record.state, out.ms, out.out, buf)
        }
    }
}

/// Starts the firmware the boot loader chose (`booted`): the first-boot merge, then the
/// firmware's start, as [`start`] does after its decision. The boot state is read from the
/// flash, where the boot loader left it. Events go to `events`.
pub fn start_booted<F: Flash>(
    mut flash: F,
    layout: Layout,
    settings: Settings,
    booted: Booted,
    now_ms: u64,
    events: &mut Vec<Stamped>,
) -> Start<F> {
    let mut buf = vec![0u8; settings.work_buffer_bytes.max(1)];
    let state = match control::read(&mut flash, &layout) {
        Ok(located) => located.record.state,
        Err(e) => {
            let why = format!("the firmware could not read the boot state the boot loader left: {e}");
            stamp(events, &mut flash, now_ms, Event::Bricked { why: why.clone() });
            return Start::Bricked { flash, why };
        }
    };
    run_booted(flash, layout, settings, booted, &state, now_ms, events, &mut buf)
}

/// [`start`] after the decision: the boot event, the merge, the firmware's behaviour, the [`App`].
#[allow(clippy::too_many_arguments)]
fn run_booted<F: Flash>(
    mut flash: F,
    layout: Layout,
    settings: Settings,
    booted: Booted,
    state: &BootState,
    now_ms: u64,
    events: &mut Vec<Stamped>,
    buf: &mut [u8],
) -> Start<F> {
    let Booted { slot, reason, first_boot, merge_from } = booted;
    let mut out = Events { out: events, ms: now_ms };
    out.push(&mut flash, Event::Boot { slot: slot.index() as u8, reason });
    if let Some(old_slot) = merge_from {
        out.push(&mut flash, Event::Phase { phase: Phase::Merge });
        let result = merge_into(&mut flash, &layout, old_slot, slot, state, buf);
        match result {
            Ok((copied, kept_new)) => out.push(&mut flash, Event::Merged { copied, kept_new }),
            Err(why) => {
                // As Mongoose OS's failed init: revert, and boot again.
                out.push(&mut flash, Event::MergeFailed { why });
                if control::revert(&mut flash, &layout, slot).is_ok() {
                    out.push(&mut flash, Event::Reverted);
                }
                return Start::Reset { flash };
            }
        }
    }
    // The header need not come first (an ESP32-C3 image puts ESP-IDF's own headers before it).
    let region = layout.app(slot);
    let mut head = vec![0u8; image::HEADER_SEARCH_BYTES.min(region.size_bytes as usize)];
    let _ = flash.read(region.offset, &mut head);
    let at = image::find_header(&head).unwrap_or(0);
    let (behaviour, header_version) = image::parse_header(&head[at..]);
    match behaviour {
        Behaviour::CrashesAtBoot => {
            out.push(&mut flash, Event::Crashed);
            return Start::Reset { flash };
        }
        Behaviour::Hangs => {
            out.push(&mut flash, Event::Hung { slot: slot.index() as u8 });
            return Start::Hung { flash, slot };
        }
        _ => {}
    }
    let manifest_version = state.slot(slot).version.as_str().to_string();
    let simulated = header_version.is_some();
    let version =
        if manifest_version.is_empty() { header_version.unwrap_or_default() } else { manifest_version };
    out.push(&mut flash, Event::Running { slot: slot.index() as u8, version: version.clone() });
    let ram = Resume {
        session: None,
        snapshot: None,
        layout,
        settings,
        slot,
        boot_ms: now_ms,
        running: control::Running::booted(slot, first_boot, now_ms),
        behaviour,
        version,
        simulated,
        sessions_opened: 0,
        state: OtaState::Idle,
        message: String::new(),
        progress_percent: 0,
        reboot_at_ms: None,
        last_poll_ms: now_ms,
    };
    let mut app = App { flash, ram, events: Vec::new(), journal: Journal::default(), config: None };
    for stamped in out.out.iter() {
        app.journal.push(stamped.clone());
    }
    if simulated && behaviour == Behaviour::Healthy && !state.seen_from(slot).committed {
        // The firmware checked itself and commits, as an app calling `OTA.Commit` at start does.
        let _ = app.commit(now_ms);
    }
    out.out.append(&mut app.events);
    Start::Running(Box::new(app))
}

/// The first-boot merge: the revert slot's filesystem into the new one, formatting it first
/// when the bundle shipped none. Returns (copied, kept from the image).
fn merge_into<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    old_slot: Slot,
    slot: Slot,
    state: &BootState,
    buf: &mut [u8],
) -> Result<(u32, u32), String> {
    let cell = RefCell::new(flash);
    let old = layout.fs(old_slot);
    let new = layout.fs(slot);
    if state.slot(slot).fs_len_bytes == 0 {
        ota_lfs::format(&mut Shared(&cell), new).map_err(|e| e.to_string())?;
    }
    let (mut old_flash, mut new_flash) = (Shared(&cell), Shared(&cell));
    let mut old_fs =
        ota_lfs::LfsFs::mount(&mut old_flash, old).map_err(|e| format!("old filesystem: {e}"))?;
    let mut new_fs =
        ota_lfs::LfsFs::mount(&mut new_flash, new).map_err(|e| format!("new filesystem: {e}"))?;
    let report = merge::merge(&mut old_fs, &mut new_fs, buf).map_err(|e| e.to_string())?;
    Ok((report.copied, report.kept_new))
}

impl<F: Flash> App<F> {
    /// The RAM state to resume from, an update session in progress included (its updater
    /// clones with its work buffer).
    pub fn resume_point(&self) -> Resume {
        self.ram.clone()
    }

    /// The application saved at `point`, on `flash` restored to the same moment.
    pub fn resume(flash: F, point: Resume) -> App<F> {
        App { flash, ram: point, events: Vec::new(), journal: Journal::default(), config: None }
    }

    /// Gives the flash back, for a reboot.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The flash, for a port that checks it (the simulator's power, say).
    pub fn flash(&self) -> &F {
        &self.flash
    }

    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    pub fn slot(&self) -> Slot {
        self.ram.slot
    }

    pub fn boot_ms(&self) -> u64 {
        self.ram.boot_ms
    }

    pub fn behaviour(&self) -> Behaviour {
        self.ram.behaviour
    }

    pub fn settings(&self) -> &Settings {
        &self.ram.settings
    }

    pub fn layout(&self) -> &Layout {
        &self.ram.layout
    }

    /// What happened since the last call.
    pub fn take_events(&mut self) -> Vec<Stamped> {
        core::mem::take(&mut self.events)
    }

    fn emit(&mut self, now_ms: u64, event: Event) {
        let before = self.events.len();
        stamp(&mut self.events, &mut self.flash, now_ms, event);
        if let Some(stamped) = self.events.get(before) {
            self.journal.push(stamped.clone());
        }
    }

    /// The events since this firmware started (`Sys.Events`).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The boot state as stored.
    pub fn stored_boot_state(&mut self) -> Result<BootState, RpcError> {
        control::read(&mut self.flash, &self.ram.layout).map(|l| l.record.state).map_err(control_error)
    }

    /// The boot state as the device reports it: as the running image sees it
    /// ([`BootState::seen_from`]). After an update was applied, or a trial was skipped, the
    /// record names the other slot, but this one runs, committed.
    pub fn boot_state(&mut self) -> Result<BootState, RpcError> {
        control::get_boot_state(&mut self.flash, &self.ram.layout, self.ram.slot).map_err(control_error)
    }

    /// The running firmware's version and build id: as its bundle's manifest gave them, else as
    /// its image header says.
    pub fn version(&mut self) -> (String, String) {
        let build_id = self
            .stored_boot_state()
            .map(|s| s.slot(self.ram.slot).build_id.as_str().to_string())
            .unwrap_or_default();
        (self.ram.version.clone(), build_id)
    }

    /// Whether the running image is committed.
    pub fn is_committed(&mut self) -> bool {
        self.boot_state().is_ok_and(|s| s.committed)
    }

    // ---- The update session ----

    /// Starts an update (any source) and names its session. Refused while one runs, while the
    /// running image is uncommitted, and on bad options.
    pub fn update_begin(
        &mut self,
        source: Source,
        options: UpdateOptions,
        size: Option<u64>,
        timeout_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<SessionId, RpcError> {
        if let Some(session) = &self.ram.session {
            return Err(RpcError::new(
                -1,
                format!("Another update is in progress ({:?}); call OTA.End to abort it", session.source),
            ));
        }
        let timeout_ms = timeout_ms.unwrap_or(self.ram.settings.update_timeout_ms);
        if timeout_ms > DELAY_MAX_MS {
            return Err(RpcError::new(
                -1,
                format!("timeout must be at most {} s; no update started", DELAY_MAX_MS / 1000),
            ));
        }
        let arch = Platform::new(&self.ram.settings.platform)
            .ok_or_else(|| RpcError::new(-1, "platform name too long"))?;
        let device = updater::Device { arch, app_part: None };
        // The manifest is held whole: the session's buffer takes Mongoose OS's largest, and the
        // programs stay at the work buffer's size.
        let work_bytes = self.ram.settings.work_buffer_bytes;
        let buf = vec![0u8; work_bytes.max(updater::MANIFEST_MAX_BYTES)];
        let mut updater =
            match Updater::begin(&mut self.flash, &self.ram.layout, self.ram.slot, device, options, buf) {
                Ok(updater) => updater,
                Err(e) => return Err(self.failed(now_ms, e)),
            };
        updater.set_program_bytes_max(work_bytes);
        self.ram.sessions_opened += 1;
        let id = SessionId(self.ram.sessions_opened);
        self.ram.session = Some(Session {
            id,
            updater,
            source,
            received: 0,
            size,
            last_progress_ms: now_ms,
            timeout_ms,
            reported_tenths: 0,
        });
        self.ram.state = OtaState::Progress;
        self.ram.message = "Update started".into();
        self.ram.progress_percent = 0;
        self.emit(now_ms, Event::UpdateStarted { source, commit_timeout_s: options.commit_timeout_s });
        Ok(id)
    }

    /// The session in progress, when it is `id`; else why the caller's session is gone.
    fn session_mut(&mut self, id: SessionId) -> Result<&mut Session, RpcError> {
        match self.ram.session.as_ref().map(|s| s.id) {
            Some(current) if current == id => Ok(self.ram.session.as_mut().expect("just seen")),
            _ => Err(self.session_gone()),
        }
    }

    fn session_gone(&self) -> RpcError {
        match &self.ram.session {
            Some(session) => RpcError::new(
                -1,
                format!(
                    "this upload's update session has ended; another ({:?}) runs now; nothing written",
                    session.source
                ),
            ),
            None => RpcError::new(-1, "this upload's update session has ended; nothing written"),
        }
    }

    /// Takes the next bytes of session `id`'s bundle. An error ends the session; the device is
    /// unchanged.
    pub fn update_data(&mut self, id: SessionId, data: &[u8], now_ms: u64) -> Result<(), RpcError> {
        self.session_mut(id)?;
        let session = self.ram.session.as_mut().expect("checked above");
        let first = session.received == 0;
        let result = session.updater.process(&mut self.flash, data);
        if first && !data.is_empty() {
            self.emit(now_ms, Event::Phase { phase: Phase::Write });
        }
        match result {
            Ok(_) => {
                let Some(session) = self.ram.session.as_mut() else { return Ok(()) };
                session.received = session.received.saturating_add(data.len() as u64);
                session.last_progress_ms = now_ms;
                let Some(size) = session.size.filter(|&s| s > 0) else { return Ok(()) };
                let percent = (session.received.min(size) as u128 * 100 / size as u128) as u32;
                let tenths = percent as u64 / 10;
                let report = tenths > session.reported_tenths;
                session.reported_tenths = session.reported_tenths.max(tenths);
                let received_bytes = session.received;
                self.ram.progress_percent = percent;
                if report {
                    self.emit(now_ms, Event::UpdateProgress { received_bytes, percent });
                }
                Ok(())
            }
            Err(e) => {
                self.ram.session = None;
                Err(self.failed(now_ms, e))
            }
        }
    }

    /// Bytes of the bundle taken so far by the session in progress.
    pub fn update_received(&self) -> Option<u64> {
        self.ram.session.as_ref().map(|s| s.received)
    }

    pub fn update_source(&self) -> Option<Source> {
        self.ram.session.as_ref().map(|s| s.source)
    }

    /// The session in progress, when `source` started it.
    pub fn update_session_of(&self, source: Source) -> Option<SessionId> {
        self.ram.session.as_ref().filter(|s| s.source == source).map(|s| s.id)
    }

    /// `OTA.Write {offset, data}`: a write below what was received is acknowledged and not
    /// applied again (mos retries with the same offset); a write past it is a gap and refused.
    pub fn update_write(
        &mut self,
        id: SessionId,
        offset: u64,
        data: &[u8],
        now_ms: u64,
    ) -> Result<(), RpcError> {
        let received = self.session_mut(id)?.received;
        if offset > received {
            return Err(RpcError::new(
                -1,
                format!(
                    "Write at offset {offset} leaves a gap: {received} bytes received so far; nothing applied"
                ),
            ));
        }
        let already = (received - offset).min(data.len() as u64) as usize;
        if already == data.len() {
            return Ok(());
        }
        self.update_data(id, &data[already..], now_ms)
    }

    /// Ends session `id`: writes the record that makes the new slot active (and schedules the
    /// reboot), or reports why not. Without the whole bundle the update is aborted.
    pub fn update_end(&mut self, id: SessionId, now_ms: u64) -> Result<Finished, RpcError> {
        self.session_mut(id)?;
        let Some(session) = self.ram.session.take() else { unreachable!("checked above") };
        self.emit(now_ms, Event::Phase { phase: Phase::Finalize });
        match session.updater.finish(&mut self.flash) {
            Ok(Outcome::Applied { slot, .. }) => {
                self.ram.state = OtaState::Success;
                self.ram.message = Finished::Applied { slot }.message().into();
                self.ram.progress_percent = 100;
                self.ram.reboot_at_ms = Some(now_ms.saturating_add(REBOOT_DELAY_MS));
                self.emit(now_ms, Event::UpdateApplied { slot: slot.index() as u8 });
                Ok(Finished::Applied { slot })
            }
            Ok(_) => {
                // No reboot follows: the device is ready for the next update at once.
                self.ram.state = OtaState::Idle;
                self.ram.message = Finished::UpToDate.message().into();
                self.emit(now_ms, Event::UpToDate);
                Ok(Finished::UpToDate)
            }
            Err(e) => Err(self.failed(now_ms, e)),
        }
    }

    /// Sets the commit timeout of session `id` (a form field that came after the bundle).
    pub fn update_set_commit_timeout(
        &mut self,
        id: SessionId,
        commit_timeout_s: u32,
    ) -> Result<(), RpcError> {
        self.session_mut(id)?.updater.set_commit_timeout_s(commit_timeout_s);
        Ok(())
    }

    /// Sets whether session `id` skips a bundle of the running version (a form field that came
    /// after the bundle).
    pub fn update_set_ignore_same_version(&mut self, id: SessionId, ignore: bool) -> Result<(), RpcError> {
        self.session_mut(id)?.updater.set_ignore_same_version(ignore);
        Ok(())
    }

    /// Ends a pull that found nothing newer (`304`): nothing written, no reboot.
    pub fn update_not_modified(&mut self, id: SessionId, now_ms: u64) {
        if self.session_mut(id).is_ok() {
            self.ram.session = None;
            self.ram.state = OtaState::Idle;
            self.ram.message = "Not Modified".into();
            self.emit(now_ms, Event::UpToDate);
        }
    }

    /// Abandons session `id` if it still runs.
    pub fn update_abort(&mut self, id: SessionId, why: &str, now_ms: u64) {
        if self.session_mut(id).is_ok() {
            self.abort_session(why, now_ms);
        }
    }

    /// Abandons whatever session runs, whoever opened it (`OTA.End`).
    pub fn update_abort_any(&mut self, why: &str, now_ms: u64) {
        self.abort_session(why, now_ms);
    }

    /// Abandons whatever session runs (`OTA.End` of a session with no data, a timeout).
    fn abort_session(&mut self, why: &str, now_ms: u64) {
        if let Some(session) = self.ram.session.take() {
            let e = session.updater.abort();
            self.ram.state = OtaState::Error;
            self.ram.message = format!("{why}: {e}");
            self.emit(now_ms, Event::UpdateAborted { why: self.ram.message.clone() });
        }
    }

    fn failed(&mut self, now_ms: u64, e: UpdateError) -> RpcError {
        self.ram.state = OtaState::Error;
        self.ram.message = e.to_string();
        self.emit(now_ms, Event::UpdateRefused { why: e.to_string() });
        RpcError::new(-1, e.to_string())
    }

    /// `OTA.Status`.
    pub fn status(&mut self) -> serde_json::Value {
        let state = self.boot_state().ok();
        serde_json::json!({
            "state": self.ram.state as u8,
            "msg": self.ram.message,
            "progress_percent": self.ram.progress_percent,
            "is_committed": state.map(|s| s.committed),
            "commit_timeout": state.map(|s| s.commit_timeout_s),
            "partition": self.ram.slot.index(),
        })
    }

    // ---- Boot state ----

    /// Commits the running image. Refused when the state names another slot as active: that
    /// image has not run, and only an image that ran may be committed.
    pub fn commit(&mut self, now_ms: u64) -> Result<(), RpcError> {
        let stored = self.stored_boot_state()?;
        if stored.active != self.ram.slot {
            return Err(RpcError::new(
                -1,
                format!(
                    "the running {} is not the active {} (its image has not run yet); nothing committed",
                    self.ram.slot, stored.active
                ),
            ));
        }
        if stored.seen_from(self.ram.slot).committed {
            // Nothing to write: no phase starts.
            return Err(control_error(ControlError::AlreadyCommitted));
        }
        self.emit(now_ms, Event::Phase { phase: Phase::Commit });
        control::commit(&mut self.flash, &self.ram.layout, self.ram.slot).map_err(control_error)?;
        self.emit(now_ms, Event::Committed);
        Ok(())
    }

    /// Points the state back at the revert slot; the device reboots in [`REBOOT_DELAY_MS`].
    pub fn revert(&mut self, now_ms: u64) -> Result<(), RpcError> {
        self.emit(now_ms, Event::Phase { phase: Phase::Revert });
        control::revert(&mut self.flash, &self.ram.layout, self.ram.slot).map_err(control_error)?;
        self.emit(now_ms, Event::Reverted);
        self.ram.reboot_at_ms = Some(now_ms.saturating_add(REBOOT_DELAY_MS));
        Ok(())
    }

    pub fn set_boot_state(&mut self, patch: &BootStatePatch, now_ms: u64) -> Result<(), RpcError> {
        control::set_boot_state(&mut self.flash, &self.ram.layout, &mut self.ram.running, patch, now_ms)
            .map(|_| ())
            .map_err(control_error)
    }

    pub fn create_snapshot(&mut self, options: &SnapshotOptions, now_ms: u64) -> Result<Slot, RpcError> {
        self.snapshot_begin(options, now_ms)?;
        while !self.snapshot_step()? {}
        self.snapshot_end(now_ms)
    }

    /// [`App::create_snapshot`]'s first step: the checks (`control::SnapshotCopy`). The copy
    /// in progress is part of [`Resume`], so a simulator can save the device between steps.
    pub fn snapshot_begin(&mut self, options: &SnapshotOptions, now_ms: u64) -> Result<(), RpcError> {
        self.emit(now_ms, Event::Phase { phase: Phase::Snapshot });
        let (flash, layout) = (&mut self.flash, &self.ram.layout);
        let copy =
            control::SnapshotCopy::begin(flash, layout, &self.ram.running, options).map_err(control_error)?;
        self.ram.snapshot = Some(copy);
        Ok(())
    }

    /// Copies the next erase unit of the snapshot in progress; true once every unit is copied.
    /// An error ends the snapshot.
    pub fn snapshot_step(&mut self) -> Result<bool, RpcError> {
        let mut buf = vec![0u8; self.ram.settings.work_buffer_bytes];
        let Some(copy) = self.ram.snapshot.as_mut() else { return Err(no_snapshot()) };
        let result = copy.step(&mut self.flash, &self.ram.layout, &mut buf);
        if result.is_err() {
            self.ram.snapshot = None;
        }
        result.map_err(control_error)
    }

    /// Verifies and records the snapshot in progress.
    pub fn snapshot_end(&mut self, now_ms: u64) -> Result<Slot, RpcError> {
        let mut buf = vec![0u8; self.ram.settings.work_buffer_bytes];
        let copy = self.ram.snapshot.take().ok_or_else(no_snapshot)?;
        let (flash, layout) = (&mut self.flash, &self.ram.layout);
        let slot =
            copy.finish(flash, layout, &mut self.ram.running, &mut buf, now_ms).map_err(control_error)?;
        self.emit(now_ms, Event::Snapshot { slot: slot.index() as u8 });
        Ok(slot)
    }

    /// Asks for a reboot in `delay_ms` (`Sys.Reboot`), at most [`DELAY_MAX_MS`].
    pub fn schedule_reboot(&mut self, now_ms: u64, delay_ms: u64) -> Result<(), RpcError> {
        if delay_ms > DELAY_MAX_MS {
            return Err(RpcError::new(
                -1,
                format!("delay_ms must be at most {DELAY_MAX_MS} (one week); no reboot scheduled"),
            ));
        }
        self.ram.reboot_at_ms = Some(now_ms.saturating_add(delay_ms));
        Ok(())
    }

    // ---- Files ----

    pub fn read_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, RpcError> {
        ota_lfs::read_file(&mut self.flash, self.ram.layout.fs(self.ram.slot), name)
            .map_err(|e| RpcError::new(-1, e.to_string()))
    }

    pub fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), RpcError> {
        self.config = None;
        ota_lfs::write_file(&mut self.flash, self.ram.layout.fs(self.ram.slot), name, data)
            .map_err(|e| RpcError::new(-1, e.to_string()))
    }

    pub fn list_files(&mut self) -> Result<Vec<(String, usize)>, RpcError> {
        let files = ota_lfs::list_files(&mut self.flash, self.ram.layout.fs(self.ram.slot))
            .map_err(|e| RpcError::new(-1, e.to_string()))?;
        Ok(files.into_iter().map(|(name, data)| (name, data.len())).collect())
    }

    /// The device configuration: `conf9.json` on the running filesystem, over the defaults.
    /// Read once per boot and after every file write (only writes through the application
    /// change the filesystem while it runs).
    pub fn config(&mut self) -> Config {
        if let Some(config) = &self.config {
            return config.clone();
        }
        let user = self.read_file(config::USER_FILE).ok().flatten();
        let config = Config::from_user_file(user.as_deref(), &self.ram.settings);
        self.config = Some(config.clone());
        config
    }

    // ---- Time ----

    /// Runs what falls due by `now_ms`: a scheduled reboot, the update timeout, the firmware's
    /// own commit, the commit deadline (a revert and a reboot).
    pub fn tick(&mut self, now_ms: u64) -> Tick {
        if let Some(at) = self.ram.reboot_at_ms
            && now_ms >= at
        {
            let why = String::from("scheduled reboot");
            self.emit(now_ms, Event::Rebooting { why: why.clone() });
            return Tick::Reboot { why };
        }
        if let Some(session) = &self.ram.session
            && now_ms.saturating_sub(session.last_progress_ms) >= session.timeout_ms
        {
            self.abort_session("Update timed out", now_ms);
        }
        if let Some(pull) = self.poll(now_ms) {
            return Tick::Pull(pull);
        }
        // As the running image sees it: committed whenever the record names another slot.
        let Ok(state) = self.boot_state() else { return Tick::Nothing };
        if state.committed {
            return Tick::Nothing;
        }
        if let Some(own_ms) = self.own_commit_ms()
            && now_ms >= own_ms
        {
            let _ = self.commit(now_ms);
            return Tick::Nothing;
        }
        match self.ram.running.timer(&state, now_ms) {
            TimerVerdict::CommitNow => {
                let _ = self.commit(now_ms);
                Tick::Nothing
            }
            TimerVerdict::Expired => {
                self.emit(now_ms, Event::TimerExpired);
                self.emit(now_ms, Event::Phase { phase: Phase::Revert });
                let why = match control::revert(&mut self.flash, &self.ram.layout, self.ram.slot) {
                    Ok(_) => {
                        self.emit(now_ms, Event::Reverted);
                        String::from("commit timer expired; reverted")
                    }
                    Err(e) => format!("commit timer expired; revert failed: {e}"),
                };
                self.emit(now_ms, Event::Rebooting { why: why.clone() });
                Tick::Reboot { why }
            }
            _ => Tick::Nothing,
        }
    }

    /// When polling is next due: `update.url` and `update.interval` set (§6.2).
    fn poll_due_ms(&mut self) -> Option<u64> {
        let config = self.config();
        let interval_ms = config.update_interval_s.saturating_mul(1000);
        (config.update_url.is_some() && interval_ms > 0)
            .then(|| self.ram.last_poll_ms.saturating_add(interval_ms))
    }

    /// Polling: a pull every interval, with `ignore_same_version`, skipped while an update runs
    /// or the running image is uncommitted.
    fn poll(&mut self, now_ms: u64) -> Option<crate::service::PullRequest> {
        let due_ms = self.poll_due_ms()?;
        if now_ms < due_ms {
            return None;
        }
        self.ram.last_poll_ms = now_ms;
        if self.ram.session.is_some() || !self.is_committed() {
            return None;
        }
        let config = self.config();
        Some(crate::service::PullRequest {
            url: config.update_url?,
            commit_timeout_s: config.update_commit_timeout_s,
            ignore_same_version: true,
        })
    }

    /// When a firmware with the simulator's header commits by itself.
    fn own_commit_ms(&self) -> Option<u64> {
        match self.ram.behaviour {
            Behaviour::CommitsAfter { seconds } if self.ram.simulated => {
                Some(self.ram.boot_ms.saturating_add(seconds as u64 * 1000))
            }
            _ => None,
        }
    }

    /// When [`App::tick`] next has something to do, so a port can sleep until then.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        let trial = self.boot_state().ok().filter(|state| !state.committed);
        let session = self.ram.session.as_ref().map(|s| s.last_progress_ms.saturating_add(s.timeout_ms));
        // The firmware's own commit and the deadline only matter on a trial.
        let own = trial.and(self.own_commit_ms());
        let deadline = trial.and_then(|state| self.ram.running.due_ms(&state));
        let poll = self.poll_due_ms();
        [self.ram.reboot_at_ms, session, own, deadline, poll].into_iter().flatten().min()
    }
}
