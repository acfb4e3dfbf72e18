//! probe-rs over the ESP32-C3's built-in USB-JTAG (the `probe-rs` feature): listing probes,
//! flashing with probe-rs's flash loader (verified), resetting, and cutting the power at a
//! flash operation through hardware breakpoints on the firmware's flash driver. Espressif's
//! targets live in `probe-rs-espressif`, registered once before the first attach.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use probe_rs::flashing::DownloadOptions;
use probe_rs::probe::list::Lister;
use probe_rs::{Permissions, Session};

use super::port::Found;
use crate::board::config::UsbId;

/// probe-rs's name of the chip.
const TARGET: &str = "esp32c3";
/// How long the breakpoint thread waits for a halt before it looks at its stop flag.
const HALT_POLL: Duration = Duration::from_millis(50);

fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(probe_rs_espressif::register_plugin);
}

/// The attached probes.
pub fn list() -> Vec<Found> {
    register();
    Lister::new()
        .list_all()
        .into_iter()
        .map(|info| Found {
            path: None,
            vid: info.vendor_id,
            pid: info.product_id,
            serial: info.serial_number.clone(),
            product: Some(info.identifier.clone()),
        })
        .collect()
}

/// A session on the probe `selector` names (the only one attached when `None`).
fn session(selector: Option<&UsbId>) -> Result<Session, String> {
    register();
    let lister = Lister::new();
    let probes: Vec<_> = lister
        .list_all()
        .into_iter()
        .filter(|info| {
            selector
                .is_none_or(|id| id.matches(info.vendor_id, info.product_id, info.serial_number.as_deref()))
        })
        .collect();
    let info = match probes.as_slice() {
        [one] => one.clone(),
        [] => return Err("no probe is attached (or none matches the board file's `probe`)".into()),
        many => {
            return Err(format!(
                "{} probes are attached; name one with the board file's `probe = \"VID:PID:SERIAL\"`",
                many.len()
            ));
        }
    };
    let probe = info.open().map_err(|e| format!("cannot open the probe {}: {e}", info.identifier))?;
    probe.attach(TARGET, Permissions::default()).map_err(|e| format!("cannot attach to the {TARGET}: {e}"))
}

/// Writes `segments` (flash offset, bytes) with probe-rs's flash loader, verifies them, and
/// resets the core into what was written.
pub fn write(
    selector: Option<&UsbId>,
    segments: &[(u32, &[u8])],
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mut session = session(selector)?;
    let mut loader = session.target().flash_loader();
    for &(address, data) in segments {
        loader
            .add_data(u64::from(address), data)
            .map_err(|e| format!("probe-rs refuses {} bytes at {address:#x}: {e}", data.len()))?;
    }
    progress("writing and verifying with probe-rs");
    let mut options = DownloadOptions::default();
    options.verify = true;
    loader.commit(&mut session, options).map_err(|e| format!("probe-rs failed to write the flash: {e}"))?;
    let mut core = session.core(0).map_err(|e| e.to_string())?;
    core.reset().map_err(|e| format!("probe-rs wrote the flash but cannot reset the core: {e}"))
}

/// Resets the core through JTAG.
pub fn reset(selector: Option<&UsbId>) -> Result<(), String> {
    let mut session = session(selector)?;
    let mut core = session.core(0).map_err(|e| e.to_string())?;
    core.reset().map_err(|e| format!("probe-rs cannot reset the core: {e}"))
}

/// A cut at a flash operation: a thread holds the probe with hardware breakpoints on the flash
/// driver's entry points, counts the hits, and at hit `hit` (0-based) calls `strike` (the power
/// command `off`) while the core is halted before the operation touches the flash.
pub struct OpCut {
    stop: Arc<AtomicBool>,
    struck: Arc<Mutex<Option<Result<u64, String>>>>,
    thread: Option<JoinHandle<()>>,
}

impl OpCut {
    pub fn arm(
        selector: Option<&UsbId>,
        addresses: &[u32],
        hit: u64,
        strike: Box<dyn FnOnce() -> Result<(), String> + Send>,
    ) -> Result<OpCut, String> {
        let mut session = session(selector)?;
        {
            let mut core = session.core(0).map_err(|e| e.to_string())?;
            core.halt(Duration::from_secs(1)).map_err(|e| format!("cannot halt the core: {e}"))?;
            for &address in addresses {
                core.set_hw_breakpoint(u64::from(address))
                    .map_err(|e| format!("cannot set a breakpoint at {address:#x}: {e}"))?;
            }
            core.run().map_err(|e| e.to_string())?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let struck = Arc::new(Mutex::new(None));
        let (stop_flag, result) = (stop.clone(), struck.clone());
        let thread = std::thread::spawn(move || {
            let outcome = count_hits(&mut session, hit, &stop_flag).and_then(|hits| match hits {
                Some(n) => strike().map(|()| n),
                None => Err("disarmed".into()),
            });
            *result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        });
        Ok(OpCut { stop, struck, thread: Some(thread) })
    }

    /// Whether the cut struck, and at which hit.
    pub fn struck(&self) -> Option<u64> {
        match &*self.struck.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(hit)) => Some(*hit),
            _ => None,
        }
    }
}

impl Drop for OpCut {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Continues the core past each breakpoint until hit `hit`; `None` when stopped first.
fn count_hits(session: &mut Session, hit: u64, stop: &AtomicBool) -> Result<Option<u64>, String> {
    let mut core = session.core(0).map_err(|e| e.to_string())?;
    let mut hits = 0;
    while !stop.load(Ordering::Relaxed) {
        if core.wait_for_core_halted(HALT_POLL).is_err() {
            continue;
        }
        if hits == hit {
            return Ok(Some(hits));
        }
        hits += 1;
        // Step off the breakpoint with it cleared, so the continue does not stop there again.
        let pc: u64 = core.read_core_reg(core.program_counter()).map_err(|e| e.to_string())?;
        core.clear_hw_breakpoint(pc).map_err(|e| e.to_string())?;
        core.step().map_err(|e| e.to_string())?;
        core.set_hw_breakpoint(pc).map_err(|e| e.to_string())?;
        core.run().map_err(|e| e.to_string())?;
    }
    let _ = core.clear_all_hw_breakpoints();
    Ok(None)
}
