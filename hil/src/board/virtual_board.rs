//! The virtual board: the `virtual-board` process (`firmware-under-test/`), the device
//! application on the host with its flash in a file, its UART on a pty and HTTP on loopback. The
//! runner drives it over the same transports a real board has.
//!
//! | verb          | what the runner does |
//! |---------------|----------------------|
//! | `start_trial` | a fresh (absent, so erased) flash file; the device is off |
//! | `provision`   | `virtual-board --provision BUNDLE --serial none --http none` until `ready`, then SIGKILL |
//! | `power_on`    | spawns the process on the flash file, reads stdout to `ready` (`serial=`, `http=`), opens the pty |
//! | `power_cut`   | SIGKILL, and waits for the process to end |
//! | `reboot`      | `Sys.Reboot`, then the `reboot:` line and an answer; a hung or bricked device is power-cycled |
//! | `wait(ms)`    | `Board.Clock {advance_ms}`: the device's clock, frozen while the runner drives it, moves by exactly `ms`, and everything that falls due on the way runs at its time before the call returns |
//! | `push` rpc    | `OTA.Status`, `OTA.Begin`, `OTA.Write`s, `OTA.End` over the pty ([`rpc_client::ota_push`]) |
//! | `push` http   | `POST /update`, multipart: the bundle as a file part, then `commit_timeout` |
//! | `push` pull   | serves the bundle from a loopback HTTP server of its own, then `OTA.Update {url}` |
//! | status, files | `Sys.GetInfo`, `OTA.GetBootState`, `FS.Get`, `FS.Put` |
//!
//! The runner starts the process with its clock frozen (`--clock-frozen`, `--clock-start-ms`
//! carrying the device time across power cycles), so nothing falls due while the runner checks:
//! the result of a scenario never depends on how fast the host is. After an applied update the
//! runner advances the clock past the reboot delay, waits for the `reboot:` line and for the
//! device to answer again, so the next step meets the new image (or what the boot loader chose
//! instead).
//!
//! Cuts: at a fraction of an upload the runner sends that fraction, then SIGKILLs the process
//! (over RPC every write sent was acknowledged; over HTTP and pull the runner waits for the
//! device's `OTA.Status` to settle, so a few bytes more or less may have reached the flash). At
//! a flash operation of a step (`Board.CutAtOp`) or at a named phase (`Board.CutAtPhase`, armed
//! on the phase marker the application emits), the board's flash dies in that operation, leaving
//! a torn write in the flash file. Sweeps are not offered.
//!
//! Device time on the timeline is the device's own: every event comes as an `@ota` JSON line on
//! the process's stderr, stamped with device milliseconds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::device::{self, Log, lock};
use super::http_push;
use super::{
    Activity, Board, BoardError, BoardInfo, BoardResult, BootStateView, Capabilities, PushRequest,
    PushResult, Refusal, Status,
};
use crate::board::config::VirtualConfig;
use crate::result::EventKind;
use crate::rpc_client::{self, Client, OtaOutcome, OtaPush, RpcErr, TransportError};
use crate::scenario::model::{Cut, CutWhen, Transport};
use ota_app::Stamped;
use ota_app::app::REBOOT_DELAY_MS;

/// The executable's name, next to `hil` or on `PATH`.
pub const BINARY: &str = "virtual-board";
/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
use super::http_push::{BundleServer, TRANSFER_TIMEOUT, http_upload_prefix};
/// `OTA.Begin {timeout}`, as `mos ota` sends it.
const UPDATE_TIMEOUT_S: u32 = 600;
/// Console lines quoted in an error about the process.
const TAIL_LINES: usize = 8;
/// How long the runner waits for the event that explains why no firmware answers.
const LIFE_EVENT_WAIT: Duration = Duration::from_secs(2);
/// The message a push gets when `OTA.Status` says an update runs, as `mos ota` words it.
const BUSY: &str = "update is already in progress";

/// Whether a process gets its pty and HTTP port (power on) or none (provisioning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wiring {
    Channels,
    Headless,
}

/// The running process and its channels.
struct Process {
    child: Child,
    /// Held so the process's stdin stays open (it never reads it).
    _stdin: Option<ChildStdin>,
    /// stdout lines after `ready`: `reboot: <why>`.
    stdout: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    serial: Option<Client>,
    serial_path: String,
    http_addr: String,
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

pub struct VirtualBoard {
    info: BoardInfo,
    capabilities: Capabilities,
    config: VirtualConfig,
    binary: Option<PathBuf>,
    flash: Option<FlashFile>,
    process: Option<Process>,
    armed: Option<Cut>,
    log: Arc<Mutex<Log>>,
    /// When the current step's timeout runs out; every wait ends by then.
    step_deadline: Option<Instant>,
    /// `--conf9` at every power-on (a fleet's MQTT settings, `board/fleet.rs`).
    conf9: Option<PathBuf>,
}

impl VirtualBoard {
    pub fn new(name: &str, platform: &str, config: VirtualConfig) -> VirtualBoard {
        let info = BoardInfo {
            name: name.into(),
            kind: "virtual".into(),
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
            cut_at_every_op: false,
            sweep: false,
            virtual_time: false,
            no_power_cut: None,
        };
        let log = Log::default();
        VirtualBoard {
            info,
            capabilities,
            config,
            binary: None,
            flash: None,
            process: None,
            armed: None,
            log: Arc::new(Mutex::new(log)),
            step_deadline: None,
            conf9: None,
        }
    }

    /// A `conf9.json` the device is given at every power-on (`virtual-board --conf9`).
    pub(crate) fn set_conf9(&mut self, path: Option<PathBuf>) {
        self.conf9 = path;
    }

    /// Whether the process runs (the device has power).
    pub(crate) fn is_on(&self) -> bool {
        self.process.is_some()
    }

    /// After the device said it applied an update it pulled by itself: lets the reboot delay
    /// pass, and waits for the reboot and for the device to answer again.
    pub(crate) fn await_update_reboot(&mut self, after: &str) -> BoardResult<()> {
        self.forget_lines();
        self.await_reboot(after)
    }

    /// When the current step's timeout runs out.
    pub(crate) fn step_deadline(&self) -> Option<Instant> {
        self.step_deadline
    }

    fn startup_timeout(&self) -> Duration {
        self.capped(Duration::from_millis(self.config.startup_timeout_ms))
    }

    /// `wanted`, cut short by the step's timeout (the scenario's `timeout`) when that ends first.
    fn capped(&self, wanted: Duration) -> Duration {
        match self.step_deadline {
            Some(deadline) => wanted.min(deadline.saturating_duration_since(Instant::now())),
            None => wanted,
        }
    }

    fn flash_path(&self) -> BoardResult<PathBuf> {
        self.flash
            .as_ref()
            .map(|f| f.path.clone())
            .ok_or_else(|| BoardError::new("no trial started on the virtual board"))
    }

    fn note(&self, kind: EventKind) {
        lock(&self.log).event(kind);
    }

    fn hil_line(&self, text: &str) {
        lock(&self.log).console(format!("hil: {text}"));
    }

    /// The last console lines, for an error about the process.
    fn tail(&self) -> String {
        let log = lock(&self.log);
        let start = log.console.len().saturating_sub(TAIL_LINES);
        let lines: Vec<&str> = log.console[start..].iter().map(String::as_str).collect();
        if lines.is_empty() { "(it printed nothing)".into() } else { lines.join("\n    ") }
    }

    // ---- The process ----

    /// Starts `virtual-board` on the trial's flash and reads its stdout to `ready`.
    fn spawn(&mut self, extra: &[String], wiring: Wiring) -> BoardResult<Process> {
        let binary =
            self.binary.clone().ok_or_else(|| BoardError::new("no trial started on the virtual board"))?;
        let flash = self.flash_path()?;
        let mut command = Command::new(&binary);
        command
            .arg("--flash")
            .arg(&flash)
            .args(["--platform", &self.info.platform])
            .args(["--app-slot-kib", &(self.config.app_slot_bytes / 1024).to_string()])
            .args(["--fs-slot-kib", &(self.config.fs_slot_bytes / 1024).to_string()])
            .args(["--time-scale", &self.config.time_scale.to_string()])
            .args(["--clock-frozen", "--clock-start-ms", &lock(&self.log).device_ms.to_string()])
            .args(extra);
        match wiring {
            Wiring::Channels => command.args(["--serial", "pty", "--http", &self.config.http]),
            Wiring::Headless => command.args(["--serial", "none", "--http", "none"]),
        };
        // Only a powered-on device joins the broker: provisioning must not start a shadow pull.
        if let (Some(conf9), Wiring::Channels) = (&self.conf9, wiring) {
            command.arg("--conf9").arg(conf9);
        }
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            BoardError::new(format!("cannot start {}: {e}", binary.display()))
                .help("build it with `cargo build -p ota-firmware --bin virtual-board`, or set `binary` in the board file's [virtual] table")
        })?;
        // A new process says for itself whether a firmware runs.
        lock(&self.log).life = None;
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        let log = self.log.clone();
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }),
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut log = lock(&log);
                    if let Some(stamped) = Stamped::from_console_line(&line) {
                        log.device_event(stamped);
                    }
                    log.console(line);
                }
            }),
        ];
        let stdin = child.stdin.take();
        let mut process = Process {
            child,
            _stdin: stdin,
            stdout,
            readers,
            serial: None,
            serial_path: String::new(),
            http_addr: String::new(),
        };
        if let Err(e) = self.read_ready(&mut process) {
            self.stop(process);
            return Err(e);
        }
        Ok(process)
    }

    /// Reads stdout up to `ready`, keeping the `serial=` and `http=` lines.
    fn read_ready(&mut self, process: &mut Process) -> BoardResult<()> {
        let timeout = self.startup_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match process.stdout.recv_timeout(left) {
                Ok(line) if line == "ready" => return Ok(()),
                Ok(line) => {
                    if let Some(path) = line.strip_prefix("serial=") {
                        process.serial_path = path.to_string();
                    } else if let Some(addr) = line.strip_prefix("http=") {
                        process.http_addr = addr.to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BoardError::new(format!(
                        "virtual-board printed no `ready` line within {:.1} s (still waiting for it); its console:\n    {}",
                        timeout.as_secs_f64(),
                        self.tail()
                    ))
                    .help("raise `startup_timeout` in the board file's [virtual] table if the machine is slow"));
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.died(process, "before it was ready")),
            }
        }
    }

    /// An error for a process that ended on its own.
    fn died(&self, process: &mut Process, when: &str) -> BoardError {
        // The line closes as the process exits; give it a moment to be reaped, but never wait on
        // a process that is still alive.
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match process.child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = process.child.kill();
                    break "no exit status: it stopped answering and was killed".to_string();
                }
            }
        };
        let _ = process.child.wait();
        // The stderr reader may still be moving the last lines into the console.
        settle_readers(process, Duration::from_secs(1));
        BoardError::new(format!("virtual-board exited ({status}) {when}; its console:\n    {}", self.tail()))
            .help("see the trial's console.txt; run virtual-board by hand with the same arguments to reproduce it")
    }

    /// SIGKILL, and waits for the process (and briefly for its readers) to end.
    fn stop(&mut self, mut process: Process) {
        drop(process.serial.take());
        let _ = process.child.kill();
        let _ = process.child.wait();
        settle_readers(&mut process, Duration::from_millis(200));
    }

    /// Whether the process has ended (or ends within a moment: it may be exiting as we ask).
    fn exited(&mut self) -> bool {
        let Some(process) = self.process.as_mut() else { return true };
        for _ in 0..20 {
            if !matches!(process.child.try_wait(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn process(&mut self) -> BoardResult<&mut Process> {
        self.process.as_mut().ok_or_else(|| BoardError::new("the virtual board is off"))
    }

    /// Opens the process's pty.
    fn connect(&mut self) -> BoardResult<()> {
        let process = self.process()?;
        let path = process.serial_path.clone();
        if path.is_empty() {
            return Err(BoardError::new("virtual-board printed no `serial=` line before `ready`")
                .help("the runner needs its serial line: check that the binary matches firmware-under-test/README.md"));
        }
        let client = Client::open(&path).map_err(|e| BoardError::new(e.to_string()).help(e.help()))?;
        self.process()?.serial = Some(client);
        Ok(())
    }

    /// A transport failure as a board error; a line that closed means the process died.
    fn transport(&mut self, error: TransportError, doing: &str) -> BoardError {
        let Some(mut process) = self.process.take() else {
            return BoardError::new(format!("{doing}: {error}"));
        };
        let exited = matches!(process.child.try_wait(), Ok(Some(_)));
        if exited || matches!(error, TransportError::Closed { .. }) {
            let e = self.died(&mut process, &format!("while the runner was {doing}"));
            self.stop(process);
            return e;
        }
        self.process = Some(process);
        BoardError::new(format!("{doing}: {error}")).help(error.help())
    }

    fn call_timeout(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> BoardResult<Result<Value, RpcErr>> {
        let timeout = self.capped(timeout);
        let process = self.process()?;
        let client = process
            .serial
            .as_mut()
            .ok_or_else(|| BoardError::new("the virtual board's serial line is not open"))?;
        match client.call_timeout(method, params, timeout) {
            Ok(answer) => Ok(answer),
            Err(e) => Err(self.transport(e, &format!("calling {method}"))),
        }
    }

    fn call(&mut self, method: &str, params: Value) -> BoardResult<Result<Value, RpcErr>> {
        self.call_timeout(method, params, CALL_TIMEOUT)
    }

    /// Drops stdout lines already read (earlier reboots), so the next wait sees new ones only.
    fn forget_lines(&mut self) {
        if let Some(process) = self.process.as_mut() {
            while process.stdout.try_recv().is_ok() {}
        }
    }

    /// Lets `ms` of device time pass on the device's frozen clock; everything due on the way
    /// runs before this returns.
    fn advance(&mut self, ms: u64) -> BoardResult<()> {
        let timeout = self.startup_timeout();
        match self.call_timeout("Board.Clock", json!({ "advance_ms": ms }), timeout)? {
            Ok(reply) => {
                let now = reply.get("now_ms").and_then(Value::as_u64).unwrap_or_default();
                let mut log = lock(&self.log);
                log.device_ms = log.device_ms.max(now);
                Ok(())
            }
            Err(e) => Err(BoardError::new(format!("Board.Clock refused to advance {ms} ms: {}", e.message))),
        }
    }

    /// Waits for the process's next `reboot:` line, then for the device to answer again. The
    /// clock moves past the reboot delay first, as it would on a running device.
    fn await_reboot(&mut self, after: &str) -> BoardResult<()> {
        self.advance(REBOOT_DELAY_MS)?;
        let timeout = self.startup_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let process = self.process()?;
            match process.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with("reboot:") => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BoardError::new(format!(
                        "no `reboot:` line within {:.1} s after {after} (still waiting for the reboot)",
                        timeout.as_secs_f64()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let mut process = self.process.take().expect("checked above");
                    let e = self.died(&mut process, &format!("after {after}, before it rebooted"));
                    self.stop(process);
                    return Err(e);
                }
            }
        }
        self.await_answer(&format!("the reboot after {after}"))
    }

    /// Waits for the device to answer a call: it holds calls while it reboots, and a hung or
    /// bricked device answers with an error, which counts.
    fn await_answer(&mut self, after: &str) -> BoardResult<()> {
        let timeout = self.startup_timeout();
        self.call_timeout("Sys.GetInfo", Value::Null, timeout).map(|_| ()).map_err(|e| BoardError {
            message: format!("{} (waiting for the device to answer after {after})", e.message),
            help: e.help,
        })
    }

    // ---- Pushes ----

    fn push_rpc(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        let push = OtaPush {
            bundle: request.bundle,
            commit_timeout_s: request.commit_timeout_s,
            update_timeout_s: UPDATE_TIMEOUT_S,
            chunk_bytes: request.chunk_bytes,
            ignore_same_version: request.ignore_same_version,
            stop_after_bytes: cut_after,
        };
        self.forget_lines();
        let process = self.process()?;
        let client = process
            .serial
            .as_mut()
            .ok_or_else(|| BoardError::new("the virtual board's serial line is not open"))?;
        let outcome = match rpc_client::ota_push(client, &push, &mut |_| {}) {
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

    fn push_http(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        self.forget_lines();
        let addr = self.process()?.http_addr.clone();
        if addr.is_empty() {
            return Err(BoardError::new("virtual-board printed no `http=` line before `ready`"));
        }
        if let Some(keep) = cut_after {
            let _stream = http_upload_prefix(&addr, request, keep).map_err(|e| {
                BoardError::new(format!("POST http://{addr}/update: {e}"))
                    .help("check that the device's HTTP server runs")
            })?;
            self.settle()?;
            self.cut(&format!("after {keep} of {} bytes were sent", request.bundle.len()));
            return Ok(PushResult::PowerLost);
        }
        let url = format!("http://{addr}/update");
        let (status, body) = match http_push::post_update(&addr, request) {
            Ok(answer) => answer,
            Err(e) if self.exited() => {
                return Err(self.transport(
                    TransportError::Closed { port: format!("{url} ({e})") },
                    "pushing over HTTP",
                ));
            }
            Err(e) => {
                return Err(BoardError::new(format!("POST {url}: {e}"))
                    .help("the device's HTTP server broke off the upload; see the trial's console"));
            }
        };
        match http_push::update_answer(status, &body) {
            Ok(message) => self.finished(&message, "POST /update"),
            Err(message) => Ok(PushResult::Refused { message }),
        }
    }

    fn push_pull(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        self.forget_lines();
        let server = BundleServer::start(request.bundle.to_vec(), cut_after)
            .map_err(|e| BoardError::new(format!("cannot serve the bundle on loopback: {e}")))?;
        let params = http_push::pull_params(&server.url(), request);
        if let Some(keep) = cut_after {
            // The reply would come when the pull ends, which it never does: send, do not wait.
            let sent = match self.process()?.serial.as_mut() {
                Some(Client::Serial(serial)) => serial.send("OTA.Update", params),
                _ => return Err(BoardError::new("the virtual board's serial line is not open")),
            };
            if let Err(e) = sent {
                return Err(self.transport(e, "asking for a pull"));
            }
            server.await_served(self.startup_timeout()).map_err(|what| {
                BoardError::new(format!("the device did not fetch the bundle (still waiting for {what})"))
            })?;
            self.settle()?;
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

    /// An update the device took: "Version is the same as current", or applied (then the
    /// device reboots into it).
    fn finished(&mut self, message: &str, call: &str) -> BoardResult<PushResult> {
        if message.contains("same as current") {
            return Ok(PushResult::UpToDate);
        }
        self.await_reboot(&format!("{call} answered {message:?}"))?;
        Ok(PushResult::Applied)
    }

    /// Lets an interrupted HTTP upload or pull settle before the cut ([`device::settle`]).
    fn settle(&mut self) -> BoardResult<()> {
        device::settle(|| Ok(self.call("OTA.Status", Value::Null)?.ok()))
    }

    /// Arms the armed cut on the device's flash, when it is one the device strikes itself (at
    /// an operation or a phase of the step); returns how it will strike.
    fn arm_on_device(&mut self) -> BoardResult<Option<String>> {
        let (method, params, how) = match self.armed.take() {
            Some(Cut::AtOp { op, when }) => {
                let when = match when {
                    CutWhen::Before => "before",
                    CutWhen::During => "during",
                    CutWhen::After => "after",
                };
                let how = format!("{when} flash op {op} of the step");
                ("Board.CutAtOp", json!({ "op": op, "when": when }), how)
            }
            Some(Cut::AtPhase(phase)) => {
                let how = format!("during the first flash op of the {} phase", phase.name());
                ("Board.CutAtPhase", json!({ "phase": phase.name() }), how)
            }
            other => {
                self.armed = other;
                return Ok(None);
            }
        };
        match self.call(method, params)? {
            Ok(_) => Ok(Some(how)),
            Err(e) => Err(BoardError::new(format!("{method} refused: {}", e.message))),
        }
    }

    /// After a step with a cut armed on the device: the process must have died in the armed
    /// operation, which is the power cut. A process still alive means the step never reached it.
    fn device_cut_struck<T>(&mut self, result: BoardResult<T>, how: &str) -> BoardResult<()> {
        if self.process.is_some() && !self.exited() {
            let what = match result {
                Ok(_) => "the step ended".to_string(),
                Err(e) => format!("the step failed: {}", e.message),
            };
            return Err(BoardError::new(format!("the power cut {how} never struck: {what}"))
                .help("the step has no such flash operation or phase on this board"));
        }
        if let Some(process) = self.process.take() {
            self.stop(process);
        }
        let how = format!("power cut {how}");
        self.hil_line(&how);
        self.note(EventKind::PowerCut { op: None, how });
        Ok(())
    }

    /// The armed cut strikes: SIGKILL.
    fn cut(&mut self, how: &str) {
        if let Some(process) = self.process.take() {
            self.stop(process);
        }
        let how = format!("power cut {how}");
        self.hil_line(&how);
        self.note(EventKind::PowerCut { op: None, how });
    }

    /// The running firmware, from `Sys.GetInfo`: what it runs, or how it fails to.
    fn activity(&mut self) -> BoardResult<Activity> {
        match self.call("Sys.GetInfo", Value::Null)? {
            Ok(info) => Ok(device::running(&info)),
            // No firmware answers: the device's own events say whether one hangs or nothing
            // boots. Its line may still be on its way from the process's stderr.
            Err(e) => {
                let deadline = Instant::now() + self.capped(LIFE_EVENT_WAIT);
                loop {
                    match lock(&self.log).life.clone() {
                        Some(ota_app::Event::Hung { slot }) => return Ok(Activity::Hung { slot }),
                        Some(ota_app::Event::Bricked { why }) => return Ok(Activity::Bricked { why }),
                        _ if Instant::now() >= deadline => break,
                        _ => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                Err(BoardError::new(format!(
                    "Sys.GetInfo failed: {e}, and the device reported no hang or brick (still waiting for a `hung` or `bricked` event)"
                )))
            }
        }
    }

    fn boot_state(&mut self) -> BoardResult<Option<BootStateView>> {
        let Ok(state) = self.call("OTA.GetBootState", Value::Null)? else { return Ok(None) };
        Ok(Some(device::boot_state_view(&state)))
    }
}

impl Drop for VirtualBoard {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            self.stop(process);
        }
    }
}

/// Waits up to `timeout` for the output readers to reach the end of the pipes (a process that
/// left a child holding them open would keep them waiting), then lets them go.
fn settle_readers(process: &mut Process, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while process.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    process.readers.clear();
}

/// Where the `virtual-board` executable is: the board file's `binary`, else next to the
/// running executable (or its parent folder, for `cargo test`'s `deps/`), else on `PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, BoardError> {
    if let Some(path) = configured {
        return if path.is_file() {
            // `Command` looks a bare name up on PATH; the board file meant this one.
            Ok(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
        } else {
            Err(BoardError::new(format!("the virtual board binary {} does not exist", path.display()))
                .help("build it with `cargo build -p ota-firmware --bin virtual-board`, or fix `binary` in the board file"))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.push(exe.with_file_name(BINARY));
        if let Some(parent) = exe.parent().and_then(Path::parent) {
            candidates.push(parent.join(BINARY));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(BINARY)));
    }
    candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
        BoardError::new(format!("no {BINARY} executable next to hil or on PATH"))
            .help("build it with `cargo build -p ota-firmware --bin virtual-board`, or set `binary` in the board file's [virtual] table")
    })
}

/// A fresh temporary flash file name for this process.
fn temporary_flash() -> PathBuf {
    static TRIALS: AtomicU64 = AtomicU64::new(0);
    let n = TRIALS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("hil-virtual-{}-{n}.flash", std::process::id()))
}

impl Board for VirtualBoard {
    fn info(&self) -> &BoardInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start_trial(&mut self, _seed: u64) -> BoardResult<()> {
        if let Some(process) = self.process.take() {
            self.stop(process);
        }
        self.armed = None;
        {
            let mut log = lock(&self.log);
            log.device_ms = 0;
            log.life = None;
            log.console.clear();
            log.events.clear();
        }
        self.binary = Some(find_binary(self.config.binary.as_deref())?);
        let flash = match &self.config.flash_file {
            Some(path) => FlashFile { path: path.clone(), temporary: false },
            None => FlashFile { path: temporary_flash(), temporary: true },
        };
        // The process creates an absent file erased: a blank device.
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
        if let Some(process) = self.process.take() {
            self.stop(process);
        }
        let file = FlashFile { path: self.flash_path()?.with_extension("provision.zip"), temporary: true };
        std::fs::write(&file.path, bundle)
            .map_err(|e| BoardError::new(format!("cannot write {}: {e}", file.path.display())))?;
        let args = ["--provision".to_string(), file.path.display().to_string()];
        let process = self
            .spawn(&args, Wiring::Headless)
            .map_err(|e| BoardError { message: format!("provisioning: {}", e.message), help: e.help })?;
        self.stop(process);
        self.note(EventKind::Note { text: "provisioned slot 0".into() });
        Ok(())
    }

    fn power_on(&mut self) -> BoardResult<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.note(EventKind::PowerOn);
        let process = self.spawn(&[], Wiring::Channels)?;
        self.process = Some(process);
        let connected = self.connect();
        if connected.is_err()
            && let Some(process) = self.process.take()
        {
            self.stop(process);
        }
        connected
    }

    fn power_cut(&mut self) -> BoardResult<()> {
        if self.process.is_some() {
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
        if self.process.is_none() {
            self.armed = None;
            return Ok(PushResult::PowerLost);
        }
        let device_cut = self.arm_on_device()?;
        let result = match request.transport {
            Transport::Rpc => self.push_rpc(request, cut_after),
            Transport::Http => self.push_http(request, cut_after),
            Transport::Pull => self.push_pull(request, cut_after),
        };
        match device_cut {
            Some(how) => self.device_cut_struck(result, &how).map(|_| PushResult::PowerLost),
            None => result,
        }
    }

    fn wait(&mut self, ms: u64) -> BoardResult<()> {
        if self.process.is_none() {
            let mut log = lock(&self.log);
            log.device_ms = log.device_ms.saturating_add(ms);
            return Ok(());
        }
        self.advance(ms)
    }

    fn commit(&mut self) -> BoardResult<Result<(), Refusal>> {
        if self.process.is_none() {
            return Ok(Err("the device is off".into()));
        }
        Ok(self.call("OTA.Commit", Value::Null)?.map(|_| ()).map_err(|e| e.message))
    }

    fn revert(&mut self) -> BoardResult<Result<(), Refusal>> {
        if self.process.is_none() {
            return Ok(Err("the device is off".into()));
        }
        self.forget_lines();
        if let Err(e) = self.call("OTA.Revert", Value::Null)? {
            return Ok(Err(e.message));
        }
        self.await_reboot("OTA.Revert")?;
        Ok(Ok(()))
    }

    fn reboot(&mut self) -> BoardResult<()> {
        if self.process.is_none() {
            return Ok(());
        }
        self.forget_lines();
        match self.call("Sys.Reboot", json!({ "delay_ms": 0 }))? {
            Ok(_) => self.await_reboot("Sys.Reboot"),
            Err(e) => {
                // A hung or bricked firmware cannot reboot itself: press reset (a power cycle).
                self.hil_line(&format!("Sys.Reboot refused ({}); resetting by a power cycle", e.message));
                if let Some(process) = self.process.take() {
                    self.stop(process);
                }
                self.power_on()
            }
        }
    }

    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>> {
        if self.process.is_none() {
            return Ok(Err("the device is off".into()));
        }
        device::create_snapshot(
            &mut |method, params| self.call(method, params),
            set_as_revert,
            commit_timeout_s,
        )
    }

    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
        if self.process.is_none() {
            return Ok(Err("the device is off".into()));
        }
        device::put_file(&mut |method, params| self.call(method, params), name, content)
    }

    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
        if self.process.is_none() {
            return Ok(Err("the device is off".into()));
        }
        device::get_file(&mut |method, params| self.call(method, params), name)
    }

    fn status(&mut self) -> BoardResult<Status> {
        if self.process.is_none() {
            return Ok(Status { activity: Activity::Off, boot_state: None });
        }
        let activity = self.activity()?;
        let boot_state = self.boot_state()?;
        Ok(Status { activity, boot_state })
    }

    fn device_ms(&self) -> u64 {
        lock(&self.log).now_ms()
    }

    fn drain_events(&mut self) -> Vec<(u64, EventKind)> {
        std::mem::take(&mut lock(&self.log).events)
    }

    fn step_timeout(&mut self, timeout: Duration) {
        self.step_deadline = Some(Instant::now() + timeout);
    }

    fn drain_console(&mut self) -> Vec<String> {
        std::mem::take(&mut lock(&self.log).console)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device's typed event lines become timeline events at their device time; other lines
    /// are console text only.
    #[test]
    fn device_event_lines_become_timeline_events_at_device_time() {
        let mut log = Log::default();
        for line in [
            r#"@ota {"ms":12,"ops":3,"event":"boot","slot":1,"reason":{"kind":"trial"}}"#,
            r#"@ota {"ms":40,"event":"update_applied","slot":1}"#,
            r#"[       50 ms] boot slot 0 (Trial)"#,
            r#"@ota {"ms":70,"event":"merged","copied":2,"kept_new":1}"#,
            r#"@ota {"ms":75,"event":"phase","phase":"commit"}"#,
        ] {
            if let Some(stamped) = Stamped::from_console_line(line) {
                log.device_event(stamped);
            }
        }
        let seen: Vec<String> = log.events.iter().map(|(ms, e)| format!("{ms} {e:?}")).collect();
        assert_eq!(
            seen,
            [
                "12 Boot { slot: 1, reason: \"Trial\" }",
                "40 UpdateApplied { slot: 1 }",
                "70 Merge { copied: 2 }",
            ]
        );
        assert_eq!(log.device_ms, 75, "the device's time is the last stamp seen");
    }
}
