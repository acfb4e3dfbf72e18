//! The ESP32-C3's boot path on the strict NOR model, and its power-cut sweep.
//!
//! [`EspBoard`] is a port of `ota-app` as the ESP32-C3 port is: the ESP32-C3 partition map
//! (`ota_app::partitions`) on a 4 MiB [`SimFlash`], a model of ESP-IDF's second-stage boot
//! loader (it boots the app slot that otadata names, ota_0 when neither copy is valid), the
//! application's early init (`ota_app::otadata::early_start`) and, before every reset the
//! application asks for, `ota_app::otadata::prepare_reset`. Nothing here decides: the steps are
//! the application's, the decision the core's.
//!
//! [`sweep`] cuts the power at every flash operation (before, during, after) of a script — an
//! update, a commit, a revert, an update to an image that crashes or hangs, each with the reboots
//! that follow — powers the board on again, and checks that the core decides on the partition the
//! stored state plans and that every path ends on a verified image ([`EspBoard::check`]). A hang
//! is reset at once here (the watchdog's delay does not change what boots next).

use std::fmt;

use ota_app::otadata::{self, Early, EspOtadata, Otadata};
use ota_app::{App, Finished, Source, Start, partitions};
use ota_bundle::Bundle;
use ota_core::boot;
use ota_core::control;
use ota_core::layout::{Layout, Slot};
use ota_core::updater::{Outcome, UpdateOptions, Updater};

use crate::flash::{CutWhen, Geometry, PowerCut, SimFlash};
use crate::image::{Behaviour, Image};
use crate::lfs;
use crate::rng::Rng;

pub type Flash = SimFlash<4, 4096>;

/// The platform the board reports and its bundles name.
pub const PLATFORM: &str = "esp32c3";
/// Resets in a row without a running firmware before the board counts as boot-looping.
pub const BOOTS_MAX: u32 = 8;
/// The update's chunk size, as an RPC `OTA.Write` of 4 KiB.
const CHUNK_BYTES: usize = 4096;

/// Why a board is not running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Halt {
    /// The power went.
    Off,
    /// Nothing boots (the application said why), or it boot-loops.
    Bricked(String),
    /// The boot loader model mapped a slot whose image does not verify.
    UnverifiedBoot(Slot),
}

/// The ESP32-C3 on the simulator: flash, otadata, the application while it runs.
pub struct EspBoard {
    layout: Layout,
    settings: ota_app::Settings,
    otadata: EspOtadata,
    idle: Option<Flash>,
    app: Option<Box<App<Flash>>>,
    /// The partition the boot loader model mapped at the last boot.
    booted: Option<Slot>,
    /// Where the application first started (the core decided, or the trap's start ran) since
    /// the last [`EspBoard::boot`] began: the partition the decision ran on.
    pub first_start: Option<Slot>,
    now_ms: u64,
    /// Boots and redirects, for a failing point's report.
    pub log: Vec<String>,
    /// The trap the reference warns of, for the test that shows the sweep catches it: early
    /// init runs the core's boot (which writes the boot state) before it redirects.
    pub record_before_redirect: bool,
}

const HELD: &str = "the flash is held by the application or the board";

impl EspBoard {
    /// A board with an erased 4 MiB flash and no power.
    pub fn new(seed: u64) -> EspBoard {
        let geometry = Geometry::uniform(partitions::FLASH_BYTES, partitions::ERASE_BYTES);
        let flash = Flash::new(&geometry, Rng::new(seed).derive("flash"));
        let settings = ota_app::Settings {
            platform: PLATFORM.into(),
            app_name: "ota-sim-esp32c3".into(),
            default_device_id: "esp32c3".into(),
            ..ota_app::Settings::default()
        };
        EspBoard {
            layout: partitions::layout(),
            settings,
            otadata: EspOtadata::default(),
            idle: Some(flash),
            app: None,
            booted: None,
            first_start: None,
            now_ms: 0,
            log: Vec::new(),
            record_before_redirect: false,
        }
    }

    pub fn flash(&mut self) -> &mut Flash {
        match &mut self.app {
            Some(app) => app.flash_mut(),
            None => self.idle.as_mut().expect(HELD),
        }
    }

    fn park(&mut self) {
        if let Some(app) = self.app.take() {
            self.idle = Some(app.into_flash());
        }
    }

    /// A factory image: `zip` as the committed image of ota_0, its filesystem formatted when the
    /// bundle has none, otadata erased. The board stays off.
    pub fn provision(&mut self, zip: &[u8]) {
        let layout = self.layout;
        let flash = self.idle.as_mut().expect(HELD);
        flash.power_on();
        let device = ota_core::updater::Device {
            arch: ota_core::manifest::Platform::new(PLATFORM).expect("a short platform name"),
            app_part: None,
        };
        let mut buf = vec![0u8; 4096];
        let mut updater = Updater::begin_provision(flash, &layout, device, &mut buf).expect("provision");
        updater.process(flash, zip).expect("provision");
        if let Outcome::Provisioned { state } = updater.finish(flash).expect("provision")
            && state.record.state.slots[0].fs_len_bytes == 0
        {
            lfs::format(flash, layout.fs(Slot::S0)).expect("format fs_0");
        }
        flash.power_cut();
    }

    /// Power comes on and the board boots until a firmware runs.
    pub fn power_on(&mut self) -> Result<(), Halt> {
        self.park();
        self.flash().power_on();
        self.boot()
    }

    /// The slot the core's decision on the stored boot state runs (`target_slot`, which writes
    /// nothing); read with the power on and the application stopped.
    pub fn planned_slot(&mut self) -> Option<Slot> {
        self.park();
        let layout = self.layout;
        let mut buf = vec![0u8; 4096];
        otadata::target_slot(self.flash(), &layout, &mut buf).ok().flatten()
    }

    /// The boot loader model and the application's early init, until a firmware runs.
    fn boot(&mut self) -> Result<(), Halt> {
        self.park();
        self.first_start = None;
        for _ in 0..BOOTS_MAX {
            let mut flash = self.idle.take().expect(HELD);
            let entries = self.otadata.read(&mut flash);
            let booted = entries.map(|e| otadata::boot_loader_slot(&e));
            let Ok(booted) = booted else {
                self.idle = Some(flash);
                return Err(Halt::Off);
            };
            if !self.image_verifies(&mut flash, booted) {
                self.idle = Some(flash);
                return Err(Halt::UnverifiedBoot(booted));
            }
            self.booted = Some(booted);
            let mut events = Vec::new();
            let (layout, settings) = (self.layout, self.settings.clone());
            let early = if self.record_before_redirect {
                self.early_start_trap(flash, booted, &mut events)
            } else {
                otadata::early_start(
                    flash,
                    &mut self.otadata,
                    booted,
                    layout,
                    settings,
                    self.now_ms,
                    &mut events,
                )
            };
            if let Early::Start(_) = early {
                self.first_start = self.first_start.or(Some(booted));
            }
            match early {
                Early::Redirect { flash, to, .. } => {
                    self.log.push(format!("booted {booted}: redirect to {to}"));
                    self.idle = Some(flash);
                }
                Early::Start(Start::Running(app)) => {
                    self.log.push(format!("booted {booted}: running {} ({:?})", app.slot(), events.last()));
                    self.app = Some(app);
                    if !self.flash().is_powered() {
                        self.park();
                        return Err(Halt::Off);
                    }
                    return Ok(());
                }
                Early::Start(Start::Reset { flash } | Start::Hung { flash, .. }) => {
                    self.log.push(format!("booted {booted}: reset"));
                    self.idle = Some(flash);
                }
                Early::Start(Start::Bricked { flash, why }) => {
                    self.idle = Some(flash);
                    if !self.flash().is_powered() {
                        return Err(Halt::Off);
                    }
                    return Err(Halt::Bricked(why));
                }
            }
            if !self.flash().is_powered() {
                return Err(Halt::Off);
            }
        }
        Err(Halt::Bricked(format!("{BOOTS_MAX} boots in a row without a running firmware")))
    }

    /// The trap: the core's boot first (it records the trial or the revert), then otadata.
    fn early_start_trap(
        &mut self,
        flash: Flash,
        booted: Slot,
        events: &mut Vec<ota_app::Stamped>,
    ) -> Early<Flash> {
        match ota_app::start(flash, self.layout, self.settings.clone(), self.now_ms, events) {
            Start::Running(mut app) => {
                let slot = app.slot();
                let _ = self.otadata.name_slot(app.flash_mut(), slot);
                if slot == booted {
                    Early::Start(Start::Running(app))
                } else {
                    Early::Redirect { flash: app.into_flash(), to: slot, named: true }
                }
            }
            other => Early::Start(other),
        }
    }

    /// What the second-stage boot loader checks before it maps a slot, modelled by the core's
    /// knowledge of the slot: its image verifies against the boot state or, without one, its
    /// descriptor.
    fn image_verifies(&self, flash: &mut Flash, slot: Slot) -> bool {
        let mut buf = vec![0u8; 4096];
        if let Ok(located) = control::read(flash, &self.layout) {
            let state = located.record.state;
            if boot::verify_with_known_digests(flash, &self.layout, &state, slot, &mut buf) == Ok(true) {
                return true;
            }
        }
        let Ok(Some(descriptor)) = ota_core::descriptor::read(flash, &self.layout, slot) else {
            return false;
        };
        let state = ota_core::state::BootState::provisioned(slot, descriptor.info);
        boot::verify_with_known_digests(flash, &self.layout, &state, slot, &mut buf) == Ok(true)
    }

    fn app(&mut self) -> Result<&mut App<Flash>, Halt> {
        self.app.as_deref_mut().ok_or(Halt::Off)
    }

    fn powered(&mut self) -> Result<(), Halt> {
        if self.flash().is_powered() { Ok(()) } else { Err(Halt::Off) }
    }

    /// A reset the application asked for: otadata first, then the boot.
    pub fn reboot(&mut self) -> Result<(), Halt> {
        let layout = self.layout;
        let app = self.app.as_deref_mut().ok_or(Halt::Off)?;
        let _ = otadata::prepare_reset(app.flash_mut(), &mut self.otadata, &layout, 4096);
        self.powered()?;
        self.boot()
    }

    /// `OTA.Begin`, `OTA.Write` in 4 KiB chunks, `OTA.End`; an applied bundle reboots the board.
    pub fn update(&mut self, zip: &[u8]) -> Result<(), Halt> {
        let now = self.now_ms;
        let app = self.app()?;
        let id = app.update_begin(Source::Rpc, UpdateOptions::default(), Some(zip.len() as u64), None, now);
        self.powered()?;
        let id = id.map_err(|e| Halt::Bricked(format!("update refused: {e}")))?;
        for chunk in zip.chunks(CHUNK_BYTES) {
            let result = self.app()?.update_data(id, chunk, now);
            self.powered()?;
            result.map_err(|e| Halt::Bricked(format!("update refused: {e}")))?;
        }
        let finished = self.app()?.update_end(id, now);
        self.powered()?;
        match finished {
            Ok(Finished::Applied { .. }) => self.reboot(),
            other => Err(Halt::Bricked(format!("update did not apply: {other:?}"))),
        }
    }

    /// `OTA.Commit`.
    pub fn commit(&mut self) -> Result<(), Halt> {
        let now = self.now_ms;
        let result = self.app()?.commit(now);
        self.powered()?;
        result.map_err(|e| Halt::Bricked(format!("commit refused: {e}")))
    }

    /// `OTA.Revert`, then the reboot it asks for.
    pub fn revert(&mut self) -> Result<(), Halt> {
        let now = self.now_ms;
        let result = self.app()?.revert(now);
        self.powered()?;
        result.map_err(|e| Halt::Bricked(format!("revert refused: {e}")))?;
        self.reboot()
    }

    /// The running slot and version.
    pub fn running(&mut self) -> Option<(Slot, String)> {
        let app = self.app.as_deref_mut()?;
        Some((app.slot(), app.version().0))
    }

    /// The invariants of a board that has booted: a firmware runs, in the partition the boot
    /// loader mapped, which is the boot state's active slot and holds the image it records;
    /// otadata names it; no flash operation broke the NOR rules.
    pub fn check(&mut self) -> Result<(), String> {
        let layout = self.layout;
        let booted = self.booted;
        let mut otadata = self.otadata;
        let app = self.app.as_deref_mut().ok_or("no firmware runs")?;
        let slot = app.slot();
        if booted != Some(slot) {
            return Err(format!("the application runs {slot} but the boot loader mapped {booted:?}"));
        }
        let flash = app.flash_mut();
        let state = control::read(flash, &layout).map_err(|e| e.to_string())?.record.state;
        if state.active != slot {
            return Err(format!("running {slot} while the boot state's active slot is {}", state.active));
        }
        let mut buf = vec![0u8; 4096];
        if boot::verify_with_known_digests(flash, &layout, &state, slot, &mut buf) != Ok(true) {
            return Err(format!("the running {slot}'s image does not verify"));
        }
        let named = otadata.named_slot(flash).map_err(|e| e.to_string())?;
        if named != slot {
            return Err(format!("otadata names {named} while {slot} runs"));
        }
        if let Some(v) = flash.violations().first() {
            return Err(format!("NOR rule broken: {v:?}"));
        }
        Ok(())
    }
}

/// What a sweep runs after the board is up on v1, committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// An update to a healthy v2 (which commits itself on its trial boot).
    Update,
    /// An update to a v2 that never commits, then `OTA.Commit` and a reboot.
    Commit,
    /// An update to a v2 that never commits, then `OTA.Revert` (and its reboot).
    Revert,
    /// An update to a v2 that crashes at boot: its trial resets, the boot loader maps it again,
    /// early init redirects to v1, whose boot reverts.
    Crash,
    /// An update to a v2 that hangs at boot: the watchdog resets it, as after a crash.
    Hang,
}

impl Script {
    pub const ALL: [Script; 5] =
        [Script::Update, Script::Commit, Script::Revert, Script::Crash, Script::Hang];

    pub fn parse(name: &str) -> Option<Vec<Script>> {
        match name {
            "update" => Some(vec![Script::Update]),
            "commit" => Some(vec![Script::Commit]),
            "revert" => Some(vec![Script::Revert]),
            "crash" => Some(vec![Script::Crash]),
            "hang" => Some(vec![Script::Hang]),
            "all" => Some(Script::ALL.to_vec()),
            _ => None,
        }
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Script::Update => "update",
            Script::Commit => "commit",
            Script::Revert => "revert",
            Script::Crash => "crash",
            Script::Hang => "hang",
        })
    }
}

/// The bundles of a sweep.
pub struct Fixture {
    pub v1_zip: Vec<u8>,
    pub v2_zip: Vec<u8>,
    pub script: Script,
}

impl Fixture {
    pub fn new(script: Script, app_bytes: usize) -> Fixture {
        let v2 = match script {
            Script::Update => Behaviour::Healthy,
            Script::Commit | Script::Revert => Behaviour::NeverCommits,
            Script::Crash => Behaviour::CrashesAtBoot,
            Script::Hang => Behaviour::Hangs,
        };
        let zip = |image: Image| {
            Bundle::new("simapp", PLATFORM)
                .version(&image.version)
                .build_id(&format!("sim/{}", image.version))
                .app(image.bytes())
                .build()
        };
        Fixture {
            v1_zip: zip(Image::new("1.0.0", app_bytes)),
            v2_zip: zip(Image::new("2.0.0", app_bytes).behaviour(v2)),
            script,
        }
    }
}

/// A board up on v1, committed: where every point starts.
pub fn prepare(fixture: &Fixture, seed: u64) -> EspBoard {
    prepare_with(fixture, seed, false)
}

fn prepare_with(fixture: &Fixture, seed: u64, record_before_redirect: bool) -> EspBoard {
    let mut board = EspBoard::new(seed);
    board.record_before_redirect = record_before_redirect;
    board.provision(&fixture.v1_zip);
    board.power_on().unwrap_or_else(|h| panic!("v1 does not boot: {h:?}"));
    board
}

/// The script's steps; the first power loss ends it.
pub fn run_script(board: &mut EspBoard, fixture: &Fixture) -> Result<(), Halt> {
    board.update(&fixture.v2_zip)?;
    match fixture.script {
        Script::Update | Script::Crash | Script::Hang => Ok(()),
        Script::Commit => {
            board.commit()?;
            board.reboot()
        }
        Script::Revert => board.revert(),
    }
}

/// Where the clean script ends: the slot and version that run.
pub fn expected_end(script: Script) -> (Slot, &'static str) {
    match script {
        Script::Update | Script::Commit => (Slot::S1, "2.0.0"),
        Script::Revert | Script::Crash | Script::Hang => (Slot::S0, "1.0.0"),
    }
}

/// One failing cut point.
#[derive(Clone, Debug)]
pub struct Failure {
    pub script: Script,
    pub at_op: u64,
    pub when: CutWhen,
    pub why: String,
    pub log: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cut {} op {}: {}; boots: {}",
            self.script,
            self.when,
            self.at_op,
            self.why,
            self.log.join(" | ")
        )
    }
}

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub points: u64,
    /// Flash operations of each script, from the update's first to the last reboot's last.
    pub ops: Vec<(Script, u64)>,
    pub failures: Vec<Failure>,
}

/// Every cut point of each script: every `op_step`-th mutating flash operation, before, during
/// and after it. Then power on, and [`EspBoard::check`]; a second reset the application asks for
/// must end on a verified image too.
pub fn sweep(scripts: &[Script], app_bytes: usize, op_step: u64, seed: u64) -> Report {
    sweep_with(scripts, app_bytes, op_step, seed, false)
}

fn sweep_with(scripts: &[Script], app_bytes: usize, op_step: u64, seed: u64, trap: bool) -> Report {
    let mut report = Report::default();
    for &script in scripts {
        let fixture = Fixture::new(script, app_bytes);
        let mut clean = prepare_with(&fixture, seed, trap);
        let first_op = clean.flash().mutating_ops();
        let end = run_script(&mut clean, &fixture).and_then(|_| clean.check().map_err(Halt::Bricked));
        let ran = clean.running();
        if let Err(why) = end.map_err(|h| format!("{h:?}")).and_then(|_| {
            let (slot, version) = expected_end(script);
            if ran.as_ref().map(|(s, v)| (*s, v.as_str())) == Some((slot, version)) {
                Ok(())
            } else {
                Err(format!("the clean script ends running {ran:?}, not {version} in {slot}"))
            }
        }) {
            report.failures.push(Failure { script, at_op: 0, when: CutWhen::Before, why, log: clean.log });
            continue;
        }
        let last_op = clean.flash().mutating_ops();
        report.ops.push((script, last_op - first_op));
        for at_op in (first_op..last_op).step_by(op_step.max(1) as usize) {
            for when in [CutWhen::Before, CutWhen::During, CutWhen::After] {
                report.points += 1;
                if let Err(why) = cut_point_with(&fixture, seed, at_op, when, trap) {
                    let log = why.1;
                    report.failures.push(Failure { script, at_op, when, why: why.0, log });
                }
            }
        }
    }
    report
}

/// One point: the script with a cut at `at_op`, then power on, check, a reboot, check.
/// `Ok` carries the boots after the cut, as the board logged them.
pub fn cut_point(
    fixture: &Fixture,
    seed: u64,
    at_op: u64,
    when: CutWhen,
) -> Result<Vec<String>, (String, Vec<String>)> {
    cut_point_with(fixture, seed, at_op, when, false)
}

fn cut_point_with(
    fixture: &Fixture,
    seed: u64,
    at_op: u64,
    when: CutWhen,
    trap: bool,
) -> Result<Vec<String>, (String, Vec<String>)> {
    let mut board = prepare_with(fixture, seed, trap);
    board.flash().power_cut_at(PowerCut { at_op, when });
    let cut = run_script(&mut board, fixture);
    let fail = |board: &mut EspBoard, why: String| Err((why, std::mem::take(&mut board.log)));
    if cut != Err(Halt::Off) {
        // The cut fell on the script's last operations' far side: nothing to recover from.
        if board.flash().armed_power_cut().is_some() {
            return fail(&mut board, format!("the cut never struck: {cut:?}"));
        }
    }
    board.log.push("power cut".into());
    board.park();
    board.flash().power_on();
    let planned = board.planned_slot();
    if let Err(h) = board.boot() {
        return fail(&mut board, format!("after the cut: {h:?}"));
    }
    if let Err(why) = board.check() {
        return fail(&mut board, format!("after the cut: {why}"));
    }
    // Otadata only steers the boot loader: the core decides first on the partition its plan on
    // the stored state names (a redirect must not change the decision; the image there may then
    // crash or hang, and the next boot reverts it).
    if board.first_start != planned {
        let first = board.first_start;
        return fail(
            &mut board,
            format!("the boot state planned {planned:?} but the decision ran on {first:?}"),
        );
    }
    if let Err(h) = board.reboot() {
        return fail(&mut board, format!("after a reboot: {h:?}"));
    }
    if let Err(why) = board.check() {
        return fail(&mut board, format!("after a reboot: {why}"));
    }
    Ok(board.log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_script_runs_clean_to_its_end() {
        for script in Script::ALL {
            let fixture = Fixture::new(script, 8 * 1024);
            let mut board = prepare(&fixture, 1);
            board.check().unwrap();
            run_script(&mut board, &fixture).unwrap();
            board.check().unwrap();
            let (slot, version) = expected_end(script);
            assert_eq!(board.running(), Some((slot, version.to_string())), "{script}");
        }
    }

    /// The sweep, every operation of each script on an 8 KiB image: every path ends on a
    /// verified image that otadata names (larger images: `--otadata` of the sweep example).
    #[test]
    fn every_otadata_cut_ends_on_a_verified_image() {
        let report = sweep(&Script::ALL, 8 * 1024, 1, 7);
        let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
        assert!(
            failures.is_empty(),
            "{} of {} points failed:\n{}",
            failures.len(),
            report.points,
            failures.join("\n")
        );
        assert!(report.points > 150, "{} points, ops {:?}", report.points, report.ops);
    }

    /// The cut the reference singles out: after `Updater::finish`'s record, before otadata names
    /// the new slot. The old partition boots, early init redirects without writing, and the new
    /// image gets its trial (and, healthy, commits).
    #[test]
    fn a_cut_between_the_record_and_the_otadata_write_is_repaired_by_a_redirect() {
        let fixture = Fixture::new(Script::Update, 8 * 1024);
        let mut clean = prepare(&fixture, 7);
        let (first, _) = (clean.flash().mutating_ops(), run_script(&mut clean, &fixture));
        let last = clean.flash().mutating_ops();
        let redirected: Vec<u64> = (first..last)
            .filter(|&at_op| {
                let log = cut_point(&fixture, 7, at_op, CutWhen::Before).unwrap();
                log.iter().any(|line| line.contains("slot 0: redirect to slot 1"))
            })
            .collect();
        assert!(!redirected.is_empty(), "no cut fell between the record and the otadata write");
    }

    /// The trap the reference names: writing the boot state before the redirect. A cut between
    /// `Updater::finish`'s record and the otadata write boots the old partition; the core's boot
    /// there clears the trial's flag B, and the redirected boot of the new image counts as its
    /// second and reverts it, so the update is lost although nothing failed. The sweep must see
    /// it. (With a v2 that commits itself at start the trap hides: the "trial" that ran on the
    /// old partition commits the new image before it ever ran, so the commit script's v2, which
    /// never commits, is the one to show it.)
    #[test]
    fn the_sweep_catches_a_boot_state_write_before_the_redirect() {
        let report = sweep_with(&[Script::Commit], 8 * 1024, 1, 7, true);
        assert!(!report.failures.is_empty(), "the sweep passed the trap: {} points", report.points);
    }
}
