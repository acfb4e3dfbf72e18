//! A real ESP32-C3 on a USB cable, as `boards/esp32c3.toml` describes it.
//!
//! | verb          | what the runner does |
//! |---------------|----------------------|
//! | `start_trial` | finds the serial port (a board that is not attached stops the run: `hil run` checks first, see [`attached`]); builds the images from the ELF once; switches the power off when it can |
//! | `provision`   | the factory image (`esp32c3::image::factory_image`, the board file's Wi-Fi in `conf9.json`), all 4 MiB written by the flasher: every trial starts from the same flash |
//! | `power_on`    | the power command `on`, else a reset (RTS/DTR, the probe or the reset command); then waits for `Sys.GetInfo` |
//! | `power_cut`   | the power command `off`; a board without one cannot, and scenarios that need it are skipped |
//! | `wait(ms)`    | real time passes: a real board's clock is the wall clock |
//! | `push` rpc    | `OTA.Begin`/`Write`/`End` over the serial port |
//! | `push` http   | `POST /update` to the board file's `address` over Wi-Fi (or the one the firmware printed as `http=…`) |
//! | status, files | `Sys.GetInfo`, `OTA.GetBootState`, `FS.Get`, `FS.Put` |
//!
//! **Cuts.** At a fraction of an upload the runner stops sending and runs the power command
//! `off`. At flash operation N (hil built with the `probe-rs` feature) a probe-rs session puts
//! hardware breakpoints on the firmware's `ota_flash_program` and `ota_flash_erase`, counts the
//! hits, and at hit N runs `off` while the core is halted before the operation, so the flash is
//! cut exactly there, as the QEMU board's gdbstub cut is.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::device::{self, Log};
use super::{
    Activity, Board, BoardError, BoardInfo, BoardResult, Capabilities, PushRequest, PushResult, Refusal,
    Status,
};
use crate::board::config::{Address, Esp32c3Config, Flasher, Reset, WifiPass};
use crate::esp32c3::{self, image};
use crate::result::EventKind;
use crate::rpc_client::{self, Client, OtaOutcome, OtaPush, RpcErr};
use crate::scenario::model::{Cut, Transport};
use ota_app::partitions;

/// The flash driver's entry points the firmware exports (`#[no_mangle]`), as the QEMU port does.
#[cfg(feature = "probe-rs")]
const OP_SYMBOLS: [&str; 2] = ["ota_flash_program", "ota_flash_erase"];
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const UPDATE_TIMEOUT_S: u32 = 600;
/// How often the runner tries the port again while the board starts (the USB-Serial-JTAG port
/// disappears for a moment at every reset).
const RETRY: Duration = Duration::from_millis(200);

/// Whether the board a board file describes is attached: its serial port, found. `hil run`
/// asks before it runs anything, so a missing board is one line and exit 2, never a failed
/// trial.
pub fn attached(config: &Esp32c3Config) -> Result<PathBuf, String> {
    esp32c3::port::locate(&config.port)
}

/// Why a board cannot cut its power, when it cannot.
pub fn no_power_cut(config: &Esp32c3Config) -> Option<String> {
    config.power.is_none().then(|| {
        "it has no power control ([esp32c3.power] with `on` and `off` commands, for a relay or uhubctl)"
            .into()
    })
}

pub struct Esp32c3Board {
    info: BoardInfo,
    capabilities: Capabilities,
    config: Esp32c3Config,
    built: Option<image::Built>,
    port: Option<PathBuf>,
    client: Option<Client>,
    on: bool,
    armed: Option<Cut>,
    log: Log,
    started: Instant,
    step_deadline: Option<Instant>,
    /// The HTTP address the firmware printed (`http=…`), for `address = "console"`.
    http_seen: Option<String>,
}

impl Esp32c3Board {
    pub fn new(name: &str, platform: &str, config: Esp32c3Config) -> Esp32c3Board {
        let layout = partitions::layout();
        let info = BoardInfo {
            name: name.into(),
            kind: "esp32c3".into(),
            platform: platform.into(),
            app_slot_bytes: layout.app[0].size_bytes,
            fs_slot_bytes: layout.fs[0].size_bytes,
            app_image: None,
        };
        let power = config.power.is_some();
        let capabilities = Capabilities {
            transports: match config.address {
                Address::None => vec![Transport::Rpc],
                Address::Fixed(_) | Address::Console => vec![Transport::Rpc, Transport::Http],
            },
            cut_at_op: power && cfg!(feature = "probe-rs"),
            cut_at_fraction: power,
            cut_at_phase: false,
            cut_at_every_op: false,
            sweep: false,
            virtual_time: false,
            no_power_cut: no_power_cut(&config),
        };
        Esp32c3Board {
            info,
            capabilities,
            config,
            built: None,
            port: None,
            client: None,
            on: false,
            armed: None,
            log: Log::default(),
            started: Instant::now(),
            step_deadline: None,
            http_seen: None,
        }
    }

    fn port(&self) -> BoardResult<PathBuf> {
        self.port.clone().ok_or_else(|| BoardError::new("no trial started on the ESP32-C3 board"))
    }

    fn built(&mut self) -> BoardResult<&image::Built> {
        if self.built.is_none() {
            let path = esp32c3::elf_path(Some(&self.config));
            let elf = image::read_elf(&path).map_err(|e| BoardError::new(e).help(esp32c3::BUILD_ELF))?;
            let built =
                image::build(&elf).map_err(|e| BoardError::new(format!("{}: {e}", path.display())))?;
            self.info.app_image = Some(std::sync::Arc::new(built.app.clone()));
            self.built = Some(built);
        }
        Ok(self.built.as_ref().expect("built above"))
    }

    fn note(&mut self, kind: EventKind) {
        self.log.device_ms = self.started.elapsed().as_millis() as u64;
        self.log.event(kind);
    }

    fn hil_line(&mut self, text: &str) {
        self.log.console(format!("[hil] {text}"));
    }

    /// Runs one of the board file's shell commands.
    fn shell(&mut self, what: &str, command: &str) -> BoardResult<()> {
        self.hil_line(&format!("{what}: {command}"));
        let status = Command::new("sh").arg("-c").arg(command).status();
        match status {
            Ok(s) if s.success() => Ok(()),
            other => Err(BoardError::new(format!("the {what} command `{command}` failed ({other:?})"))
                .help("check the command by hand; the board file's [esp32c3.power] and reset_command run through sh -c")),
        }
    }

    fn reset(&mut self) -> BoardResult<()> {
        self.client = None;
        match self.config.reset.clone() {
            Reset::RtsDtr => {
                let port = self.port()?;
                self.hil_line(&format!("reset through RTS/DTR on {}", port.display()));
                esp32c3::flash::reset(&port).map_err(BoardError::new)
            }
            Reset::Command(command) => self.shell("reset", &command),
            Reset::Probe => probe_reset(&self.config),
        }
    }

    /// Opens the port and waits until the firmware answers `Sys.GetInfo`.
    fn connect(&mut self) -> BoardResult<()> {
        let port = self.port()?;
        let timeout = self.capped(Duration::from_millis(self.config.startup_timeout_ms));
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut client = match Client::open(&port.to_string_lossy()) {
                Ok(client) => client,
                Err(e) => {
                    last = e.to_string();
                    std::thread::sleep(RETRY);
                    continue;
                }
            };
            let left = deadline.saturating_duration_since(Instant::now()).max(RETRY);
            let answer = client.call_timeout("Sys.GetInfo", Value::Null, left.min(CALL_TIMEOUT));
            self.take_console(&mut client);
            match answer {
                Ok(_) => {
                    self.client = Some(client);
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(BoardError::new(format!(
            "the ESP32-C3 on {} did not answer Sys.GetInfo within {:.1} s ({last})",
            port.display(),
            timeout.as_secs_f64()
        ))
        .help("check that the firmware runs (its console is in the trial's log) and that the port is its RPC channel"))
    }

    fn take_console(&mut self, client: &mut Client) {
        for line in client.take_console() {
            if let Some(address) = http_line(&line) {
                self.http_seen = Some(address);
            }
            self.log.line(line);
        }
    }

    /// The board's HTTP server as `host:port`.
    fn http_address(&self) -> BoardResult<String> {
        match &self.config.address {
            Address::Fixed(url) => Ok(host_port(url)),
            Address::Console => self.http_seen.clone().ok_or_else(|| {
                BoardError::new("the firmware printed no `http=` line: its HTTP address is not known (address = \"console\")")
                    .help("check the board's Wi-Fi ([esp32c3.wifi]) in the trial's console, or give address = \"IP\"")
            }),
            Address::None => Err(BoardError::new("the board file gives no address: HTTP pushes need one")),
        }
    }

    /// `POST /update` over Wi-Fi, as `curl -F file=@fw.zip http://IP/update`; with `cut_after`,
    /// the power goes once that many bytes were sent.
    fn push_http(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        let addr = self.http_address()?;
        if let Some(keep) = cut_after {
            let _stream = super::http_push::http_upload_prefix(&addr, request, keep)
                .map_err(|e| BoardError::new(format!("POST http://{addr}/update: {e}")))?;
            // Let the device take what was sent (its OTA.Status answers over the serial port).
            let _ = self.call("OTA.Status", Value::Null)?;
            let how = format!("after {keep} of {} bytes were sent", request.bundle.len());
            self.cut_power(&how)?;
            return Ok(PushResult::PowerLost);
        }
        let answer = super::http_push::post_update(&addr, request).map_err(|e| {
            BoardError::new(format!("POST http://{addr}/update: {e}"))
                .help("check that the board is on the network and its HTTP server runs")
        })?;
        match super::http_push::update_answer(answer.0, &answer.1) {
            Err(message) => Ok(PushResult::Refused { message }),
            Ok(message) if message.contains("same as current") => Ok(PushResult::UpToDate),
            Ok(_) => {
                self.await_reboot("POST /update")?;
                Ok(PushResult::Applied)
            }
        }
    }

    fn capped(&self, wanted: Duration) -> Duration {
        match self.step_deadline {
            Some(deadline) => wanted.min(deadline.saturating_duration_since(Instant::now())),
            None => wanted,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> BoardResult<Result<Value, RpcErr>> {
        let mut client =
            self.client.take().ok_or_else(|| BoardError::new("the board's serial port is not open"))?;
        let result = client.call_timeout(method, params, self.capped(CALL_TIMEOUT));
        self.take_console(&mut client);
        self.client = Some(client);
        result.map_err(|e| BoardError::new(format!("{method}: {e}")).help(e.help()))
    }

    /// After a call that reboots the device: waits for it to answer again.
    fn await_reboot(&mut self, after: &str) -> BoardResult<()> {
        self.client = None;
        self.connect()
            .map_err(|e| BoardError { message: format!("after {after}: {}", e.message), help: e.help })
    }

    fn cut_power(&mut self, how: &str) -> BoardResult<()> {
        let power = self.config.power.clone().ok_or_else(|| {
            BoardError::new(format!(
                "board {} cannot cut the power: {}",
                self.info.name,
                no_power_cut(&self.config).unwrap_or_default()
            ))
        })?;
        self.client = None;
        self.shell("power off", &power.off)?;
        self.on = false;
        self.note(EventKind::PowerCut { op: None, how: how.into() });
        Ok(())
    }

    /// The factory image for `bundle`, with the board file's Wi-Fi in `conf9.json`.
    fn factory_image(&mut self, bundle: &[u8]) -> BoardResult<Vec<u8>> {
        let platform = self.info.platform.clone();
        let wifi = self.config.wifi.clone();
        let built = self.built()?;
        let mut flash = image::factory_image(built, &platform, bundle)
            .map_err(|e| BoardError::new(format!("cannot build the factory image: {e}")))?;
        if let Some(wifi) = wifi {
            let pass = wifi_pass(&wifi.pass)?;
            let conf9 = image::wifi_conf9(&wifi.ssid, pass.as_deref());
            image::give_conf9(&mut flash, &conf9).map_err(BoardError::new)?;
        }
        Ok(flash)
    }

    fn flash(&mut self, flash: &[u8]) -> BoardResult<()> {
        let port = self.port()?;
        self.client = None;
        let mut lines = Vec::new();
        let result =
            write_flash(&self.config, &port, &[(0, flash)], &mut |line| lines.push(line.to_string()));
        for line in lines {
            self.hil_line(&line);
        }
        result.map_err(|e| {
            BoardError::new(e).help("run `hil flash --board FILE` by hand to see the flasher's output")
        })
    }

    /// `OTA.Begin`/`Write`/`End` over the serial port; with `cut_after`, the power goes once that
    /// many bytes were acknowledged.
    fn push_rpc(&mut self, request: &PushRequest<'_>, cut_after: Option<usize>) -> BoardResult<PushResult> {
        let push = OtaPush {
            bundle: request.bundle,
            commit_timeout_s: request.commit_timeout_s,
            update_timeout_s: UPDATE_TIMEOUT_S,
            chunk_bytes: request.chunk_bytes,
            ignore_same_version: request.ignore_same_version,
            stop_after_bytes: cut_after,
        };
        let mut client =
            self.client.take().ok_or_else(|| BoardError::new("the board's serial port is not open"))?;
        let outcome = rpc_client::ota_push(&mut client, &push, &mut |_| {});
        self.take_console(&mut client);
        self.client = Some(client);
        match outcome.map_err(|e| BoardError::new(format!("pushing over RPC: {e}")).help(e.help()))? {
            OtaOutcome::Ended { message } if message.contains("same") => Ok(PushResult::UpToDate),
            OtaOutcome::Ended { .. } => {
                self.await_reboot("OTA.End")?;
                Ok(PushResult::Applied)
            }
            OtaOutcome::Busy { state } => Ok(PushResult::Refused {
                message: format!("update is already in progress ({state}), call OTA.End"),
            }),
            OtaOutcome::Refused { error, .. } => Ok(PushResult::Refused { message: error.message }),
            OtaOutcome::Stopped { sent_bytes } => {
                let how = format!("after {sent_bytes} of {} bytes were acknowledged", request.bundle.len());
                self.cut_power(&how)?;
                Ok(PushResult::PowerLost)
            }
        }
    }

    /// A push with the power cut at flash operation `op` of the firmware (probe-rs breakpoints
    /// on its flash driver, then the power command `off` while the core is halted there).
    #[cfg(feature = "probe-rs")]
    fn push_cut_at_op(
        &mut self,
        request: &PushRequest<'_>,
        op: u64,
        when: crate::scenario::model::CutWhen,
    ) -> BoardResult<PushResult> {
        let path = esp32c3::elf_path(Some(&self.config));
        let elf = image::read_elf(&path).map_err(BoardError::new)?;
        let elf = crate::qemu::elf::Elf::parse(&elf)
            .map_err(|e| BoardError::new(format!("{}: {e}", path.display())))?;
        let addresses = OP_SYMBOLS
            .iter()
            .map(|name| {
                elf.symbol(name).ok_or_else(|| {
                    BoardError::new(format!(
                        "{} has no symbol {name}: cuts at a flash operation need it",
                        path.display()
                    ))
                })
            })
            .collect::<BoardResult<Vec<u32>>>()?;
        let hit = if when == crate::scenario::model::CutWhen::After { op + 1 } else { op };
        let off =
            self.config.power.clone().map(|p| p.off).ok_or_else(|| BoardError::new("no power command"))?;
        let strike = Box::new(move || {
            let status = Command::new("sh").arg("-c").arg(&off).status();
            match status {
                Ok(s) if s.success() => Ok(()),
                other => Err(format!("the power off command `{off}` failed ({other:?})")),
            }
        });
        let cut = esp32c3::probe::OpCut::arm(self.config.probe.as_ref(), &addresses, hit, strike)
            .map_err(|e| BoardError::new(format!("arming the cut at flash operation {op}: {e}")))?;
        let result = self.push_rpc(request, None);
        let struck = cut.struck();
        drop(cut);
        match struck {
            Some(hit) => {
                self.client = None;
                self.on = false;
                self.note(EventKind::PowerCut {
                    op: Some(hit),
                    how: "at a probe-rs breakpoint on the flash driver".into(),
                });
                Ok(PushResult::PowerLost)
            }
            None => result,
        }
    }

    #[cfg(not(feature = "probe-rs"))]
    fn push_cut_at_op(
        &mut self,
        _: &PushRequest<'_>,
        _: u64,
        _: crate::scenario::model::CutWhen,
    ) -> BoardResult<PushResult> {
        Err(BoardError::new(format!("a cut at a flash operation: {}", esp32c3::PROBE_RS_MISSING)))
    }
}

/// The address in a console line such as `http=http://192.168.1.50:80` (or `http=192.168.1.50`),
/// as `host:port`.
fn http_line(line: &str) -> Option<String> {
    let rest = line.split("http=").nth(1)?;
    let url = rest.split_whitespace().next()?;
    (!url.is_empty()).then(|| host_port(url))
}

/// `http://host[:port][/]` as `host:port` (port 80 when none is given).
fn host_port(url: &str) -> String {
    let bare = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    if bare.contains(':') { bare.to_string() } else { format!("{bare}:80") }
}

/// The Wi-Fi password the board file gives, read from its variable when it names one.
pub fn wifi_pass(pass: &WifiPass) -> BoardResult<Option<String>> {
    match pass {
        WifiPass::None => Ok(None),
        WifiPass::Given(pass) => Ok(Some(pass.clone())),
        WifiPass::Env(var) => std::env::var(var).map(Some).map_err(|_| {
            BoardError::new(format!("the board file's esp32c3.wifi.pass_env names {var}, which is not set"))
                .help(format!("export {var}=... (the Wi-Fi password) before running hil"))
        }),
    }
}

/// Writes `segments` with the board file's flasher.
pub fn write_flash(
    config: &Esp32c3Config,
    port: &std::path::Path,
    segments: &[(u32, &[u8])],
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    match config.flasher {
        Flasher::Espflash => esp32c3::flash::write(port, config.flash_baud, segments, progress),
        Flasher::ProbeRs => probe_write(config, segments, progress),
    }
}

#[cfg(feature = "probe-rs")]
fn probe_write(
    config: &Esp32c3Config,
    segments: &[(u32, &[u8])],
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    esp32c3::probe::write(config.probe.as_ref(), segments, progress)
}

#[cfg(not(feature = "probe-rs"))]
fn probe_write(_: &Esp32c3Config, _: &[(u32, &[u8])], _: &mut dyn FnMut(&str)) -> Result<(), String> {
    Err(format!("flasher = \"probe-rs\": {}", esp32c3::PROBE_RS_MISSING))
}

#[cfg(feature = "probe-rs")]
fn probe_reset(config: &Esp32c3Config) -> BoardResult<()> {
    esp32c3::probe::reset(config.probe.as_ref()).map_err(BoardError::new)
}

#[cfg(not(feature = "probe-rs"))]
fn probe_reset(_: &Esp32c3Config) -> BoardResult<()> {
    Err(BoardError::new(format!("reset = \"probe\": {}", esp32c3::PROBE_RS_MISSING)))
}

impl Board for Esp32c3Board {
    fn info(&self) -> &BoardInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn start_trial(&mut self, _seed: u64) -> BoardResult<()> {
        self.client = None;
        self.armed = None;
        self.log.clear();
        self.started = Instant::now();
        let port = attached(&self.config).map_err(|e| {
            BoardError::new(format!("board {}: {e}", self.info.name))
                .help("`hil boards --scan` lists what is attached")
        })?;
        self.port = Some(port);
        self.built()?;
        if let Some(power) = self.config.power.clone() {
            self.shell("power off", &power.off)?;
        }
        self.on = false;
        Ok(())
    }

    fn provision(&mut self, bundle: &[u8]) -> BoardResult<()> {
        let flash = self.factory_image(bundle)?;
        // The ROM boot loader needs the chip powered: a board with power control is switched
        // on to be flashed, then off again, as the trait says it ends.
        if let Some(power) = self.config.power.clone() {
            self.shell("power on", &power.on)?;
        }
        self.flash(&flash)?;
        if let Some(power) = self.config.power.clone() {
            self.shell("power off", &power.off)?;
        }
        self.on = false;
        self.note(EventKind::Note { text: "provisioned slot 0 (factory image flashed)".into() });
        Ok(())
    }

    fn power_on(&mut self) -> BoardResult<()> {
        if self.on {
            return Ok(());
        }
        match self.config.power.clone() {
            Some(power) => self.shell("power on", &power.on)?,
            // No power control: the board has power all along, and a reset is its power-on.
            None => self.reset()?,
        }
        self.on = true;
        self.note(EventKind::PowerOn);
        self.connect()
    }

    fn power_cut(&mut self) -> BoardResult<()> {
        if !self.on {
            return Ok(());
        }
        self.cut_power("by the runner's power command")
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
        let armed = self.armed.take();
        if !self.on {
            return Ok(PushResult::PowerLost);
        }
        if !self.capabilities.transports.contains(&request.transport) {
            return Err(BoardError::new(format!(
                "board {} has no {} transport",
                self.info.name,
                request.transport.name()
            )));
        }
        let cut_after = match armed {
            Some(Cut::AtFraction(f)) => Some((request.bundle.len() as f64 * f) as usize),
            Some(Cut::AtOp { op, when }) => return self.push_cut_at_op(request, op, when),
            Some(Cut::AtPhase(_) | Cut::AtEveryOp) => {
                return Err(BoardError::new(format!(
                    "board {} cannot cut at a named phase or every operation",
                    self.info.name
                )));
            }
            None => None,
        };
        match request.transport {
            Transport::Http => self.push_http(request, cut_after),
            _ => self.push_rpc(request, cut_after),
        }
    }

    fn wait(&mut self, ms: u64) -> BoardResult<()> {
        // A real board's clock is the wall clock: the wait is real, and the console is read on
        // the way so the timeline keeps what the device printed.
        let deadline = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < deadline {
            std::thread::sleep(
                deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500)),
            );
            if self.on && self.client.is_some() {
                let _ = self.call("Sys.GetInfo", Value::Null);
            }
        }
        self.log.device_ms = self.started.elapsed().as_millis() as u64;
        Ok(())
    }

    fn commit(&mut self) -> BoardResult<Result<(), Refusal>> {
        if !self.on {
            return Ok(Err("the device is off".into()));
        }
        Ok(self.call("OTA.Commit", Value::Null)?.map(|_| ()).map_err(|e| e.message))
    }

    fn revert(&mut self) -> BoardResult<Result<(), Refusal>> {
        if !self.on {
            return Ok(Err("the device is off".into()));
        }
        if let Err(e) = self.call("OTA.Revert", Value::Null)? {
            return Ok(Err(e.message));
        }
        self.await_reboot("OTA.Revert")?;
        Ok(Ok(()))
    }

    fn reboot(&mut self) -> BoardResult<()> {
        if !self.on {
            return Ok(());
        }
        match self.call("Sys.Reboot", json!({ "delay_ms": 0 })) {
            Ok(Ok(_)) => self.await_reboot("Sys.Reboot"),
            // A hung firmware cannot reboot itself: cycle its power when the board file can
            // (`cycle`, else `off` then `on`), or press reset.
            _ => {
                self.client = None;
                match self.config.power.clone() {
                    Some(power) => match &power.cycle {
                        Some(cycle) => self.shell("power cycle", cycle)?,
                        None => {
                            self.shell("power off", &power.off)?;
                            self.shell("power on", &power.on)?;
                        }
                    },
                    None => self.reset()?,
                }
                self.connect()
            }
        }
    }

    fn snapshot(
        &mut self,
        set_as_revert: bool,
        commit_timeout_s: Option<u32>,
    ) -> BoardResult<Result<u8, Refusal>> {
        if !self.on {
            return Ok(Err("the device is off".into()));
        }
        device::create_snapshot(
            &mut |method, params| self.call(method, params),
            set_as_revert,
            commit_timeout_s,
        )
    }

    fn write_file(&mut self, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
        if !self.on {
            return Ok(Err("the device is off".into()));
        }
        device::put_file(&mut |method, params| self.call(method, params), name, content)
    }

    fn read_file(&mut self, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
        if !self.on {
            return Ok(Err("the device is off".into()));
        }
        device::get_file(&mut |method, params| self.call(method, params), name)
    }

    fn status(&mut self) -> BoardResult<Status> {
        if !self.on {
            return Ok(Status { activity: Activity::Off, boot_state: None });
        }
        let activity = match self.call("Sys.GetInfo", Value::Null)? {
            Ok(info) => device::running(&info),
            Err(e) => match self.log.life.clone() {
                Some(ota_app::Event::Hung { slot }) => Activity::Hung { slot },
                Some(ota_app::Event::Bricked { why }) => Activity::Bricked { why },
                _ => return Err(BoardError::new(format!("Sys.GetInfo failed: {e}"))),
            },
        };
        let boot_state = match self.call("OTA.GetBootState", Value::Null)? {
            Ok(state) => Some(device::boot_state_view(&state)),
            Err(_) => None,
        };
        Ok(Status { activity, boot_state })
    }

    fn device_ms(&self) -> u64 {
        self.log.now_ms()
    }

    fn step_timeout(&mut self, timeout: Duration) {
        self.step_deadline = Some(Instant::now() + timeout);
    }

    fn drain_events(&mut self) -> Vec<(u64, EventKind)> {
        std::mem::take(&mut self.log.events)
    }

    fn drain_console(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log.console)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_address_is_learnt_from_the_console() {
        assert_eq!(
            http_line("[  812 ms] wifi: joined hil-lab, http=http://192.168.1.50:80"),
            Some("192.168.1.50:80".into())
        );
        assert_eq!(http_line("http=10.0.0.7"), Some("10.0.0.7:80".into()));
        // The line ota-esp32c3-fw prints once DHCP gave it an address.
        assert_eq!(
            http_line("ota-esp32c3-fw: wifi: address 192.168.4.23 (DHCP), http=192.168.4.23:80"),
            Some("192.168.4.23:80".into())
        );
        assert_eq!(http_line("http= "), None);
        assert_eq!(http_line("wifi: connecting"), None);
        assert_eq!(host_port("http://esp32c3.local:8080/"), "esp32c3.local:8080");
    }
}
