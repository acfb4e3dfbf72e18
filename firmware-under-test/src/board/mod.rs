//! The virtual board: the device application as a host process, with its flash in a file, its
//! UART on a pseudo-terminal and its HTTP server on loopback. `README.md` documents the command
//! line and the protocol; this module is the process: options, the device's clock and console,
//! the boot loop, reboots, the watchdog, the timers and polling. The channels are in `serial.rs`
//! and `web.rs`, pulls in `pull.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ota_core::layout::{Layout, Slot};
use ota_core::updater::{self, Updater};

use crate::app::{self, App, RpcError, Settings, Start, Tick};
use crate::file_flash::FileFlash;

pub mod pull;
pub mod rpc;
pub mod serial;
pub mod web;

/// Boots in a row without a running firmware before the device counts as bricked.
const BOOT_LOOPS_MAX: u32 = 8;

/// The command line, validated.
#[derive(Clone, Debug)]
pub struct Options {
    pub flash: PathBuf,
    pub http: Option<String>,
    pub serial: bool,
    pub provision: Option<PathBuf>,
    pub power_cut_after_ops: Option<u64>,
    pub platform: String,
    pub app_slot_kib: u32,
    pub fs_slot_kib: u32,
    pub device_id: String,
    pub watchdog_ms: u64,
    pub time_scale: u64,
}

pub const USAGE: &str =
    "usage: virtual-board --flash FILE [--http 127.0.0.1:PORT] [--serial pty|none] [--provision BUNDLE]
                     [--power-cut-after-ops N] [--platform NAME] [--app-slot-kib N] [--fs-slot-kib N]
                     [--device-id ID] [--watchdog DURATION] [--time-scale N]";

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            flash: PathBuf::new(),
            http: Some("127.0.0.1:0".into()),
            serial: true,
            provision: None,
            power_cut_after_ops: None,
            platform: "host".into(),
            app_slot_kib: 1536,
            fs_slot_kib: 256,
            device_id: "virtual-board".into(),
            watchdog_ms: 10_000,
            time_scale: 1,
        };
        let mut flash = None;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--flash" => flash = Some(PathBuf::from(value()?)),
                "--http" => o.http = Some(value()?).filter(|v| v != "none"),
                "--serial" => {
                    o.serial = match value()?.as_str() {
                        "pty" => true,
                        "none" => false,
                        other => return Err(format!("--serial is pty or none, not {other:?}")),
                    }
                }
                "--provision" => o.provision = Some(PathBuf::from(value()?)),
                "--power-cut-after-ops" => o.power_cut_after_ops = Some(number(&flag, &value()?)?),
                "--platform" => o.platform = value()?,
                "--app-slot-kib" => o.app_slot_kib = number(&flag, &value()?)?,
                "--fs-slot-kib" => o.fs_slot_kib = number(&flag, &value()?)?,
                "--device-id" => o.device_id = value()?,
                "--watchdog" => o.watchdog_ms = duration_ms(&value()?)?,
                "--time-scale" => o.time_scale = number(&flag, &value()?)?,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        o.flash = flash.ok_or("--flash FILE is required")?;
        if o.app_slot_kib == 0
            || !o.app_slot_kib.is_multiple_of(4)
            || o.fs_slot_kib < 16
            || !o.fs_slot_kib.is_multiple_of(4)
        {
            return Err(
                "--app-slot-kib and --fs-slot-kib are multiples of 4 (the erase unit); fs at least 16".into(),
            );
        }
        if o.time_scale == 0 {
            return Err("--time-scale is at least 1".into());
        }
        if let Some(addr) = &o.http
            && !(addr.starts_with("127.") || addr.starts_with("localhost:") || addr.starts_with("[::1]"))
        {
            return Err(format!("--http {addr}: the virtual board serves loopback only"));
        }
        Ok(o)
    }

    pub fn layout(&self) -> Layout {
        ota_sim::device::Config {
            app_slot_bytes: self.app_slot_kib * 1024,
            fs_slot_bytes: self.fs_slot_kib * 1024,
            ..Default::default()
        }
        .layout()
    }

    pub fn settings(&self) -> Settings {
        Settings {
            platform: self.platform.clone(),
            app_name: "ota-firmware".into(),
            default_device_id: self.device_id.clone(),
            watchdog_ms: self.watchdog_ms,
            ..Settings::default()
        }
    }
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{flag} takes a number, not {text:?}"))
}

fn duration_ms(text: &str) -> Result<u64, String> {
    let (n, scale) = match text.strip_suffix("ms") {
        Some(n) => (n, 1),
        None => match text.strip_suffix('s') {
            Some(n) => (n, 1000),
            None => return Err(format!("{text:?}: write a duration as 500ms or 10s")),
        },
    };
    n.parse::<u64>().map(|n| n * scale).map_err(|_| format!("{text:?} is not a duration"))
}

/// The device's clock: the wall clock since the process started, times the time scale.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    scale: u64,
}

impl Clock {
    pub fn new(scale: u64) -> Clock {
        Clock { start: Instant::now(), scale: scale.max(1) }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 * self.scale
    }

    /// Real time to sleep for `device_ms` of device time.
    pub fn real(&self, device_ms: u64) -> Duration {
        Duration::from_millis(device_ms / self.scale)
    }
}

/// Where the console goes: stderr, and the serial line once it is open.
#[derive(Clone, Default)]
pub struct Console {
    serial: Arc<Mutex<Option<Box<dyn Write + Send>>>>,
}

impl Console {
    pub fn attach(&self, writer: Box<dyn Write + Send>) {
        *lock(&self.serial) = Some(writer);
    }

    /// Writes to the serial line (frames and log lines share it, as on Mongoose OS).
    pub fn serial_write(&self, bytes: &[u8]) {
        if let Some(w) = lock(&self.serial).as_mut() {
            let _ = w.write_all(bytes).and_then(|_| w.flush());
        }
    }

    pub fn log(&self, now_ms: u64, line: &str) {
        let text = format!("[{now_ms:>9} ms] {line}");
        eprintln!("{text}");
        self.serial_write(format!("{text}\r\n").as_bytes());
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the device is doing.
pub enum Life {
    Running(Box<App<FileFlash>>),
    Hung { flash: FileFlash, since_ms: u64, slot: Slot },
    Bricked { flash: FileFlash, why: String },
}

/// The device: shared by the channels and the timer thread behind one mutex.
pub struct Device {
    life: Option<Life>,
    layout: Layout,
    settings: Settings,
    pub clock: Clock,
    pub console: Console,
    /// Device time of the last poll, for `update.interval`.
    last_poll_ms: u64,
}

pub type SharedDevice = Arc<Mutex<Device>>;

impl Device {
    /// Boots the flash.
    pub fn new(
        flash: FileFlash,
        layout: Layout,
        settings: Settings,
        clock: Clock,
        console: Console,
    ) -> Device {
        let mut device = Device { life: None, layout, settings, clock, console, last_poll_ms: 0 };
        device.boot(flash);
        device
    }

    fn boot(&mut self, mut flash: FileFlash) {
        for _ in 0..BOOT_LOOPS_MAX {
            let now = self.clock.now_ms();
            match app::start(flash, self.layout, self.settings.clone(), now) {
                Start::Running(mut app) => {
                    for note in app.take_notes() {
                        self.console.log(now, &note);
                    }
                    let (version, _) = app.version();
                    self.console.log(now, &format!("running {version} in {}", app.slot()));
                    self.life = Some(Life::Running(app));
                    return;
                }
                Start::Hung { flash, slot } => {
                    self.console.log(now, &format!("firmware in {slot} hangs; the watchdog will reset it"));
                    self.life = Some(Life::Hung { flash, since_ms: now, slot });
                    return;
                }
                Start::Reset { flash: f, why } => {
                    self.console.log(now, &why);
                    flash = f;
                }
                Start::Bricked { flash, why } => {
                    self.console.log(now, &format!("BRICKED: {why}"));
                    self.life = Some(Life::Bricked { flash, why });
                    return;
                }
            }
        }
        let why = format!("{BOOT_LOOPS_MAX} boots in a row without a running firmware");
        self.console.log(self.clock.now_ms(), &format!("BRICKED: {why}"));
        self.life = Some(Life::Bricked { flash, why });
    }

    pub fn settings_device_id(&self) -> String {
        self.settings.default_device_id.clone()
    }

    /// Restarts the device in the same process, ports kept.
    pub fn reboot(&mut self, why: &str) {
        println!("reboot: {why}");
        let _ = std::io::stdout().flush();
        self.console.log(self.clock.now_ms(), &format!("reboot: {why}"));
        let flash = match self.life.take().expect("the device has a life between calls") {
            Life::Running(app) => (*app).into_flash(),
            Life::Hung { flash, .. } | Life::Bricked { flash, .. } => flash,
        };
        self.boot(flash);
    }

    /// Runs `f` on the running application, or says why it cannot.
    pub fn with_app<T>(&mut self, f: impl FnOnce(&mut App<FileFlash>, u64) -> T) -> Result<T, RpcError> {
        let now = self.clock.now_ms();
        match self.life.as_mut() {
            Some(Life::Running(app)) => {
                let result = f(app, now);
                for note in app.take_notes() {
                    self.console.log(now, &note);
                }
                Ok(result)
            }
            Some(Life::Hung { slot, .. }) => Err(RpcError::new(-1, format!("the firmware in {slot} hangs"))),
            Some(Life::Bricked { why, .. }) => {
                Err(RpcError::new(-1, format!("the device is bricked: {why}")))
            }
            None => Err(RpcError::new(-1, "the device is rebooting")),
        }
    }

    /// Runs what is due: the watchdog, the application's timers, a reboot it asks for. Returns a
    /// pull that polling wants started.
    pub fn tick(&mut self) -> Option<crate::service::PullRequest> {
        let now = self.clock.now_ms();
        let watchdog = self.settings.watchdog_ms;
        let tick = match self.life.as_mut() {
            Some(Life::Hung { since_ms, .. }) if now >= *since_ms + watchdog => {
                Tick::Reboot { why: "watchdog".into() }
            }
            Some(Life::Running(app)) => app.tick(now),
            _ => Tick::Nothing,
        };
        if let Tick::Reboot { why } = tick {
            self.reboot(&why);
            return None;
        }
        self.poll_due(now)
    }

    /// Polling (§6.2): with `update.url` and `update.interval` set, a pull every interval, with
    /// `ignore_same_version`, skipped while an update runs or the image is uncommitted.
    fn poll_due(&mut self, now: u64) -> Option<crate::service::PullRequest> {
        let Some(Life::Running(app)) = self.life.as_mut() else { return None };
        let config = app.config();
        let url = config.update_url.clone()?;
        if config.update_interval_s == 0 || now < self.last_poll_ms + config.update_interval_s * 1000 {
            return None;
        }
        self.last_poll_ms = now;
        if app.update_source().is_some() || !app.is_committed() {
            return None;
        }
        Some(crate::service::PullRequest {
            url,
            commit_timeout_s: config.update_commit_timeout_s,
            ignore_same_version: true,
        })
    }

    /// Device time when something is next due, for the timer thread's sleep.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        match self.life.as_mut() {
            Some(Life::Hung { since_ms, .. }) => Some(*since_ms + self.settings.watchdog_ms),
            Some(Life::Running(app)) => app.next_due_ms(),
            _ => None,
        }
    }
}

/// Where a started board listens.
#[derive(Clone, Debug)]
pub struct Ports {
    /// The pty a client opens, when the serial line is on.
    pub serial: Option<String>,
    /// The bound HTTP address, when the server is on.
    pub http: Option<String>,
}

/// Runs the virtual board until the process is killed: starts it, prints where it listens, and
/// keeps the timers going.
pub fn run(options: Options) -> Result<(), String> {
    let ports = spawn(options)?;
    if let Some(serial) = &ports.serial {
        println!("serial={serial}");
    }
    if let Some(http) = &ports.http {
        println!("http={http}");
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

/// Starts the board in this process (its channels and its timer thread) and returns where it
/// listens. Benchmarks and tests use it directly.
pub fn spawn(options: Options) -> Result<Ports, String> {
    let layout = options.layout();
    let size = layout.fs[1].end() as u32;
    let mut flash =
        FileFlash::open(&options.flash, size).map_err(|e| format!("{}: {e}", options.flash.display()))?;
    if let Some(path) = &options.provision {
        let bundle = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        provision(&mut flash, &layout, &options.platform, &bundle).map_err(|e| {
            format!(
                "provisioning {} failed: {e}; no boot-state record points at what was written",
                path.display()
            )
        })?;
    }
    if let Some(op) = options.power_cut_after_ops {
        flash.cut_power_at_op(op);
    }
    let clock = Clock::new(options.time_scale);
    let console = Console::default();
    let device = Arc::new(Mutex::new(Device::new(flash, layout, options.settings(), clock, console.clone())));
    let serial = options.serial.then(|| serial::start(device.clone(), console.clone())).transpose()?;
    let http = options.http.as_deref().map(|addr| web::start(device.clone(), addr)).transpose()?;
    std::thread::spawn(move || timers(&device, clock));
    Ok(Ports { serial, http })
}

/// The timer thread: what falls due, polling, and sleeping until the next thing is due.
fn timers(device: &SharedDevice, clock: Clock) {
    loop {
        let (poll, due) = {
            let mut d = lock(device);
            (d.tick(), d.next_due_ms())
        };
        if let Some(request) = poll {
            let device = device.clone();
            std::thread::spawn(move || pull::run(&device, &request));
        }
        let now = clock.now_ms();
        let wait = due.map_or(Duration::from_millis(50), |due| clock.real(due.saturating_sub(now)));
        std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(50)));
    }
}

/// `--provision`: the bundle into slot 0, committed, as a factory station does; slot 0's
/// filesystem is formatted when the bundle has none.
pub fn provision(
    flash: &mut FileFlash,
    layout: &Layout,
    platform: &str,
    bundle: &[u8],
) -> Result<(), String> {
    let arch =
        ota_core::manifest::Platform::new(platform).ok_or("the platform name is longer than 16 bytes")?;
    let device = updater::Device { arch, app_part: None };
    let mut updater =
        Updater::begin_provision(flash, layout, device, vec![0u8; 4096]).map_err(|e| e.to_string())?;
    updater.process(flash, bundle).map_err(|e| e.to_string())?;
    let outcome = updater.finish(flash).map_err(|e| e.to_string())?;
    if let updater::Outcome::Provisioned { state } = outcome
        && state.record.state.slots[0].fs_len_bytes == 0
    {
        ota_sim::lfs::format(flash, layout.fs(Slot::S0)).map_err(|e| e.to_string())?;
    }
    Ok(())
}
