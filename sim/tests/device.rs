//! The simulated device: firmware behaviours, the commit timer on virtual time, and faults that
//! are not power cuts (bit flips, a region whose programs fail).

use ota_core::layout::Slot;
use ota_core::log;
use ota_core::updater::UpdateOptions;
use ota_sim::device::{Device, DeviceError, Event, Run};
use ota_sim::image::Behaviour;
use ota_sim::sweep::{self, Fixture, USER_CONFIG, USER_FILE};

const APP_BYTES: usize = 16 * 1024;

fn options(commit_timeout_s: u32) -> UpdateOptions {
    UpdateOptions { commit_timeout_s, ignore_same_version: false }
}

/// v1 running and committed, then an update to a v2 that behaves as `behaviour`.
fn updated(behaviour: Behaviour, commit_timeout_s: u32) -> (Device, Fixture) {
    let fixture = Fixture::new(APP_BYTES, behaviour, 1);
    let mut device = sweep::prepare(&fixture);
    device.update(&fixture.v2_zip, 700, options(commit_timeout_s)).unwrap();
    (device, fixture)
}

fn running(device: &Device) -> (Slot, String) {
    match device.run() {
        Run::Running { slot, version, .. } => (*slot, version.clone().unwrap_or_default()),
        other => panic!("expected a running firmware, found {other:?}"),
    }
}

fn events(device: &Device) -> Vec<String> {
    device.trace().iter().map(|(_, e)| e.to_string()).collect()
}

fn committed(device: &mut Device) -> bool {
    let layout = *device.layout();
    log::read(device.flash(), &layout).unwrap().unwrap().record.state.committed
}

#[test]
fn a_healthy_update_commits_itself_and_keeps_the_users_config() {
    let (mut device, _) = updated(Behaviour::Healthy, 300);
    assert_eq!(running(&device), (Slot::S1, "2.0.0".into()));
    assert!(committed(&mut device));
    assert_eq!(device.read_user_file(USER_FILE).unwrap().as_deref(), Some(USER_CONFIG));
    assert_eq!(device.read_user_file("app.json").unwrap().as_deref(), Some(&br#"{"app": "v2"}"#[..]));
    assert!(events(&device).contains(&"fs merged: 1 copied, 1 kept from the image".to_string()));
}

#[test]
fn a_missed_commit_rolls_back_when_the_timer_expires() {
    let (mut device, _) = updated(Behaviour::NeverCommits, 300);
    assert_eq!(running(&device), (Slot::S1, "2.0.0".into()));
    device.advance_ms(299_999);
    assert_eq!(running(&device).0, Slot::S1, "still on trial one millisecond before the deadline");
    device.advance_ms(1);
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    assert!(committed(&mut device));
    assert_eq!(device.read_user_file(USER_FILE).unwrap().as_deref(), Some(USER_CONFIG));
    let trace = events(&device);
    assert!(
        trace.ends_with(&[
            "commit timer expired".into(),
            "phase Revert".into(),
            "reverted".into(),
            "reboot: commit timer expired; reverted".into(),
            "phase Boot".into(),
            "boot slot 0 (Committed)".into(),
            "running 1.0.0 in slot 0".into(),
        ]),
        "{trace:?}"
    );
}

#[test]
fn a_timeout_of_zero_commits_on_the_first_healthy_boot() {
    let (mut device, _) = updated(Behaviour::NeverCommits, 0);
    assert_eq!(running(&device).0, Slot::S1);
    assert!(committed(&mut device));
}

#[test]
fn a_firmware_that_commits_after_ten_seconds_stays() {
    let (mut device, _) = updated(Behaviour::CommitsAfter { seconds: 10 }, 300);
    device.advance_ms(9_000);
    assert!(!committed(&mut device));
    device.advance_ms(1_000);
    assert!(committed(&mut device));
    device.advance_ms(600_000);
    assert_eq!(running(&device), (Slot::S1, "2.0.0".into()));
}

#[test]
fn a_firmware_that_crashes_at_boot_rolls_back_at_once() {
    let (device, _) = updated(Behaviour::CrashesAtBoot, 300);
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    let trace = events(&device);
    let crash = trace.iter().position(|e| e == "firmware crashed at boot").unwrap();
    assert_eq!(trace[crash + 1..crash + 3], ["phase Boot", "boot slot 0 (Reverted from slot 1)"]);
}

#[test]
fn a_hanging_firmware_is_reset_by_the_watchdog_and_rolls_back() {
    let (mut device, _) = updated(Behaviour::Hangs, 300);
    assert!(matches!(device.run(), Run::Hung { slot: Slot::S1, .. }));
    device.advance_ms(10_000);
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    assert!(events(&device).contains(&"watchdog reset".to_string()));
}

#[test]
fn an_explicit_commit_survives_power_cycles() {
    let (mut device, _) = updated(Behaviour::NeverCommits, 300);
    device.commit().unwrap();
    for _ in 0..3 {
        device.power_cut();
        device.power_on();
        device.advance_ms(400_000);
        assert_eq!(running(&device), (Slot::S1, "2.0.0".into()));
    }
    assert!(matches!(device.commit(), Err(DeviceError::Refused(_))), "a second commit is refused");
}

#[test]
fn a_revert_goes_back_and_a_reboot_before_commit_does_too() {
    let (mut device, _) = updated(Behaviour::NeverCommits, 300);
    device.revert().unwrap();
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    let (mut device, _) = updated(Behaviour::NeverCommits, 300);
    device.reboot();
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
}

#[test]
fn a_bit_flip_in_the_new_image_is_never_booted() {
    let fixture = Fixture::new(APP_BYTES, Behaviour::Healthy, 1);
    let mut device = sweep::prepare(&fixture);
    // The update lands, and the power goes before the reboot into v2 does anything.
    let at = device.flash_ops();
    let cut = at + 1_000;
    device.power_cut_at_op(cut, ota_sim::flash::CutWhen::Before);
    let _ = device.update(&fixture.v2_zip, 4096, options(300));
    device.power_cut();
    device.flash().disarm_power_cut();
    let new_image = device.layout().app(Slot::S1).offset + 5_000;
    device.flash().flip_bit(new_image, 3);
    device.power_on();
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    assert!(events(&device).iter().any(|e| e.starts_with("boot slot 0 (FellBack")), "{:?}", events(&device));
}

#[test]
fn a_bit_flip_in_both_images_is_a_distinct_outcome_not_a_boot() {
    let (mut device, _) = updated(Behaviour::Healthy, 300);
    device.power_cut();
    for slot in [Slot::S0, Slot::S1] {
        let offset = device.layout().app(slot).offset + 100;
        device.flash().flip_bit(offset, 0);
    }
    device.power_on();
    assert_eq!(device.run(), &Run::Bricked { why: "no slot holds an image that verifies".into() });
    assert!(matches!(device.trace().last(), Some((_, Event::Bricked { .. }))));
}

#[test]
fn a_region_whose_programs_fail_fails_the_update_and_changes_nothing() {
    let fixture = Fixture::new(APP_BYTES, Behaviour::Healthy, 1);
    let mut device = sweep::prepare(&fixture);
    let region = device.layout().app(Slot::S1);
    device.flash().fail_programs_in(region.offset + 8192..region.offset + 8196);
    let err = device.update(&fixture.v2_zip, 4096, options(300)).unwrap_err();
    let DeviceError::Refused(err) = err else { panic!("expected a refusal, got {err:?}") };
    assert!(err.message.contains("flash program at 0x"), "{err}");
    assert!(err.message.ends_with("slot 1 not marked bootable, slot 0 stays active"), "{err}");
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    device.reboot();
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
}

#[test]
fn a_snapshot_can_become_the_revert_target() {
    let fixture = Fixture::new(APP_BYTES, Behaviour::Healthy, 1);
    let mut device = sweep::prepare(&fixture);
    let snapshot = ota_core::control::SnapshotOptions { set_as_revert: true, commit_timeout_s: Some(60) };
    assert_eq!(device.create_snapshot(snapshot).unwrap(), Slot::S1);
    device.advance_ms(60_000);
    // No commit: the device goes back to the snapshot, which is v1 as well.
    assert_eq!(running(&device), (Slot::S1, "1.0.0".into()));
}

// Issue 9, defect 6: a manifest over the 4 KiB work buffer was refused, although Mongoose OS
// takes a 5 KiB manifest. A device with the default work buffer applies one, and refuses a
// larger one with its true size.
#[test]
fn a_5_kib_manifest_is_refused_by_the_default_work_buffer() {
    let fixture = Fixture::new(APP_BYTES, Behaviour::Healthy, 1);
    assert_eq!(fixture.config.work_buffer_bytes, 4096, "the default work buffer");
    let v2 = |pad: usize| {
        ota_bundle::Bundle::new("simapp", ota_sim::device::ARCH)
            .version("2.0.0")
            .build_id("sim/2.0.0")
            .app(fixture.v2.bytes())
            .attr("padding", &format!("\"{}\"", "x".repeat(pad)))
            .build()
    };
    let zip = v2(5 * 1024 - 400);
    let manifest_bytes = ota_bundle::read_entries(&zip).unwrap()[0].data(&zip).len();
    assert!((4900..=5120).contains(&manifest_bytes), "a 5 KiB manifest: {manifest_bytes} bytes");
    let mut device = sweep::prepare(&fixture);
    device.update(&zip, 1000, options(0)).unwrap();
    assert_eq!(running(&device), (Slot::S1, "2.0.0".into()));
    // One byte over the bound is refused with its size, whatever the chunking.
    for chunk in [7, 1000, 100_000] {
        let mut device = sweep::prepare(&fixture);
        let zip = v2(5 * 1024 - 400 + (5120 - manifest_bytes) + 1);
        let Err(DeviceError::Refused(e)) = device.update(&zip, chunk, options(0)) else { panic!("refused") };
        assert!(e.message.contains("manifest.json is 5121 bytes"), "{}", e.message);
    }
}

// Issue 9, defect 5, on the device: a freshly provisioned device whose only record pair is
// destroyed boots v1 again (from its slot's descriptor) and keeps the user's configuration, and
// an update after it goes through.
#[test]
fn a_device_whose_only_record_pair_is_destroyed_boots_its_image() {
    let fixture = Fixture::new(APP_BYTES, Behaviour::Healthy, 1);
    let mut device = sweep::prepare(&fixture);
    device.power_cut();
    let area = device.layout().boot_state[0];
    for offset in area.offset..area.offset + 2 * 256 {
        device.flash().flip_bit(offset, (offset % 8) as u8);
    }
    let layout = *device.layout();
    device.flash().power_on();
    assert_eq!(log::read(device.flash(), &layout).unwrap(), None, "no record decodes");
    device.flash().power_cut();
    device.power_on();
    assert_eq!(running(&device), (Slot::S0, "1.0.0".into()));
    assert!(committed(&mut device));
    assert!(events(&device).iter().any(|e| e.contains("Recovered")), "{:#?}", events(&device));
    assert_eq!(device.read_user_file(USER_FILE).unwrap().as_deref(), Some(USER_CONFIG));
    device.update(&fixture.v2_zip, 700, options(0)).unwrap();
    assert_eq!(running(&device), (Slot::S1, "2.0.0".into()));
}
