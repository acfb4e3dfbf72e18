//! Applies a bundle on an in-memory flash and prints the boot state at every step:
//! provision v1, stream v2 in 512-byte chunks, boot it on trial, then either commit it or
//! reboot without a commit and watch it roll back.
//!
//! `cargo run -p ota-core --example demo`

use ota_bundle::Bundle;
use ota_core::boot::{self, BootOutcome};
use ota_core::control::{self, Running, TickAction};
use ota_core::flash::RamFlash;
use ota_core::layout::{Layout, Region, Slot};
use ota_core::log;
use ota_core::manifest::Platform;
use ota_core::state::BootState;
use ota_core::updater::{Device, Progress, UpdateOptions, Updater};

const LAYOUT: Layout = match Layout::new(
    4096,
    4,
    [Region::new(0, 0x1000), Region::new(0x1000, 0x1000)],
    [Region::new(0x2000, 0x20000), Region::new(0x22000, 0x20000)],
    [Region::new(0x42000, 0x8000), Region::new(0x4a000, 0x8000)],
) {
    Ok(layout) => layout,
    Err(_) => panic!("demo layout"),
};
const FLASH_BYTES: usize = 0x52000;

type Flash<'a> = RamFlash<'a, 4, 4096>;

fn main() {
    let mut mem = vec![0u8; FLASH_BYTES];
    let mut flash = Flash::new(&mut mem);
    let device = Device { arch: Platform::new("esp32").unwrap(), app_part: None };
    let mut buf = [0u8; 4096];

    let v1 = bundle("1.0.0", 1, 60_000);
    let mut updater = Updater::begin_provision(&mut flash, &LAYOUT, device, &mut buf).expect("provision");
    updater.process(&mut flash, &v1).expect("provision bundle");
    updater.finish(&mut flash).expect("provision record");
    show(&mut flash, "provisioned v1.0.0");

    let v2 = bundle("2.0.0", 2, 90_000);
    let options = UpdateOptions { commit_timeout_s: 300, ignore_same_version: true };
    let mut updater =
        Updater::begin(&mut flash, &LAYOUT, Slot::S0, device, options, &mut buf).expect("begin");
    for (i, chunk) in v2.chunks(512).enumerate() {
        match updater.process(&mut flash, chunk) {
            Ok(Progress::NeedMore) if i % 40 == 0 => {
                println!("  .. {} of {} bytes", updater.position(), v2.len())
            }
            Ok(_) => {}
            Err(e) => panic!("update failed: {e}"),
        }
    }
    let outcome = updater.finish(&mut flash).expect("finish");
    println!("update: {}", outcome.message());
    show(&mut flash, "after finish");

    let running = boot_once(&mut flash);
    println!("  no commit within 300 s of virtual time...");
    let action = control::tick(&mut flash, &LAYOUT, &running, 300_000).expect("tick");
    assert_eq!(action, TickAction::RevertedRebootNow);
    show(&mut flash, "commit timer expired: reverted");
    boot_once(&mut flash);

    let mut updater =
        Updater::begin(&mut flash, &LAYOUT, Slot::S0, device, options, &mut buf).expect("begin again");
    updater.process(&mut flash, &v2).expect("second try");
    updater.finish(&mut flash).expect("finish again");
    let running = boot_once(&mut flash);
    control::commit(&mut flash, &LAYOUT, running.slot).expect("commit");
    show(&mut flash, "committed v2.0.0");
    boot_once(&mut flash);
}

fn bundle(version: &str, seed: u8, app_bytes: usize) -> Vec<u8> {
    let app = (0..app_bytes).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect();
    Bundle::new("demo", "esp32")
        .version(version)
        .build_id(&format!("20261122-120000/{version}"))
        .app(app)
        .fs(br#"{"wifi": {"ap": {"enable": false}}}"#.to_vec())
        .build()
}

/// Boots at virtual time 0 and says what runs.
fn boot_once(flash: &mut Flash<'_>) -> Running {
    let running = match boot::boot(flash, &LAYOUT, &mut [0; 1024]).expect("boot") {
        BootOutcome::Boot { slot, reason, first_boot, .. } => {
            println!("boot loader: {slot} ({reason:?})");
            Running::booted(slot, first_boot, 0)
        }
        other => panic!("boot loader: {other:?}"),
    };
    show(flash, "after boot");
    running
}

fn show(flash: &mut Flash<'_>, when: &str) {
    let located = log::read(flash, &LAYOUT).expect("read").expect("a boot state");
    let s: BootState = located.record.state;
    let revert = s.revert.map_or("none".to_string(), |r| r.index().to_string());
    println!(
        "[{when}] seq {} at area {} #{}: active {} ({} {}), revert {revert}, committed {}, first_boot a={} b={}, merge_fs {}, commit_timeout {} s",
        located.record.seq,
        located.position.area,
        located.position.index,
        s.active.index(),
        s.active_info().version,
        s.active_info().build_id,
        s.committed,
        s.first_boot_a,
        s.first_boot_b,
        s.merge_fs,
        s.commit_timeout_s,
    );
}
