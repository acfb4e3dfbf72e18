//! Sweeps over faults in the stored bits of the boot-state areas, where the boot decision lives.
//!
//! | sweep        | a point                                          | it holds when                                            |
//! |--------------|--------------------------------------------------|----------------------------------------------------------|
//! | [`bit_flips`]  | one bit of either area inverted, in one device state | recovery runs the image the state without the flip runs, committed, from exact bytes, with the user's file |
//! | [`stuck_bits`] | one bit of either area stuck at 0 or at 1, then update cycles | every update of every cycle lands and commits (the log never wedges), nothing is bricked |
//!
//! A device state is the flash as a clean run of the script leaves it after any one of its
//! operations, once per distinct content of the boot-state areas, counting only states whose
//! newest record is stored twice (a record being written is a power cut's business, which the
//! power-cut sweeps cover). Bits are numbered over both areas, area 0 first: bit `b` is bit
//! `b % 8` of byte `b / 8`. Every point is independent, so points spread over threads.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ota_core::layout::Layout;
use ota_core::log;
use ota_core::state::{RECORD_SIZE_BYTES, Record};
use ota_core::updater::UpdateOptions;

use crate::device::{Device, DeviceSnapshot, Run};
use crate::flash::CutWhen;
use crate::sweep::{self, COMMIT_TIMEOUT_S, Fixture, SETTLE_MS, Script, prepare, run_script};

/// Which bits of the two areas a sweep visits: `range`, every `step`-th (a bounded slice for CI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bits {
    pub range: Option<Range<u32>>,
    pub step: u32,
}

impl Default for Bits {
    fn default() -> Self {
        Bits { range: None, step: 1 }
    }
}

impl Bits {
    fn of(&self, layout: &Layout) -> Vec<u32> {
        let all = 0..area_bits(layout);
        let range = self.range.clone().map_or(all.clone(), |r| r.start.max(all.start)..r.end.min(all.end));
        range.step_by(self.step.max(1) as usize).collect()
    }
}

fn area_bits(layout: &Layout) -> u32 {
    (layout.boot_state[0].size_bytes + layout.boot_state[1].size_bytes) * 8
}

/// Where bit `b` of the two areas is: byte offset on flash, and bit.
fn locate(layout: &Layout, b: u32) -> (u32, u8) {
    let byte = b / 8;
    let first = layout.boot_state[0].size_bytes;
    let offset = if byte < first {
        layout.boot_state[0].offset + byte
    } else {
        layout.boot_state[1].offset + byte - first
    };
    (offset, (b % 8) as u8)
}

/// One point of a fault sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Bit `bit` inverted in device state `state`.
    Flip { state: usize, bit: u32 },
    /// Bit `bit` stuck at `value` from the start; `cycle` is where it failed, when it did.
    Stuck { bit: u32, value: bool },
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultPoint::Flip { state, bit } => write!(f, "bit {bit} flipped in state {state}"),
            FaultPoint::Stuck { bit, value } => write!(f, "bit {bit} stuck at {}", u8::from(*value)),
        }
    }
}

/// A fault sweep's figures.
#[derive(Clone, Debug, Default)]
pub struct FaultSummary {
    /// Device states (bit flips) or update cycles (stuck bits).
    pub states: usize,
    pub points: u64,
    pub failures: Vec<FaultFailure>,
    pub seconds: f64,
}

impl FaultSummary {
    pub fn ms_per_point(&self) -> f64 {
        self.seconds * 1000.0 / self.points.max(1) as f64
    }
}

#[derive(Clone, Debug)]
pub struct FaultFailure {
    pub point: FaultPoint,
    pub what: String,
    pub trace: Vec<String>,
}

/// Every bit of `bits` flipped in every device state of `script` (the module's table).
pub fn bit_flips(fixture: &Fixture, script: Script, bits: &Bits, threads: usize) -> FaultSummary {
    let started = Instant::now();
    let states = device_states(fixture, script);
    let expected: Vec<_> = states.iter().map(|state| expected_slot(fixture, state)).collect();
    let layout = fixture.config.layout();
    let bits = bits.of(&layout);
    let points: Vec<FaultPoint> = (0..states.len())
        .flat_map(|state| bits.iter().map(move |&bit| FaultPoint::Flip { state, bit }))
        .collect();
    let (count, failures) = spread(fixture, &points, threads, |device, point| {
        let FaultPoint::Flip { state, bit } = point else { unreachable!("flip points") };
        device.restore(&states[state]);
        let (offset, bit) = locate(&layout, bit);
        device.flash().flip_bit(offset, bit);
        device.power_on();
        device.advance_ms(SETTLE_MS);
        let expect = expected[state].clone();
        sweep::check_recovered(device, fixture, expect)
    });
    FaultSummary { states: states.len(), points: count, failures, seconds: started.elapsed().as_secs_f64() }
}

/// Every bit of `bits` stuck at 0 and at 1 on a device running v1, then `cycles` updates,
/// alternately to v2 and back to v1 (the module's table).
pub fn stuck_bits(fixture: &Fixture, cycles: usize, bits: &Bits, threads: usize) -> FaultSummary {
    let started = Instant::now();
    let start = prepare(fixture).snapshot();
    let layout = fixture.config.layout();
    let points: Vec<FaultPoint> = bits
        .of(&layout)
        .into_iter()
        .flat_map(|bit| [false, true].map(|value| FaultPoint::Stuck { bit, value }))
        .collect();
    let (count, failures) = spread(fixture, &points, threads, |device, point| {
        let FaultPoint::Stuck { bit, value } = point else { unreachable!("stuck points") };
        device.restore(&start);
        let (offset, bit) = locate(&layout, bit);
        device.flash().stick_bit(offset, bit, value);
        update_cycles(device, fixture, cycles)
    });
    FaultSummary { states: cycles, points: count, failures, seconds: started.elapsed().as_secs_f64() }
}

/// Updates to v2, v1, v2, ...: each must land, boot and commit.
fn update_cycles(device: &mut Device, fixture: &Fixture, cycles: usize) -> Result<(), String> {
    let options = UpdateOptions { commit_timeout_s: COMMIT_TIMEOUT_S, ignore_same_version: false };
    for cycle in 0..cycles {
        let (zip, version) = if cycle % 2 == 0 {
            (&fixture.v2_zip, &fixture.v2.version)
        } else {
            (&fixture.v1_zip, &fixture.v1.version)
        };
        let result = device.update(zip, fixture.chunk_bytes, options);
        device.advance_ms(SETTLE_MS);
        if let Err(e) = result {
            return Err(format!("cycle {cycle}: the update to {version} failed: {e}"));
        }
        let running = match device.run() {
            Run::Running { slot, version, .. } => (*slot, version.clone().unwrap_or_default()),
            other => {
                return Err(format!("cycle {cycle}: after the update to {version} the device is {other:?}"));
            }
        };
        if &running.1 != version {
            return Err(format!(
                "cycle {cycle}: {version} was pushed but {} runs ({})",
                running.1, running.0
            ));
        }
        sweep::check_recovered(device, fixture, Ok(running.0)).map_err(|e| format!("cycle {cycle}: {e}"))?;
    }
    Ok(())
}

/// Runs `check` on every point over `threads` workers, each with its own device.
fn spread(
    fixture: &Fixture,
    points: &[FaultPoint],
    threads: usize,
    check: impl Fn(&mut Device, FaultPoint) -> Result<(), String> + Sync,
) -> (u64, Vec<FaultFailure>) {
    let next = AtomicUsize::new(0);
    let gathered: Vec<(u64, Vec<FaultFailure>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut device = Device::new(fixture.config.clone());
                    let (mut count, mut failures) = (0, Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&point) = points.get(i) else { break };
                        count += 1;
                        if let Err(what) = check(&mut device, point) {
                            let trace = sweep::trace_lines(device.trace());
                            failures.push((i, FaultFailure { point, what, trace }));
                        }
                    }
                    (count, failures)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                let (count, mut failures) = w.join().expect("fault sweep worker");
                failures.sort_by_key(|(i, _)| *i);
                (count, failures.into_iter().map(|(_, f)| f).collect())
            })
            .collect()
    });
    let count = gathered.iter().map(|(c, _)| c).sum();
    let mut failures: Vec<FaultFailure> = gathered.into_iter().flat_map(|(_, f)| f).collect();
    failures.sort_by_key(|f| match f.point {
        FaultPoint::Flip { state, bit } => (state as u32, bit, 0),
        FaultPoint::Stuck { bit, value } => (0, bit, u32::from(value)),
    });
    (count, failures)
}

/// The distinct states of the boot-state areas a clean run of `script` passes through, each as
/// the device with its power off: the start, then the state after each operation of the run
/// whose newest record is stored twice.
pub fn device_states(fixture: &Fixture, script: Script) -> Vec<DeviceSnapshot> {
    let base = prepare(fixture);
    let start = base.snapshot();
    let layout = fixture.config.layout();
    let mut device = Device::new(fixture.config.clone());
    device.restore(&start);
    let from = device.flash_ops();
    run_script(&mut device, fixture, script);
    let ops = device.flash_ops() - from;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut states = Vec::new();
    for op in (0..=ops).map(Some).chain([None]) {
        device.restore(&start);
        if let Some(op) = op.filter(|&op| op > 0) {
            device.power_cut_at_op(from + op - 1, CutWhen::After);
            run_script(&mut device, fixture, script);
        } else if op.is_none() {
            run_script(&mut device, fixture, script);
        }
        device.power_cut();
        let areas: Vec<u8> = layout
            .boot_state
            .iter()
            .flat_map(|a| device.flash().contents(a.offset..a.offset + a.size_bytes))
            .collect();
        if seen.contains(&areas) || !stored_twice(&mut device, &layout) {
            continue;
        }
        seen.push(areas);
        states.push(device.snapshot());
    }
    states
}

/// Whether the newest record's copy (the next position) holds the same record.
fn stored_twice(device: &mut Device, layout: &Layout) -> bool {
    device.flash().power_on();
    let winner = log::read(device.flash(), layout).ok().flatten();
    device.flash().power_cut();
    let Some(winner) = winner else { return false };
    let area = layout.boot_state[winner.position.area as usize];
    let at = area.offset + (winner.position.index + 1) * RECORD_SIZE_BYTES as u32;
    let mut raw = [0u8; RECORD_SIZE_BYTES];
    device.flash().peek(at, &mut raw);
    Record::decode(&raw) == Ok(winner.record)
}

/// The slot a state's recovery runs when nothing is flipped.
fn expected_slot(fixture: &Fixture, state: &DeviceSnapshot) -> Result<ota_core::layout::Slot, String> {
    let mut device = Device::new(fixture.config.clone());
    device.restore(state);
    device.power_on();
    device.advance_ms(SETTLE_MS);
    match device.run() {
        Run::Running { slot, .. } => Ok(*slot),
        other => Err(format!("without a flip the state recovers to {other:?}")),
    }
}
