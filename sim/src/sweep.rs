//! Exhaustive power-cut sweeps.
//!
//! A sweep runs a [`Script`] once on a provisioned device to count its mutating flash operations,
//! then, for every operation index (the last one included) and every fault model
//! ([`CutWhen::Before`], [`CutWhen::During`], [`CutWhen::After`]), restores the device, cuts the
//! power there, powers on, lets the device recover (boot, merge, firmware, commit timer), and
//! checks the invariants:
//!
//! | invariant                | checked as                                                         |
//! |--------------------------|--------------------------------------------------------------------|
//! | the flash is used legally | no strictness violation (double program, misalignment)           |
//! | the log decodes          | a valid boot-state record exists after the cut and after recovery |
//! | nothing is overwritten that the state relies on | at the cut, the active slot and (while uncommitted) the revert slot verify |
//! | no brick                 | after recovery a firmware runs, committed                          |
//! | old or new, never a mix  | the running slot holds exactly the old or the new image            |
//! | commit is durable        | the expected image runs: see [`expected_version`]                  |
//! | user files survive       | `conf9.json` reads back as the user wrote it                       |
//!
//! A [`Plan`] says what is cut after the first cut: at depth two and three, every operation of
//! the recovery from the cut before; with [`Plan::Retry`], every operation of the interrupted
//! action run again once the device recovered. [`Fixture::on_flash`] runs any of these on a
//! flash erased to 0x00 or with an STM32F4-like sector map. Faults in the stored bits of the
//! boot-state areas (flips, stuck bits) are swept by [`crate::faults`].
//! Points are spread over threads; each thread restores its own device. A point does not run
//! the script from its start: one clean run saves the device before each step of the script
//! (a checkpoint), and the point resumes from the last one before its cut, which gives the
//! same outcome and trace as a run from the start (a test holds this against [`replay`]).

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ota_bundle::Bundle;
use ota_core::boot;
use ota_core::control::SnapshotOptions;
use ota_core::layout::Slot;
use ota_core::log;
use ota_core::state::BootState;
use ota_core::updater::UpdateOptions;
use sha2::Digest as _;

use crate::device::{ARCH, Config, Device, DeviceSnapshot, Run, SectorMap};
use crate::flash::{CutWhen, Matched};
use crate::image::{self, Behaviour, Image};
use crate::lfs;

pub const USER_FILE: &str = "conf9.json";
pub const USER_CONFIG: &[u8] = br#"{"wifi": {"sta": {"enable": true, "ssid": "field-site-7"}}}"#;

/// What the swept part of a run does, starting from v1 running, committed, with the user's
/// `conf9.json` written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// Update to a healthy v2 (commit timeout 300 s): finalize, reboot, first-boot merge, commit.
    Update,
    /// Update to a v2 that never commits (commit timeout 300 s): the timer expires, revert, reboot.
    Rollback,
    /// Snapshot of the running v1 into the other slot.
    Snapshot,
}

impl Script {
    pub const ALL: [Script; 3] = [Script::Update, Script::Rollback, Script::Snapshot];

    pub fn name(self) -> &'static str {
        match self {
            Script::Update => "update",
            Script::Rollback => "rollback",
            Script::Snapshot => "snapshot",
        }
    }

    pub fn parse(name: &str) -> Option<Script> {
        Script::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The commit timeout the scripts use.
pub const COMMIT_TIMEOUT_S: u32 = 300;
/// Time a recovery is given: longer than the commit timeout and the watchdog.
pub const SETTLE_MS: u64 = (COMMIT_TIMEOUT_S as u64 + 60) * 1000;

/// The two firmware versions of a sweep, their bundles, and the chunk size the update streams in.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub config: Config,
    pub v1: Image,
    pub v2: Image,
    /// The images' bytes and SHA-256, computed once.
    known: Vec<Known>,
    pub v1_zip: Vec<u8>,
    pub v2_zip: Vec<u8>,
    pub chunk_bytes: usize,
    /// The bundles are the fixture's own (built for the device's filesystem slot), not given.
    built: bool,
}

impl Fixture {
    /// v1 and v2 apps of `app_bytes` each; v2 behaves as `v2_behaviour`. Each bundle carries a
    /// LittleFS image with one file of its own.
    pub fn new(app_bytes: usize, v2_behaviour: Behaviour, seed: u64) -> Fixture {
        let app_slot_bytes = slot_bytes_for(app_bytes as u32);
        let config = Config { app_slot_bytes, seed, ..Config::default() };
        let v1 = Image::new("1.0.0", app_bytes);
        let v2 = Image::new("2.0.0", app_bytes).behaviour(v2_behaviour);
        let v1_zip = bundle(&config, &v1, br#"{"app": "v1"}"#);
        let v2_zip = bundle(&config, &v2, br#"{"app": "v2"}"#);
        let known = [&v1, &v2].map(Known::of).to_vec();
        Fixture { config, v1, v2, known, v1_zip, v2_zip, chunk_bytes: 1024, built: true }
    }

    /// The same fixture on a flash whose erased bytes read as `erased_value`, with the sector
    /// map `sectors`: slots grow to whole erase units (the app slot keeps a unit for the image
    /// descriptor), and the fixture's own bundles are built again for the new filesystem slot.
    pub fn on_flash(mut self, erased_value: u8, sectors: SectorMap) -> Fixture {
        let unit = sectors.erase_unit_bytes();
        let largest = self.v1.len_bytes.max(self.v2.len_bytes) as u32;
        self.config.erased_value = erased_value;
        self.config.sectors = sectors;
        if sectors != SectorMap::Uniform {
            self.config.app_slot_bytes = largest.next_multiple_of(unit) + unit;
            self.config.fs_slot_bytes = self.config.fs_slot_bytes.next_multiple_of(unit);
        }
        if self.built {
            self.v1_zip = bundle(&self.config, &self.v1, br#"{"app": "v1"}"#);
            self.v2_zip = bundle(&self.config, &self.v2, br#"{"app": "v2"}"#);
        }
        self
    }

    /// The same fixture on a device whose firmware gives the updater a `bytes` work buffer.
    pub fn with_work_buffer(mut self, bytes: usize) -> Fixture {
        self.config.work_buffer_bytes = bytes;
        self
    }

    pub fn for_script(script: Script, app_bytes: usize, seed: u64) -> Fixture {
        let behaviour = match script {
            Script::Rollback => Behaviour::NeverCommits,
            _ => Behaviour::Healthy,
        };
        Fixture::new(app_bytes, behaviour, seed)
    }

    /// A fixture from two bundles of any origin: `v1_zip` is provisioned, `v2_zip` is the
    /// update. Their app parts are found as the updater finds them; an app without the
    /// simulator's header behaves as healthy. The device's platform is `v1_zip`'s.
    pub fn from_bundles(v1_zip: Vec<u8>, v2_zip: Vec<u8>, seed: u64) -> Result<Fixture, String> {
        let (v1, v1_app, platform) = app_of(&v1_zip).map_err(|e| format!("first bundle: {e}"))?;
        let (v2, v2_app, _) = app_of(&v2_zip).map_err(|e| format!("second bundle: {e}"))?;
        let largest = v1_app.len().max(v2_app.len()) as u32;
        let app_slot_bytes = slot_bytes_for(largest);
        let config = Config { app_slot_bytes, seed, platform, ..Config::default() };
        let known = vec![Known::from_bytes(&v1.version, v1_app), Known::from_bytes(&v2.version, v2_app)];
        Ok(Fixture { config, v1, v2, known, v1_zip, v2_zip, chunk_bytes: 1024, built: false })
    }
}

/// An app slot that holds an image of `app_bytes` and, in its last erase unit, the image's
/// descriptor: at least 64 KiB.
fn slot_bytes_for(app_bytes: u32) -> u32 {
    let erase = crate::device::ERASE_BYTES as u32;
    (app_bytes.next_multiple_of(erase) + erase).max(64 * 1024)
}

/// An image the sweep knows: its version, bytes and SHA-256.
#[derive(Clone, Debug)]
struct Known {
    version: String,
    bytes: Arc<[u8]>,
    sha256: [u8; 32],
}

impl Known {
    fn of(image: &Image) -> Known {
        Known::from_bytes(&image.version, image.bytes())
    }

    fn from_bytes(version: &str, bytes: Vec<u8>) -> Known {
        let sha256 = sha2::Sha256::digest(&bytes).into();
        Known { version: version.to_string(), bytes: bytes.into(), sha256 }
    }
}

/// A bundle's app part, as an [`Image`] description (version from the manifest, behaviour from
/// the header), its bytes, and the bundle's platform.
fn app_of(zip: &[u8]) -> Result<(Image, Vec<u8>, String), String> {
    let entries = ota_bundle::read_entries(zip).map_err(|e| e.to_string())?;
    let manifest_entry =
        entries.first().filter(|e| e.name.ends_with("manifest.json")).ok_or("no manifest.json first")?;
    let manifest =
        ota_core::manifest::Manifest::parse(manifest_entry.data(zip)).map_err(|e| e.to_string())?;
    let part = manifest
        .parts
        .iter()
        .find(|p| p.kind.is_some_and(|k| k == "app") || ["app", "fw"].contains(&p.name.as_str()))
        .ok_or("no app part (type app, or a part named app or fw)")?;
    let src = part.src.ok_or("the app part has no src")?;
    let entry = entries
        .iter()
        .find(|e| e.name.rsplit('/').next() == Some(src.as_str()) || e.name == src.as_str())
        .ok_or_else(|| format!("no entry {src}"))?;
    let bytes = entry.data(zip).to_vec();
    let version = manifest.version.map(|v| v.as_str().to_string()).unwrap_or_default();
    let behaviour = image::parse_header(&bytes).0;
    let image = Image { version, behaviour, len_bytes: bytes.len() };
    Ok((image, bytes, manifest.platform.as_str().to_string()))
}

/// True when the flash holds exactly `known`'s image at `offset`. Each thread remembers, per
/// image and place, the pages found equal ([`Matched`]), so the pages a point left as they were
/// in the start snapshot are not compared again.
fn holds(device: &mut Device, offset: u32, known: &Known) -> bool {
    /// Images × places a thread remembers: the two images in the two slots.
    const REMEMBERED: usize = 4;
    thread_local! {
        static MATCHED: RefCell<Vec<Matched>> = const { RefCell::new(Vec::new()) };
    }
    MATCHED.with_borrow_mut(|matched| {
        let i =
            match matched.iter().position(|m| m.offset() == offset && Arc::ptr_eq(m.bytes(), &known.bytes)) {
                Some(i) => i,
                None => {
                    if matched.len() == REMEMBERED {
                        matched.remove(0);
                    }
                    matched.push(Matched::new(offset, known.bytes.clone()));
                    matched.len() - 1
                }
            };
        device.flash().holds(&mut matched[i])
    })
}

/// `boot::verify` of a slot, by comparing bytes when the state records one of the fixture's
/// images (same length and digest, so the same answer) and by hashing otherwise.
fn verifies(device: &mut Device, fixture: &Fixture, state: &BootState, slot: Slot) -> Result<bool, String> {
    let info = state.slot(slot);
    let layout = *device.layout();
    let known = fixture
        .known
        .iter()
        .find(|k| k.sha256 == info.app_sha256 && k.bytes.len() == info.app_len_bytes as usize);
    match known {
        Some(k) if info.app_len_bytes <= layout.app(slot).size_bytes => {
            Ok(holds(device, layout.app(slot).offset, k))
        }
        _ => boot::verify_with_known_digests(device.flash(), &layout, state, slot, &mut [0u8; 4096])
            .map_err(|e| e.to_string()),
    }
}

fn bundle(config: &Config, image: &Image, app_json: &[u8]) -> Vec<u8> {
    let mut fs =
        lfs::build_image(config.fs_slot_bytes, crate::device::ERASE_BYTES as u32, &[("app.json", app_json)]);
    if config.erased_value != 0xff {
        // The image leaves littlefs's free space erased as all-0xFF write units (`build_image`):
        // on this flash erased units read as its own erased value.
        for unit in fs.chunks_mut(crate::device::WRITE_BYTES) {
            if unit.iter().all(|&b| b == 0xff) {
                unit.fill(config.erased_value);
            }
        }
    }
    Bundle::new("simapp", ARCH)
        .version(&image.version)
        .build_id(&format!("sim/{}", image.version))
        .app(image.bytes())
        .fs(fs)
        .build()
}

/// A device running v1, committed, with the user's configuration written: where every point
/// starts.
pub fn prepare(fixture: &Fixture) -> Device {
    let mut device = Device::new(fixture.config.clone());
    device.provision(&fixture.v1_zip).unwrap_or_else(|e| panic!("provisioning v1: {e}"));
    device.power_on();
    device.write_user_file(USER_FILE, USER_CONFIG).unwrap_or_else(|e| panic!("writing {USER_FILE}: {e}"));
    assert!(matches!(device.run(), Run::Running { .. }), "v1 runs after provisioning");
    device
}

/// Runs the script. Verbs on a device whose power went off do nothing, so the script simply
/// runs on.
pub fn run_script(device: &mut Device, fixture: &Fixture, script: Script) {
    let mut cursor = Cursor::default();
    for step in steps(fixture, script) {
        run_step(device, fixture, step, &mut cursor);
    }
}

/// One step of a script: a sweep can save the device between two steps (a [`Checkpoint`]) and
/// run the rest of the script from there. An update is its session's opening, each chunk, and
/// its end, as [`Device::update`] takes them; a snapshot its checks, each erase unit copied,
/// and its end, as [`Device::create_snapshot`] takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Begin,
    Chunk(usize),
    End,
    Settle,
    SnapshotBegin,
    SnapshotUnit,
    SnapshotEnd,
}

fn steps(fixture: &Fixture, script: Script) -> Vec<Step> {
    match script {
        Script::Update | Script::Rollback => {
            let chunks = fixture.v2_zip.len().div_ceil(fixture.chunk_bytes.max(1));
            let mut steps = vec![Step::Begin];
            steps.extend((0..chunks).map(Step::Chunk));
            steps.extend([Step::End, Step::Settle]);
            steps
        }
        Script::Snapshot => {
            // The running v1's app units, then the whole filesystem slot's; one more step finds
            // the copy done (a step past the end copies nothing).
            let layout = fixture.config.layout();
            let unit = layout.erase_size_bytes as usize;
            let units = fixture.v1.len_bytes.div_ceil(unit) + layout.fs[0].size_bytes as usize / unit;
            let mut steps = vec![Step::SnapshotBegin];
            steps.extend(std::iter::repeat_n(Step::SnapshotUnit, units + 1));
            steps.push(Step::SnapshotEnd);
            steps
        }
    }
}

/// Where a script's update stands between steps: its session, and whether a step failed (then
/// the rest of the update is not sent, as [`Device::update`] stops at the first error).
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    session: Option<ota_app::SessionId>,
    stopped: bool,
    /// The snapshot's copy is done: no more unit steps, as [`Device::create_snapshot`] stops
    /// asking once a step says so.
    copied: bool,
}

fn run_step(device: &mut Device, fixture: &Fixture, step: Step, cursor: &mut Cursor) {
    let options = UpdateOptions { commit_timeout_s: COMMIT_TIMEOUT_S, ignore_same_version: false };
    let chunk_bytes = fixture.chunk_bytes.max(1);
    if cursor.stopped && matches!(step, Step::Chunk(_) | Step::End | Step::SnapshotUnit | Step::SnapshotEnd) {
        return;
    }
    if cursor.copied && step == Step::SnapshotUnit {
        return;
    }
    let session = || cursor.session.expect("the update began");
    let ok = match step {
        Step::Begin => {
            device.update_begin(fixture.v2_zip.len(), options).map(|id| cursor.session = Some(id)).is_ok()
        }
        Step::Chunk(i) => {
            let zip = &fixture.v2_zip;
            let chunk = &zip[i * chunk_bytes..((i + 1) * chunk_bytes).min(zip.len())];
            device.update_chunk(session(), chunk).is_ok()
        }
        Step::End => device.update_end(session()).is_ok(),
        Step::Settle => {
            device.advance_ms(SETTLE_MS);
            true
        }
        Step::SnapshotBegin => device.snapshot_begin(SnapshotOptions::default()).is_ok(),
        Step::SnapshotUnit => device.snapshot_step().map(|done| cursor.copied = done).is_ok(),
        Step::SnapshotEnd => device.snapshot_end().is_ok(),
    };
    cursor.stopped |= !ok;
}

/// The device saved before a step of a clean run of a script.
struct Checkpoint {
    /// Mutating flash operations done before the step.
    ops: u64,
    step: usize,
    device: DeviceSnapshot,
    cursor: Cursor,
}

/// A clean run of `script` from `from`, saved before every step that starts at a new operation
/// count (of steps that start at the same count, the last: the ones before it wrote nothing).
/// Returns the checkpoints and the operations of the whole run.
fn checkpoints(fixture: &Fixture, script: Script, from: &DeviceSnapshot) -> (Vec<Checkpoint>, u64) {
    let mut device = Device::new(fixture.config.clone());
    device.restore(from);
    let start = device.flash_ops();
    let mut cursor = Cursor::default();
    let mut saved: Vec<Checkpoint> = Vec::new();
    for (step, &what) in steps(fixture, script).iter().enumerate() {
        let ops = device.flash_ops();
        if saved.last().is_some_and(|c| c.ops == ops) {
            saved.pop();
        }
        saved.push(Checkpoint { ops, step, device: device.snapshot(), cursor });
        run_step(&mut device, fixture, what, &mut cursor);
    }
    (saved, device.flash_ops() - start)
}

/// Runs `script` with a power cut at operation `op` (counted from the flash's creation) as
/// `when` says: from the last checkpoint before the cut to the end. The result is what a run
/// from the checkpoints' start does, without doing again what the checkpoint holds.
fn run_from_checkpoint(
    device: &mut Device,
    fixture: &Fixture,
    script: Script,
    saved: &[Checkpoint],
    op: u64,
    when: CutWhen,
) {
    let at = saved.partition_point(|c| c.ops <= op).saturating_sub(1);
    let checkpoint = &saved[at];
    device.restore(&checkpoint.device);
    device.power_cut_at_op(op, when);
    let mut cursor = checkpoint.cursor;
    for &step in &steps(fixture, script)[checkpoint.step..] {
        run_step(device, fixture, step, &mut cursor);
    }
}

/// One fault point: a power cut at mutating flash operation `op` (counted from the start of the
/// script) in the way `when` says; for depth two and three, a second and a third cut, each in
/// the recovery from the cut before (counted from that recovery's start); for a retry sweep,
/// `second` is the cut in the retried action (counted from its start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    pub op: u64,
    pub when: CutWhen,
    pub second: Option<(u64, CutWhen)>,
    pub third: Option<(u64, CutWhen)>,
}

impl Point {
    /// A first cut alone.
    pub fn first(op: u64, when: CutWhen) -> Point {
        Point { op, when, second: None, third: None }
    }

    /// The same point with its cut number `level` (2 or 3) set.
    fn with_cut(self, level: u8, cut: (u64, CutWhen)) -> Point {
        match level {
            2 => Point { second: Some(cut), ..self },
            3 => Point { third: Some(cut), ..self },
            _ => unreachable!("a point has at most three cuts"),
        }
    }

    /// The cuts after the first, in order.
    fn later_cuts(&self) -> impl Iterator<Item = (u64, CutWhen)> {
        self.second.into_iter().chain(self.third)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.op, self.when)?;
        for (op, when) in self.later_cuts() {
            write!(f, "+{op}:{when}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Point {
    type Err = String;

    /// `OP:WHEN`, with up to two more `+OP:WHEN` (the later cuts), WHEN being before, during
    /// or after: the form failures print.
    fn from_str(text: &str) -> Result<Point, String> {
        fn cut(text: &str) -> Result<(u64, CutWhen), String> {
            let (op, when) = text.split_once(':').ok_or_else(|| format!("a cut is OP:WHEN, not {text:?}"))?;
            let op = op.parse().map_err(|_| format!("{op:?} is not a flash operation number"))?;
            let when = match when {
                "before" => CutWhen::Before,
                "during" => CutWhen::During,
                "after" => CutWhen::After,
                other => return Err(format!("WHEN is before, during or after, not {other:?}")),
            };
            Ok((op, when))
        }
        let mut cuts = text.split('+');
        let (op, when) = cut(cuts.next().unwrap_or_default())?;
        let second = cuts.next().map(cut).transpose()?;
        let third = cuts.next().map(cut).transpose()?;
        if cuts.next().is_some() {
            return Err(format!("a point has at most three cuts, not {text:?}"));
        }
        Ok(Point { op, when, second, third })
    }
}

impl Summary {
    /// The figures as one JSON line: what the benchmark prints.
    pub fn json_line(
        &self,
        script: Script,
        app_kib: usize,
        buf_bytes: usize,
        depth: u8,
        threads: usize,
        seed: u64,
    ) -> String {
        format!(
            "{{\"script\":\"{}\",\"app_kib\":{app_kib},\"buf_bytes\":{buf_bytes},\"depth\":{depth},\"threads\":{threads},\"seed\":{seed},\"script_ops\":{},\"points\":{},\"failures\":{},\"seconds\":{:.3},\"ms_per_point\":{:.4}}}",
            script.name(),
            self.script_ops,
            self.points,
            self.failures.len(),
            self.seconds,
            self.ms_per_point()
        )
    }

    pub fn ms_per_point(&self) -> f64 {
        self.seconds * 1000.0 / self.points.max(1) as f64
    }
}

/// A broken invariant at a point.
#[derive(Clone, Debug)]
pub struct Failure {
    pub point: Point,
    pub what: String,
    pub trace: Vec<String>,
}

/// The version a device must end up running after recovering from a cut that left `state` on
/// flash. A commit that landed is kept; a trial that was never booted gets its boot and keeps
/// the image only if that firmware commits; anything else reverts.
pub fn expected_version(state: &BootState, mut behaviour_of: impl FnMut(Slot) -> Behaviour) -> Slot {
    if state.committed {
        return state.active;
    }
    let revert = state.revert.expect("an uncommitted state has a revert slot");
    if !state.first_boot_b {
        return revert;
    }
    match behaviour_of(state.active) {
        Behaviour::Healthy | Behaviour::CommitsAfter { .. } => state.active,
        Behaviour::NeverCommits if state.commit_timeout_s == 0 => state.active,
        _ => revert,
    }
}

const CUTS: [CutWhen; 3] = [CutWhen::Before, CutWhen::During, CutWhen::After];

/// What a sweep cuts after the first cut (at every operation of the script, in every way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// `n` cuts in a row, 1 to 3: each later cut at every operation of the recovery from the
    /// cut before it.
    Depth(u8),
    /// After the first cut and its recovery, the interrupted action runs again and is cut at
    /// every operation of its own (a user who retries the update).
    Retry,
}

impl Plan {
    pub fn name(self) -> String {
        match self {
            Plan::Depth(n) => format!("depth {n}"),
            Plan::Retry => "retry".into(),
        }
    }
}

/// A sweep's figures.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub script_ops: u64,
    pub points: u64,
    pub failures: Vec<Failure>,
    /// Every point's result, when the sweep recorded them ([`sweep_recording_points`]).
    pub results: Vec<PointResult>,
    pub seconds: f64,
}

/// The sweep of one script: depth 1, 2 or 3, on `threads` threads.
pub fn sweep(fixture: &Fixture, script: Script, depth: u8, threads: usize) -> Summary {
    run_sweep(fixture, script, Plan::Depth(depth), threads, Record::FailuresOnly)
}

/// The sweep of one script by `plan`, on `threads` threads.
pub fn sweep_plan(fixture: &Fixture, script: Script, plan: Plan, threads: usize) -> Summary {
    run_sweep(fixture, script, plan, threads, Record::FailuresOnly)
}

/// Like [`sweep`], and keeps every point's [`PointResult`] in [`Summary::results`], sorted by
/// point: what `--dump` writes, to compare two builds point by point.
pub fn sweep_recording_points(fixture: &Fixture, script: Script, depth: u8, threads: usize) -> Summary {
    run_sweep(fixture, script, Plan::Depth(depth), threads, Record::EveryPoint)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    FailuresOnly,
    EveryPoint,
}

/// What a worker gathers.
#[derive(Default)]
struct Gathered {
    points: u64,
    failures: Vec<Failure>,
    results: Vec<PointResult>,
}

fn run_sweep(fixture: &Fixture, script: Script, plan: Plan, threads: usize, record: Record) -> Summary {
    if let Plan::Depth(depth) = plan {
        assert!((1..=3).contains(&depth), "a sweep cuts one to three times in a row, not {depth}");
    }
    let started = Instant::now();
    let base = prepare(fixture);
    let start = base.snapshot();
    let script_ops = clean_ops(fixture, script, &start);
    let (saved, _) = checkpoints(fixture, script, &start);
    let (start_ops, own_from) = (base.flash_ops(), base.trace().len());
    let first: Vec<Point> = (0..script_ops).flat_map(|op| CUTS.map(|when| Point::first(op, when))).collect();
    let next = AtomicUsize::new(0);
    let results: Vec<Gathered> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut device = Device::new(fixture.config.clone());
                    let mut gathered = Gathered::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(point) = first.get(i) else { break };
                        let run =
                            PointRun { fixture, script, saved: &saved, start_ops, own_from, plan, record };
                        run.run(&mut device, *point, &mut gathered);
                    }
                    gathered
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("sweep worker")).collect()
    });
    let mut summary = Summary { script_ops, ..Summary::default() };
    for mut gathered in results {
        summary.points += gathered.points;
        summary.failures.append(&mut gathered.failures);
        summary.results.append(&mut gathered.results);
    }
    summary.failures.sort_by_key(|f| point_order(f.point));
    summary.results.sort_by_key(|r| point_order(r.point));
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

type CutOrder = Option<(u64, u8)>;

fn point_order(point: Point) -> (u64, u8, CutOrder, CutOrder) {
    let order = |cut: Option<(u64, CutWhen)>| cut.map(|(op, when)| (op, when as u8));
    (point.op, point.when as u8, order(point.second), order(point.third))
}

/// One point's result: whether every invariant held, and hashes of its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointResult {
    pub point: Point,
    pub outcome: Result<(), String>,
    /// The whole trace, as a failure at this point prints it.
    pub trace_hash: u64,
    /// The events the point's own run noted, from the restore of the start to the end of its
    /// recovery: comparable across builds whatever the trace held before.
    pub point_trace_hash: u64,
}

impl PointResult {
    /// One line of a dump: point, outcome and trace hash.
    pub fn dump_line(&self) -> String {
        let outcome = match &self.outcome {
            Ok(()) => "ok".to_string(),
            Err(what) => format!("FAILED {what}"),
        };
        format!("{} {:016x} {outcome}", self.point, self.point_trace_hash)
    }
}

/// Mutating operations of a clean run of the script.
fn clean_ops(fixture: &Fixture, script: Script, start: &DeviceSnapshot) -> u64 {
    let mut device = Device::new(fixture.config.clone());
    device.restore(start);
    let before = device.flash_ops();
    run_script(&mut device, fixture, script);
    let ops = device.flash_ops() - before;
    let expect = device_expect(&mut device);
    if let Err(what) = check_recovered(&mut device, fixture, expect) {
        panic!("the clean run of {} breaks an invariant: {what}", script.name());
    }
    ops
}

fn device_expect(device: &mut Device) -> Result<Slot, String> {
    state_now(device).map(|state| expected_version(&state, |slot| behaviour_in(device, slot)))
}

/// A recovery to cut: the device at the cut before it, and the operations the recovery did,
/// counted from `start`.
struct Recovery<'a> {
    cut: &'a DeviceSnapshot,
    start: u64,
    ops: u64,
}

/// What every point of a sweep shares.
struct PointRun<'a> {
    fixture: &'a Fixture,
    script: Script,
    /// A clean run of the script, saved before its steps; each point resumes from one.
    saved: &'a [Checkpoint],
    /// Operations done and trace events noted at the start.
    start_ops: u64,
    own_from: usize,
    plan: Plan,
    record: Record,
}

impl PointRun<'_> {
    /// Runs one first-cut point and what the plan cuts after it.
    fn run(&self, device: &mut Device, point: Point, gathered: &mut Gathered) {
        let (fixture, own_from) = (self.fixture, self.own_from);
        run_from_checkpoint(device, fixture, self.script, self.saved, self.start_ops + point.op, point.when);
        device.power_cut();
        let cut = device.snapshot();
        let expect = at_cut(device, fixture);
        let recovery_start = device.flash_ops();
        device.power_on();
        device.advance_ms(SETTLE_MS);
        let recovery =
            Recovery { cut: &cut, start: recovery_start, ops: device.flash_ops() - recovery_start };
        let outcome = expect.and_then(|slot| check_recovered(device, fixture, Ok(slot)));
        let held = outcome.is_ok();
        self.gather(device, point, own_from, outcome, gathered);
        match self.plan {
            Plan::Depth(depth) if depth >= 2 => {
                self.cut_recovery(device, &recovery, point, 2, own_from, gathered)
            }
            Plan::Retry if held => self.retry(device, point, own_from, gathered),
            _ => {}
        }
    }

    /// Cuts the recovery from `recovery.cut` at each of its operations (cut number `level`),
    /// and, below the plan's depth, each recovery from those cuts in turn.
    fn cut_recovery(
        &self,
        device: &mut Device,
        recovery: &Recovery<'_>,
        point: Point,
        level: u8,
        own_from: usize,
        gathered: &mut Gathered,
    ) {
        let Plan::Depth(depth) = self.plan else { unreachable!("only depth plans cut recoveries") };
        let fixture = self.fixture;
        for op in 0..recovery.ops {
            for when in CUTS {
                let next = point.with_cut(level, (op, when));
                device.restore(recovery.cut);
                device.power_cut_at_op(recovery.start + op, when);
                device.power_on();
                device.advance_ms(SETTLE_MS);
                device.power_cut();
                let cut = (level < depth).then(|| device.snapshot());
                let expect = at_cut(device, fixture);
                let start = device.flash_ops();
                device.power_on();
                device.advance_ms(SETTLE_MS);
                let ops = device.flash_ops() - start;
                let outcome = expect.and_then(|slot| check_recovered(device, fixture, Ok(slot)));
                self.gather(device, next, own_from, outcome, gathered);
                if let Some(cut) = &cut {
                    let recovery = Recovery { cut, start, ops };
                    self.cut_recovery(device, &recovery, next, level + 1, own_from, gathered);
                }
            }
        }
    }

    /// The device recovered from the first cut: the interrupted action runs again, cut at each
    /// of its operations, and the device recovers once more.
    fn retry(&self, device: &mut Device, point: Point, own_from: usize, gathered: &mut Gathered) {
        let fixture = self.fixture;
        let recovered = device.snapshot();
        let start = device.flash_ops();
        let (saved, ops) = checkpoints(fixture, self.script, &recovered);
        for op in 0..ops {
            for when in CUTS {
                let next = point.with_cut(2, (op, when));
                run_from_checkpoint(device, fixture, self.script, &saved, start + op, when);
                device.power_cut();
                let expect = at_cut(device, fixture);
                device.power_on();
                device.advance_ms(SETTLE_MS);
                let outcome = expect.and_then(|slot| check_recovered(device, fixture, Ok(slot)));
                self.gather(device, next, own_from, outcome, gathered);
            }
        }
    }

    fn gather(
        &self,
        device: &Device,
        point: Point,
        own_from: usize,
        outcome: Result<(), String>,
        gathered: &mut Gathered,
    ) {
        gathered.points += 1;
        if self.record == Record::EveryPoint {
            let lines = trace_lines(device.trace());
            let trace_hash = hash_lines(&lines);
            let point_trace_hash = hash_lines(&lines[own_from..]);
            gathered.results.push(PointResult {
                point,
                outcome: outcome.clone(),
                trace_hash,
                point_trace_hash,
            });
        }
        if let Err(what) = outcome {
            gathered.failures.push(failure(device, point, what));
        }
    }
}

fn hash_lines(lines: &[String]) -> u64 {
    crate::schedule::fnv1a(lines.iter().flat_map(|l| l.bytes().chain([b'\n'])))
}

pub(crate) fn trace_lines(trace: &[(u64, crate::device::Event)]) -> Vec<String> {
    trace.iter().map(|(ms, e)| format!("[{ms:>9} ms] {e}")).collect()
}

/// Runs one point of a depth sweep from scratch and returns whether every invariant held, with
/// the device's trace: what a replay command prints.
pub fn replay(fixture: &Fixture, script: Script, point: Point) -> (Result<(), String>, Vec<String>) {
    replay_plan(fixture, script, Plan::Depth(1), point)
}

/// Runs one point of a sweep by `plan` from scratch ([`replay`]).
pub fn replay_plan(
    fixture: &Fixture,
    script: Script,
    plan: Plan,
    point: Point,
) -> (Result<(), String>, Vec<String>) {
    let start = prepare(fixture).snapshot();
    let mut device = Device::new(fixture.config.clone());
    device.restore(&start);
    let base = device.flash_ops();
    device.power_cut_at_op(base + point.op, point.when);
    run_script(&mut device, fixture, script);
    device.power_cut();
    let mut expect = at_cut(&mut device, fixture);
    for (op, when) in point.later_cuts() {
        if plan == Plan::Retry {
            device.power_on();
            device.advance_ms(SETTLE_MS);
            let at = device.flash_ops() + op;
            device.power_cut_at_op(at, when);
            run_script(&mut device, fixture, script);
        } else {
            let at = device.flash_ops() + op;
            device.power_cut_at_op(at, when);
            device.power_on();
            device.advance_ms(SETTLE_MS);
        }
        device.power_cut();
        expect = at_cut(&mut device, fixture);
    }
    device.power_on();
    device.advance_ms(SETTLE_MS);
    let result = check_recovered(&mut device, fixture, expect);
    (result, failure(&device, point, String::new()).trace)
}

fn failure(device: &Device, point: Point, what: String) -> Failure {
    Failure { point, what, trace: trace_lines(device.trace()) }
}

/// With the power off after a cut: the invariants that hold at the cut, and the slot recovery
/// must end on.
fn at_cut(device: &mut Device, fixture: &Fixture) -> Result<Slot, String> {
    if let Some(v) = device.flash().violations().first() {
        return Err(format!("flash used illegally: {v}"));
    }
    device.flash().power_on();
    let result = check_at_cut(device, fixture);
    device.flash().power_cut();
    result
}

fn check_at_cut(device: &mut Device, fixture: &Fixture) -> Result<Slot, String> {
    let state = state_now(device)?;
    let mut relied_on = vec![state.active];
    if !state.committed {
        relied_on.extend(state.revert);
    }
    for slot in relied_on {
        if !verifies(device, fixture, &state, slot)? {
            return Err(format!(
                "at the cut, {slot} (relied on by the boot state) does not verify: {state:?}"
            ));
        }
    }
    Ok(expected_version(&state, |slot| behaviour_in(device, slot)))
}

pub(crate) fn state_now(device: &mut Device) -> Result<BootState, String> {
    let layout = *device.layout();
    match log::read(device.flash(), &layout) {
        Ok(Some(located)) => Ok(located.record.state),
        Ok(None) => Err("the boot-state log holds no valid record".into()),
        Err(e) => Err(format!("the boot-state log cannot be read: {e}")),
    }
}

fn behaviour_in(device: &mut Device, slot: Slot) -> Behaviour {
    let mut header = [0u8; image::HEADER_BYTES];
    let offset = device.layout().app(slot).offset;
    device.flash().peek(offset, &mut header);
    image::parse_header(&header).0
}

/// After recovery: a firmware runs, committed, on the expected slot, whose bytes are exactly v1
/// or v2, and the user's configuration is intact.
pub(crate) fn check_recovered(
    device: &mut Device,
    fixture: &Fixture,
    expect: Result<Slot, String>,
) -> Result<(), String> {
    let expect = expect?;
    if let Some(v) = device.flash().violations().first() {
        return Err(format!("flash used illegally: {v}"));
    }
    let Run::Running { slot, version, .. } = device.run().clone() else {
        return Err(format!("after recovery the device is {:?}", device.run()));
    };
    let state = state_now(device)?;
    if !state.committed || state.active != slot {
        return Err(format!("after recovery {slot} runs but the state is {state:?}"));
    }
    if slot != expect {
        return Err(format!("after recovery {slot} runs, expected {expect}"));
    }
    // The image is known by the digest its record names, whatever its header says.
    let info = *state.slot(slot);
    let known = fixture.known.iter().find(|k| k.sha256 == info.app_sha256).ok_or_else(|| {
        format!("{slot} runs an image that is neither bundle's (version {:?})", version.unwrap_or_default())
    })?;
    let offset = device.layout().app(slot).offset;
    if !holds(device, offset, known) {
        return Err(format!("{slot} runs {} but its bytes are not exactly that image", known.version));
    }
    match device.read_user_file(USER_FILE) {
        Ok(Some(data)) if data == USER_CONFIG => Ok(()),
        Ok(Some(_)) => Err(format!("{USER_FILE} changed")),
        Ok(None) => Err(format!("{USER_FILE} is gone")),
        Err(e) => Err(format!("{USER_FILE} cannot be read: {e}")),
    }
}
