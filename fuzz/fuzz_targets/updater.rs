//! The streaming updater over a RAM flash, fed a bundle in chunks the input chooses.
//!
//! Checks: no panic, whatever the bytes and the chunking; when the update fails, the boot state
//! `log::read` finds is the one it found before, and the running slot's app and fs are untouched.
//!
//! Flags (see `ota_fuzz`): bit 0 the device is `ccm_host` with app part `host_fw` (the real
//! bundles) rather than `esp32`; bit 1 provision a blank device instead of updating a
//! provisioned one; bit 2 `ignore_same_version`; bits 3–4 the work buffer size.
#![no_main]

use embedded_storage::nor_flash::NorFlash as _;
use libfuzzer_sys::fuzz_target;
use ota_bundle::Bundle;
use ota_core::flash::RamFlash;
use ota_core::layout::{Layout, Region, Slot};
use ota_core::log;
use ota_core::manifest::{PartName, Platform};
use ota_core::updater::{Device, Outcome, UpdateError, UpdateOptions, Updater, WORK_BUFFER_MIN_BYTES};
use std::sync::LazyLock;

/// The layout of `core/tests/updater.rs`: 4 KiB boot-state areas, 64 KiB app slots, 16 KiB fs slots.
const LAYOUT: Layout = match Layout::new(
    4096,
    4,
    [Region::new(0, 4096), Region::new(4096, 4096)],
    [Region::new(0x2000, 0x10000), Region::new(0x12000, 0x10000)],
    [Region::new(0x22000, 0x4000), Region::new(0x26000, 0x4000)],
) {
    Ok(l) => l,
    Err(_) => panic!("fuzz layout"),
};
const FLASH_BYTES: usize = 0x2a000;
const BUFFER_BYTES: [usize; 4] = [WORK_BUFFER_MIN_BYTES, 2048, 4096, 8192];

type Flash<'a> = RamFlash<'a, 4, 4096>;

fn device(ccm_host: bool) -> Device {
    if ccm_host {
        Device { arch: Platform::new("ccm_host").unwrap(), app_part: Some(PartName::new("host_fw").unwrap()) }
    } else {
        Device { arch: Platform::new("esp32").unwrap(), app_part: None }
    }
}

/// A flash image with 1.0.0 provisioned in slot 0 and committed, built once.
static PROVISIONED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut mem = vec![0; FLASH_BYTES];
    let mut flash = Flash::new(&mut mem);
    let zip = Bundle::new("demo", "esp32")
        .version("1.0.0")
        .build_id("fuzz-1.0.0")
        .app((0..20_000).map(|i| (i as u8).wrapping_mul(7)).collect())
        .fs(vec![0x5a; 6000])
        .build();
    let mut buf = [0u8; 2048];
    let mut updater = Updater::begin_provision(&mut flash, &LAYOUT, device(false), &mut buf[..]).unwrap();
    updater.process(&mut flash, &zip).unwrap();
    assert!(matches!(updater.finish(&mut flash).unwrap(), Outcome::Provisioned { .. }));
    mem
});

/// The running slot's app and fs bytes.
fn running_slot(mem: &[u8], slot: Slot) -> Vec<u8> {
    [LAYOUT.app(slot), LAYOUT.fs(slot)]
        .iter()
        .flat_map(|r| mem[r.offset as usize..r.end() as usize].to_vec())
        .collect()
}

fn apply(flash: &mut Flash<'_>, flags: u8, lengths: &[u8], bundle: &[u8]) -> Result<Outcome, UpdateError> {
    let device = device(flags & 1 != 0);
    let mut buf = vec![0u8; BUFFER_BYTES[usize::from(flags >> 3) & 3]];
    let options = UpdateOptions { commit_timeout_s: 300, ignore_same_version: flags & 4 != 0 };
    let mut updater = if flags & 2 != 0 {
        Updater::begin_provision(flash, &LAYOUT, device, &mut buf[..])?
    } else {
        // The fuzzed device boots its recorded active slot.
        let running = log::read(flash, &LAYOUT).ok().flatten().map_or(Slot::S0, |c| c.record.state.active);
        Updater::begin(flash, &LAYOUT, running, device, options, &mut buf[..])?
    };
    for chunk in ota_fuzz::chunks(lengths, bundle) {
        updater.process(flash, chunk)?;
    }
    updater.finish(flash)
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, lengths, bundle)) = ota_fuzz::split(data) else { return };
    let provisioning = flags & 2 != 0;
    let mut mem = vec![0; FLASH_BYTES];
    let mut flash = Flash::new(&mut mem);
    if !provisioning {
        // Programming an erased RAM flash leaves exactly the bytes programmed.
        flash.write(0, &PROVISIONED).unwrap();
    }
    let before = log::read(&mut flash, &LAYOUT).expect("a RAM flash reads");
    let running = before.map(|l| running_slot(flash.as_bytes(), l.record.state.active));
    let result = apply(&mut flash, flags, lengths, bundle);
    if let Err(error) = &result {
        let _ = error.to_string();
        let after = log::read(&mut flash, &LAYOUT).expect("a RAM flash reads");
        assert_eq!(after, before, "a failed update ({error}) left the boot state changed");
    }
    if let (Some(before), Some(running), false) = (before, running, provisioning) {
        let now = running_slot(flash.as_bytes(), before.record.state.active);
        assert!(now == running, "an update ({result:?}) changed the running slot");
    }
});
