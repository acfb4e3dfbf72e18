#![doc = include_str!("../README.md")]
#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

pub mod channel;

use ota_core::layout::{Layout, Slot};

/// The platform the application reports and a bundle must name.
pub const PLATFORM: &str = "esp32c3";

/// The ESP32-C3 partition map, `ota_app::partitions`'s.
pub const LAYOUT: Layout = ota_app::partitions::LAYOUT;

/// How long the firmware may go without feeding the RTC watchdog (RWDT) before it resets the
/// chip: a hang (the app descriptor's `Hangs`) ends this way.
pub const WATCHDOG_MS: u64 = 10_000;

/// The app slot of the partition at `offset` (the one the boot loader mapped), or `None` for
/// any other.
pub fn slot_at(offset: u32) -> Option<Slot> {
    Slot::ALL.into_iter().find(|&slot| LAYOUT.app(slot).offset == offset)
}

/// The app descriptor's initial bytes: `ota_app::image`'s header (magic, format 1, healthy, this
/// build's version), the same as `ota_app::image::Image::new(version, ..)` writes.
pub const fn descriptor() -> [u8; ota_app::image::HEADER_BYTES] {
    let mut d = [0u8; ota_app::image::HEADER_BYTES];
    let mut i = 0;
    while i < 8 {
        d[i] = ota_app::image::MAGIC[i];
        i += 1;
    }
    d[8] = 1;
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut i = 0;
    while i < version.len() && i < 24 {
        d[16 + i] = version[i];
        i += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_app::image::{Behaviour, find_header, parse_header};

    #[test]
    fn the_descriptor_is_ota_apps_header() {
        let d = descriptor();
        assert_eq!(find_header(&d), Some(0));
        assert_eq!(parse_header(&d), (Behaviour::Healthy, Some(env!("CARGO_PKG_VERSION").into())));
    }

    #[test]
    fn the_mapped_partition_names_its_slot() {
        assert_eq!(slot_at(0x1_0000), Some(Slot::S0));
        assert_eq!(slot_at(0x19_0000), Some(Slot::S1));
        assert_eq!(slot_at(0x31_0000), None);
    }
}
