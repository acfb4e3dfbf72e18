#![doc = include_str!("../README.md")]
#![cfg_attr(target_os = "none", no_std)]

pub mod cfi;
pub mod clock;
pub mod console;
pub mod handoff;

#[cfg(target_os = "none")]
pub mod hw;

/// The platform the application reports and a bundle must name: the ESP32-C3's, whose
/// instruction set and partition map this board runs.
pub const PLATFORM: &str = "esp32c3";

/// Where the boot loader copies the chosen image and where the application is linked to run
/// (`fw.x`); the app descriptor is its first [`APP_DESCRIPTOR_BYTES`] bytes.
pub const FW_LOAD_ADDRESS: u32 = 0x8000_0000;
pub const APP_DESCRIPTOR_BYTES: u32 = 0x100;
/// The application's entry point: right after its descriptor.
pub const FW_ENTRY_ADDRESS: u32 = FW_LOAD_ADDRESS + APP_DESCRIPTOR_BYTES;
/// The most RAM an image may take: up to the boot loader's RAM (`boot.x`).
pub const FW_MAX_BYTES: u32 = 0x8700_0000 - FW_LOAD_ADDRESS;

/// The ESP32-C3 partition map, as `ota_app::partitions` has it: repeated for the boot loader,
/// which links no allocator and so not `ota-app`; a test checks that the two agree.
pub const LAYOUT: ota_core::layout::Layout = match ota_core::layout::Layout::new(
    0x1000,
    4,
    [ota_core::layout::Region::new(0xb000, 0x1000), ota_core::layout::Region::new(0xc000, 0x1000)],
    [ota_core::layout::Region::new(0x1_0000, 0x18_0000), ota_core::layout::Region::new(0x19_0000, 0x18_0000)],
    [ota_core::layout::Region::new(0x31_0000, 0x7_8000), ota_core::layout::Region::new(0x38_8000, 0x7_8000)],
) {
    Ok(layout) => layout,
    Err(_) => panic!("the ESP32-C3 partition map is not a valid layout"),
};

/// The kick line the application prints once per turn of its main loop (at most once per
/// wake): the runner, as the external watchdog, resets the board when mtime runs on without one.
pub const KICK_LINE: &str = "@kick";

#[cfg(test)]
mod tests {
    #[test]
    fn the_boot_loaders_map_is_ota_apps() {
        assert_eq!(super::LAYOUT, ota_app::partitions::layout());
        assert!(super::LAYOUT.app[0].size_bytes <= super::FW_MAX_BYTES);
    }
}
