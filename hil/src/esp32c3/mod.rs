//! What the runner knows about the ESP32-C3 and nothing else does: its images (built with
//! espflash as a library), finding its USB serial port, flashing it over the ROM's serial boot
//! loader, and (with the `probe-rs` feature) over its built-in USB-JTAG. The board behind
//! [`crate::board::Board`] is `board::esp32c3`.

pub mod flash;
pub mod image;
pub mod port;
#[cfg(feature = "probe-rs")]
pub mod probe;

use std::path::PathBuf;

use crate::board::config::{ESP32C3_ELF, Esp32c3Config};

/// The environment variable that names the firmware's ELF, before the default path.
pub const ELF_ENV: &str = "HIL_ESP32C3_ELF";

/// The firmware's ELF: the board file's `elf`, else `HIL_ESP32C3_ELF`, else
/// [`ESP32C3_ELF`] under the target folder (`CARGO_TARGET_DIR` or `target`).
pub fn elf_path(config: Option<&Esp32c3Config>) -> PathBuf {
    if let Some(path) = config.and_then(|c| c.elf.clone()) {
        return path;
    }
    if let Some(path) = std::env::var_os(ELF_ENV) {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join(ESP32C3_ELF)
}

/// How to build the ELF, for error help lines.
pub const BUILD_ELF: &str = "cargo build --release -p ota-port-esp32c3 --target riscv32imc-unknown-none-elf";

/// What a `--flasher probe-rs` says in a hil built without the feature.
pub const PROBE_RS_MISSING: &str = "this hil was built without probe-rs; rebuild it with \
     `cargo build --release -p ota-hil --features probe-rs` (about 6.5 minutes cold), or use flasher = \"espflash\"";
