//! Seeded random fault schedules: one master seed drives a sequence of updates (with random
//! chunking, firmware behaviour and commit timeouts), power cuts at random flash operations,
//! reboots, commits, reverts, passing time and user configuration writes, and every invariant is
//! checked after every step.
//!
//! Each component draws from its own stream derived from the master seed ([`Rng::derive`]), so
//! a new kind of step does not reorder the faults of another. The same seed gives the same trace,
//! byte for byte: [`Outcome::trace_hash`] is compared across runs by the determinism check.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ota_bundle::Bundle;
use ota_core::layout::Slot;
use ota_core::log;
use ota_core::updater::UpdateOptions;

use crate::device::{ARCH, Config, Device, Run};
use crate::flash::CutWhen;
use crate::image::{self, Behaviour, Image};
use crate::lfs;
use crate::rng::Rng;
use crate::sweep::USER_FILE;

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Update { behaviour: Behaviour, commit_timeout_s: u32, chunk_bytes: usize },
    Reboot,
    PowerCycle,
    Advance { ms: u64 },
    Commit,
    Revert,
    WriteConfig { generation: u32 },
    Snapshot,
}

/// What a schedule did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub steps: Vec<(Step, Option<(u64, CutWhen)>)>,
    pub trace: Vec<String>,
    pub trace_hash: u64,
}

/// A broken invariant in a schedule.
#[derive(Clone, Debug)]
pub struct ScheduleFailure {
    pub seed: u64,
    pub step: usize,
    pub what: String,
    pub trace: Vec<String>,
}

impl ScheduleFailure {
    /// The one-line command that replays this schedule.
    pub fn replay_command(&self, steps: usize) -> String {
        format!(
            "cargo run --release -p ota-sim --example sweep -- --random --seed {} --steps {steps}",
            self.seed
        )
    }
}

/// App image size of schedule runs: small, so that thousands of schedules run in seconds.
const APP_BYTES: usize = 12 * 1024;

struct World {
    device: Device,
    bundles: BTreeMap<String, (Image, Vec<u8>)>,
    /// Per filesystem slot, the contents `conf9.json` may hold there: the last one written, and
    /// the one being written when the power went. A configuration written during a trial lives
    /// in the trial's filesystem and is lost when the trial rolls back, as on Mongoose OS.
    config_ok: [Vec<Vec<u8>>; 2],
}

fn config_bytes(generation: u32) -> Vec<u8> {
    format!(r#"{{"device": {{"id": "sim-{generation:04}"}}}}"#).into_bytes()
}

fn version_of(behaviour: Behaviour) -> String {
    match behaviour {
        Behaviour::Healthy => "2-healthy".into(),
        Behaviour::CrashesAtBoot => "2-crash".into(),
        Behaviour::Hangs => "2-hang".into(),
        Behaviour::NeverCommits => "2-nocommit".into(),
        Behaviour::CommitsAfter { seconds } => format!("2-commit{seconds}"),
    }
}

impl World {
    fn bundle(&mut self, config: &Config, image: Image) -> Vec<u8> {
        let version = image.version.clone();
        let entry = self.bundles.entry(version.clone()).or_insert_with(|| {
            let json = format!(r#"{{"app": "{version}"}}"#);
            let fs = lfs::build_image(
                config.fs_slot_bytes,
                crate::device::ERASE_BYTES as u32,
                &[("app.json", json.as_bytes())],
            );
            let zip = Bundle::new("simapp", ARCH)
                .version(&version)
                .build_id(&format!("sim/{version}"))
                .app(image.bytes())
                .fs(fs)
                .build();
            (image, zip)
        });
        entry.1.clone()
    }
}

fn draw_step(rng: &mut Rng) -> Step {
    match rng.below(16) {
        0..=4 => {
            let behaviour = match rng.below(6) {
                0 | 1 => Behaviour::Healthy,
                2 => Behaviour::CrashesAtBoot,
                3 => Behaviour::Hangs,
                4 => Behaviour::NeverCommits,
                _ => Behaviour::CommitsAfter { seconds: 1 + rng.below(120) as u32 },
            };
            let commit_timeout_s = [0, 30, 300][rng.below(3) as usize];
            let chunk_bytes = 1 + rng.below(4096) as usize;
            Step::Update { behaviour, commit_timeout_s, chunk_bytes }
        }
        5 => Step::Reboot,
        6 => Step::PowerCycle,
        7..=9 => Step::Advance { ms: rng.below(400_000) },
        10 => Step::Commit,
        11 => Step::Revert,
        12 | 13 => Step::WriteConfig { generation: rng.below(10_000) as u32 },
        _ => Step::Snapshot,
    }
}

/// Runs `steps` random steps from `seed`.
pub fn run(seed: u64, steps: usize) -> Result<Outcome, ScheduleFailure> {
    let master = Rng::new(seed);
    let mut step_rng = master.derive("steps");
    let mut fault_rng = master.derive("faults");
    let config = Config { app_slot_bytes: 64 * 1024, seed, ..Config::default() };
    let mut world = World {
        device: Device::new(config.clone()),
        bundles: BTreeMap::new(),
        config_ok: [Vec::new(), Vec::new()],
    };
    let v1 = world.bundle(&config, Image::new("1.0.0", APP_BYTES));
    world.device.provision(&v1).expect("provision v1");
    world.device.power_on();
    world.device.write_user_file(USER_FILE, &config_bytes(0)).expect("write conf9.json");
    world.config_ok[0] = vec![config_bytes(0)];
    let mut done = Vec::new();
    for index in 0..steps {
        let step = draw_step(&mut step_rng);
        let cut = (fault_rng.below(3) == 0).then(|| {
            let when = [CutWhen::Before, CutWhen::During, CutWhen::After][fault_rng.below(3) as usize];
            (fault_rng.below(200), when)
        });
        if let Some((op, when)) = cut {
            let at = world.device.flash_ops() + op;
            world.device.power_cut_at_op(at, when);
        }
        apply(&mut world, &config, &step);
        world.device.flash().disarm_power_cut();
        if world.device.run() == &Run::Off {
            world.device.power_on();
        }
        done.push((step, cut));
        check(&mut world).map_err(|what| ScheduleFailure {
            seed,
            step: index,
            what,
            trace: trace_of(&world.device),
        })?;
    }
    let trace = trace_of(&world.device);
    let trace_hash = fnv1a(trace.iter().flat_map(|l| l.bytes().chain(std::iter::once(b'\n'))));
    Ok(Outcome { seed, steps: done, trace, trace_hash })
}

/// The running slot, when the image there is committed: an update or a snapshot then writes the
/// other slot, whose filesystem ends up with this one's files.
fn committed_slot(device: &mut Device) -> Option<Slot> {
    let Run::Running { slot, .. } = device.run().clone() else { return None };
    let layout = *device.layout();
    let state = log::read(device.flash(), &layout).ok()??.record.state;
    state.committed.then_some(slot)
}

fn apply(world: &mut World, config: &Config, step: &Step) {
    if matches!(step, Step::Update { .. } | Step::Snapshot)
        && let Some(running) = committed_slot(&mut world.device)
    {
        world.config_ok[running.other().index()] = world.config_ok[running.index()].clone();
    }
    let device = &mut world.device;
    match *step {
        Step::Update { behaviour, commit_timeout_s, chunk_bytes } => {
            let zip =
                world.bundle(config, Image::new(&version_of(behaviour), APP_BYTES).behaviour(behaviour));
            let options = UpdateOptions { commit_timeout_s, ignore_same_version: false };
            let _ = world.device.update(&zip, chunk_bytes, options);
        }
        Step::Reboot => device.reboot(),
        Step::PowerCycle => {
            device.power_cut();
            device.power_on();
        }
        Step::Advance { ms } => device.advance_ms(ms),
        Step::Commit => {
            let _ = device.commit();
        }
        Step::Revert => {
            let _ = device.revert();
        }
        Step::WriteConfig { generation } => {
            let data = config_bytes(generation);
            if let Run::Running { slot, .. } = device.run().clone() {
                world.config_ok[slot.index()].push(data.clone());
                if device.write_user_file(USER_FILE, &data).is_ok() {
                    world.config_ok[slot.index()] = vec![data];
                }
            }
        }
        Step::Snapshot => {
            let _ = device.create_snapshot(Default::default());
        }
    }
}

/// The invariants after every step: legal flash use, a decodable log, no brick, the running
/// slot holds exactly the image its version names, the revert target intact while on trial,
/// and the user's configuration as last written (or as being written when the power went).
fn check(world: &mut World) -> Result<(), String> {
    let device = &mut world.device;
    if let Some(v) = device.flash().violations().first() {
        return Err(format!("flash used illegally: {v}"));
    }
    let layout = *device.layout();
    let state = match log::read(device.flash(), &layout) {
        Ok(Some(located)) => located.record.state,
        other => return Err(format!("the boot-state log does not decode: {other:?}")),
    };
    let slot = match device.run().clone() {
        Run::Bricked { why } => return Err(format!("bricked: {why}")),
        Run::Off | Run::Booting => return Err(format!("{:?} after power on", device.run())),
        Run::Hung { slot, .. } | Run::Running { slot, .. } => slot,
    };
    let mut buf = [0u8; 4096];
    let mut relied_on = vec![slot];
    if !state.committed {
        relied_on.extend(state.revert);
    }
    for s in relied_on {
        if !ota_core::boot::verify_with_known_digests(device.flash(), &layout, &state, s, &mut buf)
            .map_err(|e| e.to_string())?
        {
            return Err(format!("{s} is relied on by the boot state but does not verify: {state:?}"));
        }
    }
    check_image(world, slot)?;
    if let Run::Running { .. } = world.device.run() {
        let data = world.device.read_user_file(USER_FILE).map_err(|e| e.to_string())?;
        let ok = &mut world.config_ok[slot.index()];
        match data {
            Some(d) if ok.contains(&d) => *ok = vec![d],
            Some(d) => return Err(format!("{USER_FILE} holds {:?}", String::from_utf8_lossy(&d))),
            None => return Err(format!("{USER_FILE} is gone")),
        }
    }
    Ok(())
}

/// The slot's bytes are exactly the image of the version in its header.
fn check_image(world: &mut World, slot: Slot) -> Result<(), String> {
    let offset = world.device.layout().app(slot).offset;
    let mut header = [0u8; image::HEADER_BYTES];
    world.device.flash().peek(offset, &mut header);
    let version =
        image::parse_header(&header).1.ok_or_else(|| format!("{slot} runs an image without a header"))?;
    let (image, _) =
        world.bundles.get(&version).ok_or_else(|| format!("{slot} runs unknown version {version}"))?;
    let expected = image.bytes();
    if world.device.flash().contents(offset..offset + expected.len() as u32) != expected {
        return Err(format!("{slot} runs {version} but its bytes are a mix"));
    }
    Ok(())
}

fn trace_of(device: &Device) -> Vec<String> {
    device.trace().iter().map(|(ms, e)| format!("[{ms:>9} ms] {e}")).collect()
}

/// FNV-1a, 64 bits: a stable hash of the trace text.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A batch of schedules: `count` seeds from `first_seed`. Everything in it is in seed order,
/// whatever order the threads ran the seeds in.
#[derive(Clone, Debug)]
pub struct Batch {
    pub first_seed: u64,
    pub count: u64,
    pub steps: usize,
    pub failures: Vec<ScheduleFailure>,
    /// Each schedule that held, with its trace hash.
    pub trace_hashes: Vec<(u64, u64)>,
    /// The outcome, when the batch was one schedule that held: its trace is worth showing.
    pub single: Option<Outcome>,
    pub seconds: f64,
}

/// Runs `count` schedules of `steps` steps, seeds `first_seed..first_seed + count`, on every
/// thread the machine has.
pub fn run_many(first_seed: u64, count: u64, steps: usize) -> Batch {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_many_on(first_seed, count, steps, threads)
}

/// [`run_many`] on `threads` threads. Each seed is run whole by one thread, so the per-seed
/// results do not depend on the thread count.
pub fn run_many_on(first_seed: u64, count: u64, steps: usize, threads: usize) -> Batch {
    let started = std::time::Instant::now();
    let next = AtomicU64::new(first_seed);
    let end = first_seed + count;
    let results: Vec<Result<Outcome, ScheduleFailure>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.clamp(1, count.max(1) as usize))
            .map(|_| {
                scope.spawn(|| {
                    let mut results = Vec::new();
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= end {
                            break results;
                        }
                        results.push(run(seed, steps));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("schedule worker")).collect()
    });
    let mut batch = Batch {
        first_seed,
        count,
        steps,
        failures: Vec::new(),
        trace_hashes: Vec::new(),
        single: None,
        seconds: 0.0,
    };
    for result in results {
        match result {
            Ok(outcome) => {
                batch.trace_hashes.push((outcome.seed, outcome.trace_hash));
                if count == 1 {
                    batch.single = Some(outcome);
                }
            }
            Err(failure) => batch.failures.push(failure),
        }
    }
    batch.trace_hashes.sort_unstable();
    batch.failures.sort_by_key(|f| f.seed);
    batch.seconds = started.elapsed().as_secs_f64();
    batch
}

impl Batch {
    /// Prints the batch as the command lines show it: a single schedule's trace, every failure
    /// with the replay command `replay(seed)` gives, and a summary line.
    pub fn print(&self, replay: impl Fn(u64) -> String) {
        let single_trace = self.single.as_ref().map(|o| &o.trace).or(self.failures.first().map(|f| &f.trace));
        if self.count == 1
            && let Some(trace) = single_trace
        {
            trace.iter().for_each(|line| println!("{line}"));
        }
        if let Some(outcome) = &self.single {
            println!("seed {}: every invariant held, trace hash {:016x}", outcome.seed, outcome.trace_hash);
        }
        for f in &self.failures {
            eprintln!("FAILED seed {} at step {}: {}", f.seed, f.step, f.what);
            eprintln!("  replay: {}", replay(f.seed));
        }
        println!(
            "{} random schedules of {} steps from seed {}: {} failed, {:.2} s",
            self.count,
            self.steps,
            self.first_seed,
            self.failures.len(),
            self.seconds
        );
    }
}
