//! Board files: one TOML per board, a tagged backend kind, its platform and geometry. Parsed in
//! two layers like scenarios: raw types that refuse unknown keys, then a validated
//! [`BoardConfig`].
//!
//! ```toml
//! kind = "sim"            # sim or virtual (now); qemu and esp32 are coming
//! platform = "esp32"      # what the device reports; default esp32
//!
//! [sim]                   # only for kind = "sim"; every key optional
//! app_slot_kib = 256
//! fs_slot_kib = 64
//! work_buffer_bytes = 4096
//! watchdog = "10s"
//!
//! [virtual]               # only for kind = "virtual"; every key optional
//! binary = "target/debug/virtual-board"   # default: next to hil, else on PATH
//! flash_file = "flash.bin"                # default: a fresh temporary file per trial
//! app_slot_kib = 1536
//! fs_slot_kib = 256
//! time_scale = 100                        # device time runs 100 times as fast
//! http = "127.0.0.1:0"
//! startup_timeout = "10s"
//! devices = 3                             # a fleet of virtual boards (board/fleet.rs)
//! mqtt = true                             # a Mosquitto per trial; RPC over MQTT and ota-shadow
//!
//! [qemu]                  # only for kind = "qemu"; every key optional
//! boot_loader = "../target/riscv32imc-unknown-none-elf/release/ota-qemu-boot"
//! firmware = "../target/riscv32imc-unknown-none-elf/release/ota-qemu-fw"
//! qemu = "qemu-system-riscv32"
//! icount_shift = 0                        # one instruction = 2^shift ns of device time
//! watchdog = "100ms"                      # instructions without a kick, as device time
//! startup_timeout = "10s"
//! flash_file = "flash.img"                # default: a fresh temporary file per trial
//! write_bytes_min = 4096                  # OTA.Write chunks at least this big
//!
//! [esp32c3]               # only for kind = "esp32c3"; boards/esp32c3.toml documents each key
//! port = "/dev/ttyACM0"                   # or usb = "303a:1001[:SERIAL]"
//! flasher = "espflash"                    # or "probe-rs" (hil built with --features probe-rs)
//! reset = "rts-dtr"                       # or "probe", or "command" with reset_command
//! address = "192.168.1.50"                # or "console": learnt from the board's `http=` line
//! [esp32c3.power]                         # absent: no power control, power-cut scenarios skip
//! on = "uhubctl -l 1-1 -p 2 -a on"
//! off = "uhubctl -l 1-1 -p 2 -a off"
//! [esp32c3.wifi]                          # written into conf9.json of the factory image
//! ssid = "lab"
//! pass_env = "HIL_WIFI_PASS"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::parse_duration_ms;

/// The backend kinds a board file may name.
pub const KINDS: [&str; 4] = ["sim", "virtual", "qemu", "esp32c3"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    kind: String,
    platform: Option<String>,
    sim: Option<RawSim>,
    #[serde(rename = "virtual")]
    virtual_board: Option<RawVirtual>,
    qemu: Option<RawQemu>,
    esp32c3: Option<RawEsp32c3>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEsp32c3 {
    port: Option<String>,
    usb: Option<String>,
    baud: Option<u32>,
    flasher: Option<String>,
    flash_baud: Option<u32>,
    probe: Option<String>,
    reset: Option<String>,
    reset_command: Option<String>,
    elf: Option<PathBuf>,
    address: Option<String>,
    startup_timeout: Option<String>,
    power: Option<RawPower>,
    wifi: Option<RawWifi>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    on: Option<String>,
    off: Option<String>,
    cycle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWifi {
    ssid: String,
    pass: Option<String>,
    pass_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQemu {
    boot_loader: Option<PathBuf>,
    firmware: Option<PathBuf>,
    qemu: Option<PathBuf>,
    icount_shift: Option<u8>,
    watchdog: Option<String>,
    startup_timeout: Option<String>,
    flash_file: Option<PathBuf>,
    write_bytes_min: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    app_slot_kib: Option<u32>,
    fs_slot_kib: Option<u32>,
    work_buffer_bytes: Option<usize>,
    watchdog: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtual {
    binary: Option<PathBuf>,
    flash_file: Option<PathBuf>,
    app_slot_kib: Option<u32>,
    fs_slot_kib: Option<u32>,
    time_scale: Option<u32>,
    http: Option<String>,
    startup_timeout: Option<String>,
    devices: Option<usize>,
    mqtt: Option<bool>,
}

/// A validated board file.
#[derive(Clone, Debug, PartialEq)]
pub struct BoardConfig {
    pub name: String,
    pub file: Option<PathBuf>,
    pub platform: String,
    pub backend: Backend,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    Sim(SimConfig),
    Virtual(VirtualConfig),
    Qemu(QemuConfig),
    Esp32c3(Esp32c3Config),
}

/// Where the ESP32-C3 firmware's ELF is by default, inside the target folder: what
/// `cargo build --release -p ota-port-esp32c3 --target riscv32imc-unknown-none-elf` writes.
pub const ESP32C3_ELF: &str = "riscv32imc-unknown-none-elf/release/ota-esp32c3-fw";

/// A real ESP32-C3 on a USB cable (`board::esp32c3`): how to find its serial port, flash it,
/// reset it, switch its power, and reach it over Wi-Fi.
#[derive(Clone, Debug, PartialEq)]
pub struct Esp32c3Config {
    pub port: PortSpec,
    /// The RPC line's speed (the USB-Serial-JTAG port ignores it; UART0 does not).
    pub baud: u32,
    pub flasher: Flasher,
    /// espflash's speed once its stub runs.
    pub flash_baud: u32,
    /// Which probe probe-rs uses; `None`: the only one attached.
    pub probe: Option<UsbId>,
    pub reset: Reset,
    /// The firmware's ELF; `None`: [`ESP32C3_ELF`] under the target folder, or `HIL_ESP32C3_ELF`.
    pub elf: Option<PathBuf>,
    pub address: Address,
    /// How long the board may take to answer after a reset or power-on.
    pub startup_timeout_ms: u64,
    /// `None`: no power control; scenarios that cut the power are skipped, saying so.
    pub power: Option<Power>,
    pub wifi: Option<Wifi>,
}

/// The serial port: a path, or the USB device that provides it wherever it enumerates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    Path(PathBuf),
    Usb(UsbId),
}

/// A USB device as `lsusb` names it: `VID:PID`, and a serial number to tell twins apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbId {
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
}

impl UsbId {
    /// `303a:1001` or `303a:1001:F4:12:FA:4F:1A:2C` (the serial number may hold colons).
    pub fn parse(text: &str) -> Result<UsbId, String> {
        let mut parts = text.splitn(3, ':');
        let hex = |part: Option<&str>, what: &str| -> Result<u16, String> {
            let part = part.filter(|p| p.len() == 4).ok_or_else(|| {
                format!("{text:?} is not VID:PID[:SERIAL] with a 4-digit hexadecimal {what}")
            })?;
            u16::from_str_radix(part, 16).map_err(|_| format!("{text:?}: {what} {part:?} is not hexadecimal"))
        };
        let vid = hex(parts.next(), "vendor id")?;
        let pid = hex(parts.next(), "product id")?;
        let serial = parts.next().map(str::to_string);
        if serial.as_deref() == Some("") {
            return Err(format!("{text:?}: the serial number after the second ':' is empty"));
        }
        Ok(UsbId { vid, pid, serial })
    }

    /// Whether a device with these ids and serial number is this one.
    pub fn matches(&self, vid: u16, pid: u16, serial: Option<&str>) -> bool {
        self.vid == vid && self.pid == pid && self.serial.as_deref().is_none_or(|want| Some(want) == serial)
    }
}

impl std::fmt::Display for UsbId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vid, self.pid)?;
        match &self.serial {
            Some(serial) => write!(f, ":{serial}"),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flasher {
    /// espflash over the ROM's serial boot loader (UART0 or the USB-Serial-JTAG port).
    Espflash,
    /// probe-rs over the chip's built-in USB-JTAG.
    ProbeRs,
}

impl Flasher {
    pub fn name(self) -> &'static str {
        match self {
            Flasher::Espflash => "espflash",
            Flasher::ProbeRs => "probe-rs",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reset {
    /// espflash's reset strategies: RTS and DTR on the serial port (the USB-Serial-JTAG port
    /// emulates them).
    RtsDtr,
    /// probe-rs resets the core through JTAG.
    Probe,
    /// A shell command (`sh -c`), such as a relay on the EN pin.
    Command(String),
}

/// How the runner reaches the board's HTTP service over Wi-Fi.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// No Wi-Fi: RPC over the serial port only; HTTP and pull pushes are skipped.
    None,
    /// `http://HOST[:PORT]`, as given.
    Fixed(String),
    /// The address the firmware prints on its console (`http=http://IP:PORT`) after it joins.
    Console,
}

/// Shell commands (`sh -c`) that switch the board's power: a relay, or `uhubctl` on a hub port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Power {
    pub on: String,
    pub off: String,
    /// `None`: `off`, then `on`.
    pub cycle: Option<String>,
}

/// The network the board joins: written into `conf9.json` as `wifi.sta.ssid`/`pass`/`enable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wifi {
    pub ssid: String,
    pub pass: WifiPass,
}

/// The password: in the file, or (better for a shared repository) in an environment variable
/// read when the image is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WifiPass {
    None,
    Given(String),
    Env(String),
}

/// Where the two ELF files are by default, inside the target folder: what
/// `cargo build --release -p ota-port-qemu-virt --target riscv32imc-unknown-none-elf --bins` writes.
pub const QEMU_ELF_DIR: &str = "riscv32imc-unknown-none-elf/release";
pub const QEMU_BOOT_LOADER: &str = "ota-qemu-boot";
pub const QEMU_FIRMWARE: &str = "ota-qemu-fw";

/// The emulated RISC-V board: QEMU `virt` running the boot loader and the firmware from a flash
/// file (`board::qemu`).
#[derive(Clone, Debug, PartialEq)]
pub struct QemuConfig {
    /// The boot loader's ELF; `None`: `target/riscv32imc-unknown-none-elf/release/ota-qemu-boot`
    /// (built with cargo when absent).
    pub boot_loader: Option<PathBuf>,
    /// The firmware's ELF; `None`: `…/ota-qemu-fw` beside the boot loader's default.
    pub firmware: Option<PathBuf>,
    /// The emulator: a path, or a name looked up on `PATH`.
    pub qemu: PathBuf,
    /// `-icount shift=N`: each instruction is 2^N ns of device time.
    pub icount_shift: u8,
    /// The external watchdog's budget: the board is hung when its CPU ran this much device time
    /// (instructions × 2^shift ns) since the firmware's last kick line.
    pub watchdog_ms: u64,
    /// How long QEMU may take to start, and the device to answer after a boot.
    pub startup_timeout_ms: u64,
    /// The flash file; `None`: a fresh temporary file per trial, removed afterwards.
    pub flash_file: Option<PathBuf>,
    /// The smallest `OTA.Write` the runner sends: a push's `chunk_bytes` below it is raised to
    /// it, since every write costs a round trip through the emulated UART.
    pub write_bytes_min: usize,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            boot_loader: None,
            firmware: None,
            qemu: PathBuf::from("qemu-system-riscv32"),
            icount_shift: 0,
            watchdog_ms: 100,
            startup_timeout_ms: 10_000,
            flash_file: None,
            write_bytes_min: 4096,
        }
    }
}

/// The simulator's geometry. Defaults as in `ota_sim::device::Config`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub app_slot_bytes: u32,
    pub fs_slot_bytes: u32,
    pub work_buffer_bytes: usize,
    pub watchdog_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        let d = ota_sim::device::Config::default();
        SimConfig {
            app_slot_bytes: d.app_slot_bytes,
            fs_slot_bytes: d.fs_slot_bytes,
            work_buffer_bytes: d.work_buffer_bytes,
            watchdog_ms: d.watchdog_ms,
        }
    }
}

/// The `virtual-board` process: where it is, its flash file and geometry, its clock. Defaults
/// as in its own command line (`firmware-under-test/README.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualConfig {
    /// The executable; `None`: `virtual-board` next to the running `hil`, else on `PATH`.
    pub binary: Option<PathBuf>,
    /// The flash file, resolved against the board file; `None`: a fresh temporary file per
    /// trial, removed afterwards.
    pub flash_file: Option<PathBuf>,
    pub app_slot_bytes: u32,
    pub fs_slot_bytes: u32,
    /// The device's clock runs this many times as fast as the wall clock.
    pub time_scale: u32,
    /// The device's HTTP address (`--http`), on loopback.
    pub http: String,
    /// How long the process may take to print `ready`, and the device to answer after a reboot.
    pub startup_timeout_ms: u64,
    /// Virtual boards driven as one fleet (`devices`, default 1).
    pub devices: usize,
    /// A broker of the runner's own per trial, with the devices on it (`mqtt`, default false).
    pub mqtt: bool,
}

impl Default for VirtualConfig {
    fn default() -> Self {
        VirtualConfig {
            binary: None,
            flash_file: None,
            app_slot_bytes: 1536 * 1024,
            fs_slot_bytes: 256 * 1024,
            time_scale: 1,
            http: "127.0.0.1:0".into(),
            startup_timeout_ms: 10_000,
            devices: 1,
            mqtt: false,
        }
    }
}

impl BoardConfig {
    /// The backend kind, as a board file names it.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sim(_) => "sim",
            Backend::Virtual(_) => "virtual",
            Backend::Qemu(_) => "qemu",
            Backend::Esp32c3(_) => "esp32c3",
        }
    }

    /// The board that worker `worker` of a parallel run (`hil run --jobs N`) opens: the same
    /// board, with a flash file of its own when the file names one (`flash.bin`, then
    /// `flash-2.bin`, `flash-3.bin`, …), so no two boards share a flash.
    pub fn for_worker(&self, worker: usize) -> BoardConfig {
        let mut config = self.clone();
        if worker == 0 {
            return config;
        }
        match &mut config.backend {
            Backend::Virtual(v) => {
                v.flash_file = v.flash_file.as_deref().map(|path| worker_path(path, worker))
            }
            Backend::Qemu(q) => q.flash_file = q.flash_file.as_deref().map(|path| worker_path(path, worker)),
            // One board: `hil run --jobs` opens it once per worker, and the workers take turns
            // with nothing but the one port, so a real board runs its trials one at a time.
            Backend::Sim(_) | Backend::Esp32c3(_) => {}
        }
        config
    }

    /// The built-in simulator, used when no `--board` is given.
    pub fn default_sim() -> BoardConfig {
        BoardConfig {
            name: "sim".into(),
            file: None,
            platform: ota_sim::device::ARCH.into(),
            backend: Backend::Sim(SimConfig::default()),
        }
    }
}

/// `dir/flash.bin` for worker 1 (the second) is `dir/flash-2.bin`.
fn worker_path(path: &Path, worker: usize) -> PathBuf {
    let stem = path.file_stem().map_or("flash".into(), |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{}.{}", worker + 1, ext.to_string_lossy()),
        None => format!("{stem}-{}", worker + 1),
    };
    path.with_file_name(name)
}

/// A board file that could not be read or is wrong: names the file and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardFileError {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for BoardFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

pub fn load(path: &Path) -> Result<BoardConfig, BoardFileError> {
    let fail = |message: String| BoardFileError { file: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the board file: {e}")))?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<BoardConfig, BoardFileError> {
    let fail = |message: String| BoardFileError { file: path.to_path_buf(), message };
    let raw: RawBoard = toml::from_str(text).map_err(|e| fail(toml_message(text, &e)))?;
    let name = path.file_stem().map_or("board".into(), |s| s.to_string_lossy().into_owned());
    // A real ESP32-C3's firmware reports its chip; the other backends report the simulator's.
    let default_platform = if raw.kind == "esp32c3" { "esp32c3" } else { ota_sim::device::ARCH };
    let platform = raw.platform.clone().unwrap_or_else(|| default_platform.into());
    if platform.is_empty() || platform.len() > 16 {
        return Err(fail(format!("platform: {platform:?} must be 1 to 16 bytes")));
    }
    // A table for another backend than the file's kind is a mistake worth naming.
    let tables = [
        ("sim", raw.sim.is_some()),
        ("virtual", raw.virtual_board.is_some()),
        ("qemu", raw.qemu.is_some()),
        ("esp32c3", raw.esp32c3.is_some()),
    ];
    if let Some((table, _)) = tables.iter().find(|(table, present)| *present && *table != raw.kind) {
        return Err(fail(format!("{table}: this table is only for kind = \"{table}\"")));
    }
    let backend = match raw.kind.as_str() {
        "sim" => Backend::Sim(sim_config(raw.sim).map_err(fail)?),
        "virtual" => Backend::Virtual(virtual_config(raw.virtual_board, path).map_err(fail)?),
        "qemu" => Backend::Qemu(qemu_config(raw.qemu, path).map_err(fail)?),
        "esp32c3" => {
            let raw = raw.esp32c3.ok_or_else(|| {
                fail(
                    "esp32c3: kind = \"esp32c3\" needs an [esp32c3] table with at least `port` or `usb`"
                        .into(),
                )
            })?;
            Backend::Esp32c3(esp32c3_config(raw, path).map_err(fail)?)
        }
        kind => {
            return Err(fail(format!(
                "kind: unknown backend {kind:?}; expected one of {}",
                KINDS.join(", ")
            )));
        }
    };
    Ok(BoardConfig { name, file: Some(path.to_path_buf()), platform, backend })
}

fn sim_config(raw: Option<RawSim>) -> Result<SimConfig, String> {
    let mut config = SimConfig::default();
    let Some(raw) = raw else { return Ok(config) };
    if let Some(kib) = raw.app_slot_kib {
        if kib == 0 || kib % 4 != 0 {
            return Err(format!("sim.app_slot_kib: {kib} is not a positive multiple of 4 (the erase unit)"));
        }
        config.app_slot_bytes = kib * 1024;
    }
    if let Some(kib) = raw.fs_slot_kib {
        if kib < 16 || kib % 4 != 0 {
            return Err(format!("sim.fs_slot_kib: {kib} must be a multiple of 4, at least 16"));
        }
        config.fs_slot_bytes = kib * 1024;
    }
    if let Some(bytes) = raw.work_buffer_bytes {
        if !(1024..=65536).contains(&bytes) || bytes % 4 != 0 {
            return Err(format!("sim.work_buffer_bytes: {bytes} must be 1024 to 65536, a multiple of 4"));
        }
        config.work_buffer_bytes = bytes;
    }
    if let Some(text) = raw.watchdog {
        config.watchdog_ms = parse_duration_ms(&text).map_err(|e| format!("sim.watchdog: {e}"))?;
    }
    Ok(config)
}

fn virtual_config(raw: Option<RawVirtual>, file: &Path) -> Result<VirtualConfig, String> {
    let mut config = VirtualConfig::default();
    let Some(raw) = raw else { return Ok(config) };
    // Paths in a board file are relative to the file, wherever hil runs from.
    let dir = file.parent().unwrap_or(Path::new(""));
    config.binary = raw.binary.map(|p| dir.join(p));
    config.flash_file = raw.flash_file.map(|p| dir.join(p));
    if let Some(kib) = raw.app_slot_kib {
        if kib == 0 || kib % 4 != 0 {
            return Err(format!(
                "virtual.app_slot_kib: {kib} is not a positive multiple of 4 (the erase unit)"
            ));
        }
        config.app_slot_bytes = kib * 1024;
    }
    if let Some(kib) = raw.fs_slot_kib {
        if kib < 16 || kib % 4 != 0 {
            return Err(format!("virtual.fs_slot_kib: {kib} must be a multiple of 4, at least 16"));
        }
        config.fs_slot_bytes = kib * 1024;
    }
    if let Some(scale) = raw.time_scale {
        if !(1..=1000).contains(&scale) {
            return Err(format!("virtual.time_scale: {scale} must be 1 to 1000"));
        }
        config.time_scale = scale;
    }
    if let Some(http) = raw.http {
        match http.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => config.http = http,
            _ => return Err(format!("virtual.http: {http:?} is not a loopback address such as 127.0.0.1:0")),
        }
    }
    if let Some(text) = raw.startup_timeout {
        config.startup_timeout_ms =
            parse_duration_ms(&text).map_err(|e| format!("virtual.startup_timeout: {e}"))?;
    }
    if let Some(devices) = raw.devices {
        if !(1..=64).contains(&devices) {
            return Err(format!("virtual.devices: {devices} must be 1 to 64"));
        }
        if devices > 1 && config.flash_file.is_some() {
            return Err(
                "virtual.devices: a fleet keeps one temporary flash file per device; remove flash_file"
                    .into(),
            );
        }
        config.devices = devices;
    }
    config.mqtt = raw.mqtt.unwrap_or(false);
    Ok(config)
}

fn qemu_config(raw: Option<RawQemu>, file: &Path) -> Result<QemuConfig, String> {
    let mut config = QemuConfig::default();
    let Some(raw) = raw else { return Ok(config) };
    let dir = file.parent().unwrap_or(Path::new(""));
    config.boot_loader = raw.boot_loader.map(|p| dir.join(p));
    config.firmware = raw.firmware.map(|p| dir.join(p));
    config.flash_file = raw.flash_file.map(|p| dir.join(p));
    if let Some(qemu) = raw.qemu {
        // A bare name is looked up on PATH; anything with a folder is relative to the file.
        config.qemu = if qemu.components().count() > 1 { dir.join(qemu) } else { qemu };
    }
    if let Some(shift) = raw.icount_shift {
        if shift > 10 {
            return Err(format!("qemu.icount_shift: {shift} must be 0 to 10 (2^shift ns per instruction)"));
        }
        config.icount_shift = shift;
    }
    if let Some(text) = raw.watchdog {
        let ms = parse_duration_ms(&text).map_err(|e| format!("qemu.watchdog: {e}"))?;
        if ms == 0 {
            return Err(
                "qemu.watchdog: 0 would call every firmware hung; give a budget such as \"100ms\"".into()
            );
        }
        config.watchdog_ms = ms;
    }
    if let Some(text) = raw.startup_timeout {
        config.startup_timeout_ms =
            parse_duration_ms(&text).map_err(|e| format!("qemu.startup_timeout: {e}"))?;
    }
    if let Some(bytes) = raw.write_bytes_min {
        if !(1..=4096).contains(&bytes) {
            return Err(format!(
                "qemu.write_bytes_min: {bytes} must be 1 to 4096 (a bigger OTA.Write overflows the firmware's 8 KiB frame)"
            ));
        }
        config.write_bytes_min = bytes;
    }
    Ok(config)
}

fn esp32c3_config(raw: RawEsp32c3, file: &Path) -> Result<Esp32c3Config, String> {
    let dir = file.parent().unwrap_or(Path::new(""));
    let port = match (raw.port, raw.usb) {
        (Some(_), Some(_)) => {
            return Err("esp32c3.port and esp32c3.usb both name the serial port; keep one".into());
        }
        (None, None) => {
            return Err(
                "esp32c3: give the serial port as `port = \"/dev/ttyACM0\"` or `usb = \"303a:1001\"` (`hil boards --scan` prints both)".into(),
            );
        }
        (Some(path), None) if path.is_empty() => return Err("esp32c3.port: empty path".into()),
        (Some(path), None) => PortSpec::Path(PathBuf::from(path)),
        (None, Some(usb)) => PortSpec::Usb(UsbId::parse(&usb).map_err(|e| format!("esp32c3.usb: {e}"))?),
    };
    let baud = check_baud("esp32c3.baud", raw.baud.unwrap_or(115_200))?;
    let flash_baud = check_baud("esp32c3.flash_baud", raw.flash_baud.unwrap_or(460_800))?;
    let flasher = match raw.flasher.as_deref() {
        None | Some("espflash") => Flasher::Espflash,
        Some("probe-rs") => Flasher::ProbeRs,
        Some(other) => {
            return Err(format!("esp32c3.flasher: {other:?} is neither \"espflash\" nor \"probe-rs\""));
        }
    };
    let probe = raw.probe.map(|p| UsbId::parse(&p).map_err(|e| format!("esp32c3.probe: {e}"))).transpose()?;
    let reset = match (raw.reset.as_deref(), raw.reset_command) {
        (None | Some("rts-dtr"), None) => Reset::RtsDtr,
        (Some("probe"), None) => Reset::Probe,
        (Some("command"), Some(command)) if !command.trim().is_empty() => Reset::Command(command),
        (Some("command"), _) => {
            return Err(
                "esp32c3.reset = \"command\" needs reset_command, the shell command that resets the board"
                    .into(),
            );
        }
        (kind @ (None | Some("rts-dtr" | "probe")), Some(_)) => {
            let kind = kind.unwrap_or("rts-dtr");
            return Err(format!(
                "esp32c3.reset_command is only for reset = \"command\", and reset is {kind:?}"
            ));
        }
        (Some(other), _) => {
            return Err(format!("esp32c3.reset: {other:?} is not \"rts-dtr\", \"probe\" or \"command\""));
        }
    };
    let address = match raw.address.as_deref() {
        None => Address::None,
        Some("console") => Address::Console,
        Some(text) => Address::Fixed(check_address(text)?),
    };
    let startup_timeout_ms = match raw.startup_timeout {
        Some(text) => parse_duration_ms(&text).map_err(|e| format!("esp32c3.startup_timeout: {e}"))?,
        None => 10_000,
    };
    let power = raw.power.map(power_config).transpose()?;
    let wifi = raw.wifi.map(wifi_config).transpose()?;
    if wifi.is_none() && address != Address::None {
        return Err(
            "esp32c3.address needs the [esp32c3.wifi] table: the board joins no network without it".into()
        );
    }
    Ok(Esp32c3Config {
        port,
        baud,
        flasher,
        flash_baud,
        probe,
        reset,
        elf: raw.elf.map(|p| dir.join(p)),
        address,
        startup_timeout_ms,
        power,
        wifi,
    })
}

fn check_baud(key: &str, baud: u32) -> Result<u32, String> {
    if (9600..=2_000_000).contains(&baud) {
        Ok(baud)
    } else {
        Err(format!("{key}: {baud} is not a serial speed from 9600 to 2000000"))
    }
}

/// `192.168.1.50`, `192.168.1.50:8080` or `http://host[:port]` as `http://…` without a path.
fn check_address(text: &str) -> Result<String, String> {
    let bare = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
    let host = bare.rsplit_once(':').map_or(bare, |(host, _)| host);
    let port_ok = bare.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0));
    if host.is_empty() || bare.contains('/') || !port_ok || text.starts_with("https://") {
        return Err(format!(
            "esp32c3.address: {text:?} is neither \"console\" nor an address such as 192.168.1.50 or http://esp32c3.local:80"
        ));
    }
    Ok(format!("http://{bare}"))
}

fn power_config(raw: RawPower) -> Result<Power, String> {
    let command = |key: &str, value: Option<String>| match value {
        Some(command) if !command.trim().is_empty() => Ok(command),
        _ => Err(format!(
            "esp32c3.power.{key}: missing or empty; [esp32c3.power] needs `on` and `off` (delete the table for a board without power control)"
        )),
    };
    Ok(Power {
        on: command("on", raw.on)?,
        off: command("off", raw.off)?,
        cycle: raw.cycle.map(|c| command("cycle", Some(c))).transpose()?,
    })
}

fn wifi_config(raw: RawWifi) -> Result<Wifi, String> {
    if raw.ssid.is_empty() || raw.ssid.len() > 32 {
        return Err(format!("esp32c3.wifi.ssid: {:?} must be 1 to 32 bytes (802.11's limit)", raw.ssid));
    }
    let pass = match (raw.pass, raw.pass_env) {
        (Some(_), Some(_)) => {
            return Err("esp32c3.wifi: pass and pass_env both give the password; keep one".into());
        }
        (Some(pass), None) if pass.len() < 8 || pass.len() > 63 => {
            return Err(format!(
                "esp32c3.wifi.pass: {} bytes; WPA2 takes 8 to 63 (leave it out for an open network)",
                pass.len()
            ));
        }
        (Some(pass), None) => WifiPass::Given(pass),
        (None, Some(var)) if var.is_empty() => {
            return Err("esp32c3.wifi.pass_env: empty variable name".into());
        }
        (None, Some(var)) => WifiPass::Env(var),
        (None, None) => WifiPass::None,
    };
    Ok(Wifi { ssid: raw.ssid, pass })
}

/// A TOML error as "line N: message".
fn toml_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => format!("line {}: {message}", text[..span.start].matches('\n').count() + 1),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        match parse(text, Path::new("boards/x.toml")) {
            Ok(config) => format!("{config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn board_files_are_checked_key_by_key() {
        assert_eq!(
            check("kind = \"sim\"\n[sim]\napp_slot_kib = 128\nwatchdog = \"5s\"\n"),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32\", backend: Sim(SimConfig { app_slot_bytes: 131072, fs_slot_bytes: 65536, work_buffer_bytes: 4096, watchdog_ms: 5000 }) }"
        );
        assert_eq!(
            check("kind = \"usb\"\n"),
            "boards/x.toml: kind: unknown backend \"usb\"; expected one of sim, virtual, qemu, esp32c3"
        );
        assert_eq!(
            check("kind = \"esp32\"\n"),
            "boards/x.toml: kind: unknown backend \"esp32\"; expected one of sim, virtual, qemu, esp32c3"
        );
        assert_eq!(
            check(
                "kind = \"virtual\"\n[virtual]\nbinary = \"bin/vb\"\ntime_scale = 100\nstartup_timeout = \"5s\"\n"
            ),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32\", backend: Virtual(VirtualConfig { binary: Some(\"boards/bin/vb\"), flash_file: None, app_slot_bytes: 1572864, fs_slot_bytes: 262144, time_scale: 100, http: \"127.0.0.1:0\", startup_timeout_ms: 5000, devices: 1, mqtt: false }) }"
        );
        assert!(
            check("kind = \"virtual\"\n[virtual]\ndevices = 3\nmqtt = true\n")
                .ends_with("devices: 3, mqtt: true }) }")
        );
        assert_eq!(
            check("kind = \"virtual\"\n[virtual]\ndevices = 0\n"),
            "boards/x.toml: virtual.devices: 0 must be 1 to 64"
        );
        assert_eq!(
            check("kind = \"virtual\"\n[virtual]\ndevices = 2\nflash_file = \"f.bin\"\n"),
            "boards/x.toml: virtual.devices: a fleet keeps one temporary flash file per device; remove flash_file"
        );
        assert_eq!(
            check("kind = \"virtual\"\n[virtual]\nhttp = \"0.0.0.0:80\"\n"),
            "boards/x.toml: virtual.http: \"0.0.0.0:80\" is not a loopback address such as 127.0.0.1:0"
        );
        assert_eq!(
            check("kind = \"virtual\"\n[sim]\napp_slot_kib = 128\n"),
            "boards/x.toml: sim: this table is only for kind = \"sim\""
        );
        assert!(
            check("kind = \"sim\"\nport = \"/dev/ttyUSB0\"\n")
                .starts_with("boards/x.toml: line 2: unknown field `port`")
        );
        assert_eq!(
            check("kind = \"sim\"\n[sim]\napp_slot_kib = 3\n"),
            "boards/x.toml: sim.app_slot_kib: 3 is not a positive multiple of 4 (the erase unit)"
        );
        assert_eq!(
            check("kind = \"sim\"\n[sim]\nwatchdog = \"ten\"\n").split(": ").nth(1),
            Some("sim.watchdog")
        );
    }

    #[test]
    fn qemu_board_files_are_checked_key_by_key() {
        assert_eq!(
            check("kind = \"qemu\"\n"),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32\", backend: Qemu(QemuConfig { boot_loader: None, firmware: None, qemu: \"qemu-system-riscv32\", icount_shift: 0, watchdog_ms: 100, startup_timeout_ms: 10000, flash_file: None, write_bytes_min: 4096 }) }"
        );
        assert_eq!(
            check(
                "kind = \"qemu\"\n[qemu]\nboot_loader = \"bin/boot\"\nfirmware = \"bin/fw\"\nqemu = \"/opt/q/qemu-system-riscv32\"\nicount_shift = 2\nwatchdog = \"250ms\"\nstartup_timeout = \"5s\"\nflash_file = \"flash.img\"\n"
            ),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32\", backend: Qemu(QemuConfig { boot_loader: Some(\"boards/bin/boot\"), firmware: Some(\"boards/bin/fw\"), qemu: \"/opt/q/qemu-system-riscv32\", icount_shift: 2, watchdog_ms: 250, startup_timeout_ms: 5000, flash_file: Some(\"boards/flash.img\"), write_bytes_min: 4096 }) }"
        );
        assert!(
            check("kind = \"qemu\"\n[qemu]\nicount_shift = 0\ngdb_port = 1234\n")
                .starts_with("boards/x.toml: line 4: unknown field `gdb_port`"),
            "{}",
            check("kind = \"qemu\"\n[qemu]\nicount_shift = 0\ngdb_port = 1234\n")
        );
        assert_eq!(
            check("kind = \"qemu\"\n[qemu]\nicount_shift = 11\n"),
            "boards/x.toml: qemu.icount_shift: 11 must be 0 to 10 (2^shift ns per instruction)"
        );
        assert_eq!(
            check("kind = \"qemu\"\n[qemu]\nwatchdog = \"0s\"\n"),
            "boards/x.toml: qemu.watchdog: 0 would call every firmware hung; give a budget such as \"100ms\""
        );
        assert_eq!(
            check("kind = \"sim\"\n[qemu]\nicount_shift = 1\n"),
            "boards/x.toml: qemu: this table is only for kind = \"qemu\""
        );
        assert_eq!(
            check("kind = \"qemu\"\n[virtual]\n"),
            "boards/x.toml: virtual: this table is only for kind = \"virtual\""
        );
    }

    fn esp(text: &str) -> String {
        check(&format!("kind = \"esp32c3\"\n[esp32c3]\n{text}"))
    }

    #[test]
    fn esp32c3_board_files_are_checked_key_by_key() {
        assert_eq!(
            esp("port = \"/dev/ttyACM0\"\n"),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32c3\", backend: Esp32c3(Esp32c3Config { port: Path(\"/dev/ttyACM0\"), baud: 115200, flasher: Espflash, flash_baud: 460800, probe: None, reset: RtsDtr, elf: None, address: None, startup_timeout_ms: 10000, power: None, wifi: None }) }"
        );
        assert_eq!(
            esp(
                "usb = \"303a:1001:F4:12:FA\"\nflasher = \"probe-rs\"\nprobe = \"303a:1001\"\nreset = \"command\"\nreset_command = \"relay en\"\nelf = \"fw.elf\"\naddress = \"console\"\n[esp32c3.power]\non = \"p on\"\noff = \"p off\"\n[esp32c3.wifi]\nssid = \"lab\"\npass_env = \"PASS\"\n"
            ),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32c3\", backend: Esp32c3(Esp32c3Config { port: Usb(UsbId { vid: 12346, pid: 4097, serial: Some(\"F4:12:FA\") }), baud: 115200, flasher: ProbeRs, flash_baud: 460800, probe: Some(UsbId { vid: 12346, pid: 4097, serial: None }), reset: Command(\"relay en\"), elf: Some(\"boards/fw.elf\"), address: Console, startup_timeout_ms: 10000, power: Some(Power { on: \"p on\", off: \"p off\", cycle: None }), wifi: Some(Wifi { ssid: \"lab\", pass: Env(\"PASS\") }) }) }"
        );
        let errors = [
            (
                "",
                "esp32c3: give the serial port as `port = \"/dev/ttyACM0\"` or `usb = \"303a:1001\"` (`hil boards --scan` prints both)",
            ),
            (
                "port = \"/dev/ttyACM0\"\nusb = \"303a:1001\"\n",
                "esp32c3.port and esp32c3.usb both name the serial port; keep one",
            ),
            (
                "usb = \"303a\"\n",
                "esp32c3.usb: \"303a\" is not VID:PID[:SERIAL] with a 4-digit hexadecimal product id",
            ),
            ("usb = \"30zz:1001\"\n", "esp32c3.usb: \"30zz:1001\": vendor id \"30zz\" is not hexadecimal"),
            (
                "usb = \"303a:1001:\"\n",
                "esp32c3.usb: \"303a:1001:\": the serial number after the second ':' is empty",
            ),
            (
                "usb = \"303a:1001\"\nflasher = \"esptool\"\n",
                "esp32c3.flasher: \"esptool\" is neither \"espflash\" nor \"probe-rs\"",
            ),
            (
                "usb = \"303a:1001\"\nbaud = 300\n",
                "esp32c3.baud: 300 is not a serial speed from 9600 to 2000000",
            ),
            (
                "usb = \"303a:1001\"\nreset = \"command\"\n",
                "esp32c3.reset = \"command\" needs reset_command, the shell command that resets the board",
            ),
            (
                "usb = \"303a:1001\"\nreset_command = \"x\"\n",
                "esp32c3.reset_command is only for reset = \"command\", and reset is \"rts-dtr\"",
            ),
            (
                "usb = \"303a:1001\"\nreset = \"button\"\n",
                "esp32c3.reset: \"button\" is not \"rts-dtr\", \"probe\" or \"command\"",
            ),
            (
                "usb = \"303a:1001\"\naddress = \"10.0.0.9\"\n",
                "esp32c3.address needs the [esp32c3.wifi] table: the board joins no network without it",
            ),
            (
                "usb = \"303a:1001\"\naddress = \"http://h/x\"\n[esp32c3.wifi]\nssid = \"lab\"\n",
                "esp32c3.address: \"http://h/x\" is neither \"console\" nor an address such as 192.168.1.50 or http://esp32c3.local:80",
            ),
            (
                "usb = \"303a:1001\"\n[esp32c3.power]\non = \"x\"\n",
                "esp32c3.power.off: missing or empty; [esp32c3.power] needs `on` and `off` (delete the table for a board without power control)",
            ),
            (
                "usb = \"303a:1001\"\n[esp32c3.wifi]\nssid = \"lab\"\npass = \"short\"\n",
                "esp32c3.wifi.pass: 5 bytes; WPA2 takes 8 to 63 (leave it out for an open network)",
            ),
            (
                "usb = \"303a:1001\"\n[esp32c3.wifi]\nssid = \"lab\"\npass = \"longenough\"\npass_env = \"P\"\n",
                "esp32c3.wifi: pass and pass_env both give the password; keep one",
            ),
        ];
        for (text, want) in errors {
            assert_eq!(esp(text), format!("boards/x.toml: {want}"), "for {text:?}");
        }
        assert_eq!(
            check("kind = \"esp32c3\"\n"),
            "boards/x.toml: esp32c3: kind = \"esp32c3\" needs an [esp32c3] table with at least `port` or `usb`"
        );
        assert_eq!(
            check("kind = \"qemu\"\n[esp32c3]\nusb = \"303a:1001\"\n"),
            "boards/x.toml: esp32c3: this table is only for kind = \"esp32c3\""
        );
        assert!(
            esp("usb = \"303a:1001\"\nbaud_rate = 1\n")
                .starts_with("boards/x.toml: line 4: unknown field `baud_rate`")
        );
    }

    #[test]
    fn the_shipped_esp32c3_board_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/esp32c3.toml");
        let config = load(&path).unwrap();
        let Backend::Esp32c3(esp) = config.backend else { panic!("{config:?}") };
        assert_eq!(esp.port, PortSpec::Usb(UsbId { vid: 0x303a, pid: 0x1001, serial: None }));
        assert_eq!((esp.flasher, esp.power, esp.wifi), (Flasher::Espflash, None, None));
    }
}
