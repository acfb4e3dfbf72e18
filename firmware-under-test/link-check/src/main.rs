//! Links the device crates into one bare-metal binary for `riscv32imc-unknown-none-elf`, so that
//! a build proves the whole stack links: littlefs's C code, the C string functions it calls, the
//! allocator, the start-up code.
//!
//! Each crate is called by one check in [`CHECKS`]. On the target the entry point runs them and
//! then waits for interrupts; a failed check panics, and the panic handler halts. On the host the
//! same checks run as a plain program (and as a test), so they are compiled, linted and run on
//! every workspace build.

#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;

use ota_core::flash::RamFlash;
use ota_core::layout::Region;

/// A check: a call through one crate, with what went wrong if it did.
type Check = fn() -> Result<(), String>;

/// One check per device crate. To add a crate: its dependency line in Cargo.toml, and its line here.
const CHECKS: &[(&str, Check)] =
    &[("ota-lfs", lfs_round_trip), ("ota-app", app_start_and_config), ("ota-proto", proto_frame_round_trip)];

/// Formats a LittleFS on a four-block RAM flash, writes a file and reads it back.
fn lfs_round_trip() -> Result<(), String> {
    const BLOCK_BYTES: usize = 4096;
    const FLASH_BYTES: u32 = 4 * BLOCK_BYTES as u32;
    const CONTENT: &[u8] = b"{\"wifi\":\"home\"}";
    let region = Region::new(0, FLASH_BYTES);
    let mut mem = vec![0; FLASH_BYTES as usize];
    let mut flash = RamFlash::<4, BLOCK_BYTES>::new(&mut mem);
    ota_lfs::format(&mut flash, region).map_err(|e| format!("{e}"))?;
    ota_lfs::write_file(&mut flash, region, "conf9.json", CONTENT).map_err(|e| format!("{e}"))?;
    match ota_lfs::read_file(&mut flash, region, "conf9.json").map_err(|e| format!("{e}"))? {
        Some(read) if read == CONTENT => Ok(()),
        Some(read) => Err(format!("conf9.json reads back as {read:?}, not {CONTENT:?}")),
        None => Err(String::from("conf9.json is missing after it was written")),
    }
}

/// Starts the application on an erased flash (nothing is provisioned: the start says so, as a
/// typed event), and reads a `conf9.json` through serde_json.
fn app_start_and_config() -> Result<(), String> {
    const APP_BYTES: u32 = 8 * 4096;
    const FS_BYTES: u32 = 4 * 4096;
    let e = 4096;
    let layout = ota_core::layout::Layout::new(
        e,
        4,
        [Region::new(0, e), Region::new(e, e)],
        [Region::new(2 * e, APP_BYTES), Region::new(2 * e + APP_BYTES, APP_BYTES)],
        [
            Region::new(2 * e + 2 * APP_BYTES, FS_BYTES),
            Region::new(2 * e + 2 * APP_BYTES + FS_BYTES, FS_BYTES),
        ],
    )
    .map_err(|e| format!("{e}"))?;
    let mut mem = vec![0xff; (2 * e + 2 * APP_BYTES + 2 * FS_BYTES) as usize];
    let flash = RamFlash::<4, 4096>::new(&mut mem);
    let settings = ota_app::Settings { work_buffer_bytes: 1024, ..ota_app::Settings::default() };
    let mut events = alloc::vec::Vec::new();
    match ota_app::start(flash, layout, settings.clone(), 0, &mut events) {
        ota_app::Start::Bricked { why, .. } if why == "no boot state: never provisioned" => {}
        _ => return Err(String::from("an erased flash did not start as \"never provisioned\"")),
    }
    let line = events.last().map(ota_app::Stamped::console_line).unwrap_or_default();
    if !line.starts_with("@ota {\"ms\":0") {
        return Err(format!("the last event's line is {line:?}"));
    }
    let config = ota_app::config::Config::from_user_file(Some(br#"{"device": {"id": "site-7"}}"#), &settings);
    if config.device_id != "site-7" {
        return Err(format!("conf9.json gave device id {:?}", config.device_id));
    }
    Ok(())
}

/// Parses an RPC request frame and answers it, through serde_json on the heap.
fn proto_frame_round_trip() -> Result<(), String> {
    use ota_proto::rpc::frame;
    let request = frame::parse_request(br#"{"id": 7, "method": "Sys.GetInfo", "src": "mos"}"#)
        .map_err(|e| format!("{e}"))?;
    let result = serde_json::json!({"fw_version": "1.0.0"});
    let response = frame::Response::ok(&request, "esp32c3", result)
        .ok_or_else(|| String::from("a request with an id gets a response"))?;
    let json = response.to_json();
    if json.contains("\"id\":7") && json.contains("\"fw_version\":\"1.0.0\"") {
        Ok(())
    } else {
        Err(format!("the response reads {json}"))
    }
}

#[cfg(not(target_os = "none"))]
fn main() -> std::process::ExitCode {
    let mut failed = false;
    for (name, check) in CHECKS {
        match check() {
            Ok(()) => println!("{name}: ok"),
            Err(error) => {
                eprintln!("{name}: {error}");
                failed = true;
            }
        }
    }
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}

/// The bare-metal runtime: the heap, the entry point and the panic handler.
#[cfg(target_os = "none")]
mod device {
    use core::mem::MaybeUninit;

    use embedded_alloc::LlffHeap;

    /// Each LittleFS mount takes about 2.5 KiB, the checks' RAM flashes 16 and 104 KiB.
    const HEAP_BYTES: usize = 96 * 1024;

    #[global_allocator]
    static HEAP: LlffHeap = LlffHeap::empty();
    static mut HEAP_MEMORY: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];

    #[riscv_rt::entry]
    fn main() -> ! {
        // SAFETY: this runs once, before the first allocation, and nothing else uses the memory.
        unsafe { HEAP.init(&raw mut HEAP_MEMORY as usize, HEAP_BYTES) };
        for (name, check) in super::CHECKS {
            if let Err(error) = check() {
                panic!("{name}: {error}");
            }
        }
        loop {
            riscv::asm::wfi();
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        loop {
            riscv::asm::wfi();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_check_passes_on_the_host() {
        for (name, check) in super::CHECKS {
            check().unwrap_or_else(|error| panic!("{name}: {error}"));
        }
    }
}
