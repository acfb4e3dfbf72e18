//! Finding a board: the USB serial ports the system lists (serialport without libudev reads
//! them from /sys), matched against a board file's `port` or `usb`, and what each looks like.

use std::path::PathBuf;

use crate::board::config::{PortSpec, UsbId};

/// One attached USB device that offers a serial port, or a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The serial device (`/dev/ttyACM0`); `None` for a probe without one.
    pub path: Option<String>,
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
    pub product: Option<String>,
}

impl Found {
    pub fn usb_id(&self) -> UsbId {
        UsbId { vid: self.vid, pid: self.pid, serial: self.serial.clone() }
    }
}

/// What a USB id looks like on an ESP32 bench: the chips' own USB and the usual bridges.
pub fn looks_like(vid: u16, pid: u16) -> &'static str {
    match (vid, pid) {
        (0x303a, 0x1001) => "ESP32-C3/C6/S3 USB-Serial-JTAG (serial and JTAG on one cable)",
        (0x303a, 0x1002) => "ESP32-S2/S3 USB-OTG (TinyUSB)",
        (0x303a, _) => "an Espressif USB device",
        (0x10c4, 0xea60) => "CP210x USB-UART bridge (many DevKits' UART0)",
        (0x1a86, 0x7523) => "CH340 USB-UART bridge",
        (0x1a86, 0x55d4) => "CH9102 USB-UART bridge (ESP32-C3-DevKitM UART0)",
        (0x0403, 0x6010) => "FT2232 (ESP-Prog: JTAG and UART)",
        (0x0403, 0x6001 | 0x6014 | 0x6015) => "FTDI USB-UART bridge",
        _ => "an unknown USB serial device",
    }
}

/// The attached USB serial ports. Ports that are not USB (built-in UARTs, ptys) are left out:
/// a board on a CI runner hangs off a USB cable.
pub fn usb_serial_ports() -> Result<Vec<Found>, String> {
    let ports = serialport::available_ports().map_err(|e| format!("cannot list the serial ports: {e}"))?;
    let mut found: Vec<Found> = ports
        .into_iter()
        .filter_map(|port| match port.port_type {
            serialport::SerialPortType::UsbPort(usb) => Some(Found {
                path: Some(port.port_name),
                vid: usb.vid,
                pid: usb.pid,
                serial: usb.serial_number,
                product: usb.product,
            }),
            _ => None,
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// The serial port a board file names, among `attached`: a path as given (it must exist); a
/// USB id must match exactly one port, so two boards of the same kind need serial numbers.
pub fn choose(
    spec: &PortSpec,
    attached: &[Found],
    exists: &dyn Fn(&std::path::Path) -> bool,
) -> Result<PathBuf, String> {
    match spec {
        PortSpec::Path(path) if exists(path) => Ok(path.clone()),
        PortSpec::Path(path) => Err(format!("{} does not exist", path.display())),
        PortSpec::Usb(id) => {
            let matching: Vec<&Found> = attached
                .iter()
                .filter(|f| f.path.is_some() && id.matches(f.vid, f.pid, f.serial.as_deref()))
                .collect();
            match matching.as_slice() {
                [one] => Ok(PathBuf::from(one.path.clone().expect("filtered on path"))),
                [] => Err(format!("no USB serial port {id} is attached")),
                many => Err(format!(
                    "{} USB serial ports match {id} ({}); add the serial number to tell them apart",
                    many.len(),
                    many.iter().map(|f| f.usb_id().to_string()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }
}

/// The port of a board file, on this machine.
pub fn locate(spec: &PortSpec) -> Result<PathBuf, String> {
    let attached = match spec {
        PortSpec::Path(_) => Vec::new(),
        PortSpec::Usb(_) => usb_serial_ports()?,
    };
    choose(spec, &attached, &|path| path.exists())
}

/// A board file for `found`, to paste and complete, as twister's `--generate-hardware-map`.
pub fn skeleton(found: &Found, probe: bool) -> String {
    let id = found.usb_id();
    let mut out = format!("# {id}: {}\n", looks_like(found.vid, found.pid));
    out += "kind = \"esp32c3\"\n\n[esp32c3]\n";
    match &found.path {
        Some(path) => out += &format!("usb = \"{id}\"            # found at {path}\n"),
        None => out += "port = \"/dev/ttyUSB0\"          # the UART0 bridge of this board\n",
    }
    let jtag = (found.vid, found.pid) == (0x303a, 0x1001);
    if probe || jtag {
        out += "flasher = \"espflash\"             # or \"probe-rs\" over the built-in USB-JTAG\n";
        out += &format!("# probe = \"{id}\"\n");
    } else {
        out += "flasher = \"espflash\"\n";
    }
    out += "reset = \"rts-dtr\"\n";
    out += "# address = \"console\"             # with [esp32c3.wifi]: learnt from the board's http= line\n";
    out += "# [esp32c3.power]                 # a relay or a hub port; without it power cuts are skipped\n";
    out += "# on = \"uhubctl -l 1-1 -p 2 -a on\"\n# off = \"uhubctl -l 1-1 -p 2 -a off\"\n";
    out += "# [esp32c3.wifi]\n# ssid = \"lab\"\n# pass_env = \"HIL_WIFI_PASS\"\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(path: &str, vid: u16, pid: u16, serial: Option<&str>) -> Found {
        Found { path: Some(path.into()), vid, pid, serial: serial.map(Into::into), product: None }
    }

    fn pick(spec: &str, attached: &[Found]) -> Result<String, String> {
        let spec = match UsbId::parse(spec) {
            Ok(id) => PortSpec::Usb(id),
            Err(_) => PortSpec::Path(spec.into()),
        };
        let exists = |path: &std::path::Path| path == std::path::Path::new("/dev/ttyACM0");
        choose(&spec, attached, &exists).map(|p| p.display().to_string())
    }

    #[test]
    fn a_usb_id_picks_its_one_port() {
        let bench = [
            found("/dev/ttyACM0", 0x303a, 0x1001, Some("F4:12:FA:4F:1A:2C")),
            found("/dev/ttyACM1", 0x303a, 0x1001, Some("F4:12:FA:4F:1A:30")),
            found("/dev/ttyUSB0", 0x10c4, 0xea60, Some("0001")),
        ];
        assert_eq!(pick("303a:1001:F4:12:FA:4F:1A:30", &bench), Ok("/dev/ttyACM1".into()));
        assert_eq!(pick("10c4:ea60", &bench), Ok("/dev/ttyUSB0".into()));
        assert_eq!(
            pick("303a:1001", &bench),
            Err("2 USB serial ports match 303a:1001 (303a:1001:F4:12:FA:4F:1A:2C, 303a:1001:F4:12:FA:4F:1A:30); add the serial number to tell them apart".into())
        );
        assert_eq!(
            pick("303a:1001:nope", &bench),
            Err("no USB serial port 303a:1001:nope is attached".into())
        );
        assert_eq!(pick("1a86:55d4", &[]), Err("no USB serial port 1a86:55d4 is attached".into()));
    }

    #[test]
    fn a_path_must_exist() {
        assert_eq!(pick("/dev/ttyACM0", &[]), Ok("/dev/ttyACM0".into()));
        assert_eq!(pick("/dev/ttyACM7", &[]), Err("/dev/ttyACM7 does not exist".into()));
    }

    #[test]
    fn a_skeleton_parses_as_a_board_file() {
        let text = skeleton(&found("/dev/ttyACM0", 0x303a, 0x1001, Some("F4:12")), false);
        assert!(text.starts_with("# 303a:1001:F4:12: ESP32-C3/C6/S3 USB-Serial-JTAG"), "{text}");
        let config = crate::board::config::parse(&text, std::path::Path::new("boards/found.toml")).unwrap();
        assert_eq!(config.kind(), "esp32c3");
    }
}
