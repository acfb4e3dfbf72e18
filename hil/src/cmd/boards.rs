//! `hil boards --scan`: the USB serial ports (and, in a hil built with `probe-rs`, the debug
//! probes) attached to this machine, what each looks like, and a board file to start from for
//! each, as twister's `--generate-hardware-map` does. With nothing attached it says so and
//! exits 0: a scan that finds nothing is an answer, not an error.

use std::process::ExitCode;

use super::CommandError;
use crate::esp32c3::port::{self, Found};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Look for attached boards.
    #[arg(long, required = true)]
    pub scan: bool,
}

pub fn run(_args: Args) -> Result<ExitCode, CommandError> {
    let ports = port::usb_serial_ports().map_err(CommandError::new)?;
    let probes = probes();
    print!("{}", report(&ports, &probes));
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "probe-rs")]
fn probes() -> Result<Vec<Found>, String> {
    Ok(crate::esp32c3::probe::list())
}

#[cfg(not(feature = "probe-rs"))]
fn probes() -> Result<Vec<Found>, String> {
    Err("probes are not listed: this hil was built without the probe-rs feature".into())
}

/// The scan's text: a line per port and probe, then a board file per port.
pub fn report(ports: &[Found], probes: &Result<Vec<Found>, String>) -> String {
    let mut out = String::new();
    out += "USB serial ports:\n";
    if ports.is_empty() {
        out += "  none\n";
    }
    for found in ports {
        out += &line(found);
    }
    out += "Debug probes:\n";
    match probes {
        Ok(probes) if probes.is_empty() => out += "  none\n",
        Ok(probes) => probes.iter().for_each(|found| out += &line(found)),
        Err(why) => out += &format!("  {why}\n"),
    }
    let empty = Vec::new();
    let probes = probes.as_ref().unwrap_or(&empty);
    if ports.is_empty() && probes.is_empty() {
        out += "no boards found\n";
        return out;
    }
    for found in ports {
        let probe = probes.iter().any(|p| (p.vid, p.pid, &p.serial) == (found.vid, found.pid, &found.serial));
        out += &format!("\n# boards/{}.toml\n", file_name(found));
        out += &port::skeleton(found, probe);
    }
    out
}

fn line(found: &Found) -> String {
    let at = found.path.as_deref().unwrap_or("(no serial port)");
    let product = found.product.as_deref().map(|p| format!(" \"{p}\"")).unwrap_or_default();
    format!("  {at:<14} {}{product}: {}\n", found.usb_id(), port::looks_like(found.vid, found.pid))
}

/// A board file's name for a found port: its product kind and the end of its serial number.
fn file_name(found: &Found) -> String {
    let tail: String =
        found.serial.as_deref().unwrap_or("").chars().filter(char::is_ascii_alphanumeric).collect();
    let tail = &tail[tail.len().saturating_sub(6)..];
    if tail.is_empty() { "esp32c3".into() } else { format!("esp32c3-{}", tail.to_ascii_lowercase()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_with_nothing_attached_says_so() {
        let text = report(&[], &Ok(Vec::new()));
        assert_eq!(text, "USB serial ports:\n  none\nDebug probes:\n  none\nno boards found\n");
        let text = report(
            &[],
            &Err("probes are not listed: this hil was built without the probe-rs feature".into()),
        );
        assert!(text.ends_with("without the probe-rs feature\nno boards found\n"), "{text}");
    }

    #[test]
    fn a_scan_prints_a_board_file_per_port() {
        let found = Found {
            path: Some("/dev/ttyACM0".into()),
            vid: 0x303a,
            pid: 0x1001,
            serial: Some("F4:12:FA:4F:1A:2C".into()),
            product: Some("USB JTAG/serial debug unit".into()),
        };
        let text = report(std::slice::from_ref(&found), &Ok(vec![Found { path: None, ..found.clone() }]));
        assert!(text.starts_with("USB serial ports:\n  /dev/ttyACM0   303a:1001:F4:12:FA:4F:1A:2C \"USB JTAG/serial debug unit\": ESP32-C3/C6/S3 USB-Serial-JTAG"), "{text}");
        assert!(text.contains("\n# boards/esp32c3-4f1a2c.toml\n# 303a:1001:F4:12:FA:4F:1A:2C: "), "{text}");
        assert!(text.contains("usb = \"303a:1001:F4:12:FA:4F:1A:2C\""), "{text}");
    }
}
