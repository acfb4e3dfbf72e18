//! What the boards that run the device application as a device (the virtual board, QEMU) share:
//! the timeline and console their output readers fill ([`Log`]), and the readings of the
//! device's RPC answers (`Sys.GetInfo`, `OTA.GetBootState`) and the calls both make the same way
//! (`OTA.CreateSnapshot`, `FS.Put`, `FS.Get`).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Activity, BoardError, BoardResult, BootStateView, Refusal};
use crate::result::EventKind;
use crate::rpc_client::RpcErr;
use ota_app::Stamped;

/// Console lines kept between two drains; a runaway device cannot exhaust memory.
pub const CONSOLE_LINES_MAX: usize = 100_000;

/// Timeline and console, shared with the threads that read the device's output.
#[derive(Debug, Default)]
pub struct Log {
    /// The device's time as last seen (an event's stamp, a clock reply).
    pub device_ms: u64,
    /// The last event that said whether a firmware runs, hangs or nothing boots.
    pub life: Option<ota_app::Event>,
    pub console: Vec<String>,
    pub events: Vec<(u64, EventKind)>,
}

impl Log {
    pub fn now_ms(&self) -> u64 {
        self.device_ms
    }

    pub fn event(&mut self, kind: EventKind) {
        let at = self.now_ms();
        self.events.push((at, kind));
    }

    /// A typed event from the device's console.
    pub fn device_event(&mut self, stamped: Stamped) {
        self.device_ms = self.device_ms.max(stamped.ms);
        if let ota_app::Event::Running { .. } | ota_app::Event::Hung { .. } | ota_app::Event::Bricked { .. } =
            stamped.event
        {
            self.life = Some(stamped.event.clone());
        }
        if let Some(kind) = super::timeline_event(&stamped.event, "") {
            self.events.push((stamped.ms, kind));
        }
    }

    pub fn console(&mut self, line: String) {
        if self.console.len() < CONSOLE_LINES_MAX {
            self.console.push(line);
        }
    }

    /// A console line: kept, and its typed event (an `@ota` line) on the timeline.
    pub fn line(&mut self, line: String) {
        if let Some(stamped) = Stamped::from_console_line(&line) {
            self.device_event(stamped);
        }
        self.console(line);
    }

    /// A new trial: nothing seen yet.
    pub fn clear(&mut self) {
        *self = Log::default();
    }
}

pub fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `Sys.GetInfo` says runs.
pub fn running(info: &Value) -> Activity {
    let slot = info.get("ota_slot").and_then(Value::as_u64).unwrap_or(0) as u8;
    let version = info.get("fw_version").and_then(Value::as_str).unwrap_or_default().to_string();
    Activity::Running { slot, version }
}

/// `OTA.GetBootState`'s answer.
pub fn boot_state_view(state: &Value) -> BootStateView {
    let uint = |key: &str| state.get(key).and_then(Value::as_u64);
    let revert = state.get("revert_slot").and_then(Value::as_i64).unwrap_or(-1);
    BootStateView {
        active_slot: uint("active_slot").unwrap_or(0) as u8,
        revert_slot: u8::try_from(revert).ok(),
        committed: state.get("is_committed").and_then(Value::as_bool).unwrap_or(false),
        commit_timeout_s: uint("commit_timeout").unwrap_or(0) as u32,
    }
}

/// Provisions `bundle` into a flash laid out as `ota_app::partitions` maps it (`mapped`, the
/// map's bytes, 0xFF where erased) as a factory does: `ota-core` writes the app into ota_0 and the
/// fs into fs_0 (formatted when the bundle has no fs) and records slot 0 committed in the boot
/// state. The QEMU board's flash file and the ESP32-C3's factory image are both made this way;
/// only what lies outside the map's partitions (boot loaders, the partition table) differs.
pub fn provision(mapped: &mut [u8], platform: &str, bundle: &[u8]) -> Result<(), String> {
    let layout = ota_app::partitions::layout();
    let mut flash = ota_core::flash::RamFlash::<4, 4096>::with_contents(mapped);
    let arch =
        ota_core::manifest::Platform::new(platform).ok_or("the platform name is longer than 16 bytes")?;
    let device = ota_core::updater::Device { arch, app_part: None };
    let mut updater =
        ota_core::updater::Updater::begin_provision(&mut flash, &layout, device, vec![0u8; 4096])
            .map_err(|e| e.to_string())?;
    updater.process(&mut flash, bundle).map_err(|e| e.to_string())?;
    let outcome = updater.finish(&mut flash).map_err(|e| e.to_string())?;
    if let ota_core::updater::Outcome::Provisioned { state } = outcome
        && state.record.state.slots[0].fs_len_bytes == 0
    {
        ota_sim::lfs::format(&mut flash, layout.fs(ota_core::layout::Slot::S0)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A board's RPC call: the device's answer or refusal, or the board's own failure.
pub type Call<'a> = dyn FnMut(&str, Value) -> BoardResult<Result<Value, RpcErr>> + 'a;

/// `OTA.CreateSnapshot` through `call`: the slot that holds the snapshot.
pub fn create_snapshot(
    call: &mut Call<'_>,
    set_as_revert: bool,
    commit_timeout_s: Option<u32>,
) -> BoardResult<Result<u8, Refusal>> {
    let mut params = json!({ "set_as_revert": set_as_revert });
    if let Some(timeout) = commit_timeout_s {
        params["commit_timeout"] = json!(timeout);
    }
    Ok(match call("OTA.CreateSnapshot", params)? {
        Ok(result) => match result.get("slot").and_then(Value::as_u64) {
            Some(slot) => Ok(slot as u8),
            None => {
                return Err(BoardError::new(format!("OTA.CreateSnapshot answered {result} without a slot")));
            }
        },
        Err(e) => Err(e.message),
    })
}

/// `FS.Put` through `call`.
pub fn put_file(call: &mut Call<'_>, name: &str, content: &[u8]) -> BoardResult<Result<(), Refusal>> {
    let data = base64_encode(content);
    Ok(call("FS.Put", json!({ "filename": name, "data": data }))?.map(|_| ()).map_err(|e| e.message))
}

/// `FS.Get` through `call`; `None` when the device has no such file.
pub fn get_file(call: &mut Call<'_>, name: &str) -> BoardResult<Result<Option<Vec<u8>>, Refusal>> {
    match call("FS.Get", json!({ "filename": name }))? {
        Ok(result) => {
            let data = result.get("data").and_then(Value::as_str).unwrap_or_default();
            let bytes = base64_decode(data).map_err(|e| {
                BoardError::new(format!("FS.Get {name} answered data that is not base64: {e}"))
            })?;
            Ok(Ok(Some(bytes)))
        }
        Err(e) if e.message.contains("no such file") => Ok(Ok(None)),
        Err(e) => Ok(Err(e.message)),
    }
}

pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text)
}

/// How long the runner lets an interrupted HTTP upload or pull settle before the cut: until
/// `OTA.Status` reads the same three times in a row, or this long.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Polls `status` (the device's `OTA.Status`) until its state and progress read the same three
/// times in a row (the device has taken what was sent), for at most [`SETTLE_MAX`].
pub fn settle(mut status: impl FnMut() -> BoardResult<Option<Value>>) -> BoardResult<()> {
    let deadline = Instant::now() + SETTLE_MAX;
    let (mut last, mut same) = (None, 0);
    while same < 3 && Instant::now() < deadline {
        let seen = status()?.map(|s| (s.get("state").cloned(), s.get("progress_percent").cloned()));
        same = if seen == last { same + 1 } else { 0 };
        last = seen;
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
