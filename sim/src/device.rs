//! The simulated device: the boot loader's decision, then the application — first-boot
//! filesystem merge, the firmware's behaviour read from its image, the commit timer — on a strict
//! NOR flash, with a virtual clock the simulation owns.
//!
//! Verbs are named after the domain: [`Device::power_on`], [`Device::power_cut`],
//! [`Device::power_cut_at_op`], [`Device::reboot`], [`Device::advance_ms`], [`Device::update`],
//! [`Device::commit`], [`Device::revert`], [`Device::create_snapshot`]. Time moves only in
//! `advance_ms`, so a 300 s commit timeout costs nothing. Every verb on a device whose power is
//! off does nothing and says so.

use std::cell::RefCell;
use std::fmt;

use ota_core::boot::{self, BootOutcome};
use ota_core::control::{self, ControlError, SnapshotOptions, TimerVerdict};
use ota_core::layout::{Layout, Region, Slot};
use ota_core::log;
use ota_core::manifest::Platform;
use ota_core::merge;
use ota_core::state::BootState;
use ota_core::updater::{self, Outcome, Progress, UpdateError, UpdateOptions, Updater};

use crate::flash::{CutWhen, Geometry, PowerCut, SimFlash, Snapshot};
use crate::image::{self, Behaviour};
use crate::lfs;
use crate::rng::Rng;
use crate::shared::Shared;

pub const WRITE_BYTES: usize = 4;
pub const ERASE_BYTES: usize = 4096;
pub type Flash = SimFlash<WRITE_BYTES, ERASE_BYTES>;

/// The device's platform, as a bundle's `platform` must start with it.
pub const ARCH: &str = "esp32";

/// How the device is built. `Config::default()` documents the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// App slot size. Default 256 KiB.
    pub app_slot_bytes: u32,
    /// Filesystem slot size. Default 64 KiB.
    pub fs_slot_bytes: u32,
    /// How long a hung firmware runs before the watchdog resets it. Default 10 s.
    pub watchdog_ms: u64,
    /// Boots in a row without a running firmware before the device counts as bricked. Default 8.
    pub boot_loops_max: u32,
    /// Seed of the flash's fault randomness. Default 0.
    pub seed: u64,
    /// The platform the device reports; a bundle's `platform` must start with it. Default "esp32".
    pub platform: String,
    /// The work buffer the firmware gives the updater and the snapshot copy; it sets how much
    /// one program writes (at most 4 KiB). Default 4096.
    pub work_buffer_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            app_slot_bytes: 256 * 1024,
            fs_slot_bytes: 64 * 1024,
            watchdog_ms: 10_000,
            boot_loops_max: 8,
            seed: 0,
            work_buffer_bytes: 4096,
            platform: ARCH.to_string(),
        }
    }
}

impl Config {
    /// The flash map: two 4 KiB boot-state areas, then the app slots, then the fs slots.
    pub fn layout(&self) -> Layout {
        let e = ERASE_BYTES as u32;
        let app0 = 2 * e;
        let app1 = app0 + self.app_slot_bytes;
        let fs0 = app1 + self.app_slot_bytes;
        let fs1 = fs0 + self.fs_slot_bytes;
        Layout::new(
            e,
            WRITE_BYTES as u32,
            [Region::new(0, e), Region::new(e, e)],
            [Region::new(app0, self.app_slot_bytes), Region::new(app1, self.app_slot_bytes)],
            [Region::new(fs0, self.fs_slot_bytes), Region::new(fs1, self.fs_slot_bytes)],
        )
        .unwrap_or_else(|e| panic!("device layout: {e}"))
    }

    pub fn flash_bytes(&self) -> u32 {
        self.layout().fs[1].end() as u32
    }
}

/// What the device is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// No power.
    Off,
    /// The boot loader or the application's start is running.
    Booting,
    /// A firmware runs.
    Running { slot: Slot, boot_ms: u64, behaviour: Behaviour, version: Option<String> },
    /// A firmware hangs; the watchdog will reset the device.
    Hung { slot: Slot, since_ms: u64 },
    /// Nothing boots: the device is a brick. This is what the project exists to prevent.
    Bricked { why: String },
}

/// Something that happened, for the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    PowerOn,
    PowerLost { op: Option<u64> },
    Boot { slot: Slot, reason: String },
    Merged { copied: u32, kept_new: u32 },
    MergeFailed { why: String },
    Crashed,
    WatchdogReset,
    Committed,
    TimerExpired,
    Reverted,
    UpdateApplied { slot: Slot },
    UpdateRefused { why: String },
    Snapshot { slot: Slot },
    Bricked { why: String },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::PowerOn => f.write_str("power on"),
            Event::PowerLost { op: Some(op) } => write!(f, "power lost at flash op {op}"),
            Event::PowerLost { op: None } => f.write_str("power lost"),
            Event::Boot { slot, reason } => write!(f, "boot {slot} ({reason})"),
            Event::Merged { copied, kept_new } => {
                write!(f, "fs merged: {copied} copied, {kept_new} kept from the image")
            }
            Event::MergeFailed { why } => write!(f, "fs merge failed: {why}"),
            Event::Crashed => f.write_str("firmware crashed at boot"),
            Event::WatchdogReset => f.write_str("watchdog reset"),
            Event::Committed => f.write_str("committed"),
            Event::TimerExpired => f.write_str("commit timer expired"),
            Event::Reverted => f.write_str("reverted"),
            Event::UpdateApplied { slot } => write!(f, "update applied to {slot}"),
            Event::UpdateRefused { why } => write!(f, "update refused: {why}"),
            Event::Snapshot { slot } => write!(f, "snapshot in {slot}"),
            Event::Bricked { why } => write!(f, "BRICKED: {why}"),
        }
    }
}

/// Why a verb could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The power is off (or went off during the verb).
    Off,
    /// No firmware runs to take the request.
    NotRunning,
    Update(UpdateError),
    Control(ControlError),
    Fs(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Off => f.write_str("the device has no power"),
            DeviceError::NotRunning => f.write_str("no firmware is running"),
            DeviceError::Update(e) => write!(f, "{e}"),
            DeviceError::Control(e) => write!(f, "{e}"),
            DeviceError::Fs(e) => write!(f, "filesystem: {e}"),
        }
    }
}

/// A saved device: flash, clock, run state and trace. The trace is kept whole, not as a length:
/// a snapshot may be restored into another device (a sweep's worker) whose trace is not a prefix.
#[derive(Clone, Debug)]
pub struct DeviceSnapshot {
    flash: Snapshot,
    now_ms: u64,
    run: Run,
    trace: Vec<(u64, Event)>,
    trace_ops: Vec<u64>,
}

pub struct Device {
    config: Config,
    layout: Layout,
    flash: RefCell<Flash>,
    now_ms: u64,
    run: Run,
    trace: Vec<(u64, Event)>,
    /// Mutating flash operations done when each trace event was noted.
    trace_ops: Vec<u64>,
    buf: Vec<u8>,
}

impl Device {
    /// A device with an erased flash and no power.
    pub fn new(config: Config) -> Device {
        let layout = config.layout();
        let geometry = Geometry::uniform(config.flash_bytes(), ERASE_BYTES as u32);
        let flash = Flash::new(&geometry, Rng::new(config.seed).derive("flash"));
        let buf = vec![0; config.work_buffer_bytes];
        Device {
            config,
            layout,
            flash: RefCell::new(flash),
            now_ms: 0,
            run: Run::Off,
            trace: Vec::new(),
            trace_ops: Vec::new(),
            buf,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn flash(&mut self) -> &mut Flash {
        self.flash.get_mut()
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn run(&self) -> &Run {
        &self.run
    }

    pub fn trace(&self) -> &[(u64, Event)] {
        &self.trace
    }

    fn note(&mut self, event: Event) {
        self.trace.push((self.now_ms, event));
        self.trace_ops.push(self.flash.get_mut().mutating_ops());
    }

    /// For each trace event, the mutating flash operations done when it was noted: the
    /// operations between two events belong to the later one.
    pub fn trace_ops(&self) -> &[u64] {
        &self.trace_ops
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot {
            flash: self.flash.borrow().snapshot(),
            now_ms: self.now_ms,
            run: self.run.clone(),
            trace: self.trace.clone(),
            trace_ops: self.trace_ops.clone(),
        }
    }

    pub fn restore(&mut self, snapshot: &DeviceSnapshot) {
        self.flash.get_mut().restore(&snapshot.flash);
        self.now_ms = snapshot.now_ms;
        self.run = snapshot.run.clone();
        self.trace.clone_from(&snapshot.trace);
        self.trace_ops.clone_from(&snapshot.trace_ops);
    }

    fn device_info(&self) -> updater::Device {
        let arch = Platform::new(&self.config.platform).expect("a platform name of at most 16 bytes");
        updater::Device { arch, app_part: None }
    }

    /// Writes `zip` as the committed image of slot 0, as a factory station does, and formats
    /// slot 0's filesystem if the bundle has none. The device stays off.
    pub fn provision(&mut self, zip: &[u8]) -> Result<(), DeviceError> {
        let layout = self.layout;
        let device = self.device_info();
        let flash = self.flash.get_mut();
        flash.power_on();
        let mut updater =
            Updater::begin_provision(flash, &layout, device, &mut self.buf).map_err(DeviceError::Update)?;
        updater.process(flash, zip).map_err(DeviceError::Update)?;
        let outcome = updater.finish(flash).map_err(DeviceError::Update)?;
        if let Outcome::Provisioned { state } = outcome
            && state.record.state.slots[0].fs_len_bytes == 0
        {
            lfs::format(flash, layout.fs(Slot::S0)).map_err(|e| DeviceError::Fs(e.to_string()))?;
        }
        flash.power_cut();
        self.run = Run::Off;
        Ok(())
    }

    /// Power comes on: the boot loader runs, then the application.
    pub fn power_on(&mut self) {
        if self.run != Run::Off {
            return;
        }
        self.flash.get_mut().power_on();
        self.note(Event::PowerOn);
        self.reset();
    }

    /// The power goes now.
    pub fn power_cut(&mut self) {
        self.flash.get_mut().power_cut();
        if self.run != Run::Off {
            self.run = Run::Off;
            self.note(Event::PowerLost { op: None });
        }
    }

    /// Arms a power cut at mutating flash operation `at_op` (counted from the flash's creation).
    pub fn power_cut_at_op(&mut self, at_op: u64, when: CutWhen) {
        self.flash.get_mut().power_cut_at(PowerCut { at_op, when });
    }

    /// Mutating flash operations so far.
    pub fn flash_ops(&self) -> u64 {
        self.flash.borrow().mutating_ops()
    }

    /// A reset with the power on (RPC reboot, crash, watchdog).
    pub fn reboot(&mut self) {
        if self.run != Run::Off {
            self.reset();
        }
    }

    /// Checks whether a flash error was the power going; if so the device is off.
    fn lost_power(&mut self) -> bool {
        if self.flash.get_mut().is_powered() {
            return false;
        }
        if self.run != Run::Off {
            let op = Some(self.flash.get_mut().mutating_ops().saturating_sub(1));
            self.run = Run::Off;
            self.note(Event::PowerLost { op });
        }
        true
    }

    /// The boot loader, then the application's start, until a firmware runs or hangs, the power
    /// goes, or too many boots in a row fail.
    fn reset(&mut self) {
        self.run = Run::Booting;
        for _ in 0..self.config.boot_loops_max {
            let layout = self.layout;
            let outcome = boot::boot_with_known_digests(self.flash.get_mut(), &layout, &mut self.buf);
            let (slot, state) = match outcome {
                Err(_) if self.lost_power() => return,
                Err(e) => return self.brick(format!("boot loader could not read the flash: {e}")),
                Ok(BootOutcome::NotProvisioned) => {
                    return self.brick("no boot state: never provisioned".into());
                }
                Ok(BootOutcome::NoBootableImage) => {
                    return self.brick("no slot holds an image that verifies".into());
                }
                Ok(BootOutcome::Boot { slot, reason, state }) => {
                    self.note(Event::Boot { slot, reason: format!("{reason:?}") });
                    (slot, state.record.state)
                }
            };
            if self.start(slot, &state) || self.run == Run::Off {
                return;
            }
        }
        self.brick(format!("{} boots in a row without a running firmware", self.config.boot_loops_max));
    }

    fn brick(&mut self, why: String) {
        self.note(Event::Bricked { why: why.clone() });
        self.run = Run::Bricked { why };
    }

    /// The application starts on `slot`. False when it did not get to run (crash, failed merge,
    /// power lost): the caller boots again unless the power is off.
    fn start(&mut self, slot: Slot, state: &BootState) -> bool {
        if state.first_boot_a && state.merge_fs && !self.merge(slot, state) {
            return false;
        }
        let mut header = [0u8; image::HEADER_BYTES];
        self.flash.get_mut().peek(self.layout.app(slot).offset, &mut header);
        let (behaviour, version) = image::parse_header(&header);
        match behaviour {
            Behaviour::CrashesAtBoot => {
                self.note(Event::Crashed);
                false
            }
            Behaviour::Hangs => {
                self.run = Run::Hung { slot, since_ms: self.now_ms };
                true
            }
            _ => {
                self.run = Run::Running { slot, boot_ms: self.now_ms, behaviour, version };
                if behaviour == Behaviour::Healthy && !state.committed {
                    let _ = self.commit();
                }
                let _ = self.tick();
                true
            }
        }
    }

    /// The first-boot merge: the revert slot's filesystem into the new one. A merge that fails
    /// for any reason but the power reverts, as Mongoose OS's failed init does.
    fn merge(&mut self, slot: Slot, state: &BootState) -> bool {
        let old_slot = state.revert.expect("a first boot has a revert slot");
        let (old, new) = (self.layout.fs(old_slot), self.layout.fs(slot));
        let fresh = state.slot(slot).fs_len_bytes == 0;
        let result = merge_regions(&self.flash, old, new, fresh, &mut self.buf);
        match result {
            Ok((copied, kept_new)) => {
                self.note(Event::Merged { copied, kept_new });
                true
            }
            Err(_) if self.lost_power() => false,
            Err(why) => {
                self.note(Event::MergeFailed { why });
                let layout = self.layout;
                if control::revert(self.flash.get_mut(), &layout).is_ok() {
                    self.note(Event::Reverted);
                }
                self.lost_power();
                false
            }
        }
    }

    /// The next instant something is due: the watchdog, a firmware's own commit, or the commit
    /// deadline.
    fn next_due_ms(&mut self) -> Option<u64> {
        match self.run.clone() {
            Run::Hung { since_ms, .. } => Some(since_ms + self.config.watchdog_ms),
            Run::Running { boot_ms, behaviour, .. } => {
                let layout = self.layout;
                let state = log::read(self.flash.get_mut(), &layout).ok()??.record.state;
                if state.committed {
                    return None;
                }
                let own = match behaviour {
                    Behaviour::CommitsAfter { seconds } => Some(boot_ms + seconds as u64 * 1000),
                    _ => None,
                };
                let deadline =
                    (state.commit_timeout_s > 0).then(|| boot_ms + state.commit_timeout_s as u64 * 1000);
                [own, deadline].into_iter().flatten().min()
            }
            _ => None,
        }
    }

    /// Lets `ms` of virtual time pass, handling everything that falls due on the way.
    pub fn advance_ms(&mut self, ms: u64) {
        let target_ms = self.now_ms + ms;
        // Each step either ends the loop or handles one due event; a run can fall due a bounded
        // number of times (commit, expiry, watchdog) per boot, and boots are bounded.
        for _ in 0..64 * self.config.boot_loops_max {
            let Some(due_ms) = self.next_due_ms().filter(|&due| due <= target_ms) else { break };
            self.now_ms = self.now_ms.max(due_ms);
            match self.run.clone() {
                Run::Hung { .. } => {
                    self.note(Event::WatchdogReset);
                    self.reset();
                }
                Run::Running { boot_ms, behaviour: Behaviour::CommitsAfter { seconds }, .. }
                    if boot_ms + seconds as u64 * 1000 == due_ms =>
                {
                    let _ = self.commit();
                }
                _ => {
                    let _ = self.tick();
                }
            }
        }
        self.now_ms = target_ms;
    }

    /// Runs the commit timer now.
    fn tick(&mut self) -> Result<(), DeviceError> {
        let Run::Running { boot_ms, .. } = self.run else { return Err(DeviceError::NotRunning) };
        let layout = self.layout;
        let state = self.read_state()?;
        match control::commit_timer(&state, boot_ms, self.now_ms) {
            TimerVerdict::CommitNow => self.commit(),
            TimerVerdict::Expired => {
                self.note(Event::TimerExpired);
                let result = control::revert(self.flash.get_mut(), &layout);
                self.control_result(result.map(|_| ()))?;
                self.note(Event::Reverted);
                self.reset();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn read_state(&mut self) -> Result<BootState, DeviceError> {
        let layout = self.layout;
        let result = control::read(self.flash.get_mut(), &layout).map(|l| l.record.state);
        self.control_result(result)
    }

    fn control_result<T>(&mut self, result: Result<T, ControlError>) -> Result<T, DeviceError> {
        match result {
            Ok(value) => Ok(value),
            Err(_) if self.lost_power() => Err(DeviceError::Off),
            Err(e) => Err(DeviceError::Control(e)),
        }
    }

    fn running(&self) -> Result<(), DeviceError> {
        match self.run {
            Run::Running { .. } => Ok(()),
            Run::Off => Err(DeviceError::Off),
            _ => Err(DeviceError::NotRunning),
        }
    }

    /// `OTA.Commit`.
    pub fn commit(&mut self) -> Result<(), DeviceError> {
        self.running()?;
        let layout = self.layout;
        let result = control::commit(self.flash.get_mut(), &layout);
        self.control_result(result)?;
        self.note(Event::Committed);
        Ok(())
    }

    /// `OTA.Revert`: back to the revert slot, then a reboot.
    pub fn revert(&mut self) -> Result<(), DeviceError> {
        self.running()?;
        let layout = self.layout;
        let result = control::revert(self.flash.get_mut(), &layout);
        self.control_result(result)?;
        self.note(Event::Reverted);
        self.reset();
        Ok(())
    }

    /// `OTA.CreateSnapshot`.
    pub fn create_snapshot(&mut self, options: SnapshotOptions) -> Result<Slot, DeviceError> {
        self.running()?;
        let layout = self.layout;
        let result = control::create_snapshot(self.flash.get_mut(), &layout, &options, &mut self.buf);
        let slot = self.control_result(result)?;
        self.note(Event::Snapshot { slot });
        Ok(slot)
    }

    /// Streams `zip` to the updater in `chunk_bytes` pieces. A bundle that is applied reboots the
    /// device into it, as Mongoose OS does after "Update applied, finalizing".
    pub fn update(
        &mut self,
        zip: &[u8],
        chunk_bytes: usize,
        options: UpdateOptions,
    ) -> Result<Outcome, DeviceError> {
        self.update_until(zip, chunk_bytes, options, None)
    }

    /// Like [`Device::update`], but the power goes once the updater has taken
    /// `power_cut_after_bytes` bytes of the bundle (a cut at a fraction of the upload).
    pub fn update_until(
        &mut self,
        zip: &[u8],
        chunk_bytes: usize,
        options: UpdateOptions,
        power_cut_after_bytes: Option<usize>,
    ) -> Result<Outcome, DeviceError> {
        self.running()?;
        let sent = power_cut_after_bytes.map_or(zip.len(), |n| n.min(zip.len()));
        let result = self.stream(&zip[..sent], chunk_bytes, options, power_cut_after_bytes.is_some());
        match result {
            Ok(outcome) => {
                if let Outcome::Applied { slot, .. } = outcome {
                    self.note(Event::UpdateApplied { slot });
                    self.reset();
                }
                Ok(outcome)
            }
            Err(_) if self.lost_power() => Err(DeviceError::Off),
            Err(e) => {
                self.note(Event::UpdateRefused { why: e.to_string() });
                Err(DeviceError::Update(e))
            }
        }
    }

    /// Feeds the updater. With `cut_at_end`, the power goes after the last byte instead of the
    /// update being finished.
    fn stream(
        &mut self,
        zip: &[u8],
        chunk_bytes: usize,
        options: UpdateOptions,
        cut_at_end: bool,
    ) -> Result<Outcome, UpdateError> {
        let layout = self.layout;
        let device = self.device_info();
        let flash = self.flash.get_mut();
        let mut updater = Updater::begin(flash, &layout, device, options, &mut self.buf)?;
        for chunk in zip.chunks(chunk_bytes.max(1)) {
            if updater.process(flash, chunk)? != Progress::NeedMore {
                break;
            }
        }
        if cut_at_end {
            let aborted = updater.abort();
            flash.power_cut();
            return Err(aborted);
        }
        updater.finish(flash)
    }

    /// The user writes a file on the running firmware's filesystem (as `conf9.json` is written
    /// when the user changes the device's configuration).
    pub fn write_user_file(&mut self, name: &str, data: &[u8]) -> Result<(), DeviceError> {
        let Run::Running { slot, .. } = self.run else { return self.running() };
        let region = self.layout.fs(slot);
        let result = lfs::write_file(self.flash.get_mut(), region, name, data);
        match result {
            Ok(()) => Ok(()),
            Err(_) if self.lost_power() => Err(DeviceError::Off),
            Err(e) => Err(DeviceError::Fs(e.to_string())),
        }
    }

    /// A file of the running firmware's filesystem.
    pub fn read_user_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, DeviceError> {
        let Run::Running { slot, .. } = self.run else { return self.running().map(|_| None) };
        let region = self.layout.fs(slot);
        lfs::read_file(self.flash.get_mut(), region, name).map_err(|e| DeviceError::Fs(e.to_string()))
    }
}

/// Merges the filesystem in `old` into the one in `new` (formatting `new` first when the bundle
/// shipped none). Returns (copied, kept from the image).
fn merge_regions(
    flash: &RefCell<Flash>,
    old: Region,
    new: Region,
    fresh: bool,
    buf: &mut [u8],
) -> Result<(u32, u32), String> {
    if fresh {
        lfs::format(&mut Shared(flash), new).map_err(|e| e.to_string())?;
    }
    let mut old_flash = Shared(flash);
    let mut new_flash = Shared(flash);
    let mut old_fs = lfs::LfsFs::mount(&mut old_flash, old).map_err(|e| format!("old filesystem: {e}"))?;
    let mut new_fs = lfs::LfsFs::mount(&mut new_flash, new).map_err(|e| format!("new filesystem: {e}"))?;
    let report = merge::merge(&mut old_fs, &mut new_fs, buf).map_err(|e| e.to_string())?;
    Ok((report.copied, report.kept_new))
}
