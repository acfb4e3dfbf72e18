//! The ESP32-C3 partition map (`shared/reference/hardware-ports.md`), once for every board that
//! uses it: the QEMU `virt` port runs it unchanged (4 KiB erase sectors emulated on its CFI
//! flash), the runner provisions flash images with it, and a later ESP32-C3 port shares it.
//!
//! | region        | offset     | size      |
//! |---------------|------------|-----------|
//! | boot loader   | 0x0        | ≤ 0x8000  |
//! | (partition table, otadata on the ESP32-C3) | 0x8000 | 0x3000 |
//! | boot state    | 0xb000     | 2 × 4 KiB |
//! | (phy)         | 0xd000     | 0x3000    |
//! | ota_0         | 0x10000    | 1.5 MiB   |
//! | ota_1         | 0x190000   | 1.5 MiB   |
//! | fs_0          | 0x310000   | 480 KiB   |
//! | fs_1          | 0x388000   | 480 KiB   |
//!
//! Erase unit 4 KiB, write unit 4 bytes, as the ESP32-C3's flash driver gives them.

use ota_core::layout::{Layout, Region};

/// The erase unit: a 4 KiB sector.
pub const ERASE_BYTES: u32 = 0x1000;
/// The write unit.
pub const WRITE_BYTES: u32 = 4;

/// Where the boot loader's image starts.
pub const BOOT_LOADER_OFFSET: u32 = 0x0;
/// The most the boot loader's image may take: the first partition (the table on the ESP32-C3)
/// starts here.
pub const BOOT_LOADER_MAX_BYTES: u32 = 0x8000;

/// ESP-IDF's otadata partition on the ESP32-C3 (two 4 KiB sectors, one `esp_ota_select_entry_t`
/// copy each): the second-stage boot loader boots the app slot it names. The QEMU port leaves it
/// erased.
pub const OTADATA_OFFSET: u32 = 0x9000;
/// The otadata partition's size.
pub const OTADATA_BYTES: u32 = 0x2000;

/// Where the ESP-IDF partition table lies on the ESP32-C3 (after the second-stage boot loader).
pub const PARTITION_TABLE_OFFSET: u32 = 0x8000;

/// The map as an ESP-IDF partition table in its CSV form, for the ESP32-C3's factory image
/// (espflash builds the binary table, with its MD5 entry, from it). The boot state is a data
/// partition with a named subtype, because esp-idf-part rejects numeric subtypes it does not
/// know. The `partition_csv_is_the_layout` test checks it against [`LAYOUT`].
pub const PARTITION_CSV: &str = "\
# Name,    Type, SubType,   Offset,   Size
otadata,   data, ota,       0x9000,   0x2000
otastate,  data, undefined, 0xb000,   0x2000
phy_init,  data, phy,       0xd000,   0x1000
ota_0,     app,  ota_0,     0x10000,  0x180000
ota_1,     app,  ota_1,     0x190000, 0x180000
fs_0,      data, littlefs,  0x310000, 0x78000
fs_1,      data, littlefs,  0x388000, 0x78000
";

/// The bytes the map spans: a 4 MiB part, the ESP32-C3's.
pub const FLASH_BYTES: u32 = 0x40_0000;

const APP_BYTES: u32 = 0x18_0000;
const FS_BYTES: u32 = 0x7_8000;

/// The map as the core's [`Layout`]; checked at compile time.
pub const LAYOUT: Layout = match Layout::new(
    ERASE_BYTES,
    WRITE_BYTES,
    [Region::new(0xb000, ERASE_BYTES), Region::new(0xc000, ERASE_BYTES)],
    [Region::new(0x1_0000, APP_BYTES), Region::new(0x19_0000, APP_BYTES)],
    [Region::new(0x31_0000, FS_BYTES), Region::new(0x38_8000, FS_BYTES)],
) {
    Ok(layout) => layout,
    Err(_) => panic!("the ESP32-C3 partition map is not a valid layout"),
};

const _: () = {
    assert!(BOOT_LOADER_OFFSET + BOOT_LOADER_MAX_BYTES <= PARTITION_TABLE_OFFSET);
    // The table takes 0xc00 bytes.
    assert!(PARTITION_TABLE_OFFSET + 0xc00 <= OTADATA_OFFSET);
    assert!(BOOT_LOADER_OFFSET + BOOT_LOADER_MAX_BYTES <= LAYOUT.boot_state[0].offset);
    assert!(LAYOUT.fs[1].offset + LAYOUT.fs[1].size_bytes == FLASH_BYTES);
};

/// The map as the core's [`Layout`].
pub const fn layout() -> Layout {
    LAYOUT
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::layout::Slot;

    #[test]
    fn the_map_is_the_esp32c3_one() {
        let l = layout();
        assert_eq!((l.erase_size_bytes, l.write_size_bytes), (4096, 4));
        assert_eq!((l.boot_state[0].offset, l.boot_state[1].offset), (0xb000, 0xc000));
        assert_eq!((l.app(Slot::S0).offset, l.app(Slot::S1).offset), (0x1_0000, 0x19_0000));
        assert_eq!((l.fs(Slot::S0).offset, l.fs(Slot::S1).offset), (0x31_0000, 0x38_8000));
        assert_eq!(l.app(Slot::S0).size_bytes, 1536 * 1024);
        assert_eq!(l.fs(Slot::S1).size_bytes, 480 * 1024);
        assert!(l.check_capacity(FLASH_BYTES).is_ok());
    }

    #[test]
    fn partition_csv_is_the_layout() {
        let rows: alloc::vec::Vec<(&str, u32, u32)> = PARTITION_CSV
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: alloc::vec::Vec<&str> = l.split(',').map(str::trim).collect();
                let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
                (f[0], hex(f[3]), hex(f[4]))
            })
            .collect();
        let l = layout();
        let find = |name: &str| rows.iter().find(|r| r.0 == name).map(|r| (r.1, r.2)).unwrap();
        assert_eq!(find("otadata"), (OTADATA_OFFSET, OTADATA_BYTES));
        assert_eq!(find("otastate"), (l.boot_state[0].offset, 2 * ERASE_BYTES));
        assert_eq!(l.boot_state[1].offset, l.boot_state[0].offset + ERASE_BYTES);
        for (name, slot) in [("ota_0", Slot::S0), ("ota_1", Slot::S1)] {
            assert_eq!(find(name), (l.app(slot).offset, l.app(slot).size_bytes));
        }
        for (name, slot) in [("fs_0", Slot::S0), ("fs_1", Slot::S1)] {
            assert_eq!(find(name), (l.fs(slot).offset, l.fs(slot).size_bytes));
        }
        assert!(OTADATA_OFFSET + OTADATA_BYTES <= l.boot_state[0].offset);
    }
}
