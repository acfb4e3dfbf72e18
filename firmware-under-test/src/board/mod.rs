//! The virtual board: the device application as a host process, with its flash in a file, its
//! UART on a pseudo-terminal and its HTTP server on loopback. `README.md` documents the command
//! line and the protocol; this module is the process: options, the device's clock and console,
//! the boot loop, reboots, the watchdog, the timers and polling. The channels are in `serial.rs`
//! and `web.rs`, pulls in `pull.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ota_app::{Event, Phase, Stamped};
use ota_core::layout::{Layout, Region, Slot};
use ota_core::updater::{self, Updater};

use crate::app::{self, App, RpcError, Settings, Start, Tick};
use crate::file_flash::FileFlash;

pub mod mqtt;
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
    /// A `conf9.json` written into the running filesystem at start, as a factory station sets
    /// a device's configuration (`mqtt.*`, `shadow.*`, `device.id`).
    pub conf9: Option<PathBuf>,
    pub power_cut_after_ops: Option<u64>,
    pub power_cut_at_phase: Option<Phase>,
    pub platform: String,
    pub app_slot_kib: u32,
    pub fs_slot_kib: u32,
    pub device_id: String,
    pub watchdog_ms: u64,
    pub time_scale: u64,
    pub clock_start_ms: u64,
    pub clock_frozen: bool,
}

pub const USAGE: &str =
    "usage: virtual-board --flash FILE [--http 127.0.0.1:PORT] [--serial pty|none] [--provision BUNDLE] [--conf9 FILE]
                     [--power-cut-after-ops N] [--power-cut-at-phase PHASE] [--platform NAME] [--app-slot-kib N] [--fs-slot-kib N]
                     [--device-id ID] [--watchdog DURATION] [--time-scale N] [--clock-start-ms N] [--clock-frozen]";

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            flash: PathBuf::new(),
            http: Some("127.0.0.1:0".into()),
            serial: true,
            provision: None,
            conf9: None,
            power_cut_after_ops: None,
            power_cut_at_phase: None,
            platform: "host".into(),
            app_slot_kib: 1536,
            fs_slot_kib: 256,
            device_id: "virtual-board".into(),
            watchdog_ms: 10_000,
            time_scale: 1,
            clock_start_ms: 0,
            clock_frozen: false,
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
                "--conf9" => o.conf9 = Some(PathBuf::from(value()?)),
                "--power-cut-after-ops" => o.power_cut_after_ops = Some(number(&flag, &value()?)?),
                "--power-cut-at-phase" => o.power_cut_at_phase = Some(phase(&value()?)?),
                "--platform" => o.platform = value()?,
                "--app-slot-kib" => o.app_slot_kib = number(&flag, &value()?)?,
                "--fs-slot-kib" => o.fs_slot_kib = number(&flag, &value()?)?,
                "--device-id" => o.device_id = value()?,
                "--watchdog" => o.watchdog_ms = duration_ms(&value()?)?,
                "--time-scale" => o.time_scale = number(&flag, &value()?)?,
                "--clock-start-ms" => o.clock_start_ms = number(&flag, &value()?)?,
                "--clock-frozen" => o.clock_frozen = true,
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

    /// The flash map: two 4 KiB boot-state areas, then the app slots, then the fs slots.
    pub fn layout(&self) -> Layout {
        let e = ERASE_BYTES;
        let (app, fs) = (self.app_slot_kib * 1024, self.fs_slot_kib * 1024);
        let app0 = 2 * e;
        let fs0 = app0 + 2 * app;
        Layout::new(
            e,
            WRITE_BYTES,
            [Region::new(0, e), Region::new(e, e)],
            [Region::new(app0, app), Region::new(app0 + app, app)],
            [Region::new(fs0, fs), Region::new(fs0 + fs, fs)],
        )
        .unwrap_or_else(|e| panic!("the virtual board's layout, checked by Options::parse: {e}"))
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

/// The erase unit and write unit of the virtual board's flash, as on the ESP32.
const ERASE_BYTES: u32 = 4096;
const WRITE_BYTES: u32 = 4;

fn phase(text: &str) -> Result<Phase, String> {
    serde_json::from_value(serde_json::Value::String(text.into())).map_err(|_| {
        format!(
            "--power-cut-at-phase is one of write, finalize, merge, commit, revert, snapshot, not {text:?}"
        )
    })
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

/// The device's clock: device milliseconds that run `scale` times as fast as the wall clock,
/// and that a test rig may freeze and step (`Board.Clock`), so that what falls due between two
/// checks never depends on how fast the host is.
#[derive(Clone, Debug)]
pub struct Clock {
    state: Arc<Mutex<ClockState>>,
    scale: u64,
}

#[derive(Debug)]
struct ClockState {
    /// Device time when the clock last started or stopped.
    base_ms: u64,
    /// When it last started; `None` while frozen.
    running_since: Option<Instant>,
}

impl Clock {
    /// A running clock that reads `start_ms` now.
    pub fn new(scale: u64, start_ms: u64) -> Clock {
        let state = ClockState { base_ms: start_ms, running_since: Some(Instant::now()) };
        Clock { state: Arc::new(Mutex::new(state)), scale: scale.max(1) }
    }

    pub fn now_ms(&self) -> u64 {
        Self::read(&lock(&self.state), self.scale)
    }

    fn read(state: &ClockState, scale: u64) -> u64 {
        let run = state.running_since.map_or(0, |t| (t.elapsed().as_millis() as u64).saturating_mul(scale));
        state.base_ms.saturating_add(run)
    }

    pub fn is_frozen(&self) -> bool {
        lock(&self.state).running_since.is_none()
    }

    /// Stops the clock where it is.
    pub fn freeze(&self) {
        let mut state = lock(&self.state);
        state.base_ms = Self::read(&state, self.scale);
        state.running_since = None;
    }

    /// Lets the clock run again from where it stopped.
    pub fn resume(&self) {
        let mut state = lock(&self.state);
        if state.running_since.is_none() {
            state.running_since = Some(Instant::now());
        }
    }

    /// Sets a frozen clock to `ms` (never backwards).
    fn set(&self, ms: u64) {
        let mut state = lock(&self.state);
        state.base_ms = state.base_ms.max(ms);
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

    /// An event as its JSON line, on stderr and the serial line.
    pub fn event(&self, stamped: &Stamped) {
        let line = stamped.console_line();
        eprintln!("{line}");
        self.serial_write(format!("{line}\r\n").as_bytes());
    }

    pub fn events(&self, events: Vec<Stamped>) {
        for stamped in &events {
            self.event(stamped);
        }
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
    /// Boots since the process started: a channel that lives for one boot (MQTT) watches it.
    pub boots: u64,
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
        let mut device = Device { life: None, layout, settings, clock, console, boots: 0 };
        device.boot(flash);
        device
    }

    fn boot(&mut self, mut flash: FileFlash) {
        self.boots += 1;
        for _ in 0..BOOT_LOOPS_MAX {
            let now = self.clock.now_ms();
            let mut events = Vec::new();
            let start = app::start(flash, self.layout, self.settings.clone(), now, &mut events);
            self.console.events(events);
            match start {
                Start::Running(app) => {
                    self.life = Some(Life::Running(app));
                    // What is due at once (a commit timeout of 0) runs before anything else.
                    self.tick();
                    return;
                }
                Start::Hung { flash, slot } => {
                    self.life = Some(Life::Hung { flash, since_ms: now, slot });
                    return;
                }
                Start::Reset { flash: f } => flash = f,
                Start::Bricked { flash, why } => {
                    self.life = Some(Life::Bricked { flash, why });
                    return;
                }
            }
        }
        let why = format!("{BOOT_LOOPS_MAX} boots in a row without a running firmware");
        self.event(Event::Bricked { why: why.clone() });
        self.life = Some(Life::Bricked { flash, why });
    }

    /// An event of the port's own (the watchdog, a brick after a boot loop).
    fn event(&self, event: Event) {
        let ops = match &self.life {
            Some(Life::Running(app)) => app.flash().ops(),
            Some(Life::Hung { flash, .. } | Life::Bricked { flash, .. }) => flash.ops(),
            None => 0,
        };
        self.console.event(&Stamped { ms: self.clock.now_ms(), ops, event });
    }

    pub fn settings_device_id(&self) -> String {
        self.settings.default_device_id.clone()
    }

    /// Restarts the device in the same process, ports kept.
    pub fn reboot(&mut self, why: &str) {
        println!("reboot: {why}");
        let _ = std::io::stdout().flush();
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
                self.console.events(app.take_events());
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
            Some(Life::Hung { since_ms, .. }) if now >= since_ms.saturating_add(watchdog) => {
                self.event(Event::WatchdogReset);
                Tick::Reboot { why: "watchdog".into() }
            }
            Some(Life::Running(app)) => {
                let tick = app.tick(now);
                self.console.events(app.take_events());
                tick
            }
            _ => Tick::Nothing,
        };
        match tick {
            Tick::Reboot { why } => {
                self.reboot(&why);
                None
            }
            Tick::Pull(request) => Some(request),
            Tick::Nothing => None,
        }
    }

    /// `Board.CutAtPhase`: the first flash operation after the application marks `phase` dies
    /// half done.
    pub fn arm_cut_at_phase(&mut self, phase: Phase) {
        match self.life.as_mut() {
            Some(Life::Running(app)) => app.flash_mut().cut_power_at_phase(phase),
            Some(Life::Hung { flash, .. } | Life::Bricked { flash, .. }) => flash.cut_power_at_phase(phase),
            None => {}
        }
    }

    /// `Board.CutAtOp`: the power goes at the `ops_from_now`-th mutating flash operation.
    pub fn arm_cut_after(&mut self, ops_from_now: u64, when: crate::file_flash::CutWhen) {
        match self.life.as_mut() {
            Some(Life::Running(app)) => app.flash_mut().cut_power_after(ops_from_now, when),
            Some(Life::Hung { flash, .. } | Life::Bricked { flash, .. }) => {
                flash.cut_power_after(ops_from_now, when)
            }
            None => {}
        }
    }

    /// `Board.Clock {advance_ms}`: with the clock frozen, lets `ms` of device time pass, running
    /// everything that falls due on the way at the time it falls due (reboots included), then
    /// leaves the clock frozen at the end. Returns the device time, and pulls polling started.
    pub fn advance(&mut self, ms: u64) -> (u64, Vec<crate::service::PullRequest>) {
        self.clock.freeze();
        let target = self.clock.now_ms().saturating_add(ms);
        let mut pulls = Vec::new();
        // Each round handles one due thing; a boot has a bounded number of them, and a hung or
        // rebooting device is bounded by the watchdog, so this many rounds is never reached in
        // practice; it bounds a device that keeps rebooting.
        for _ in 0..1024 {
            let Some(due) = self.next_due_ms().filter(|&due| due <= target) else { break };
            self.clock.set(due);
            pulls.extend(self.tick());
        }
        self.clock.set(target);
        pulls.extend(self.tick());
        (self.clock.now_ms(), pulls)
    }

    /// Device time when something is next due, for the timer thread's sleep.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        match self.life.as_mut() {
            Some(Life::Hung { since_ms, .. }) => Some(since_ms.saturating_add(self.settings.watchdog_ms)),
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
    let existed = options.flash.exists();
    let mut flash =
        FileFlash::open(&options.flash, size).map_err(|e| format!("{}: {e}", options.flash.display()))?;
    if let Some(path) = &options.provision {
        let provisioned = std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bundle| provision(&mut flash, &layout, &options.platform, &bundle))
            .map_err(|e| format!("provisioning {} failed: {e}", path.display()));
        if let Err(why) = provisioned {
            // A flash file this run created holds nothing anyone asked for: it goes.
            drop(flash);
            let kept = if existed {
                "the flash file keeps its old boot state: no record points at what was written"
            } else {
                let _ = std::fs::remove_file(&options.flash);
                "no flash file was left behind"
            };
            return Err(format!("{why}; {kept}"));
        }
    }
    if let Some(op) = options.power_cut_after_ops {
        flash.cut_power_at_op(op);
    }
    if let Some(phase) = options.power_cut_at_phase {
        flash.cut_power_at_phase(phase);
    }
    let clock = Clock::new(options.time_scale, options.clock_start_ms);
    if options.clock_frozen {
        clock.freeze();
    }
    let console = Console::default();
    let device =
        Arc::new(Mutex::new(Device::new(flash, layout, options.settings(), clock.clone(), console.clone())));
    if let Some(path) = &options.conf9 {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        lock(&device)
            .with_app(|app, _| app.write_file(ota_app::config::USER_FILE, &bytes))
            .and_then(|written| written)
            .map_err(|e| {
                format!("--conf9 {}: {}; the device keeps its configuration", path.display(), e.message)
            })?;
    }
    let serial = options.serial.then(|| serial::start(device.clone(), console.clone())).transpose()?;
    let http = options.http.as_deref().map(|addr| web::start(device.clone(), addr)).transpose()?;
    mqtt::start(device.clone());
    std::thread::spawn(move || timers(&device, &clock));
    Ok(Ports { serial, http })
}

/// The timer thread: what falls due, polling, and sleeping until the next thing is due.
fn timers(device: &SharedDevice, clock: &Clock) {
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
        ota_lfs::format(flash, layout.fs(Slot::S0)).map_err(|e| e.to_string())?;
    }
    Ok(())
}
