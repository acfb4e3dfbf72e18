//! The in-process simulator board: `ota_sim::device::Device` on a strict NOR flash, with virtual
//! time. The default board of `hil run`.
//!
//! The simulator feeds bundles to the updater directly, so every transport (rpc, http, pull)
//! behaves the same here; the transports' own framing is exercised on the virtual board. It can
//! cut the power at any flash operation, at a fraction of an upload, or at the first operation
//! of a named phase: for a phase it runs the step once on a copy of the device to find where the
//! phase starts, then runs it for real with the cut armed there.

use ota_app::{BootReason, Finished};
use ota_core::control::SnapshotOptions;
use ota_core::layout::{Layout, Slot};
use ota_core::log;
use ota_core::updater::UpdateOptions;
use ota_sim::device::{self, Device, DeviceError, Event, Run};
use ota_sim::flash::{CutWhen as SimCutWhen, Op, OpRecord};
use ota_sim::sweep::{self, Fixture};

use super::{
    Activity, Board, BoardError, BoardInfo, BoardResult, BootStateView, Capabilities, PushRequest,
    PushResult, Refusal, Status, SweepReport,
};
use crate::board::config::SimConfig;
use crate::result::{EventKind, Lane};
use crate::scenario::model::{Cut, CutWhen, Phase, SweepSpec, Transport};

pub struct SimBoard {
    info: BoardInfo,
    capabilities: Capabilities,
    config: SimConfig,
    device: Option<Device>,
    armed: Option<Cut>,
    /// How the last armed cut was described, for the timeline.
    cut_how: String,
    /// Device trace events already turned into timeline events.
    trace_seen: usize,
    events: Vec<(u64, EventKind)>,
    console: Vec<String>,
}

impl SimBoard {
    pub fn new(name: &str, platform: &str, config: SimConfig) -> SimBoard {
        let info = BoardInfo {
            name: name.into(),
            kind: "sim".into(),
            platform: platform.into(),
            app_slot_bytes: config.app_slot_bytes,
            fs_slot_bytes: config.fs_slot_bytes,
            app_image: None,
        };
        let capabilities = Capabilities {
            transports: vec![Transport::Rpc, Transport::Http, Transport::Pull],
            cut_at_op: true,
            cut_at_fraction: true,
            cut_at_phase: true,
            cut_at_every_op: true,
            sweep: true,
            virtual_time: true,
            no_power_cut: None,
        };
        SimBoard {
            info,
            capabilities,
            config,
            device: None,
            armed: None,
            cut_how: String::new(),
            trace_seen: 0,
            events: Vec::new(),
            console: Vec::new(),
        }
    }

    fn device(&mut self) -> BoardResult<&mut Device> {
        self.device.as_mut().ok_or_else(|| BoardError::new("no trial started on the sim board"))
    }

    fn device_config(&self, seed: u64) -> device::Config {
        device::Config {
            app_slot_bytes: self.config.app_slot_bytes,
            fs_slot_bytes: self.config.fs_slot_bytes,
            watchdog_ms: self.config.watchdog_ms,
            work_buffer_bytes: self.config.work_buffer_bytes,
            platform: self.info.platform.clone(),
            seed,
            ..device::Config::default()
        }
    }

    /// Runs `action` with the armed cut (if any) in force, then disarms it.
    fn with_cut<T>(&mut self, action: impl Fn(&mut Device) -> T) -> BoardResult<T> {
        let armed = self.armed.take();
        let result = match armed {
            None | Some(Cut::AtEveryOp) => action(self.device()?),
            Some(Cut::AtOp { op, when }) => {
                let device = self.device()?;
                let at = device.flash_ops() + op;
                self.cut_how = format!("{} flash op {op} of the step", when_name(when));
                let device = self.device()?;
                device.power_cut_at_op(at, sim_when(when));
                action(device)
            }
            Some(Cut::AtFraction(fraction)) => {
                // `push` stops the upload at the fraction itself; only a push carries one.
                self.cut_how = format!("at {:.0}% of the upload", fraction * 100.0);
                action(self.device()?)
            }
            Some(Cut::AtPhase(phase)) => {
                let at = self.find_phase(phase, &action)?;
                self.cut_how = format!("during the first flash op of the {} phase", phase.name());
                let device = self.device()?;
                device.power_cut_at_op(at, SimCutWhen::During);
                action(device)
            }
        };
        self.device()?.flash().disarm_power_cut();
        Ok(result)
    }

    /// The mutating operation index where `phase` starts when `action` runs, found by running it
    /// once on a copy of the device.
    fn find_phase<T>(&mut self, phase: Phase, action: &impl Fn(&mut Device) -> T) -> BoardResult<u64> {
        self.pump();
        let layout = *self.device()?.layout();
        let device = self.device()?;
        let saved = device.snapshot();
        let first_event = device.trace().len();
        let first_op = device.flash_ops();
        let _ = action(device);
        let ops = device.flash().take_op_log();
        let events: Vec<(Event, u64)> = device.trace()[first_event..]
            .iter()
            .zip(&device.trace_ops()[first_event..])
            .map(|((_, e), n)| (e.clone(), *n))
            .collect();
        device.restore(&saved);
        phase_start(phase, &layout, first_op, &ops, &events).ok_or_else(|| {
            let seen: Vec<String> = events.iter().map(|(e, _)| e.to_string()).collect();
            BoardError::new(format!(
                "this step has no {} phase on the simulator (it did: {})",
                phase.name(),
                if seen.is_empty() { "nothing".into() } else { seen.join(", ") }
            ))
        })
    }

    /// Turns new device trace events and flash operations into timeline events and console lines.
    fn pump(&mut self) {
        let Some(device) = self.device.as_mut() else { return };
        let layout = *device.layout();
        let ops = device.flash().take_op_log();
        let trace = &device.trace()[self.trace_seen.min(device.trace().len())..];
        let trace_ops = &device.trace_ops()[self.trace_seen.min(device.trace_ops().len())..];
        let now = device.now_ms();
        let mut op_iter = ops.iter().peekable();
        for ((ms, event), &ops_done) in trace.iter().zip(trace_ops) {
            let before: Vec<OpRecord> =
                std::iter::from_fn(|| op_iter.next_if(|o| o.index < ops_done)).copied().collect();
            push_bursts(&mut self.events, *ms, &layout, &before);
            self.console.push(format!("[{ms:>9} ms] {event}"));
            if let Some(kind) = super::timeline_event(event, &self.cut_how) {
                self.events.push((*ms, kind));
            }
        }
        let rest: Vec<OpRecord> = op_iter.copied().collect();
        push_bursts(&mut self.events, now, &layout, &rest);
        self.trace_seen = device.trace().len();
    }
}

fn when_name(when: CutWhen) -> &'static str {
    match when {
        CutWhen::Before => "before",
        CutWhen::During => "during",
        CutWhen::After => "after",
    }
}

fn sim_when(when: CutWhen) -> SimCutWhen {
    match when {
        CutWhen::Before => SimCutWhen::Before,
        CutWhen::During => SimCutWhen::During,
        CutWhen::After => SimCutWhen::After,
    }
}

fn lane_of(layout: &Layout, offset: u32) -> Lane {
    for slot in Slot::ALL {
        let n = slot.index() as u8;
        if (layout.app(slot).offset as u64..layout.app(slot).end()).contains(&(offset as u64)) {
            return Lane::App(n);
        }
        if (layout.fs(slot).offset as u64..layout.fs(slot).end()).contains(&(offset as u64)) {
            return Lane::Fs(n);
        }
    }
    Lane::BootState
}

/// The first operation of `phase`: each phase ends with a trace event (finalize with "update
/// applied", a trial boot with its boot, the merge with "fs merged", ...), and its operations are
/// the ones between the previous event and that one, in the phase's lanes.
fn phase_start(
    phase: Phase,
    layout: &Layout,
    first_op: u64,
    ops: &[OpRecord],
    events: &[(Event, u64)],
) -> Option<u64> {
    if phase == Phase::Write {
        return ops
            .iter()
            .find(|o| matches!(lane_of(layout, o.offset), Lane::App(_) | Lane::Fs(_)))
            .map(|o| o.index);
    }
    let ends_phase = |e: &Event| match phase {
        Phase::Finalize => matches!(e, Event::UpdateApplied { .. }),
        Phase::Boot => matches!(e, Event::Boot { reason: BootReason::Trial, .. }),
        Phase::Merge => matches!(e, Event::Merged { .. }),
        Phase::Commit => matches!(e, Event::Committed),
        Phase::Revert => matches!(e, Event::Reverted),
        Phase::Snapshot => matches!(e, Event::Snapshot { .. }),
        Phase::Write => false,
    };
    let in_lane = |o: &&OpRecord| match phase {
        Phase::Merge => matches!(lane_of(layout, o.offset), Lane::Fs(_)),
        Phase::Snapshot => true,
        _ => lane_of(layout, o.offset) == Lane::BootState,
    };
    let end = events.iter().position(|(e, _)| ends_phase(e))?;
    let lo = if end == 0 { first_op } else { events[end - 1].1 };
    let hi = events[end].1;
    ops.iter().filter(|o| (lo..hi).contains(&o.index)).find(in_lane).map(|o| o.index)
}

/// Adds `ops` as bursts: consecutive operations of one kind in one lane become one event.
fn push_bursts(events: &mut Vec<(u64, EventKind)>, ms: u64, layout: &Layout, ops: &[OpRecord]) {
    for op in ops {
        let lane = lane_of(layout, op.offset);
        let merged = match events.last_mut() {
            Some((_, EventKind::Write { lane: l, ops, bytes, last_op, .. }))
                if op.op == Op::Program && *l == lane && *last_op + 1 == op.index =>
            {
                *ops += 1;
                *bytes += op.len_bytes as u64;
                *last_op = op.index;
                true
            }
            Some((_, EventKind::Erase { lane: l, ops, last_op, .. }))
                if op.op == Op::Erase && *l == lane && *last_op + 1 == op.index =>
            {
                *ops += 1;
                *last_op = op.index;
                true
            }
            _ => false,
        };
        if merged {
            continue;
        }
        let kind = match op.op {
            Op::Program => EventKind::Write {
                lane,
                ops: 1,
                bytes: op.len_bytes as u64,
                first_op: op.index,
                last_op: op.index,
            },
            _ => EventKind::Erase { lane, ops: 1, first_op: op.index, last_op: op.index },
        };
        events.push((ms, kind));
    }
}

fn refusal(error: DeviceError) -> Refusal {
    error.to_string()
}

impl Board for SimBoard {
    fn info(&self) -> &BoardInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start_trial(&mut self, seed: u64) -> BoardResult<()> {
        let mut device = Device::new(self.device_config(seed));
        device.flash().log_ops(true);
        self.device = Some(device);
        self.armed = None;
        self.trace_seen = 0;
        self.events.clear();
        self.console.clear();
        Ok(())
    }

    fn provision(&mut self, bundle: &[u8]) -> BoardResult<()> {
        let device = self.device()?;
        device.provision(bundle).map_err(|e| {
            BoardError::new(format!("provisioning failed: {e}"))
                .help("provision with a bundle the device accepts")
        })?;
        let ms = device.now_ms();
        self.pump();
        self.events.push((ms, EventKind::Note { text: "provisioned slot 0".into() }));
        Ok(())
    }

    fn power_on(&mut self) -> BoardResult<()> {
        self.with_cut(|device| device.power_on())
    }

    fn power_cut(&mut self) -> BoardResult<()> {
        self.cut_how.clear();
        self.device()?.power_cut();
        Ok(())
    }

    fn arm_cut(&mut self, cut: Cut) -> BoardResult<()> {
        self.armed = Some(cut);
        Ok(())
    }

    fn disarm_cut(&mut self) -> BoardResult<()> {
        self.armed = None;
        self.device()?.flash().disarm_power_cut();
        Ok(())
    }

    fn push(&mut self, request: &PushRequest<'_>) -> BoardResult<PushResult> {
        let options = UpdateOptions {
            commit_timeout_s: request.commit_timeout_s,
            ignore_same_version: request.ignore_same_version,
        };
        let fraction = match self.armed {
            Some(Cut::AtFraction(f)) => Some(f),
            _ => None,
        };
        let cut_after = fraction.map(|f| (request.bundle.len() as f64 * f) as usize);
        let result = self.with_cut(|device| {
            device.update_until(request.bundle, request.chunk_bytes, options, cut_after)
        })?;
        // An update can be applied and the power go in the reboot into it (a cut at the boot,
        // merge or commit phase): the step ends without power either way.
        let off = *self.device()?.run() == Run::Off;
        Ok(match result {
            Ok(_) if off => PushResult::PowerLost,
            Ok(Finished::UpToDate) => PushResult::UpToDate,
            Ok(_) => PushResult::Applied,
            Err(DeviceError::Off) => PushResult::PowerLost,
            Err(e) => PushResult::Refused { message: e.to_string() },
        })
    }

    fn wait(&mut self, ms: u64) -> BoardResult<()> {
        self.with_cut(|device| device.advance_ms(ms))
    }

    fn commit(&mut self) -> BoardResult<Result<(), Refusal>> {
        Ok(self.with_cut(|device| device.commit())?.map_err(refusal))
    }

    fn revert(&mut self) -> BoardResult<Result<(), Refusal>> {
        Ok(self.with_cut(|device| device.revert())?.map_err(refusal))
    }

    fn reboot(&mut self) -> BoardResult<()> {
        self.with_cut(|device| device.reboot())
    }

    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>> {
        let options = SnapshotOptions { set_as_revert, commit_timeout_s };
        let result = self.with_cut(|device| device.create_snapshot(options))?;
        Ok(result.map(|slot| slot.index() as u8).map_err(refusal))
    }

    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
        Ok(self.with_cut(|device| device.write_user_file(name, content))?.map_err(refusal))
    }

    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
        Ok(self.device()?.read_user_file(name).map_err(refusal))
    }

    fn status(&mut self) -> BoardResult<Status> {
        let device = self.device()?;
        let activity = match device.run().clone() {
            Run::Off | Run::Booting => Activity::Off,
            Run::Running { slot, version, .. } => {
                Activity::Running { slot: slot.index() as u8, version: version.unwrap_or_default() }
            }
            Run::Hung { slot, .. } => Activity::Hung { slot: slot.index() as u8 },
            Run::Bricked { why } => Activity::Bricked { why },
        };
        let boot_state = if activity == Activity::Off {
            None
        } else {
            let layout = *device.layout();
            log::read(device.flash(), &layout).ok().flatten().map(|l| {
                let s = l.record.state;
                BootStateView {
                    active_slot: s.active.index() as u8,
                    revert_slot: s.revert.map(|r| r.index() as u8),
                    committed: s.committed,
                    commit_timeout_s: s.commit_timeout_s,
                }
            })
        };
        Ok(Status { activity, boot_state })
    }

    fn device_ms(&self) -> u64 {
        self.device.as_ref().map_or(0, |d| d.now_ms())
    }

    fn drain_events(&mut self) -> Vec<(u64, EventKind)> {
        self.pump();
        std::mem::take(&mut self.events)
    }

    fn drain_console(&mut self) -> Vec<String> {
        self.pump();
        std::mem::take(&mut self.console)
    }

    fn sweep(&mut self, spec: &SweepSpec, seed: u64) -> BoardResult<SweepReport> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut report = SweepReport { points: 0, seconds: 0.0, failures: Vec::new(), lines: Vec::new() };
        for &script in &spec.scripts {
            let fixture = Fixture::for_script(script, spec.app_kib * 1024, seed)
                .with_work_buffer(self.config.work_buffer_bytes);
            let summary = sweep::sweep(&fixture, script, spec.depth, threads);
            report.points += summary.points;
            report.seconds += summary.seconds;
            report.lines.push(format!(
                "sweep {}: {} KiB app, depth {}, {} flash ops, {} points, {} failures, {:.2} s",
                script.name(),
                spec.app_kib,
                spec.depth,
                summary.script_ops,
                summary.points,
                summary.failures.len(),
                summary.seconds
            ));
            for f in &summary.failures {
                report.failures.push(format!(
                    "{} at point {} (seed {seed}): {}\n  replay: hil sweep --script {} --app-kib {} --buf-bytes {} --seed {seed} --point {}",
                    script.name(),
                    f.point,
                    f.what,
                    script.name(),
                    spec.app_kib,
                    self.config.work_buffer_bytes,
                    f.point
                ));
            }
        }
        if spec.random_schedules > 0 {
            let batch = ota_sim::schedule::run_many(seed, spec.random_schedules, spec.random_steps);
            for f in &batch.failures {
                report.failures.push(format!(
                    "random schedule seed {} step {}: {}\n  replay: hil sweep --random 1 --seed {} --steps {}",
                    f.seed, f.step, f.what, f.seed, spec.random_steps
                ));
            }
            report.seconds += batch.seconds;
            report.points += spec.random_schedules * spec.random_steps as u64;
            report.lines.push(format!(
                "random schedules: {} of {} steps from seed {seed}, {:.2} s",
                spec.random_schedules, spec.random_steps, batch.seconds
            ));
        }
        Ok(report)
    }
}
