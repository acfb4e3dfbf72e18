//! Flashing over the ROM's serial boot loader with espflash: its reset strategies put the chip
//! in download mode (the USB-Serial-JTAG sequence for 303a:1001, RTS/DTR on a UART bridge), its
//! stub writes and verifies each segment, and a hard reset boots what was written. Blocking.

use std::path::Path;

use espflash::connection::{Connection, ResetAfterOperation, ResetBeforeOperation};
use espflash::flasher::Flasher;
use espflash::image_format::Segment;
use espflash::target::{Chip, ProgressCallbacks};

/// espflash connects at the ROM's speed, then switches to the board file's `flash_baud`.
const CONNECT_BAUD: u32 = 115_200;

/// The serial port's USB description, which espflash's reset strategy depends on.
fn usb_info(port: &Path) -> Result<serialport::UsbPortInfo, String> {
    let want = port.canonicalize().unwrap_or_else(|_| port.to_path_buf());
    let ports = serialport::available_ports().map_err(|e| format!("cannot list the serial ports: {e}"))?;
    for listed in ports {
        let same = Path::new(&listed.port_name).canonicalize().is_ok_and(|p| p == want);
        if let (true, serialport::SerialPortType::UsbPort(info)) = (same, listed.port_type) {
            return Ok(info);
        }
    }
    Err(format!(
        "{} is not a USB serial port: espflash picks its reset sequence from the USB ids",
        port.display()
    ))
}

/// Writes `segments` (flash offset, bytes) and resets the board into them.
pub fn write(
    port: &Path,
    flash_baud: u32,
    segments: &[(u32, &[u8])],
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let info = usb_info(port)?;
    let serial = serialport::new(port.to_string_lossy(), CONNECT_BAUD)
        .open_native()
        .map_err(|e| format!("cannot open {}: {e}", port.display()))?;
    let connection = Connection::new(
        serial,
        info,
        ResetAfterOperation::HardReset,
        ResetBeforeOperation::DefaultReset,
        CONNECT_BAUD,
    );
    progress(&format!("connecting to the ROM boot loader on {}", port.display()));
    let mut flasher = Flasher::connect(connection, true, true, false, Some(Chip::Esp32c3), Some(flash_baud))
        .map_err(|e| format!("espflash cannot connect on {}: {e}", port.display()))?;
    let segments: Vec<Segment<'_>> = segments.iter().map(|&(addr, data)| Segment::new(addr, data)).collect();
    let mut callbacks = Callbacks { progress, addr: 0, total: 0, tenth: 0 };
    flasher
        .write_bins_to_flash(&segments, &mut callbacks)
        .map_err(|e| format!("espflash failed to write the flash: {e}"))?;
    flasher
        .connection()
        .reset_after(true, Chip::Esp32c3)
        .map_err(|e| format!("espflash wrote the flash but cannot reset the board: {e}"))?;
    Ok(())
}

/// espflash's progress as a line per tenth of each segment.
struct Callbacks<'a> {
    progress: &'a mut dyn FnMut(&str),
    addr: u32,
    total: usize,
    tenth: usize,
}

impl ProgressCallbacks for Callbacks<'_> {
    fn init(&mut self, addr: u32, total: usize) {
        (self.addr, self.total, self.tenth) = (addr, total, 0);
    }

    fn update(&mut self, current: usize) {
        let tenth = current * 10 / self.total.max(1);
        if tenth > self.tenth {
            self.tenth = tenth;
            (self.progress)(&format!("{:#08x}: {}0%", self.addr, tenth));
        }
    }

    fn verifying(&mut self) {
        (self.progress)(&format!("{:#08x}: verifying", self.addr));
    }

    fn finish(&mut self, skipped: bool) {
        let how = if skipped { "unchanged, skipped" } else { "written" };
        (self.progress)(&format!("{:#08x}: {how}", self.addr));
    }
}

/// Resets the board through RTS/DTR as espflash does after flashing (`Connection::reset`), the
/// USB-Serial-JTAG sequence included. The RPC client must have closed the port first.
pub fn reset(port: &Path) -> Result<(), String> {
    let info = usb_info(port)?;
    let serial = serialport::new(port.to_string_lossy(), CONNECT_BAUD)
        .open_native()
        .map_err(|e| format!("cannot open {}: {e}", port.display()))?;
    let mut connection = Connection::new(
        serial,
        info,
        ResetAfterOperation::HardReset,
        ResetBeforeOperation::NoResetNoSync,
        CONNECT_BAUD,
    );
    connection.reset().map_err(|e| format!("cannot reset through {}: {e}", port.display()))
}
