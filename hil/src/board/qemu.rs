//! The emulated RISC-V board: `qemu-system-riscv32 -machine virt` running the project's boot
//! loader (`ota-qemu-boot`) from a flash file and the firmware (`ota-qemu-fw`) it loads from a
//! slot, as `firmware-under-test/qemu-virt/` (its README and crate docs) fixes them.
//!
//! | verb          | what the runner does |
//! |---------------|----------------------|
//! | `start_trial` | finds the two ELF files, flattens them; a fresh flash file (absent: erased); the device is off |
//! | `provision`   | writes `flash.img` on the host: 0xFF, the boot loader's flat image at 0, then `ota-core` provisions the bundle into ota_0 (+ fs_0) as a factory does |
//! | `power_on`    | starts QEMU held at reset (`-S`) on the flash file, with the clock's loader word; opens QMP, the gdbstub and the pty; sets the armed breakpoints; QMP `cont`; waits for `Sys.GetInfo` |
//! | `power_cut`   | SIGKILL (QEMU's flash file is torn at one flash operation at most) |
//! | `reboot`      | `Sys.Reboot`; a hung firmware is reset with QMP `system_reset` |
//! | `wait(ms)`    | `Board.Clock {advance_ms}` on the firmware's frozen, stepped clock |
//! | `push` rpc    | `OTA.Begin`/`Write`/`End` over the pty |
//! | status, files | `Sys.GetInfo`, `OTA.GetBootState`, `FS.Get`, `FS.Put` |
//!
//! **Cuts.** At a fraction of an upload the runner stops sending and SIGKILLs QEMU. At flash
//! operation N of a step it puts gdbstub breakpoints on `ota_flash_program` and `ota_flash_erase`
//! of both binaries, counts the hits, and SIGKILLs QEMU at hit N, before operation N touches the
//! flash (`before` and `during` cut there; `after` at hit N + 1). At a named phase it breaks on
//! `ota_phase_marker`, reads the phase from `a0`, and on the wanted one cuts at the next
//! operation. The image under test is the image that ships: no hook in the firmware.
//!
//! **Watchdog.** The runner is the external watchdog chip. The firmware prints a kick line
//! (`@kick`) every turn of its main loop; whenever the runner waits for an answer that does not
//! come, it reads mtime through the gdbstub, and when the CPU ran the board file's `watchdog`
//! budget of instructions since the last kick it presses reset (QMP `system_reset`). With
//! `-icount shift=0,sleep=off` mtime counts instructions, so the verdict never rests on the
//! wall clock: a firmware idle in `wfi` runs none.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::device::{self, Log, lock};
use super::http_push::{self, BundleServer, TRANSFER_TIMEOUT, http_upload_prefix};
use super::{
    Activity, Board, BoardError, BoardInfo, BoardResult, BootStateView, Capabilities, PushRequest,
    PushResult, Refusal, Status,
};
use crate::board::config::{QEMU_BOOT_LOADER, QEMU_ELF_DIR, QEMU_FIRMWARE, QemuConfig};
use crate::qemu::elf::{Elf, Flat};
use crate::qemu::gdb::{Gdb, GdbError, Stop};
use crate::qemu::qmp::Qmp;
use crate::result::EventKind;
use crate::rpc_client::{self, Client, OtaOutcome, OtaPush, RpcErr, TransportError};
use crate::scenario::model::{Cut, CutWhen, Transport};
use ota_app::partitions;

/// QEMU's pflash unit 0 on `virt`: 32 MiB, of which the partition map uses the first 4.
pub const FLASH_FILE_BYTES: usize = 32 << 20;
/// Where the boot loader runs: the start of the flash, mapped at reset.
pub const FLASH_BASE: u32 = 0x2000_0000;
/// The app descriptor's size; the firmware's entry point follows it.
pub const APP_DESCRIPTOR_BYTES: u32 = 0x100;
/// The clock's loader word (`firmware-under-test/qemu-virt/src/clock.rs`): magic in bits
/// 48..64, frozen in bit 47, start ms below.
pub const CLOCK_WORD_ADDRESS: u32 = 0x87ff_ff00;
const CLOCK_WORD_MAGIC: u64 = 0xc10c;
/// mtime, and its rate: `virt`'s timebase is 10 MHz, so 10 000 ticks a millisecond.
const MTIME_ADDRESS: u32 = 0x0200_bff8;
const MTIME_TICKS_PER_MS: u64 = 10_000;
/// The flash driver's entry points and the phase marker, in both ELF files.
const OP_SYMBOLS: [&str; 2] = ["ota_flash_program", "ota_flash_erase"];
const PHASE_SYMBOL: &str = "ota_phase_marker";
/// The firmware's kick line.
const KICK_LINE: &str = "@kick";
/// RV32 registers as gdb numbers them.
const REG_A0: usize = 10;
const REG_PC: usize = 32;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const UPDATE_TIMEOUT_S: u32 = 600;
/// How often the runner looks at a board that does not answer (the watchdog's sampling; the
/// verdict itself counts instructions).
const POLL: Duration = Duration::from_millis(250);
/// How long the debugger thread blocks on the stub before it looks at its commands.
const DEBUGGER_POLL: Duration = Duration::from_millis(20);
/// Breakpoint hits a cut may wait for; past it the cut is a runner bug.
const HITS_MAX: u64 = 10_000_000;
const BUSY: &str = "update is already in progress";

/// The two binaries, read and flattened once per board.
#[derive(Clone, Debug)]
pub struct Images {
    /// The boot loader's bytes at flash offset 0.
    pub boot_loader: Flat,
    /// The firmware's image: descriptor, then code, as a slot holds it.
    pub firmware: Flat,
    /// Breakpoint addresses in either binary.
    pub op_addresses: Vec<u32>,
    pub phase_addresses: Vec<u32>,
}

impl Images {
    /// Reads and checks both ELF files.
    pub fn load(boot_loader: &Path, firmware: &Path) -> BoardResult<Images> {
        let read = |path: &Path| -> BoardResult<Elf> {
            let bytes = std::fs::read(path)
                .map_err(|e| BoardError::new(format!("cannot read {}: {e}", path.display())))?;
            Elf::parse(&bytes).map_err(|e| BoardError::new(format!("{}: {e}", path.display())))
        };
        let (boot_elf, fw_elf) = (read(boot_loader)?, read(firmware)?);
        let boot = boot_elf
            .flatten(partitions::BOOT_LOADER_MAX_BYTES as usize)
            .map_err(|e| BoardError::new(format!("the boot loader {}: {e}", boot_loader.display())))?;
        let layout = partitions::layout();
        let slot_bytes = layout.app[0].size_bytes as usize;
        let fw = fw_elf
            .flatten(slot_bytes)
            .map_err(|e| BoardError::new(format!("the firmware {}: {e}", firmware.display())))?;
        if fw_elf.entry != fw.base + APP_DESCRIPTOR_BYTES {
            return Err(BoardError::new(format!(
                "the firmware {} has its entry point at {:#x}, not at its lowest load address {:#x} + {APP_DESCRIPTOR_BYTES:#x} (after the app descriptor); the runner refuses to build slot images from it",
                firmware.display(),
                fw_elf.entry,
                fw.base
            ))
            .help("link the firmware with its descriptor first and its entry right after it"));
        }
        let mut op_addresses = Vec::new();
        let mut phase_addresses = Vec::new();
        for (elf, path) in [(&boot_elf, boot_loader), (&fw_elf, firmware)] {
            for name in OP_SYMBOLS {
                let address = elf.symbol(name).ok_or_else(|| {
                    BoardError::new(format!(
                        "{} has no symbol {name}: cuts at a flash operation need it",
                        path.display()
                    ))
                })?;
                op_addresses.push(address);
            }
            if let Some(address) = elf.symbol(PHASE_SYMBOL) {
                phase_addresses.push(address);
            }
        }
        Ok(Images { boot_loader: boot, firmware: fw, op_addresses, phase_addresses })
    }
}

/// Where the ELF files are: the board file's paths, else the default under the target folder,
/// else built once with cargo (said on stderr).
pub fn find_images(config: &QemuConfig) -> BoardResult<(PathBuf, PathBuf)> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let dir = target.join(QEMU_ELF_DIR);
    let boot = config.boot_loader.clone().unwrap_or_else(|| dir.join(QEMU_BOOT_LOADER));
    let fw = config.firmware.clone().unwrap_or_else(|| dir.join(QEMU_FIRMWARE));
    let defaults = config.boot_loader.is_none() || config.firmware.is_none();
    if defaults && !(boot.is_file() && fw.is_file()) {
        let args = [
            "build",
            "--release",
            "-p",
            "ota-port-qemu-virt",
            "--target",
            "riscv32imc-unknown-none-elf",
            "--bins",
        ];
        eprintln!("hil: no QEMU firmware at {}; running `cargo {}` once", dir.display(), args.join(" "));
        let status =
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args(args).status();
        if !matches!(status, Ok(s) if s.success()) {
            return Err(BoardError::new(format!("`cargo {}` failed ({status:?})", args.join(" ")))
                .help("build the QEMU port by hand, or set boot_loader and firmware in the board file's [qemu] table"));
        }
    }
    for path in [&boot, &fw] {
        if !path.is_file() {
            return Err(BoardError::new(format!("{} does not exist", path.display()))
                .help("build it with `cargo build --release -p ota-port-qemu-virt --target riscv32imc-unknown-none-elf --bins`"));
        }
    }
    Ok((boot, fw))
}

/// The flash file as a factory writes it: 0xFF everywhere, the boot loader at 0, then the
/// bundle provisioned into ota_0 (and fs_0, formatted when the bundle has no fs) by `ota-core`.
pub fn factory_image(boot_loader: &[u8], platform: &str, bundle: &[u8]) -> Result<Vec<u8>, String> {
    let mut image = vec![0xFFu8; FLASH_FILE_BYTES];
    if boot_loader.len() > partitions::BOOT_LOADER_MAX_BYTES as usize {
        return Err(format!(
            "the boot loader is {} bytes, more than the {} its partition holds",
            boot_loader.len(),
            partitions::BOOT_LOADER_MAX_BYTES
        ));
    }
    let at = partitions::BOOT_LOADER_OFFSET as usize;
    image[at..at + boot_loader.len()].copy_from_slice(boot_loader);
    device::provision(&mut image[..partitions::FLASH_BYTES as usize], platform, bundle)?;
    Ok(image)
}

/// The clock's loader word: the firmware's clock starts at `start_ms`, frozen.
pub fn clock_word(start_ms: u64, frozen: bool) -> u64 {
    CLOCK_WORD_MAGIC << 48 | u64::from(frozen) << 47 | (start_ms & ((1 << 47) - 1))
}

/// QEMU's arguments for a board on `flash`, its sockets in `dir`.
pub fn qemu_args(config: &QemuConfig, flash: &Path, dir: &Path, clock_word: u64) -> Vec<String> {
    let mut args: Vec<String> =
        ["-machine", "virt", "-display", "none", "-bios", "none", "-monitor", "none", "-S"]
            .map(String::from)
            .to_vec();
    args.extend(["-serial".into(), "pty".into()]);
    args.extend(["-icount".into(), format!("shift={},sleep=off", config.icount_shift)]);
    args.extend(["-drive".into(), format!("if=pflash,unit=0,format=raw,file={}", flash.display())]);
    args.extend([
        "-device".into(),
        format!("loader,addr={CLOCK_WORD_ADDRESS:#x},data={clock_word:#x},data-len=8"),
    ]);
    args.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", dir.join("qmp").display())]);
    args.extend(["-gdb".into(), format!("unix:{},server=on,wait=off", dir.join("gdb").display())]);
    args
}

/// QEMU's arguments for the board's network: a virtio network device on QEMU's user network
/// (slirp), the host's `127.0.0.1:http_port` forwarded to the device's port 80. From the guest,
/// the host's loopback is 10.0.2.2 ([`GUEST_HOST_ADDRESS`]).
pub fn qemu_net_args(http_port: u16) -> Vec<String> {
    vec![
        "-global".into(),
        "virtio-mmio.force-legacy=false".into(),
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{http_port}-:80"),
        "-device".into(),
        "virtio-net-device,netdev=n0".into(),
    ]
}

/// The host side of QEMU's `serial0` pty, from QMP `query-chardev`.
pub fn serial_pty(qmp: &mut Qmp) -> Result<String, String> {
    let chardevs = qmp.execute("query-chardev", None).map_err(|e| e.to_string())?;
    chardevs
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c.get("label").and_then(Value::as_str) == Some("serial0"))
        .and_then(|c| c.get("filename").and_then(Value::as_str))
        .and_then(|f| f.strip_prefix("pty:"))
        .map(str::to_string)
        .ok_or_else(|| format!("QEMU's serial0 is not a pty: {chardevs}"))
}

/// The host's loopback as the device sees it on QEMU's user network.
pub const GUEST_HOST_ADDRESS: &str = "10.0.2.2";

/// A TCP port on the host's loopback that nothing listens on now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How a watched call ended.
enum Watched {
    Answer(Result<Value, RpcErr>),
    /// The watchdog reset the firmware before it answered.
    Reset,
}

/// Watchdog resets one call may live through before the runner gives up on it.
const RESETS_PER_CALL_MAX: usize = 3;

/// What the debugger thread is asked to do. Neither order touches the target: the
/// breakpoints are in from power-on, and an order only changes what the thread counts.
enum Order {
    /// Arms a cut, counted from now.
    Arm(Plan),
    Disarm,
    /// From now, copies the flash file at every operation breakpoint, before the operation runs:
    /// what a cut there would leave.
    Record(PathBuf),
    /// Ends the recording and hands it over.
    TakeRecording,
}

enum Answer {
    Done,
    Failed(String),
    Recorded(Recording),
}

/// The bytes of the flash file a recording keeps: the partition map's span (the rest of the
/// 32 MiB file is never written).
const RECORD_BYTES: usize = ota_app::partitions::FLASH_BYTES as usize;
/// The unit a recorded point keeps of what differs from the recording's start.
const RECORD_CHUNK_BYTES: usize = 4096;

/// A push's flash, as it stood before each of its flash operations: the file when the recording
/// started and, per operation, the 4 KiB chunks that differed from it.
#[derive(Clone, Debug, Default)]
struct Recording {
    base: Vec<u8>,
    points: Vec<Vec<(usize, Vec<u8>)>>,
}

impl Recording {
    fn start(path: &Path) -> Result<Recording, String> {
        Ok(Recording { base: read_recorded(path)?, points: Vec::new() })
    }

    /// Keeps the file as it stands now as the next point.
    fn take_point(&mut self, path: &Path) -> Result<(), String> {
        let now = read_recorded(path)?;
        let changed = (now.chunks(RECORD_CHUNK_BYTES).zip(self.base.chunks(RECORD_CHUNK_BYTES)))
            .enumerate()
            .filter(|(_, (now, base))| now != base)
            .map(|(i, (now, _))| (i, now.to_vec()))
            .collect();
        self.points.push(changed);
        Ok(())
    }

    /// The recorded span at point `n`.
    fn point(&self, n: usize) -> Option<Vec<u8>> {
        let changed = self.points.get(n)?;
        let mut bytes = self.base.clone();
        for (chunk, data) in changed {
            bytes[chunk * RECORD_CHUNK_BYTES..][..data.len()].copy_from_slice(data);
        }
        Some(bytes)
    }
}

/// The recorded span of a flash file.
fn read_recorded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = vec![0u8; RECORD_BYTES];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read the flash file {}: {e}", path.display()))?;
    Ok(bytes)
}

/// What the debugger thread found.
#[derive(Default)]
struct Struck {
    how: Option<String>,
}

/// The gdbstub's connection, on a thread of its own. Breakpoints sit on every flash operation
/// and phase marker from power-on until QEMU ends; the thread steps over each hit, counts the
/// hits of an armed cut, and SIGKILLs QEMU on the armed one.
///
/// The thread never stops a running target: it only answers stops. An interrupt (the 0x03 byte)
/// that crosses a stop reply is dropped by QEMU's gdbstub, and an order that failed after one
/// left the target halted for good; arming and the watchdog's mtime reads (QMP `xp`) need no
/// stopped target, so there is nothing to race.
struct Debugger {
    orders: Sender<(u64, Order)>,
    answers: Receiver<(u64, Answer)>,
    sequence: u64,
    thread: Option<JoinHandle<()>>,
}

/// A cut for the debugger: at the `hit`-th (0-based) operation breakpoint hit from when it is
/// armed; with a phase, counted from that phase's marker on.
#[derive(Clone, Debug)]
struct Plan {
    hit: u64,
    phase: Option<u32>,
    how: String,
}

impl Debugger {
    /// Takes the stub over and puts the breakpoints in while the target is still held at reset;
    /// a `plan` is armed from the start.
    fn start(
        gdb: Gdb,
        child: Arc<Mutex<Child>>,
        images: &Images,
        struck: Arc<Mutex<Struck>>,
        plan: Option<Plan>,
    ) -> Result<Debugger, GdbError> {
        let (ops, phases) = (images.op_addresses.clone(), images.phase_addresses.clone());
        Debugger::on(gdb, child, ops, phases, struck, plan)
    }

    /// [`Debugger::start`] with the breakpoints' addresses given.
    fn on(
        mut gdb: Gdb,
        child: Arc<Mutex<Child>>,
        ops: Vec<u32>,
        phases: Vec<u32>,
        struck: Arc<Mutex<Struck>>,
        plan: Option<Plan>,
    ) -> Result<Debugger, GdbError> {
        let (orders, rx) = mpsc::channel();
        let (tx, answers) = mpsc::channel();
        for &address in ops.iter().chain(&phases) {
            gdb.set_breakpoint(address)?;
        }
        let armed = plan.map(Armed::new);
        let thread = std::thread::spawn(move || {
            let mut run = DebugRun { gdb, child, ops, phases, armed, struck, running: true, recording: None };
            run.serve(rx, tx);
        });
        Ok(Debugger { orders, answers, sequence: 0, thread: Some(thread) })
    }

    /// Sends an order and waits for its answer. Answers carry the order's number, so one that
    /// comes after its order was given up on is never taken for the next order's.
    fn ask(&mut self, order: Order) -> Result<Answer, String> {
        self.sequence += 1;
        let sequence = self.sequence;
        self.orders.send((sequence, order)).map_err(|_| "the debugger thread has ended".to_string())?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok((number, answer)) if number == sequence => return Ok(answer),
                Ok(_) => continue,
                Err(_) => return Err("the debugger thread did not answer".to_string()),
            }
        }
    }
}

impl Drop for Debugger {
    fn drop(&mut self) {
        // Closing the channel ends the thread at its next look (QEMU's end ends it too).
        let (orders, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.orders, orders));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Armed {
    hits_left: u64,
    phase: Option<u32>,
    how: String,
}

impl Armed {
    fn new(plan: Plan) -> Armed {
        Armed { hits_left: plan.hit.min(HITS_MAX), phase: plan.phase, how: plan.how }
    }
}

struct DebugRun {
    gdb: Gdb,
    child: Arc<Mutex<Child>>,
    ops: Vec<u32>,
    phases: Vec<u32>,
    armed: Option<Armed>,
    struck: Arc<Mutex<Struck>>,
    running: bool,
    /// The flash file and what is recorded of it, while a recording runs.
    recording: Option<(PathBuf, Result<Recording, String>)>,
}

impl DebugRun {
    fn serve(&mut self, orders: Receiver<(u64, Order)>, answers: Sender<(u64, Answer)>) {
        loop {
            loop {
                match orders.try_recv() {
                    Ok((number, order)) => {
                        let _ = answers.send((number, self.obey(order)));
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            if !self.running {
                // Stopped for good (QEMU gone): wait for orders only.
                match orders.recv() {
                    Ok((number, order)) => {
                        let _ = answers.send((number, self.obey(order)));
                        continue;
                    }
                    Err(_) => return,
                }
            }
            match self.gdb.await_stop(DEBUGGER_POLL) {
                Ok(stop) => {
                    if let Err(e) = self.stopped(stop) {
                        self.gone(e);
                    }
                }
                Err(GdbError::Timeout { .. }) => {}
                Err(e) => self.gone(e),
            }
        }
    }

    fn gone(&mut self, _e: GdbError) {
        self.running = false;
    }

    /// Takes an order: only the count changes, the target runs on.
    fn obey(&mut self, order: Order) -> Answer {
        match order {
            Order::Arm(_) if !self.running => Answer::Failed("QEMU is gone".into()),
            Order::Arm(plan) => {
                self.armed = Some(Armed::new(plan));
                Answer::Done
            }
            Order::Disarm => {
                self.armed = None;
                Answer::Done
            }
            Order::Record(path) => {
                let recording = Recording::start(&path);
                self.recording = Some((path, recording));
                Answer::Done
            }
            Order::TakeRecording => match self.recording.take() {
                Some((_, Ok(recording))) => Answer::Recorded(recording),
                Some((_, Err(why))) => Answer::Failed(why),
                None => Answer::Failed("nothing was being recorded".into()),
            },
        }
    }

    /// Continues from a breakpoint at `pc`: QEMU stops again at a breakpoint it is continued
    /// from, so the breakpoint comes out for one instruction (as gdb itself steps over it).
    fn step_over(&mut self, pc: u32) -> Result<(), GdbError> {
        self.gdb.clear_breakpoint(pc)?;
        self.gdb.step()?;
        self.gdb.set_breakpoint(pc)?;
        self.gdb.resume()
    }

    /// The target stopped by itself: at a breakpoint of ours (anything else ends the watch: the
    /// runner put no other stop in).
    fn stopped(&mut self, stop: Stop) -> Result<(), GdbError> {
        if !matches!(stop, Stop::Signal { .. }) {
            return Err(GdbError::Closed { what: format!("the target ended: {stop:?}") });
        }
        let registers = self.gdb.registers()?;
        let pc = registers.get(REG_PC).copied().unwrap_or(0);
        let (op, marker) = (self.ops.contains(&pc), self.phases.contains(&pc));
        if !op && !marker {
            return self.gdb.resume();
        }
        if op && let Some((path, Ok(recording))) = self.recording.as_mut() {
            // The CPU is stopped before the operation, and QEMU's CFI flash writes its file as
            // each operation ends: the file is what a cut here leaves.
            if let Err(why) = recording.take_point(path) {
                self.recording = Some((path.clone(), Err(why)));
            }
        }
        if let Some(armed) = self.armed.as_mut() {
            match armed.phase {
                Some(phase) if marker && registers.get(REG_A0) == Some(&phase) => {
                    // The wanted phase starts: cut at its next flash operation.
                    armed.phase = None;
                    armed.hits_left = 0;
                }
                Some(_) => {}
                None if op && armed.hits_left > 0 => armed.hits_left -= 1,
                None if op => {
                    // The armed operation: the power goes before it touches the flash (the
                    // runner learns why first, then sees the board go dark).
                    let how = armed.how.clone();
                    self.struck.lock().unwrap_or_else(|p| p.into_inner()).how = Some(how);
                    let _ = self.child.lock().unwrap_or_else(|p| p.into_inner()).kill();
                    self.armed = None;
                    self.running = false;
                    return Ok(());
                }
                None => {}
            }
        }
        self.step_over(pc)
    }
}

/// A running QEMU and its lines.
struct Machine {
    child: Arc<Mutex<Child>>,
    qmp: Qmp,
    serial: Client,
    debugger: Debugger,
    readers: Vec<JoinHandle<()>>,
    watchdog: Watchdog,
}

/// The external watchdog's count: mtime ticks since the last kick line, sampled while the
/// runner waits for an answer.
#[derive(Debug)]
struct Watchdog {
    budget_ticks: u64,
    /// mtime when counting started: the first sample after a kick (or a reset).
    since: Option<u64>,
}

impl Watchdog {
    fn new(budget_ms: u64) -> Watchdog {
        Watchdog { budget_ticks: budget_ms.saturating_mul(MTIME_TICKS_PER_MS), since: None }
    }

    /// A kick line was read: counting starts over at the next sample.
    fn kicked(&mut self) {
        self.since = None;
    }

    /// mtime now; the ticks run without a kick when they reach the budget (the caller resets
    /// the board, and counting starts over).
    fn sample(&mut self, now: u64) -> Option<u64> {
        match self.since {
            // mtime restarts with a reset: a reading below the start starts over.
            Some(at) if now >= at => {
                let ran = now - at;
                if ran < self.budget_ticks {
                    return None;
                }
                self.since = None;
                Some(ran)
            }
            _ => {
                self.since = Some(now);
                None
            }
        }
    }
}

/// The trial's flash file; a temporary one is removed when the trial ends.
struct FlashFile {
    path: PathBuf,
    temporary: bool,
}

impl Drop for FlashFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub struct QemuBoard {
    info: BoardInfo,
    capabilities: Capabilities,
    config: QemuConfig,
    images: Option<Images>,
    flash: Option<FlashFile>,
    machine: Option<Machine>,
    armed: Option<Cut>,
    /// The host port QEMU forwards to the device's HTTP port, chosen free at each power-on.
    http_port: Option<u16>,
    log: Arc<Mutex<Log>>,
    step_deadline: Option<Instant>,
    /// This board's folder for QEMU's sockets.
    dir: PathBuf,
    /// Set by the debugger thread when its cut struck; outlives the machine it killed.
    struck: Arc<Mutex<Struck>>,
    /// The last recorded push (`push_recorded`).
    recording: Option<Recording>,
}

impl QemuBoard {
    pub fn new(name: &str, platform: &str, config: QemuConfig) -> QemuBoard {
        let layout = partitions::layout();
        let info = BoardInfo {
            name: name.into(),
            kind: "qemu".into(),
            platform: platform.into(),
            app_slot_bytes: layout.app[0].size_bytes,
            fs_slot_bytes: layout.fs[0].size_bytes,
            app_image: None,
        };
        let capabilities = Capabilities {
            transports: vec![Transport::Rpc, Transport::Http, Transport::Pull],
            cut_at_op: true,
            cut_at_fraction: true,
            cut_at_phase: true,
            cut_at_every_op: true,
            sweep: false,
            virtual_time: false,
            no_power_cut: None,
        };
        static BOARDS: AtomicU64 = AtomicU64::new(0);
        let n = BOARDS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hil-qemu-{}-{n}", std::process::id()));
        QemuBoard {
            info,
            capabilities,
            config,
            images: None,
            flash: None,
            machine: None,
            armed: None,
            http_port: None,
            log: Arc::new(Mutex::new(Log::default())),
            step_deadline: None,
            dir,
            struck: Arc::new(Mutex::new(Struck::default())),
            recording: None,
        }
    }

    fn capped(&self, wanted: Duration) -> Duration {
        match self.step_deadline {
            Some(deadline) => wanted.min(deadline.saturating_duration_since(Instant::now())),
            None => wanted,
        }
    }

    fn startup_timeout(&self) -> Duration {
        self.capped(Duration::from_millis(self.config.startup_timeout_ms))
    }

    fn note(&self, kind: EventKind) {
        lock(&self.log).event(kind);
    }

    fn hil_line(&self, text: &str) {
        lock(&self.log).console(format!("hil: {text}"));
    }

    fn images(&self) -> BoardResult<&Images> {
        self.images.as_ref().ok_or_else(|| BoardError::new("no trial started on the QEMU board"))
    }

    fn flash_path(&self) -> BoardResult<PathBuf> {
        self.flash
            .as_ref()
            .map(|f| f.path.clone())
            .ok_or_else(|| BoardError::new("no trial started on the QEMU board"))
    }

    // ---- QEMU ----

    fn spawn(&mut self, plan: Option<Plan>) -> BoardResult<Machine> {
        let flash = self.flash_path()?;
        if !flash.is_file() {
            // A device nobody provisioned: erased flash, and the boot loader finds nothing.
            write_erased(&flash)?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| BoardError::new(format!("cannot create {}: {e}", self.dir.display())))?;
        let word = clock_word(lock(&self.log).device_ms, true);
        let mut args = qemu_args(&self.config, &flash, &self.dir, word);
        let http_port = free_port()
            .map_err(|e| BoardError::new(format!("no free TCP port on 127.0.0.1 for HTTP: {e}")))?;
        args.extend(qemu_net_args(http_port));
        self.http_port = Some(http_port);
        let mut child = Command::new(&self.config.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                BoardError::new(format!("cannot start {}: {e}", self.config.qemu.display())).help(
                    "install QEMU: apt-get install -y --allow-downgrades qemu-system-misc 'qemu-utils=1:7.2+dfsg-7+deb12u18+b3'",
                )
            })?;
        let mut readers = Vec::new();
        for out in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = self.log.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lock(&log).console(format!("qemu: {line}"));
                }
            }));
        }
        let child = Arc::new(Mutex::new(child));
        match self.connect(child.clone()) {
            Ok((qmp, serial, gdb)) => {
                match Debugger::start(gdb, child.clone(), self.images()?, self.struck.clone(), plan) {
                    Ok(debugger) => {
                        let watchdog = Watchdog::new(self.config.watchdog_ms);
                        Ok(Machine { child, qmp, serial, debugger, readers, watchdog })
                    }
                    Err(e) => {
                        let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = child.kill();
                        let _ = child.wait();
                        Err(BoardError::new(format!("arming the cut at power-on: {e}")))
                    }
                }
            }
            Err(e) => {
                let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// QMP, the pty (its path from `query-chardev`), and the gdbstub.
    fn connect(&self, _child: Arc<Mutex<Child>>) -> BoardResult<(Qmp, Client, Gdb)> {
        let timeout = self.startup_timeout();
        let mut qmp = Qmp::connect(&self.dir.join("qmp"), timeout).map_err(|e| {
            BoardError::new(e.to_string()).help("see the trial's console for QEMU's own messages")
        })?;
        let pty = serial_pty(&mut qmp).map_err(BoardError::new)?;
        let serial = Client::open(&pty).map_err(|e| BoardError::new(e.to_string()).help(e.help()))?;
        let gdb = Gdb::connect(&self.dir.join("gdb"), timeout).map_err(|e| BoardError::new(e.to_string()))?;
        Ok((qmp, serial, gdb))
    }

    /// SIGKILL and reap; the lines close.
    fn stop(&mut self, machine: Machine) {
        let Machine { child, qmp, serial, debugger, readers, .. } = machine;
        {
            let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
        drop((qmp, serial, debugger));
        for reader in readers {
            let _ = reader.join();
        }
        self.pull_console_of(None);
    }

    fn machine(&mut self) -> BoardResult<&mut Machine> {
        self.machine.as_mut().ok_or_else(|| BoardError::new("the QEMU board is off"))
    }

    /// Moves the serial line's console into the log (typed events onto the timeline); true
    /// when a kick line was among them.
    /// Moves the serial line's console into the log; a kick line among it counts for the
    /// watchdog whoever read it.
    fn pull_console(&mut self) {
        let Some(machine) = self.machine.as_mut() else { return };
        let lines = machine.serial.take_console();
        if self.pull_console_of(Some(lines))
            && let Some(machine) = self.machine.as_mut()
        {
            machine.watchdog.kicked();
        }
    }

    fn pull_console_of(&mut self, lines: Option<Vec<String>>) -> bool {
        let mut kicked = false;
        let mut log = lock(&self.log);
        for line in lines.into_iter().flatten() {
            if line.trim() == KICK_LINE {
                kicked = true;
                continue;
            }
            log.line(line);
        }
        kicked
    }

    /// Sends a call and waits for its reply for at most `timeout`, looking at the board every
    /// [`POLL`] while none comes: the watchdog may reset a firmware that runs without kicking
    /// (then the call is lost: [`Watched::Reset`]).
    fn call_watched(&mut self, method: &str, params: Value, timeout: Duration) -> BoardResult<Watched> {
        let timeout = self.capped(timeout);
        let deadline = Instant::now() + timeout;
        let sent = match &mut self.machine()?.serial {
            Client::Serial(serial) => serial.send(method, params),
            _ => return Err(BoardError::new("the QEMU board talks over its pty only")),
        };
        let id = match sent {
            Ok(id) => id,
            Err(e) => return Err(self.transport(e, &format!("calling {method}"))),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).min(POLL);
            let answer = match &mut self.machine()?.serial {
                Client::Serial(serial) => serial.await_reply(id, method, left),
                _ => return Err(BoardError::new("the QEMU board talks over its pty only")),
            };
            self.pull_console();
            match answer {
                Ok(answer) => return Ok(Watched::Answer(answer)),
                Err(TransportError::Timeout { .. }) if Instant::now() < deadline => {
                    if self.watchdog()? {
                        return Ok(Watched::Reset);
                    }
                }
                Err(e) => return Err(self.transport(e, &format!("calling {method}"))),
            }
        }
    }

    /// A call; when the watchdog resets the firmware meanwhile, the runner waits for it to
    /// answer again and asks once more.
    fn call_timeout(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> BoardResult<Result<Value, RpcErr>> {
        for _ in 0..RESETS_PER_CALL_MAX {
            match self.call_watched(method, params.clone(), timeout)? {
                Watched::Answer(answer) => return Ok(answer),
                Watched::Reset => self.await_answer(&format!("a watchdog reset during {method}"))?,
            }
        }
        Err(BoardError::new(format!(
            "calling {method}: the watchdog reset the board {RESETS_PER_CALL_MAX} times and no answer came"
        )))
    }

    fn call(&mut self, method: &str, params: Value) -> BoardResult<Result<Value, RpcErr>> {
        self.call_timeout(method, params, CALL_TIMEOUT)
    }

    /// A transport failure: a closed line means QEMU died (or a cut struck).
    fn transport(&mut self, error: TransportError, doing: &str) -> BoardError {
        if matches!(error, TransportError::Closed { .. })
            && let Some(machine) = self.machine.take()
        {
            self.stop(machine);
            return BoardError::new(format!(
                "QEMU ended while the runner was {doing}; see the trial's console"
            ));
        }
        BoardError::new(format!("{doing}: {error}")).help(error.help())
    }

    /// mtime, read through QMP (the CPU runs on).
    fn ticks(&mut self) -> BoardResult<u64> {
        let machine = self.machine()?;
        machine.qmp.read_phys_u64(MTIME_ADDRESS).map_err(|e| BoardError::new(format!("reading mtime: {e}")))
    }

    /// The watchdog's look at a board that did not answer: true when it pressed reset.
    fn watchdog(&mut self) -> BoardResult<bool> {
        self.pull_console();
        let now = self.ticks()?;
        let machine = self.machine()?;
        let Some(since) = machine.watchdog.sample(now) else { return Ok(false) };
        machine.qmp.system_reset().map_err(|e| BoardError::new(e.to_string()))?;
        lock(&self.log).life = None;
        let line = format!("watchdog: {since} mtime ticks without a kick; reset");
        self.hil_line(&line);
        self.note(EventKind::WatchdogReset);
        Ok(true)
    }

    /// Waits until the firmware answers `Sys.GetInfo` (or the boot loader says nothing boots),
    /// the watchdog resetting a firmware that runs without kicking.
    fn await_answer(&mut self, after: &str) -> BoardResult<()> {
        let timeout = self.startup_timeout();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).min(POLL);
            match self.call_watched("Sys.GetInfo", Value::Null, left) {
                Ok(Watched::Answer(_)) => return Ok(()),
                Ok(Watched::Reset) => continue,
                Err(e) if e.message.contains("QEMU ended") => return Err(e),
                Err(_) => {}
            }
            if matches!(lock(&self.log).life, Some(ota_app::Event::Bricked { .. })) {
                return Ok(());
            }
        }
        Err(BoardError::new(format!(
            "the firmware did not answer Sys.GetInfo within {:.1} s after {after}, and its CPU did not run the watchdog's budget (still waiting for an answer)",
            timeout.as_secs_f64()
        ))
        .help("raise `startup_timeout` in the board file's [qemu] table if the machine is slow"))
    }

    /// `Board.Clock {advance_ms}`: exactly `ms` of device time, everything due on the way run at
    /// its time; a reboot on the way is finished by the next firmware, which answers. A reset by
    /// the watchdog loses the call: the runner waits for the firmware and counts the time as
    /// passed.
    fn advance(&mut self, ms: u64) -> BoardResult<()> {
        let timeout = self.startup_timeout();
        match self.call_watched("Board.Clock", json!({ "advance_ms": ms }), timeout)? {
            Watched::Answer(Ok(reply)) => {
                let now = reply.get("now_ms").and_then(Value::as_u64).unwrap_or_default();
                let mut log = lock(&self.log);
                log.device_ms = log.device_ms.max(now);
                Ok(())
            }
            Watched::Answer(Err(e)) => {
                Err(BoardError::new(format!("Board.Clock refused to advance {ms} ms: {}", e.message)))
            }
            Watched::Reset => {
                self.await_answer(&format!("a watchdog reset while {ms} ms passed"))?;
                let mut log = lock(&self.log);
                log.device_ms = log.device_ms.saturating_add(ms);
                Ok(())
            }
        }
    }

    /// After a reboot the firmware asked for (an update applied, a revert): the clock moves
    /// past the reboot delay, then the device answers again.
    fn await_reboot(&mut self, after: &str) -> BoardResult<()> {
        self.advance(ota_app::app::REBOOT_DELAY_MS)?;
        self.await_answer(&format!("the reboot after {after}"))
    }

    fn finished(&mut self, message: &str, call: &str) -> BoardResult<PushResult> {
        if message.contains("same as current") {
            return Ok(PushResult::UpToDate);
        }
        self.await_reboot(&format!("{call} answered {message:?}"))?;
        Ok(PushResult::Applied)
    }

    fn push_rpc(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        let push = OtaPush {
            bundle: request.bundle,
            commit_timeout_s: request.commit_timeout_s,
            update_timeout_s: UPDATE_TIMEOUT_S,
            chunk_bytes: request.chunk_bytes.max(self.config.write_bytes_min),
            ignore_same_version: request.ignore_same_version,
            stop_after_bytes: cut_after,
        };
        let machine = self.machine()?;
        let outcome = rpc_client::ota_push(&mut machine.serial, &push, &mut |_| {});
        self.pull_console();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return Err(self.transport(e, "pushing over RPC")),
        };
        match outcome {
            OtaOutcome::Ended { message } => self.finished(&message, "OTA.End"),
            OtaOutcome::Busy { state } => {
                Ok(PushResult::Refused { message: format!("{BUSY} ({state}), call OTA.End") })
            }
            OtaOutcome::Refused { error, .. } => Ok(PushResult::Refused { message: error.message }),
            OtaOutcome::Stopped { sent_bytes } => {
                self.cut(&format!("after {sent_bytes} of {} bytes were acknowledged", request.bundle.len()));
                Ok(PushResult::PowerLost)
            }
        }
    }

    /// Reads the serial line for `wait` (the console, the kicks): the guest's UART stalls when
    /// nobody reads its pty.
    fn listen(&mut self, wait: Duration) -> BoardResult<()> {
        let read = match &mut self.machine()?.serial {
            // No call is waiting: every line read is console.
            Client::Serial(serial) => serial.await_reply(u64::MAX, "(console)", wait),
            _ => return Err(BoardError::new("the QEMU board talks over its pty only")),
        };
        self.pull_console();
        match read {
            Ok(_) | Err(TransportError::Timeout { .. }) => Ok(()),
            Err(e) => Err(self.transport(e, "reading the console")),
        }
    }

    fn http_addr(&self) -> BoardResult<String> {
        self.http_port
            .map(|port| format!("127.0.0.1:{port}"))
            .ok_or_else(|| BoardError::new("the QEMU board is off: no HTTP port"))
    }

    /// `POST /update` through QEMU's port forward, as the seeds' curl line sends it; the serial
    /// line is read meanwhile.
    fn push_http(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        let addr = self.http_addr()?;
        if let Some(keep) = cut_after {
            let _stream = http_upload_prefix(&addr, request, keep)
                .map_err(|e| BoardError::new(format!("POST http://{addr}/update: {e}")))?;
            device::settle(|| Ok(self.call("OTA.Status", Value::Null)?.ok()))?;
            self.cut(&format!("after {keep} of {} bytes were sent", request.bundle.len()));
            return Ok(PushResult::PowerLost);
        }
        let answer = std::thread::scope(|scope| {
            let upload = scope.spawn(|| http_push::post_update(&addr, request));
            while !upload.is_finished() {
                self.listen(POLL)?;
            }
            Ok(upload.join().unwrap_or_else(|_| Err("the upload thread panicked".into())))
        })?;
        let url = format!("http://{addr}/update");
        let (status, body) = answer.map_err(|e| {
            BoardError::new(format!("POST {url}: {e}"))
                .help("the device's HTTP server broke off the upload; see the trial's console")
        })?;
        match http_push::update_answer(status, &body) {
            Ok(message) => self.finished(&message, "POST /update"),
            Err(message) => Ok(PushResult::Refused { message }),
        }
    }

    /// `OTA.Update {url}`: the device pulls the bundle from a server on the host's loopback,
    /// which it reaches as [`GUEST_HOST_ADDRESS`].
    fn push_pull(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        let server = BundleServer::start(request.bundle.to_vec(), cut_after)
            .map_err(|e| BoardError::new(format!("cannot serve the bundle on loopback: {e}")))?;
        let params = http_push::pull_params(&server.url_via(GUEST_HOST_ADDRESS), request);
        if let Some(keep) = cut_after {
            // The reply would come when the pull ends, which it never does: send, do not wait.
            let sent = match &mut self.machine()?.serial {
                Client::Serial(serial) => serial.send("OTA.Update", params),
                _ => return Err(BoardError::new("the QEMU board talks over its pty only")),
            };
            if let Err(e) = sent {
                return Err(self.transport(e, "asking for a pull"));
            }
            let deadline = Instant::now() + self.startup_timeout();
            while server.await_served(Duration::ZERO).is_err() {
                if Instant::now() >= deadline {
                    return Err(BoardError::new(
                        "the device did not fetch the bundle (still waiting for the device's GET of the bundle)",
                    ));
                }
                self.listen(Duration::from_millis(50))?;
            }
            device::settle(|| Ok(self.call("OTA.Status", Value::Null)?.ok()))?;
            self.cut(&format!("after {keep} of {} bytes were served", request.bundle.len()));
            return Ok(PushResult::PowerLost);
        }
        let answer = self.call_timeout("OTA.Update", params, TRANSFER_TIMEOUT)?;
        drop(server);
        match http_push::pull_answer(answer) {
            Ok(message) => self.finished(&message, "OTA.Update"),
            Err(message) => Ok(PushResult::Refused { message }),
        }
    }

    /// The armed cut, when the debugger strikes it (at an operation or a phase); taken.
    fn plan(&mut self) -> Option<Plan> {
        let plan = match self.armed.take() {
            Some(Cut::AtOp { op, when }) => {
                let (hit, word) = match when {
                    CutWhen::Before => (op, "before"),
                    // An operation is atomic in QEMU's flash file: "during" cuts before it.
                    CutWhen::During => (op, "at"),
                    CutWhen::After => (op + 1, "after"),
                };
                Plan {
                    hit,
                    phase: None,
                    how: format!("{word} flash op {op} of the step (breakpoint hit {hit})"),
                }
            }
            Some(Cut::AtPhase(phase)) => Plan {
                hit: 0,
                phase: Some(phase as u32),
                how: format!("at the first flash op of the {} phase", phase.name()),
            },
            other => {
                self.armed = other;
                return None;
            }
        };
        self.struck.lock().unwrap_or_else(|p| p.into_inner()).how = None;
        Some(plan)
    }

    /// Arms the armed cut on the running machine's debugger; how it will strike.
    fn arm_debugger(&mut self) -> BoardResult<Option<String>> {
        let Some(plan) = self.plan() else { return Ok(None) };
        let how = plan.how.clone();
        match self.machine()?.debugger.ask(Order::Arm(plan)) {
            Ok(Answer::Done | Answer::Recorded(_)) => Ok(Some(how)),
            Ok(Answer::Failed(why)) | Err(why) => {
                Err(BoardError::new(format!("arming the cut {how}: {why}")))
            }
        }
    }

    /// After a step with a cut armed on the debugger: when it struck, the power went (`off` is
    /// the step's answer then); a step that ended before its armed operation came answers as it
    /// did (the engine's expectation says whether that is wrong, and an exhaustive cut ends
    /// there), with the cut disarmed.
    fn settle_cut<T>(&mut self, result: BoardResult<T>, how: &str, off: T) -> BoardResult<T> {
        let struck = self.struck.lock().unwrap_or_else(|p| p.into_inner()).how.take();
        if struck.is_none() {
            if self.machine.is_some()
                && let Ok(Answer::Failed(why)) | Err(why) = self.machine()?.debugger.ask(Order::Disarm)
            {
                return Err(BoardError::new(format!("disarming the cut {how}: {why}")));
            }
            return result;
        }
        if let Some(machine) = self.machine.take() {
            self.stop(machine);
        }
        let how = format!("power cut {how}");
        self.hil_line(&how);
        self.note(EventKind::PowerCut { op: None, how });
        Ok(off)
    }

    fn cut(&mut self, how: &str) {
        if let Some(machine) = self.machine.take() {
            self.stop(machine);
        }
        let how = format!("power cut {how}");
        self.hil_line(&how);
        self.note(EventKind::PowerCut { op: None, how });
    }

    fn activity(&mut self) -> BoardResult<Activity> {
        match self.call("Sys.GetInfo", Value::Null)? {
            Ok(info) => Ok(device::running(&info)),
            Err(e) => match lock(&self.log).life.clone() {
                Some(ota_app::Event::Hung { slot }) => Ok(Activity::Hung { slot }),
                Some(ota_app::Event::Bricked { why }) => Ok(Activity::Bricked { why }),
                _ => Err(BoardError::new(format!(
                    "Sys.GetInfo failed: {e}, and the device reported no hang or brick"
                ))),
            },
        }
    }

    fn boot_state(&mut self) -> BoardResult<Option<BootStateView>> {
        let Ok(state) = self.call("OTA.GetBootState", Value::Null)? else { return Ok(None) };
        Ok(Some(device::boot_state_view(&state)))
    }

    /// Whether a firmware answers; a hung or bricked one does not.
    /// Point `n` of the last recorded push.
    fn recorded_point(&self, n: u64) -> BoardResult<Vec<u8>> {
        let recording = self.recording.as_ref().ok_or_else(|| BoardError::new("no push was recorded"))?;
        usize::try_from(n).ok().and_then(|n| recording.point(n)).ok_or_else(|| {
            BoardError::new(format!("the recorded push has {} points, not {}", recording.points.len(), n + 1))
        })
    }

    fn answers(&self) -> bool {
        !matches!(lock(&self.log).life, Some(ota_app::Event::Hung { .. } | ota_app::Event::Bricked { .. }))
    }
}

fn write_erased(path: &Path) -> BoardResult<()> {
    std::fs::write(path, vec![0xFFu8; FLASH_FILE_BYTES])
        .map_err(|e| BoardError::new(format!("cannot write the flash file {}: {e}", path.display())))
}

fn temporary_flash() -> PathBuf {
    static TRIALS: AtomicU64 = AtomicU64::new(0);
    let n = TRIALS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("hil-qemu-{}-{n}.img", std::process::id()))
}

impl Board for QemuBoard {
    fn info(&self) -> &BoardInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start_trial(&mut self, _seed: u64) -> BoardResult<()> {
        if let Some(machine) = self.machine.take() {
            self.stop(machine);
        }
        self.armed = None;
        lock(&self.log).clear();
        if self.images.is_none() {
            let (boot, fw) = find_images(&self.config)?;
            let images = Images::load(&boot, &fw)?;
            self.info.app_image = Some(Arc::new(images.firmware.bytes.clone()));
            self.images = Some(images);
        }
        let flash = match &self.config.flash_file {
            Some(path) => FlashFile { path: path.clone(), temporary: false },
            None => FlashFile { path: temporary_flash(), temporary: true },
        };
        match std::fs::remove_file(&flash.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BoardError::new(format!(
                    "cannot remove the old flash file {}: {e}",
                    flash.path.display()
                )));
            }
        }
        self.flash = Some(flash);
        Ok(())
    }

    fn provision(&mut self, bundle: &[u8]) -> BoardResult<()> {
        if let Some(machine) = self.machine.take() {
            self.stop(machine);
        }
        let path = self.flash_path()?;
        let image = factory_image(&self.images()?.boot_loader.bytes, &self.info.platform, bundle)
            .map_err(|e| BoardError::new(format!("provisioning: {e}")))?;
        std::fs::write(&path, image)
            .map_err(|e| BoardError::new(format!("cannot write the flash file {}: {e}", path.display())))?;
        self.note(EventKind::Note { text: "provisioned slot 0".into() });
        Ok(())
    }

    fn power_on(&mut self) -> BoardResult<()> {
        if self.machine.is_some() {
            return Ok(());
        }
        self.note(EventKind::PowerOn);
        lock(&self.log).life = None;
        // A cut armed for this step strikes in the boot (the boot loader's trial record, the
        // first-boot merge): its breakpoints go in before the CPU starts.
        let plan = self.plan();
        let how = plan.as_ref().map(|p| p.how.clone());
        let mut machine = self.spawn(plan)?;
        let started = machine.qmp.cont().map_err(|e| BoardError::new(e.to_string()));
        self.machine = Some(machine);
        let answered = started.and_then(|()| self.await_answer("power-on"));
        match how {
            Some(how) => self.settle_cut(answered, &how, ()),
            None => answered,
        }
    }

    fn power_cut(&mut self) -> BoardResult<()> {
        if self.machine.is_some() {
            self.cut("by the runner");
        }
        Ok(())
    }

    fn arm_cut(&mut self, cut: Cut) -> BoardResult<()> {
        self.armed = Some(cut);
        Ok(())
    }

    fn disarm_cut(&mut self) -> BoardResult<()> {
        self.armed = None;
        Ok(())
    }

    fn push(&mut self, request: &PushRequest<'_>) -> BoardResult<PushResult> {
        let cut_after = match self.armed {
            Some(Cut::AtFraction(f)) => Some((request.bundle.len() as f64 * f) as usize),
            _ => None,
        };
        if self.machine.is_none() {
            self.armed = None;
            return Ok(PushResult::PowerLost);
        }
        let armed = self.arm_debugger()?;
        let result = match request.transport {
            Transport::Rpc => self.push_rpc(request, cut_after),
            Transport::Http => self.push_http(request, cut_after),
            Transport::Pull => self.push_pull(request, cut_after),
        };
        match armed {
            Some(how) => self.settle_cut(result, &how, PushResult::PowerLost),
            None => result,
        }
    }

    fn push_recorded(&mut self, request: &PushRequest<'_>) -> BoardResult<Option<(PushResult, u64)>> {
        if self.machine.is_none() {
            return Err(BoardError::new("recording a push: the QEMU board is off"));
        }
        let path = self.flash_path()?;
        let asked = self.machine()?.debugger.ask(Order::Record(path));
        if let Ok(Answer::Failed(why)) | Err(why) = asked {
            return Err(BoardError::new(format!("recording a push: {why}")));
        }
        let result = self.push(request);
        let taken = match &mut self.machine {
            Some(machine) => machine.debugger.ask(Order::TakeRecording),
            None => Err("the board went off during the recorded push".to_string()),
        };
        let result = result?;
        match taken {
            Ok(Answer::Recorded(recording)) => {
                let points = recording.points.len() as u64;
                self.recording = Some(recording);
                Ok(Some((result, points)))
            }
            Ok(Answer::Failed(why)) | Err(why) => Err(BoardError::new(format!("recording a push: {why}"))),
            Ok(Answer::Done) => Err(BoardError::new("recording a push: no recording came back")),
        }
    }

    fn start_trial_at_point(&mut self, seed: u64, n: u64) -> BoardResult<()> {
        let bytes = self.recorded_point(n)?;
        self.start_trial(seed)?;
        let path = self.flash_path()?;
        let mut file = bytes;
        file.resize(FLASH_FILE_BYTES, 0xFF);
        std::fs::write(&path, file)
            .map_err(|e| BoardError::new(format!("cannot write the flash file {}: {e}", path.display())))
    }

    fn flash_is_point(&mut self, n: u64) -> BoardResult<bool> {
        let wanted = self.recorded_point(n)?;
        let path = self.flash_path()?;
        Ok(read_recorded(&path).map_err(BoardError::new)? == wanted)
    }

    fn wait(&mut self, ms: u64) -> BoardResult<()> {
        let bricked = matches!(lock(&self.log).life, Some(ota_app::Event::Bricked { .. }));
        if self.machine.is_none() || bricked {
            let mut log = lock(&self.log);
            log.device_ms = log.device_ms.saturating_add(ms);
            return Ok(());
        }
        self.advance(ms)
    }

    fn commit(&mut self) -> BoardResult<Result<(), Refusal>> {
        if self.machine.is_none() {
            return Ok(Err("the device is off".into()));
        }
        Ok(self.call("OTA.Commit", Value::Null)?.map(|_| ()).map_err(|e| e.message))
    }

    fn revert(&mut self) -> BoardResult<Result<(), Refusal>> {
        if self.machine.is_none() {
            return Ok(Err("the device is off".into()));
        }
        if let Err(e) = self.call("OTA.Revert", Value::Null)? {
            return Ok(Err(e.message));
        }
        self.await_reboot("OTA.Revert")?;
        Ok(Ok(()))
    }

    fn reboot(&mut self) -> BoardResult<()> {
        if self.machine.is_none() {
            return Ok(());
        }
        if self.answers() && self.call("Sys.Reboot", json!({ "delay_ms": 0 }))?.is_ok() {
            return self.await_reboot("Sys.Reboot");
        }
        // A hung or bricked firmware cannot reboot itself: press reset.
        self.hil_line("the firmware does not answer; pressing reset (QMP system_reset)");
        lock(&self.log).life = None;
        self.machine()?.qmp.system_reset().map_err(|e| BoardError::new(e.to_string()))?;
        self.await_answer("the reset")
    }

    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>> {
        if self.machine.is_none() {
            return Ok(Err("the device is off".into()));
        }
        device::create_snapshot(
            &mut |method, params| self.call(method, params),
            set_as_revert,
            commit_timeout_s,
        )
    }

    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
        if self.machine.is_none() {
            return Ok(Err("the device is off".into()));
        }
        device::put_file(&mut |method, params| self.call(method, params), name, content)
    }

    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
        if self.machine.is_none() {
            return Ok(Err("the device is off".into()));
        }
        device::get_file(&mut |method, params| self.call(method, params), name)
    }

    fn status(&mut self) -> BoardResult<Status> {
        if self.machine.is_none() {
            return Ok(Status { activity: Activity::Off, boot_state: None });
        }
        let activity = self.activity()?;
        let boot_state = self.boot_state()?;
        Ok(Status { activity, boot_state })
    }

    fn device_ms(&self) -> u64 {
        lock(&self.log).now_ms()
    }

    fn step_timeout(&mut self, timeout: Duration) {
        self.step_deadline = Some(Instant::now() + timeout);
    }

    fn drain_events(&mut self) -> Vec<(u64, EventKind)> {
        self.pull_console();
        std::mem::take(&mut lock(&self.log).events)
    }

    fn drain_console(&mut self) -> Vec<String> {
        std::mem::take(&mut lock(&self.log).console)
    }
}

impl Drop for QemuBoard {
    fn drop(&mut self) {
        if let Some(machine) = self.machine.take() {
            self.stop(machine);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::elf::tests::build;

    #[test]
    fn a_recording_gives_back_the_flash_as_it_stood_at_each_point() {
        let path = std::env::temp_dir().join(format!("hil-recording-{}.img", std::process::id()));
        let mut flash = vec![0xFFu8; RECORD_BYTES + 4096];
        flash[10] = 0x42;
        std::fs::write(&path, &flash).unwrap();
        let mut recording = Recording::start(&path).unwrap();
        recording.take_point(&path).unwrap();
        flash[0x2_0005] = 0x00;
        flash[0x3f_ffff] = 0x11;
        std::fs::write(&path, &flash).unwrap();
        recording.take_point(&path).unwrap();
        // Past the map's span nothing is kept.
        flash[RECORD_BYTES + 1] = 0;
        std::fs::write(&path, &flash).unwrap();
        recording.take_point(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(recording.points.len(), 3);
        assert_eq!(recording.points[0].len(), 0, "nothing changed yet");
        assert_eq!(recording.points[1].iter().map(|(chunk, _)| *chunk).collect::<Vec<_>>(), [0x20, 0x3ff]);
        assert_eq!(
            recording.point(0).unwrap(),
            flash[..RECORD_BYTES]
                .iter()
                .enumerate()
                .map(|(i, &b)| match i {
                    0x2_0005 | 0x3f_ffff => 0xFF,
                    _ => b,
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(recording.point(1).unwrap(), flash[..RECORD_BYTES]);
        assert_eq!(recording.point(2).unwrap(), flash[..RECORD_BYTES]);
        assert!(recording.point(3).is_none());
        let missing = Recording::start(Path::new("/nonexistent/flash.img")).unwrap_err();
        assert!(missing.starts_with("cannot read the flash file /nonexistent/flash.img"), "{missing}");
    }

    /// A gdbstub as QEMU 7.2's behaves for the debugger thread: packets acknowledged with `+`,
    /// `s` moves the pc on, `c` runs until the next of the hits (a stop reply with the pc
    /// there) or, when none is left, until the line closes. The target is held at reset until
    /// `setup` packets are answered and `start` gives the hits (a QMP `cont`). An interrupt byte is
    /// recorded; QEMU drops it while its last reply is unacknowledged, and a running target
    /// stays running. Returns the packets seen, `^C` for each interrupt.
    fn fake_stub(
        stream: std::os::unix::net::UnixStream,
        setup: usize,
        start: mpsc::Receiver<Vec<u32>>,
    ) -> JoinHandle<Vec<String>> {
        use std::io::{Read, Write};
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut seen = Vec::new();
            let mut pc = 0u32;
            let mut hits: Vec<u32> = Vec::new();
            let reply = |stream: &mut std::os::unix::net::UnixStream, payload: &str| {
                let packet = format!("${payload}#{:02x}", crate::qemu::gdb::checksum(payload.as_bytes()));
                stream.write_all(packet.as_bytes()).unwrap();
            };
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                if stream.read(&mut byte).unwrap_or(0) == 0 {
                    return seen;
                }
                match byte[0] {
                    0x03 => seen.push("^C".to_string()),
                    b'$' => buf.clear(),
                    b'#' => {
                        let mut sum = [0u8; 2];
                        stream.read_exact(&mut sum).unwrap();
                        stream.write_all(b"+").unwrap();
                        let packet = String::from_utf8(std::mem::take(&mut buf)).unwrap();
                        seen.push(packet.clone());
                        match packet.as_bytes()[0] {
                            b'Q' => reply(&mut stream, ""),
                            b'Z' | b'z' => reply(&mut stream, "OK"),
                            b'g' => {
                                let mut registers = [0u32; 33];
                                registers[REG_PC] = pc;
                                let hex: String =
                                    registers.iter().map(|r| format!("{:08x}", r.swap_bytes())).collect();
                                reply(&mut stream, &hex);
                            }
                            b's' => {
                                pc += 2;
                                reply(&mut stream, "T05thread:01;");
                            }
                            b'c' => {
                                if let Some(next) = hits.pop() {
                                    pc = next;
                                    reply(&mut stream, "T05thread:01;");
                                }
                            }
                            _ => reply(&mut stream, ""),
                        }
                        if seen.len() == setup {
                            hits = start.recv().unwrap();
                            hits.reverse();
                            pc = hits.pop().unwrap();
                            reply(&mut stream, "T05thread:01;");
                        }
                    }
                    b'+' | b'-' => {}
                    other => buf.push(other),
                }
            }
        })
    }

    /// Defect: arming a cut (and every watchdog look at mtime) interrupted the running target
    /// through the gdbstub. QEMU drops the interrupt byte when it crosses a stop reply, and an
    /// order that failed after the interrupt left the target halted: under load a cut at flash
    /// op N armed after an update's reboot never struck, and the next call got no answer. The
    /// breakpoints now stay in from power-on, an order only changes the count, and the target is
    /// never interrupted.
    #[test]
    fn a_cut_armed_while_the_target_runs_strikes_at_op_n_without_interrupting_it() {
        use std::io::Read;
        const OP: u32 = 0x8000_1000;
        const MARKER: u32 = 0x8000_2000;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (go, start) = mpsc::channel();
        // QStartNoAckMode and the two breakpoints, then the target runs.
        let stub = fake_stub(theirs, 3, start);
        let gdb = Gdb::on(ours, Duration::from_secs(30)).unwrap();
        let mut child = Command::new("sleep").arg("600").stdout(Stdio::piped()).spawn().unwrap();
        let mut child_out = child.stdout.take().unwrap();
        let child = Arc::new(Mutex::new(child));
        let struck = Arc::new(Mutex::new(Struck::default()));
        let mut debugger =
            Debugger::on(gdb, child.clone(), vec![OP], vec![MARKER], struck.clone(), None).unwrap();

        let plan = Plan { hit: 2, phase: None, how: "at flash op 2".into() };
        assert!(matches!(debugger.ask(Order::Arm(plan)), Ok(Answer::Done)));
        // Two phase markers and two operations are stepped over, the third operation strikes.
        go.send(vec![MARKER, OP, OP, MARKER, OP, OP]).unwrap();
        let mut rest = Vec::new();
        let _ = child_out.read_to_end(&mut rest); // ends when the power goes
        assert_eq!(struck.lock().unwrap().how.as_deref(), Some("at flash op 2"));
        let status = child.lock().unwrap().wait().unwrap();
        assert!(!status.success(), "QEMU was killed: {status:?}");
        drop(debugger);
        let seen = stub.join().unwrap();
        assert!(!seen.iter().any(|p| p == "^C"), "the target was interrupted: {seen:?}");
        let steps = seen.iter().filter(|p| *p == "s").count();
        assert_eq!(steps, 4, "two markers and two operations stepped over: {seen:?}");
        assert_eq!(seen.iter().filter(|p| p.starts_with("Z0")).count(), 2 + 4, "{seen:?}");
    }

    /// Defect: a kick line read by an ordinary call (not by the watchdog's own look) did not
    /// count, so a healthy firmware that kicked between two looks was taken for a hung one and
    /// reset in the middle of a scenario.
    #[test]
    fn a_kick_read_by_any_call_restarts_the_watchdogs_count() {
        let mut dog = Watchdog::new(1);
        assert_eq!(dog.sample(100), None, "the first look only starts counting");
        dog.kicked();
        assert_eq!(dog.sample(50_000), None, "a kick since the last look: counting starts over");
        assert_eq!(dog.sample(55_000), None, "5 000 ticks are under the 10 000 of 1 ms");
        assert_eq!(dog.sample(60_000), Some(10_000), "the budget ran out without a kick");
        assert_eq!(dog.sample(60_001), None, "after the reset counting starts over");
        assert_eq!(dog.sample(10), None, "mtime restarted with the reset: starts over");
    }

    #[test]
    fn the_clock_word_is_the_ports() {
        // firmware-under-test/qemu-virt/src/clock.rs: magic 0xc10c in bits 48..64, frozen in 47.
        assert_eq!(clock_word(0, false), 0xc10c_0000_0000_0000);
        assert_eq!(clock_word(5_000, true), 0xc10c_8000_0000_1388);
    }

    #[test]
    fn qemu_starts_held_at_reset_with_pty_sockets_icount_flash_and_the_clock_word() {
        let config = QemuConfig::default();
        let args = qemu_args(&config, Path::new("/t/flash.img"), Path::new("/t/b"), clock_word(7, true));
        assert_eq!(
            args.join(" "),
            "-machine virt -display none -bios none -monitor none -S -serial pty -icount shift=0,sleep=off \
             -drive if=pflash,unit=0,format=raw,file=/t/flash.img \
             -device loader,addr=0x87ffff00,data=0xc10c800000000007,data-len=8 \
             -qmp unix:/t/b/qmp,server=on,wait=off -gdb unix:/t/b/gdb,server=on,wait=off"
        );
    }

    fn elf_files(fw_entry_offset: u32) -> (PathBuf, PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("hil-qemu-images-{}-{fw_entry_offset}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let symbols = [
            ("ota_flash_program", 0x8700_0100),
            ("ota_flash_erase", 0x8700_0200),
            ("ota_phase_marker", 0x8700_0300),
        ];
        let boot = build(0x2000_0000, &[(0x2000_0000, &[0x13; 64])], &symbols);
        let fw_symbols = [("ota_flash_program", 0x8000_1000), ("ota_flash_erase", 0x8000_1100)];
        let fw = build(
            0x8000_0000 + fw_entry_offset,
            &[(0x8000_0000, &[0u8; 0x100]), (0x8000_0100, &[0x13; 32])],
            &fw_symbols,
        );
        let (b, f) = (dir.join("boot"), dir.join("fw"));
        std::fs::write(&b, boot).unwrap();
        std::fs::write(&f, fw).unwrap();
        (dir, b, f)
    }

    #[test]
    fn images_come_flattened_with_both_binaries_breakpoints() {
        let (dir, boot, fw) = elf_files(0x100);
        let images = Images::load(&boot, &fw).unwrap();
        assert_eq!((images.boot_loader.base, images.boot_loader.bytes.len()), (0x2000_0000, 64));
        assert_eq!((images.firmware.base, images.firmware.bytes.len()), (0x8000_0000, 0x120));
        assert_eq!(images.op_addresses, [0x8700_0100, 0x8700_0200, 0x8000_1000, 0x8000_1100]);
        assert_eq!(images.phase_addresses, [0x8700_0300]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_firmware_whose_entry_is_not_after_its_descriptor_is_refused() {
        let (dir, boot, fw) = elf_files(0x40);
        let e = Images::load(&boot, &fw).unwrap_err();
        assert!(
            e.message.ends_with("has its entry point at 0x80000040, not at its lowest load address 0x80000000 + 0x100 (after the app descriptor); the runner refuses to build slot images from it"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The factory image: erased, the boot loader at 0, a committed boot state naming slot 0,
    /// whose image verifies, and the rest of the 32 MiB erased.
    #[test]
    fn the_factory_image_holds_the_boot_loader_and_a_provisioned_slot_0() {
        let mut app = vec![0x13u8; 0x2000];
        ota_app::image::write_header(&mut app, "1.0.0", ota_app::image::Behaviour::Healthy).unwrap();
        let bundle = ota_bundle::Bundle::new("fw", "esp32c3").version("1.0.0").app(app.clone()).build();
        let image = factory_image(&[0xAA; 100], "esp32c3", &bundle).unwrap();
        assert_eq!(image.len(), FLASH_FILE_BYTES);
        assert_eq!(&image[..100], &[0xAA; 100][..]);
        assert!(image[100..0xb000].iter().all(|&b| b == 0xFF));
        let layout = partitions::layout();
        let at = layout.app[0].offset as usize;
        assert_eq!(&image[at..at + app.len()], &app[..]);
        let mut copy = image[..partitions::FLASH_BYTES as usize].to_vec();
        let mut flash = ota_core::flash::RamFlash::<4, 4096>::with_contents(&mut copy);
        let state = ota_core::log::read(&mut flash, &layout).unwrap().expect("a boot state");
        assert_eq!(state.record.state.active, ota_core::layout::Slot::S0);
        assert!(state.record.state.committed);
        assert!(image[partitions::FLASH_BYTES as usize..].iter().all(|&b| b == 0xFF));
        assert_eq!(
            factory_image(&[0; 0x8001], "esp32c3", &bundle).unwrap_err(),
            "the boot loader is 32769 bytes, more than the 32768 its partition holds"
        );
    }
}
