//! The simulated device: `ota-app`'s application — the boot loader's decision, the first-boot
//! filesystem merge, the firmware's behaviour read from its image, the commit timer — on a strict
//! NOR flash, with a virtual clock the simulation owns. This module is a port, as the virtual
//! board is: it holds the flash, the clock, the watchdog and the boot loop, and every decision is
//! the application's or the core's.
//!
//! Verbs are named after the domain: [`Device::power_on`], [`Device::power_cut`],
//! [`Device::power_cut_at_op`], [`Device::reboot`], [`Device::advance_ms`], [`Device::update`],
//! [`Device::commit`], [`Device::revert`], [`Device::create_snapshot`]. Time moves only in
//! `advance_ms`, so a 300 s commit timeout costs nothing. Every verb on a device whose power is
//! off does nothing and says so.

use std::fmt;

use ota_app::app::Resume;
use ota_app::{App, Finished, RpcError, SessionId, Settings, Source, Stamped, Start, Tick};
use ota_core::control::SnapshotOptions;
use ota_core::layout::{Layout, Region, SectorRun as CoreSectorRun, Slot};
use ota_core::manifest::Platform;
use ota_core::updater::{self, Outcome, UpdateError, UpdateOptions, Updater};

pub use ota_app::Event;

use crate::flash::{CutWhen, Geometry, PowerCut, SimFlash, Snapshot};
use crate::image::Behaviour;
use crate::lfs;
use crate::rng::Rng;

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
    /// The platform the device reports; a bundle's `platform` must match it. Default "esp32".
    pub platform: String,
    /// The work buffer the firmware gives the updater and the snapshot copy; it sets how much
    /// one program writes (at most 4 KiB). Default 4096.
    pub work_buffer_bytes: usize,
    /// What an erased byte reads as: 0xFF (default) or 0x00.
    pub erased_value: u8,
    /// The flash's sector map. Default uniform 4 KiB sectors.
    pub sectors: SectorMap,
}

/// A flash chip's sector map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SectorMap {
    /// 4 KiB sectors throughout.
    #[default]
    Uniform,
    /// An STM32F4's map: four 16 KiB sectors, one of 64 KiB, then 128 KiB sectors, with the
    /// filesystem slots at the end in 4 KiB sectors (LittleFS erases blocks of 4 KiB). The core
    /// erases 128 KiB units: the first unit is the five small sectors together.
    Stm32f4Like,
}

impl SectorMap {
    /// The core's erase unit on this map.
    pub fn erase_unit_bytes(self) -> u32 {
        match self {
            SectorMap::Uniform => ERASE_BYTES as u32,
            SectorMap::Stm32f4Like => 128 * 1024,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SectorMap::Uniform => "uniform",
            SectorMap::Stm32f4Like => "stm32f4",
        }
    }

    pub fn parse(name: &str) -> Option<SectorMap> {
        [SectorMap::Uniform, SectorMap::Stm32f4Like].into_iter().find(|m| m.name() == name)
    }
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
            erased_value: 0xff,
            sectors: SectorMap::Uniform,
        }
    }
}

impl Config {
    /// The flash map: two boot-state areas of one erase unit each, then the app slots, then
    /// the fs slots; on a non-uniform map each slot is rounded up to whole erase units.
    pub fn layout(&self) -> Layout {
        let e = self.sectors.erase_unit_bytes();
        let (app_bytes, fs_bytes) =
            (self.app_slot_bytes.next_multiple_of(e), self.fs_slot_bytes.next_multiple_of(e));
        let app0 = 2 * e;
        let app1 = app0 + app_bytes;
        let fs0 = app1 + app_bytes;
        let fs1 = fs0 + fs_bytes;
        let layout = Layout::new(
            e,
            WRITE_BYTES as u32,
            [Region::new(0, e), Region::new(e, e)],
            [Region::new(app0, app_bytes), Region::new(app1, app_bytes)],
            [Region::new(fs0, fs_bytes), Region::new(fs1, fs_bytes)],
        )
        .unwrap_or_else(|e| panic!("device layout: {e}"))
        .with_erased_byte(self.erased_value);
        layout
            .with_sectors(&self.core_sectors(layout.fs[1].end() as u32))
            .unwrap_or_else(|e| panic!("device layout: {e}"))
    }

    pub fn flash_bytes(&self) -> u32 {
        self.layout().fs[1].end() as u32
    }

    /// The chip: its size, sector map and erased value.
    pub fn geometry(&self) -> Geometry {
        let size = self.flash_bytes();
        let mut geometry = Geometry::new(size).erased_value(self.erased_value);
        for run in self.core_sectors(size) {
            geometry = geometry.sectors(run.count, run.sector_bytes);
        }
        geometry
    }

    fn core_sectors(&self, size_bytes: u32) -> Vec<CoreSectorRun> {
        let run = |count, sector_bytes| CoreSectorRun { count, sector_bytes };
        match self.sectors {
            SectorMap::Uniform => vec![run(size_bytes / ERASE_BYTES as u32, ERASE_BYTES as u32)],
            SectorMap::Stm32f4Like => {
                let unit = self.sectors.erase_unit_bytes();
                let fs0 = 2 * unit + 2 * self.app_slot_bytes.next_multiple_of(unit);
                let small = (size_bytes - fs0) / ERASE_BYTES as u32;
                vec![
                    run(4, 16 * 1024),
                    run(1, 64 * 1024),
                    run((fs0 - unit) / unit, unit),
                    run(small, ERASE_BYTES as u32),
                ]
            }
        }
    }

    /// What the application is built with on this device.
    pub fn settings(&self) -> Settings {
        Settings {
            platform: self.platform.clone(),
            app_name: "ota-sim".into(),
            default_device_id: "sim".into(),
            watchdog_ms: self.watchdog_ms,
            work_buffer_bytes: self.work_buffer_bytes,
            ..Settings::default()
        }
    }
}

impl<const W: usize, const E: usize> ota_app::Flash for SimFlash<W, E> {
    fn ops_done(&self) -> u64 {
        self.mutating_ops()
    }

    fn powered(&self) -> bool {
        self.is_powered()
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

/// Why a verb could not be carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The power is off (or went off during the verb).
    Off,
    /// No firmware runs to take the request.
    NotRunning,
    /// The application refused, with Mongoose OS's code and message.
    Refused(RpcError),
    /// Provisioning failed.
    Update(UpdateError),
    Fs(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Off => f.write_str("the device has no power"),
            DeviceError::NotRunning => f.write_str("no firmware is running"),
            DeviceError::Refused(e) => f.write_str(&e.message),
            DeviceError::Update(e) => write!(f, "{e}"),
            DeviceError::Fs(e) => write!(f, "filesystem: {e}"),
        }
    }
}

/// A saved device: flash, clock, run state, the application's RAM and the trace.
#[derive(Clone, Debug)]
pub struct DeviceSnapshot {
    flash: Snapshot,
    now_ms: u64,
    run: Run,
    app: Option<Resume>,
    trace: Vec<(u64, Event)>,
    trace_ops: Vec<u64>,
}

pub struct Device {
    config: Config,
    layout: Layout,
    settings: Settings,
    /// The flash while no application holds it (off, booting, hung, bricked).
    idle_flash: Option<Flash>,
    app: Option<Box<App<Flash>>>,
    now_ms: u64,
    run: Run,
    trace: Vec<(u64, Event)>,
    /// Mutating flash operations done when each trace event was noted.
    trace_ops: Vec<u64>,
    buf: Vec<u8>,
}

const HELD: &str = "the flash is held by the application or the device";

impl Device {
    /// A device with an erased flash and no power.
    pub fn new(config: Config) -> Device {
        let layout = config.layout();
        let geometry = config.geometry();
        let flash = Flash::new(&geometry, Rng::new(config.seed).derive("flash"));
        let buf = vec![0; config.work_buffer_bytes];
        Device {
            settings: config.settings(),
            config,
            layout,
            idle_flash: Some(flash),
            app: None,
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
        match &mut self.app {
            Some(app) => app.flash_mut(),
            None => self.idle_flash.as_mut().expect(HELD),
        }
    }

    fn flash_ref(&self) -> &Flash {
        match &self.app {
            Some(app) => app.flash(),
            None => self.idle_flash.as_ref().expect(HELD),
        }
    }

    /// Takes the flash back from the application, which stops.
    fn park(&mut self) {
        if let Some(app) = self.app.take() {
            self.idle_flash = Some(app.into_flash());
        }
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
        let ops = self.flash_ref().mutating_ops();
        self.trace.push((self.now_ms, event));
        self.trace_ops.push(ops);
    }

    fn note_all(&mut self, events: Vec<Stamped>) {
        for stamped in events {
            self.trace.push((stamped.ms, stamped.event));
            self.trace_ops.push(stamped.ops);
        }
    }

    /// Notes what the application did since the last call.
    fn drain(&mut self) {
        if let Some(app) = self.app.as_mut() {
            let events = app.take_events();
            self.note_all(events);
        }
    }

    /// For each trace event, the mutating flash operations done when it was noted: the
    /// operations between two events belong to the later one.
    pub fn trace_ops(&self) -> &[u64] {
        &self.trace_ops
    }

    pub fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot {
            flash: self.flash_ref().snapshot(),
            now_ms: self.now_ms,
            run: self.run.clone(),
            app: self.app.as_ref().map(|app| app.resume_point()),
            trace: self.trace.clone(),
            trace_ops: self.trace_ops.clone(),
        }
    }

    /// Puts the device back as it was at `snapshot`, trace included, whatever ran since.
    pub fn restore(&mut self, snapshot: &DeviceSnapshot) {
        self.park();
        let mut flash = self.idle_flash.take().expect(HELD);
        flash.restore(&snapshot.flash);
        match &snapshot.app {
            Some(point) => self.app = Some(Box::new(App::resume(flash, point.clone()))),
            None => self.idle_flash = Some(flash),
        }
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
        self.park();
        let layout = self.layout;
        let device = self.device_info();
        let flash = self.idle_flash.as_mut().expect(HELD);
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
        self.flash().power_on();
        self.note(Event::PowerOn);
        self.reset();
    }

    /// The power goes now.
    pub fn power_cut(&mut self) {
        self.drain();
        self.flash().power_cut();
        self.park();
        if self.run != Run::Off {
            self.run = Run::Off;
            self.note(Event::PowerLost { op: None });
        }
    }

    /// Arms a power cut at mutating flash operation `at_op` (counted from the flash's creation).
    pub fn power_cut_at_op(&mut self, at_op: u64, when: CutWhen) {
        self.flash().power_cut_at(PowerCut { at_op, when });
    }

    /// Mutating flash operations so far.
    pub fn flash_ops(&self) -> u64 {
        self.flash_ref().mutating_ops()
    }

    /// A reset with the power on (RPC reboot, crash, watchdog).
    pub fn reboot(&mut self) {
        if self.run != Run::Off {
            self.reset();
        }
    }

    /// Notes the application's events, then checks whether the power went; if so the device is
    /// off.
    fn lost_power(&mut self) -> bool {
        self.drain();
        if self.flash_ref().is_powered() {
            return false;
        }
        self.park();
        if self.run != Run::Off {
            let op = Some(self.flash_ref().mutating_ops().saturating_sub(1));
            self.run = Run::Off;
            self.note(Event::PowerLost { op });
        }
        true
    }

    /// The boot loader, then the application's start, until a firmware runs or hangs, the power
    /// goes, or too many boots in a row fail.
    fn reset(&mut self) {
        self.drain();
        self.park();
        self.run = Run::Booting;
        for _ in 0..self.config.boot_loops_max {
            let flash = self.idle_flash.take().expect(HELD);
            let mut events = Vec::new();
            let start = ota_app::start(flash, self.layout, self.settings.clone(), self.now_ms, &mut events);
            self.note_all(events);
            match start {
                Start::Running(app) => {
                    self.app = Some(app);
                    if self.lost_power() {
                        return;
                    }
                    return self.running();
                }
                Start::Hung { flash, slot } => {
                    self.idle_flash = Some(flash);
                    if !self.lost_power() {
                        self.run = Run::Hung { slot, since_ms: self.now_ms };
                    }
                    return;
                }
                Start::Reset { flash } => {
                    self.idle_flash = Some(flash);
                    if self.lost_power() {
                        return;
                    }
                }
                Start::Bricked { flash, why } => {
                    self.idle_flash = Some(flash);
                    if !self.lost_power() {
                        self.run = Run::Bricked { why };
                    }
                    return;
                }
            }
        }
        self.brick(format!("{} boots in a row without a running firmware", self.config.boot_loops_max));
    }

    /// The application started: it runs, and what is due at once (a commit timeout of 0) runs.
    fn running(&mut self) {
        let app = self.app.as_mut().expect("the application just started");
        let version = app.version().0;
        self.run = Run::Running {
            slot: app.slot(),
            boot_ms: app.boot_ms(),
            behaviour: app.behaviour(),
            version: Some(version).filter(|v| !v.is_empty()),
        };
        self.tick();
    }

    fn brick(&mut self, why: String) {
        self.note(Event::Bricked { why: why.clone() });
        self.run = Run::Bricked { why };
    }

    /// The next instant something is due: the watchdog, or the application's timers.
    fn next_due_ms(&mut self) -> Option<u64> {
        match (&self.run, self.app.as_mut()) {
            (Run::Hung { since_ms, .. }, _) => Some(since_ms.saturating_add(self.config.watchdog_ms)),
            (Run::Running { .. }, Some(app)) => app.next_due_ms(),
            _ => None,
        }
    }

    /// Lets `ms` of virtual time pass, handling everything that falls due on the way.
    pub fn advance_ms(&mut self, ms: u64) {
        let target_ms = self.now_ms.saturating_add(ms);
        // Each step either ends the loop or handles one due event; a run can fall due a bounded
        // number of times (commit, expiry, watchdog) per boot, and boots are bounded.
        for _ in 0..64 * self.config.boot_loops_max {
            let Some(due_ms) = self.next_due_ms().filter(|&due| due <= target_ms) else { break };
            self.now_ms = self.now_ms.max(due_ms);
            if let Run::Hung { .. } = self.run {
                self.note(Event::WatchdogReset);
                self.reset();
            } else {
                self.tick();
            }
        }
        self.now_ms = target_ms;
    }

    /// Runs the application's timers now; a reboot it asks for happens at once.
    fn tick(&mut self) {
        let now_ms = self.now_ms;
        let Some(app) = self.app.as_mut() else { return };
        let tick = app.tick(now_ms);
        if self.lost_power() {
            return;
        }
        // The simulator has no network: a poll that falls due finds nothing to pull.
        if let Tick::Reboot { .. } = tick {
            self.reset();
        }
    }

    fn app(&mut self) -> Result<&mut App<Flash>, DeviceError> {
        match (&self.run, self.app.as_deref_mut()) {
            (Run::Running { .. }, Some(app)) => Ok(app),
            (Run::Off, _) => Err(DeviceError::Off),
            _ => Err(DeviceError::NotRunning),
        }
    }

    /// Ends a verb: notes the events, and turns a refusal into the power going when it did.
    fn settle<T>(&mut self, result: Result<T, RpcError>) -> Result<T, DeviceError> {
        if self.lost_power() {
            return Err(DeviceError::Off);
        }
        result.map_err(DeviceError::Refused)
    }

    /// `OTA.Commit`.
    pub fn commit(&mut self) -> Result<(), DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.commit(now_ms);
        self.settle(result)
    }

    /// `OTA.Revert`: back to the revert slot, then a reboot.
    pub fn revert(&mut self) -> Result<(), DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.revert(now_ms);
        self.settle(result)?;
        self.reset();
        Ok(())
    }

    /// `OTA.CreateSnapshot`. The steps are [`Device::snapshot_begin`], [`Device::snapshot_step`]
    /// until it says the copy is done, and [`Device::snapshot_end`].
    pub fn create_snapshot(&mut self, options: SnapshotOptions) -> Result<Slot, DeviceError> {
        self.snapshot_begin(options)?;
        while !self.snapshot_step()? {}
        self.snapshot_end()
    }

    /// Checks that a snapshot may start.
    pub fn snapshot_begin(&mut self, options: SnapshotOptions) -> Result<(), DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.snapshot_begin(&options, now_ms);
        self.settle(result)
    }

    /// Copies the next erase unit of the snapshot; true once every unit is copied.
    pub fn snapshot_step(&mut self) -> Result<bool, DeviceError> {
        let result = self.app()?.snapshot_step();
        self.settle(result)
    }

    /// Verifies and records the snapshot.
    pub fn snapshot_end(&mut self) -> Result<Slot, DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.snapshot_end(now_ms);
        self.settle(result)
    }

    /// Streams `zip` to the application's update session in `chunk_bytes` pieces. A bundle
    /// that is applied reboots the device into it, as Mongoose OS does after "Update applied,
    /// finalizing". The steps are [`Device::update_begin`], [`Device::update_chunk`] and
    /// [`Device::update_end`], which a sweep takes one at a time to save the device between two.
    pub fn update(
        &mut self,
        zip: &[u8],
        chunk_bytes: usize,
        options: UpdateOptions,
    ) -> Result<Finished, DeviceError> {
        let id = self.update_begin(zip.len(), options)?;
        for chunk in zip.chunks(chunk_bytes.max(1)) {
            self.update_chunk(id, chunk)?;
        }
        self.update_end(id)
    }

    /// Opens an update session for a bundle of `size_bytes` (`OTA.Begin`).
    pub fn update_begin(
        &mut self,
        size_bytes: usize,
        options: UpdateOptions,
    ) -> Result<SessionId, DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.update_begin(Source::Rpc, options, Some(size_bytes as u64), None, now_ms);
        self.settle(result)
    }

    /// Gives session `id` the next piece of its bundle (`OTA.Write`).
    pub fn update_chunk(&mut self, id: SessionId, chunk: &[u8]) -> Result<(), DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.update_data(id, chunk, now_ms);
        self.settle(result)
    }

    /// Ends session `id` (`OTA.End`); an applied bundle reboots the device into it.
    pub fn update_end(&mut self, id: SessionId) -> Result<Finished, DeviceError> {
        let now_ms = self.now_ms;
        let result = self.app()?.update_end(id, now_ms);
        let finished = self.settle(result)?;
        if let Finished::Applied { .. } = finished {
            self.reset();
        }
        Ok(finished)
    }

    /// Like [`Device::update`], but the power goes once the application has taken
    /// `power_cut_after_bytes` bytes of the bundle (a cut at a fraction of the upload).
    pub fn update_until(
        &mut self,
        zip: &[u8],
        chunk_bytes: usize,
        options: UpdateOptions,
        power_cut_after_bytes: Option<usize>,
    ) -> Result<Finished, DeviceError> {
        let now_ms = self.now_ms;
        let sent = power_cut_after_bytes.map_or(zip.len(), |n| n.min(zip.len()));
        let app = self.app()?;
        let result = stream(app, &zip[..sent], chunk_bytes, options, now_ms);
        if power_cut_after_bytes.is_some() && result.is_ok() {
            self.flash().power_cut();
            self.lost_power();
            return Err(DeviceError::Off);
        }
        let result = result.and_then(|id| self.app.as_mut().expect("running").update_end(id, now_ms));
        let finished = self.settle(result)?;
        if let Finished::Applied { .. } = finished {
            self.reset();
        }
        Ok(finished)
    }

    /// The user writes a file on the running firmware's filesystem (as `conf9.json` is written
    /// when the user changes the device's configuration).
    pub fn write_user_file(&mut self, name: &str, data: &[u8]) -> Result<(), DeviceError> {
        let result = self.app()?.write_file(name, data);
        self.settle(result)
    }

    /// A file of the running firmware's filesystem.
    pub fn read_user_file(&mut self, name: &str) -> Result<Option<Vec<u8>>, DeviceError> {
        let result = self.app()?.read_file(name);
        self.settle(result)
    }
}

/// Opens an update session and feeds it `zip`; the session stays open for `update_end`.
fn stream(
    app: &mut App<Flash>,
    zip: &[u8],
    chunk_bytes: usize,
    options: UpdateOptions,
    now_ms: u64,
) -> Result<ota_app::SessionId, RpcError> {
    let id = app.update_begin(Source::Rpc, options, Some(zip.len() as u64), None, now_ms)?;
    for chunk in zip.chunks(chunk_bytes.max(1)) {
        app.update_data(id, chunk, now_ms)?;
    }
    Ok(id)
}
