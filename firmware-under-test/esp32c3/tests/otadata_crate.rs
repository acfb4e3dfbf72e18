//! `ota_app::otadata`'s model of ESP-IDF's otadata against esp-bootloader-esp-idf 0.6's `Ota`,
//! which the port would otherwise use: each switch of the app slot writes the same bytes, and
//! the model reads the crate's bytes as naming the same slot. The crate's host build keeps its
//! flash in one static, so this file holds one test.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use esp_bootloader_esp_idf::ota::Ota;
use esp_bootloader_esp_idf::partitions::{
    self, AppPartitionSubType, DataPartitionSubType, FlashStorage, PartitionType,
};
use ota_app::otadata::{EspOtadata, Otadata};
use ota_core::layout::Slot;

const OTADATA: std::ops::Range<u32> = 0x9000..0xb000;

/// The crate's RAM flash as a `NorFlash`, for the model.
struct Nor(FlashStorage<'static>);

impl ErrorType for Nor {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Nor {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorFlashErrorKind> {
        self.0.read(offset, bytes).map_err(|_| NorFlashErrorKind::Other)
    }
    fn capacity(&self) -> usize {
        0x4_0000
    }
}

impl NorFlash for Nor {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), NorFlashErrorKind> {
        self.0.erase(from, to).map_err(|_| NorFlashErrorKind::Other)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorFlashErrorKind> {
        self.0.write(offset, bytes).map_err(|_| NorFlashErrorKind::Other)
    }
}

/// One partition-table entry: magic, type, subtype, offset, size, label, flags.
fn entry(kind: u8, subtype: u8, offset: u32, size: u32, label: &str) -> [u8; 32] {
    let mut raw = [0u8; 32];
    raw[0..2].copy_from_slice(&[0xaa, 0x50]);
    raw[2] = kind;
    raw[3] = subtype;
    raw[4..8].copy_from_slice(&offset.to_le_bytes());
    raw[8..12].copy_from_slice(&size.to_le_bytes());
    raw[12..12 + label.len()].copy_from_slice(label.as_bytes());
    raw
}

fn otadata_bytes(flash: &mut FlashStorage<'static>) -> Vec<u8> {
    let mut bytes = vec![0u8; (OTADATA.end - OTADATA.start) as usize];
    flash.read(OTADATA.start, &mut bytes).unwrap();
    bytes
}

fn put_otadata(flash: &mut FlashStorage<'static>, bytes: &[u8]) {
    flash.erase(OTADATA.start, OTADATA.end).unwrap();
    flash.write(OTADATA.start, bytes).unwrap();
}

/// Names `slot` with the crate's `Ota`, and returns the otadata bytes it left.
fn crate_names(flash: &mut FlashStorage<'static>, slot: Slot) -> Vec<u8> {
    let mut table = [0u8; partitions::PARTITION_TABLE_MAX_LEN];
    let pt = partitions::read_partition_table(flash, &mut table).unwrap();
    let entry = pt.find_partition(PartitionType::Data(DataPartitionSubType::Ota)).unwrap().unwrap();
    let mut ota = Ota::new(entry.as_flash_region(flash), 2).unwrap();
    let app = if slot == Slot::S0 { AppPartitionSubType::Ota0 } else { AppPartitionSubType::Ota1 };
    ota.set_current_app_partition(app).unwrap();
    assert_eq!(ota.current_app_partition().unwrap(), app);
    otadata_bytes(flash)
}

#[test]
fn the_model_writes_the_bytes_the_crates_ota_writes() {
    let mut flash = FlashStorage::new();
    flash.erase(0, 0x4_0000).unwrap();
    let mut table = Vec::new();
    table.extend(entry(1, 0x00, 0x9000, 0x2000, "otadata"));
    table.extend(entry(0, 0x10, 0x1_0000, 0x1_0000, "ota_0"));
    table.extend(entry(0, 0x11, 0x2_0000, 0x1_0000, "ota_1"));
    flash.write(0x8000, &table).unwrap();
    let mut model = EspOtadata::default();
    for slot in [Slot::S0, Slot::S1, Slot::S0, Slot::S1, Slot::S1, Slot::S0] {
        let before = otadata_bytes(&mut flash);
        let by_crate = crate_names(&mut flash, slot);
        put_otadata(&mut flash, &before);
        let mut nor = Nor(flash);
        model.name_slot(&mut nor, slot).unwrap();
        assert_eq!(model.named_slot(&mut nor).unwrap(), slot);
        flash = nor.0;
        assert!(otadata_bytes(&mut flash) == by_crate, "the model and the crate differ naming {slot}");
    }
}
