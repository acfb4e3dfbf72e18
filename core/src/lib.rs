#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

pub mod boot;
pub mod control;
pub mod descriptor;
pub mod flash;
pub mod fs;
pub mod layout;
pub mod log;
pub mod manifest;
pub mod merge;
pub mod state;
pub mod updater;
pub mod zip;

mod json;

#[cfg(test)]
pub(crate) mod test_support {
    extern crate std;
    use crate::flash::RamFlash;
    use crate::layout::{Layout, Region, Slot};
    use crate::state::{BuildId, SlotInfo, Version};
    use embedded_storage::nor_flash::NorFlash;
    use sha2::Digest as _;
    use std::vec::Vec;

    /// 1 KiB erase units: two boot-state areas of 1 KiB, app slots of 8 KiB, fs slots of 4 KiB.
    pub const LAYOUT: Layout = match Layout::new(
        1024,
        4,
        [Region::new(0, 1024), Region::new(1024, 1024)],
        [Region::new(2048, 8192), Region::new(10240, 8192)],
        [Region::new(18432, 4096), Region::new(22528, 4096)],
    ) {
        Ok(l) => l,
        Err(_) => panic!("test layout"),
    };
    pub const FLASH_BYTES: usize = 26624;

    pub type Flash<'a> = RamFlash<'a, 4, 1024>;

    pub fn image(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Writes `data` into `slot`'s app region and describes it.
    pub fn put_image(flash: &mut Flash<'_>, slot: Slot, data: &[u8], version: &str) -> SlotInfo {
        let region = LAYOUT.app(slot);
        flash.erase(region.offset, region.offset + region.size_bytes).unwrap();
        let mut padded = data.to_vec();
        padded.resize(data.len().div_ceil(4) * 4, 0xff);
        flash.write(region.offset, &padded).unwrap();
        SlotInfo {
            app_len_bytes: data.len() as u32,
            app_sha256: sha2::Sha256::digest(data).into(),
            fs_len_bytes: 0,
            version: Version::new(version).unwrap(),
            build_id: BuildId::new("test").unwrap(),
        }
    }
}
