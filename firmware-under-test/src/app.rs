//! The device application: what runs after the boot loader, on any `NorFlash`.
//!
//! [`start`] runs the boot decision, the first-boot filesystem merge and the firmware's start;
//! the returned [`App`] serves the OTA operations (a streamed update, commit, revert, the boot
//! state, snapshots, files) and [`App::tick`] runs the timers (commit deadline, a firmware's own
//! commit, the update timeout, a scheduled reboot). Nothing here does I/O or reads a clock: time
//! comes in as `now_ms`, and the transports live in the caller.
//!
//! What the firmware does is read from its image: an image with the simulator's header behaves
//! as the header says (a healthy one commits as soon as it has started); an image without it is
//! an ordinary application, which commits when told to (`OTA.Commit`) or, with a commit timeout
//! of 0, on its first healthy boot.

use std::cell::RefCell;

use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootOutcome};
use ota_core::control::{self, BootStatePatch, ControlError, SnapshotOptions, TimerVerdict};
use ota_core::layout::{Layout, Slot};
use ota_core::manifest::Platform;
use ota_core::merge;
use ota_core::state::BootState;
use ota_core::updater::{self, Outcome, Progress, UpdateError, UpdateOptions, Updater};
use ota_sim::image::{self, Behaviour};
use ota_sim::lfs;
use ota_sim::shared::Shared;

/// How long after "Update applied" or a revert the device reboots, as Mongoose OS does.
pub const REBOOT_DELAY_MS: u64 = 100;

/// What the application is configured with at build time.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The platform a bundle's `platform` must equal (ignoring case).
    pub platform: String,
    /// The application's name, as `Sys.GetInfo` reports it.
    pub app_name: String,
    /// The device id used when `conf9.json` sets none.
    pub default_device_id: String,
    /// How long a hung firmware runs before the watchdog resets it.
    pub watchdog_ms: u64,
    /// The updater's work buffer.
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

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

fn control_error(e: ControlError) -> RpcError {
    RpcError::new(e.code(), e.to_string())
}

/// How [`start`] ended.
pub enum Start<F> {
    Running(Box<App<F>>),
    /// The firmware did not get to run (a crash at boot, a failed merge): boot again.
    Reset {
        flash: F,
        why: String,
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

/// Who started an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `OTA.Begin`, `OTA.Write`, `OTA.End`.
    Rpc,
    /// `POST /update`.
    Push,
    /// `OTA.Update {url}`, `/update?url=`, or polling.
    Pull,
}

struct Session {
    updater: Updater<Vec<u8>>,
    source: Source,
    /// Bytes of the bundle taken so far.
    received: u64,
    /// The bundle's size when the sender said (`OTA.Begin {size}`, a Content-Length).
    size: Option<u64>,
    last_progress_ms: u64,
    timeout_ms: u64,
    progress: Progress,
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

/// What [`App::tick`] asks of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// Reboot now (a scheduled reboot, or the commit deadline passed and the state reverted).
    Reboot {
        why: String,
    },
}

/// The running application.
pub struct App<F> {
    flash: F,
    layout: Layout,
    settings: Settings,
    slot: Slot,
    boot_ms: u64,
    /// The running slot and the commit timer's arming, for every boot-state call.
    running: control::Running,
    behaviour: Behaviour,
    /// The image carries the simulator's header.
    simulated: bool,
    session: Option<Session>,
    state: OtaState,
    message: String,
    progress_percent: u32,
    reboot_at_ms: Option<u64>,
    notes: Vec<String>,
    /// `conf9.json` over the defaults, as last read.
    config: Option<crate::config::Config>,
}

/// Boots: the boot loader's decision, the first-boot merge, then the firmware's start.
pub fn start<F: NorFlash>(mut flash: F, layout: Layout, settings: Settings, now_ms: u64) -> Start<F> {
    let mut buf = [0u8; 4096];
    let (slot, state, reason, first_boot, merge_from) = match boot::boot(&mut flash, &layout, &mut buf) {
        Err(e) => {
            return Start::Bricked { flash, why: format!("the boot loader could not read the flash: {e}") };
        }
        Ok(BootOutcome::NotProvisioned) => {
            return Start::Bricked { flash, why: "no boot state: never provisioned".into() };
        }
        Ok(BootOutcome::NoBootableImage) => {
            return Start::Bricked { flash, why: "no slot holds an image that verifies".into() };
        }
        Ok(BootOutcome::Boot { slot, reason, state, first_boot, merge_from }) => {
            (slot, state.record.state.seen_from(slot), reason, first_boot, merge_from)
        }
    };
    let mut notes = vec![format!("boot {slot} ({reason:?})")];
    if let Some(old_slot) = merge_from {
        match merge_into(flash, &layout, old_slot, slot, &state) {
            (flash_back, Ok(note)) => {
                flash = flash_back;
                notes.push(note);
            }
            (mut flash_back, Err(why)) => {
                // As Mongoose OS's failed init: revert, and boot again.
                let _ = control::revert(&mut flash_back, &layout, slot);
                return Start::Reset { flash: flash_back, why: format!("fs merge failed: {why}; reverted") };
            }
        }
    }
    let mut header = [0u8; image::HEADER_BYTES];
    let _ = flash.read(layout.app(slot).offset, &mut header);
    let (behaviour, version) = image::parse_header(&header);
    match behaviour {
        Behaviour::CrashesAtBoot => return Start::Reset { flash, why: "firmware crashed at boot".into() },
        Behaviour::Hangs => return Start::Hung { flash, slot },
        _ => {}
    }
    let mut app = App {
        flash,
        layout,
        settings,
        slot,
        boot_ms: now_ms,
        running: control::Running::booted(slot, first_boot, now_ms),
        behaviour,
        simulated: version.is_some(),
        session: None,
        state: OtaState::Idle,
        message: String::new(),
        progress_percent: 0,
        reboot_at_ms: None,
        notes,
        config: None,
    };
    if app.simulated && behaviour == Behaviour::Healthy && !state.committed && app.commit().is_ok() {
        app.notes.push("committed (the firmware checked itself)".into());
    }
    Start::Running(Box::new(app))
}

/// The first-boot merge: the revert slot's filesystem into the new one, formatting it first
/// when the bundle shipped none.
fn merge_into<F: NorFlash>(
    flash: F,
    layout: &Layout,
    old_slot: Slot,
    slot: Slot,
    state: &BootState,
) -> (F, Result<String, String>) {
    let cell = RefCell::new(flash);
    let result = (|| {
        let old = layout.fs(old_slot);
        let new = layout.fs(slot);
        if state.slot(slot).fs_len_bytes == 0 {
            lfs::format(&mut Shared(&cell), new).map_err(|e| e.to_string())?;
        }
        let (mut old_flash, mut new_flash) = (Shared(&cell), Shared(&cell));
        let mut old_fs =
            lfs::LfsFs::mount(&mut old_flash, old).map_err(|e| format!("old filesystem: {e}"))?;
        let mut new_fs =
            lfs::LfsFs::mount(&mut new_flash, new).map_err(|e| format!("new filesystem: {e}"))?;
        let report = merge::merge(&mut old_fs, &mut new_fs, &mut [0u8; 512]).map_err(|e| e.to_string())?;
        Ok::<_, String>(format!(
            "fs merged: {} copied, {} kept from the image",
            report.copied, report.kept_new
        ))
    })();
    (cell.into_inner(), result)
}

impl<F: NorFlash> App<F> {
    /// Gives the flash back, for a reboot.
    pub fn into_flash(self) -> F {
        self.flash
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What happened since the last call, for the console.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    pub fn boot_state(&mut self) -> Result<BootState, RpcError> {
        control::get_boot_state(&mut self.flash, &self.layout, self.slot).map_err(control_error)
    }

    /// The running firmware's version and build id: as its bundle's manifest gave them, else as
    /// its image header says.
    pub fn version(&mut self) -> (String, String) {
        let state = self.boot_state().ok();
        let info = state.as_ref().map(|s| *s.slot(self.slot));
        let mut version = info.map(|i| i.version.as_str().to_string()).unwrap_or_default();
        if version.is_empty() {
            let mut header = [0u8; image::HEADER_BYTES];
            let _ = self.flash.read(self.layout.app(self.slot).offset, &mut header);
            version = image::parse_header(&header).1.unwrap_or_default();
        }
        (version, info.map(|i| i.build_id.as_str().to_string()).unwrap_or_default())
    }

    pub fn is_committed(&mut self) -> bool {
        self.boot_state().is_ok_and(|s| s.committed)
    }

    // ---- The update session ----

    /// Starts an update (any source). Refused while one runs, while the running image is
    /// uncommitted, and on bad options.
    pub fn update_begin(
        &mut self,
        source: Source,
        options: UpdateOptions,
        size: Option<u64>,
        timeout_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(), RpcError> {
        if let Some(session) = &self.session {
            return Err(RpcError::new(
                -1,
                format!("Another update is in progress ({:?}); call OTA.End to abort it", session.source),
            ));
        }
        let arch = Platform::new(&self.settings.platform)
            .ok_or_else(|| RpcError::new(-1, "platform name too long"))?;
        let device = updater::Device { arch, app_part: None };
        let buf = vec![0u8; self.settings.work_buffer_bytes];
        let updater = Updater::begin(&mut self.flash, &self.layout, device, options, buf)
            .map_err(|e| self.failed(e))?;
        self.session = Some(Session {
            updater,
            source,
            received: 0,
            size,
            last_progress_ms: now_ms,
            timeout_ms: timeout_ms.unwrap_or(self.settings.update_timeout_ms),
            progress: Progress::NeedMore,
        });
        self.state = OtaState::Progress;
        self.message = "Update started".into();
        self.progress_percent = 0;
        self.notes
            .push(format!("update started ({source:?}, commit timeout {} s)", options.commit_timeout_s));
        Ok(())
    }

    /// Takes the next bytes of the bundle. An error ends the session; the device is unchanged.
    pub fn update_data(&mut self, data: &[u8], now_ms: u64) -> Result<(), RpcError> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| RpcError::new(-1, "No update in progress; call OTA.Begin first"))?;
        match session.updater.process(&mut self.flash, data) {
            Ok(progress) => {
                session.received += data.len() as u64;
                session.last_progress_ms = now_ms;
                session.progress = progress;
                if let Some(size) = session.size.filter(|&s| s > 0) {
                    self.progress_percent = (session.received.min(size) * 100 / size) as u32;
                }
                Ok(())
            }
            Err(e) => {
                self.session = None;
                Err(self.failed(e))
            }
        }
    }

    /// Bytes of the bundle taken so far, for `OTA.Write`'s offsets.
    pub fn update_received(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.received)
    }

    pub fn update_source(&self) -> Option<Source> {
        self.session.as_ref().map(|s| s.source)
    }

    /// `OTA.Write {offset, data}`: a write below what was received is acknowledged and not
    /// applied again (mos retries with the same offset); a write past it is a gap and refused.
    pub fn update_write(&mut self, offset: u64, data: &[u8], now_ms: u64) -> Result<(), RpcError> {
        let received = self
            .update_received()
            .ok_or_else(|| RpcError::new(-1, "No update in progress; call OTA.Begin first"))?;
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
        self.update_data(&data[already..], now_ms)
    }

    /// Ends the update: writes the record that makes the new slot active (and schedules the
    /// reboot), or reports why not. Without the whole bundle the update is aborted.
    pub fn update_end(&mut self, now_ms: u64) -> Result<Finished, RpcError> {
        let session = self.session.take().ok_or_else(|| RpcError::new(-1, "No update in progress"))?;
        match session.updater.finish(&mut self.flash) {
            Ok(Outcome::Applied { slot, .. }) => {
                self.state = OtaState::Success;
                self.message = Finished::Applied { slot }.message().into();
                self.progress_percent = 100;
                self.reboot_at_ms = Some(now_ms + REBOOT_DELAY_MS);
                self.notes.push(format!("update applied to {slot}; rebooting"));
                Ok(Finished::Applied { slot })
            }
            Ok(_) => {
                // No reboot follows: the device is ready for the next update at once.
                self.state = OtaState::Idle;
                self.message = Finished::UpToDate.message().into();
                self.notes.push("version is the same as current; nothing written".into());
                Ok(Finished::UpToDate)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Sets the commit timeout of the update in progress (a form field that came after the
    /// bundle).
    pub fn update_set_commit_timeout(&mut self, commit_timeout_s: u32) {
        if let Some(session) = &mut self.session {
            session.updater.set_commit_timeout_s(commit_timeout_s);
        }
    }

    /// Ends a pull that found nothing newer (`304`): nothing written, no reboot.
    pub fn update_not_modified(&mut self) {
        if self.session.take().is_some() {
            self.state = OtaState::Idle;
            self.message = "Not Modified".into();
            self.notes.push("pull: not modified".into());
        }
    }

    /// Abandons the update in progress, if any.
    pub fn update_abort(&mut self, why: &str) {
        if let Some(session) = self.session.take() {
            let e = session.updater.abort();
            self.state = OtaState::Error;
            self.message = format!("{why}: {e}");
            self.notes.push(self.message.clone());
        }
    }

    fn failed(&mut self, e: UpdateError) -> RpcError {
        self.state = OtaState::Error;
        self.message = e.to_string();
        self.notes.push(format!("update failed: {e}"));
        RpcError::new(-1, e.to_string())
    }

    /// `OTA.Status`.
    pub fn status(&mut self) -> serde_json::Value {
        let state = self.boot_state().ok();
        serde_json::json!({
            "state": self.state as u8,
            "msg": self.message,
            "progress_percent": self.progress_percent,
            "is_committed": state.map(|s| s.committed),
            "commit_timeout": state.map(|s| s.commit_timeout_s),
            "partition": self.slot.index(),
        })
    }

    // ---- Boot state ----

    pub fn commit(&mut self) -> Result<(), RpcError> {
        control::commit(&mut self.flash, &self.layout, self.slot).map_err(control_error)?;
        self.notes.push("committed".into());
        Ok(())
    }

    /// Points the state back at the revert slot; the device reboots in [`REBOOT_DELAY_MS`].
    pub fn revert(&mut self, now_ms: u64) -> Result<(), RpcError> {
        control::revert(&mut self.flash, &self.layout, self.slot).map_err(control_error)?;
        self.notes.push("reverted; rebooting".into());
        self.reboot_at_ms = Some(now_ms + REBOOT_DELAY_MS);
        Ok(())
    }

    pub fn set_boot_state(&mut self, patch: &BootStatePatch, now_ms: u64) -> Result<(), RpcError> {
        control::set_boot_state(&mut self.flash, &self.layout, &mut self.running, patch, now_ms)
            .map(|_| ())
            .map_err(control_error)
    }

    pub fn create_snapshot(&mut self, options: &SnapshotOptions, now_ms: u64) -> Result<Slot, RpcError> {
        let mut buf = vec![0u8; self.settings.work_buffer_bytes];
        let (flash, layout) = (&mut self.flash, &self.layout);
        let slot = control::create_snapshot(flash, layout, &mut self.running, options, &mut buf, now_ms)
            .map_err(control_error)?;
        self.notes.push(format!("snapshot in {slot}"));
        Ok(slot)
    }

    /// Asks for a reboot in `delay_ms` (`Sys.Reboot`).
    pub fn schedule_reboot(&mut self, now_ms: u64, delay_ms: u64) {
        self.reboot_at_ms = Some(now_ms + delay_ms);
    }

    // ---- Files ----

    pub fn read_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, RpcError> {
        lfs::read_file(&mut self.flash, self.layout.fs(self.slot), name)
            .map_err(|e| RpcError::new(-1, e.to_string()))
    }

    pub fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), RpcError> {
        self.config = None;
        lfs::write_file(&mut self.flash, self.layout.fs(self.slot), name, data)
            .map_err(|e| RpcError::new(-1, e.to_string()))
    }

    pub fn list_files(&mut self) -> Result<Vec<(String, usize)>, RpcError> {
        let files = lfs::list_files(&mut self.flash, self.layout.fs(self.slot))
            .map_err(|e| RpcError::new(-1, e.to_string()))?;
        Ok(files.into_iter().map(|(name, data)| (name, data.len())).collect())
    }

    /// The device configuration: `conf9.json` on the running filesystem, over the defaults.
    /// Read once per boot and after every file write (only writes through the application
    /// change the filesystem while it runs).
    pub fn config(&mut self) -> crate::config::Config {
        if let Some(config) = &self.config {
            return config.clone();
        }
        let user = self.read_file(crate::config::USER_FILE).ok().flatten();
        let config = crate::config::Config::from_user_file(user.as_deref(), &self.settings);
        self.config = Some(config.clone());
        config
    }

    // ---- Time ----

    /// Runs what falls due by `now_ms`: a scheduled reboot, the firmware's own commit, the
    /// commit deadline (a revert and a reboot), the update timeout.
    pub fn tick(&mut self, now_ms: u64) -> Tick {
        if let Some(at) = self.reboot_at_ms
            && now_ms >= at
        {
            return Tick::Reboot { why: "scheduled reboot".into() };
        }
        if let Some(session) = &self.session
            && now_ms.saturating_sub(session.last_progress_ms) >= session.timeout_ms
        {
            self.update_abort("Update timed out");
        }
        let Ok(state) = self.boot_state() else { return Tick::Nothing };
        if state.committed {
            return Tick::Nothing;
        }
        if let Behaviour::CommitsAfter { seconds } = self.behaviour
            && self.simulated
            && now_ms >= self.boot_ms + seconds as u64 * 1000
        {
            let _ = self.commit();
            return Tick::Nothing;
        }
        match self.running.timer(&state, now_ms) {
            TimerVerdict::CommitNow => {
                let _ = self.commit();
                Tick::Nothing
            }
            TimerVerdict::Expired => {
                self.notes.push("commit timer expired".into());
                match control::revert(&mut self.flash, &self.layout, self.slot) {
                    Ok(_) => Tick::Reboot { why: "commit timer expired; reverted".into() },
                    Err(e) => Tick::Reboot { why: format!("commit timer expired; revert failed: {e}") },
                }
            }
            _ => Tick::Nothing,
        }
    }

    /// When [`App::tick`] next has something to do, so a caller can sleep until then.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        let mut due = Vec::new();
        due.extend(self.reboot_at_ms);
        if let Some(s) = &self.session {
            due.push(s.last_progress_ms + s.timeout_ms);
        }
        if let Ok(state) = self.boot_state()
            && !state.committed
        {
            due.extend(self.running.due_ms(&state));
            if let (Behaviour::CommitsAfter { seconds }, true) = (self.behaviour, self.simulated) {
                due.push(self.boot_ms + seconds as u64 * 1000);
            }
        }
        due.into_iter().min()
    }
}
