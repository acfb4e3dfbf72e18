//! Issue 9, "Never brick": the faults around power cuts that once bricked or wedged a device,
//! each as the regression test named after its defect.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use ota_core::boot::{self, BootOutcome, BootReason};
use ota_core::control::{self, BootStatePatch, ControlError, Running, SnapshotOptions, TickAction};
use ota_core::layout::{Layout, Region, Slot};
use ota_core::log;
use ota_core::state::{BootState, BuildId, SlotInfo, Version};
use sha2::Digest as _;

/// 1 KiB erase units: two boot-state areas of four records, app slots of 8 KiB, fs of 4 KiB.
const LAYOUT: Layout = match Layout::new(
    1024,
    4,
    [Region::new(0, 1024), Region::new(1024, 1024)],
    [Region::new(2048, 8192), Region::new(10240, 8192)],
    [Region::new(18432, 4096), Region::new(22528, 4096)],
) {
    Ok(l) => l,
    Err(_) => panic!("test layout"),
};
const FLASH_BYTES: usize = 26624;

/// A RAM NOR flash with the faults of the issue: programs that fail in a range (a one-off
/// program failure), and one bit stuck at a value whatever is programmed or erased.
#[derive(Clone)]
struct FaultyFlash {
    mem: Vec<u8>,
    /// Programs that start in this range fail, and change nothing.
    failing: Option<core::ops::Range<u32>>,
    /// (byte offset, bit mask, stuck at 1): that bit reads so after every program or erase.
    stuck: Option<(u32, u8, bool)>,
    /// Write units programmed since their last erase, as a strict NOR model tracks them.
    programmed: Vec<bool>,
    /// Offsets of write units programmed a second time without an erase.
    violations: Vec<u32>,
}

impl FaultyFlash {
    fn new() -> FaultyFlash {
        FaultyFlash {
            mem: vec![0xff; FLASH_BYTES],
            failing: None,
            stuck: None,
            programmed: vec![false; FLASH_BYTES / 4],
            violations: Vec::new(),
        }
    }

    /// A program of `len` bytes at `offset` cut by the power so early that every bit stays
    /// erased: the cells were programmed, but read as if they were not.
    fn torn_and_erased(&mut self, offset: u32, len: u32) {
        for unit in offset / 4..(offset + len) / 4 {
            self.programmed[unit as usize] = true;
        }
    }

    fn settle(&mut self) {
        if let Some((at, mask, high)) = self.stuck {
            let cell = &mut self.mem[at as usize];
            *cell = if high { *cell | mask } else { *cell & !mask };
        }
    }
}

impl ErrorType for FaultyFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for FaultyFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let src = self
            .mem
            .get(offset as usize..offset as usize + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for FaultyFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 1024;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        assert!(from.is_multiple_of(1024) && to.is_multiple_of(1024), "erase is aligned");
        self.mem[from as usize..to as usize].fill(0xff);
        self.programmed[from as usize / 4..to as usize / 4].fill(false);
        self.settle();
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        assert!(offset.is_multiple_of(4) && bytes.len().is_multiple_of(4), "program is aligned");
        if self.failing.as_ref().is_some_and(|r| r.contains(&offset)) {
            return Err(NorFlashErrorKind::Other);
        }
        for (cell, b) in self.mem[offset as usize..].iter_mut().zip(bytes) {
            *cell &= b;
        }
        for unit in offset / 4..(offset + bytes.len() as u32) / 4 {
            if std::mem::replace(&mut self.programmed[unit as usize], true) {
                self.violations.push(unit * 4);
            }
        }
        self.settle();
        Ok(())
    }
}

fn image(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn put_image(flash: &mut FaultyFlash, slot: Slot, data: &[u8], version: &str, fs_len_bytes: u32) -> SlotInfo {
    let region = LAYOUT.app(slot);
    flash.mem[region.offset as usize..][..data.len()].copy_from_slice(data);
    SlotInfo {
        app_len_bytes: data.len() as u32,
        app_sha256: sha2::Sha256::digest(data).into(),
        fs_len_bytes,
        version: Version::new(version).unwrap(),
        build_id: BuildId::new("test").unwrap(),
    }
}

/// v1 committed in slot 0, v2 just finalized in slot 1 with no fs part: what
/// `Updater::finish` leaves.
fn updated() -> FaultyFlash {
    let mut flash = FaultyFlash::new();
    let v1 = put_image(&mut flash, Slot::S0, &image(1, 3000), "1.0", 4096);
    let v2 = put_image(&mut flash, Slot::S1, &image(2, 5000), "2.0", 0);
    let first = log::append(&mut flash, &LAYOUT, None, &BootState::provisioned(Slot::S0, v1)).unwrap();
    let mut trial = first.record.state;
    trial.slots[1] = v2;
    trial.active = Slot::S1;
    trial.revert = Some(Slot::S0);
    trial.committed = false;
    trial.first_boot_a = true;
    trial.first_boot_b = true;
    trial.merge_fs = true;
    trial.commit_timeout_s = 60;
    log::append(&mut flash, &LAYOUT, Some(&first), &trial).unwrap();
    flash
}

/// The boot loader's write of the trial record fails once: it boots the old slot.
fn trial_skipped() -> (FaultyFlash, BootOutcome) {
    let mut flash = updated();
    flash.failing = Some(0..2048);
    let outcome = boot::boot(&mut flash, &LAYOUT, &mut [0; 256]).unwrap();
    flash.failing = None;
    let BootOutcome::Boot { slot, reason, .. } = outcome else { panic!("no boot: {outcome:?}") };
    assert_eq!(slot, Slot::S0);
    assert!(matches!(reason, BootReason::TrialSkipped { .. }), "{reason:?}");
    (flash, outcome)
}

fn boot_slot(flash: &mut FaultyFlash) -> (Slot, BootReason) {
    match boot::boot(flash, &LAYOUT, &mut [0; 256]).unwrap() {
        BootOutcome::Boot { slot, reason, .. } => (slot, reason),
        other => panic!("expected a boot, got {other:?}"),
    }
}

// Defect 1: the boot loader could not record the trial and booted slot 0, but the state still
// said "slot 1 active, uncommitted". The healthy old firmware committed, `control::commit`
// committed the recorded slot 1, an image that never ran, and a crash in it bricked the device.
#[test]
fn an_image_that_never_ran_gets_committed() {
    let (mut flash, _) = trial_skipped();
    // The device reports what runs.
    let seen = control::get_boot_state(&mut flash, &LAYOUT, Slot::S0).unwrap();
    assert_eq!((seen.active, seen.committed, seen.revert), (Slot::S0, true, None));
    // The running firmware (slot 0) commits, as a healthy firmware does, or its commit timer
    // runs out: neither touches slot 1.
    assert_eq!(control::commit(&mut flash, &LAYOUT, Slot::S0), Err(ControlError::AlreadyCommitted));
    assert_eq!(control::revert(&mut flash, &LAYOUT, Slot::S0), Err(ControlError::AlreadyCommitted));
    let running = Running::booted(Slot::S0, false, 0);
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, u64::MAX), Ok(TickAction::Nothing));
    let state = log::read(&mut flash, &LAYOUT).unwrap().unwrap().record.state;
    assert!(
        !(state.active == Slot::S1 && state.committed),
        "slot 1 never ran and must not be committed: {state:?}"
    );
    // Whatever boots next is either slot 1's trial or slot 0, never slot 1 as committed.
    let (slot, reason) = boot_slot(&mut flash);
    assert!((slot, reason) == (Slot::S1, BootReason::Trial) || slot == Slot::S0, "{slot} {reason:?}");
}

// Defect 2: on that same boot the first-boot merge ran with old fs = new fs = the running fs,
// and when slot 1's bundle had no fs part, the running filesystem (the user's conf9.json) was
// formatted away.
#[test]
fn the_first_boot_merge_runs_on_a_skipped_trial() {
    let (_, outcome) = trial_skipped();
    let BootOutcome::Boot { first_boot, merge_from, .. } = outcome else { unreachable!() };
    assert_eq!((first_boot, merge_from), (false, None), "slot 0 is not booting for the first time");
    // The trial itself, recorded, is a first boot that merges slot 0's files into slot 1's.
    let mut flash = updated();
    let BootOutcome::Boot { slot, first_boot, merge_from, .. } =
        boot::boot(&mut flash, &LAYOUT, &mut [0; 256]).unwrap()
    else {
        panic!("no boot")
    };
    assert_eq!((slot, first_boot, merge_from), (Slot::S1, true, Some(Slot::S0)));
}

/// Appends `count` states to a log whose flash has `stuck` set, checking each one reads back as
/// the newest.
fn append_through(stuck: (u32, u8, bool), count: u32) {
    let mut flash = FaultyFlash::new();
    flash.stuck = Some(stuck);
    flash.settle();
    let v1 = put_image(&mut flash, Slot::S0, &image(1, 3000), "1.0", 4096);
    let mut current = log::read(&mut flash, &LAYOUT).unwrap();
    for n in 0..count {
        let state = BootState { commit_timeout_s: n, ..BootState::provisioned(Slot::S0, v1) };
        let written = log::append(&mut flash, &LAYOUT, current.as_ref(), &state)
            .unwrap_or_else(|e| panic!("append {n} with bit {stuck:?} stuck: {e}"));
        let found = log::read(&mut flash, &LAYOUT).unwrap();
        assert_eq!(found, Some(written), "append {n}");
        current = found;
    }
}

// Defect 3: a stuck bit at record index 0 of an area failed that record's read-back every time
// the log wrapped into the area, and every later append retried the same position: no update,
// commit or revert could be recorded again. The failed record is stepped over.
#[test]
fn the_log_wedges_forever() {
    // Byte 0 is the magic's 'O' (0x4f): bit 6 is 1 in every record, bit 7 is 0.
    for area_offset in [0, 1024] {
        append_through((area_offset, 0x40, false), 24);
        append_through((area_offset, 0x80, true), 24);
        // And in the middle of a record, at every index of the area.
        for index in 0..4 {
            append_through((area_offset + index * 256 + 100, 0x01, false), 24);
            append_through((area_offset + index * 256 + 100, 0x01, true), 24);
        }
    }
}

/// v1 committed in slot 0, as provisioned.
fn provisioned() -> FaultyFlash {
    let mut flash = FaultyFlash::new();
    let v1 = put_image(&mut flash, Slot::S0, &image(1, 3000), "1.0", 4096);
    log::append(&mut flash, &LAYOUT, None, &BootState::provisioned(Slot::S0, v1)).unwrap();
    flash
}

fn stored(flash: &mut FaultyFlash) -> BootState {
    log::read(flash, &LAYOUT).unwrap().unwrap().record.state
}

// Defect 7: the commit deadline counted from the last boot, so `CreateSnapshot {set_as_revert,
// commit_timeout: 300}` or `SetBootState {is_committed: false, …}` at 600 s of uptime reverted
// at once. It counts from the call that arms it.
#[test]
fn the_commit_deadline_counts_from_the_call_that_arms_it() {
    let mut flash = provisioned();
    let mut running = Running::booted(Slot::S0, false, 0);
    let options = SnapshotOptions { set_as_revert: true, commit_timeout_s: Some(300) };
    control::create_snapshot(&mut flash, &LAYOUT, &mut running, &options, &mut [0; 512], 600_000).unwrap();
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 600_001), Ok(TickAction::Nothing));
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 899_999), Ok(TickAction::Nothing));
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 900_000), Ok(TickAction::RevertedRebootNow));

    let mut flash = provisioned();
    let mut running = Running::booted(Slot::S0, false, 0);
    control::create_snapshot(
        &mut flash,
        &LAYOUT,
        &mut running,
        &SnapshotOptions::default(),
        &mut [0; 512],
        0,
    )
    .unwrap();
    let patch = BootStatePatch {
        is_committed: Some(false),
        revert_slot: Some(Some(Slot::S1)),
        commit_timeout_s: Some(60),
        ..Default::default()
    };
    control::set_boot_state(&mut flash, &LAYOUT, &mut running, &patch, 600_000).unwrap();
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 600_001), Ok(TickAction::Nothing));
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 660_000), Ok(TickAction::RevertedRebootNow));
}

// Defect 7: `CreateSnapshot {set_as_revert: true}` without a commit timeout was committed again
// at the next tick (timeout 0 read as "commit now"), so it never took effect.
#[test]
fn set_as_revert_without_a_timeout_takes_effect() {
    let mut flash = provisioned();
    let mut running = Running::booted(Slot::S0, false, 0);
    let options = SnapshotOptions { set_as_revert: true, commit_timeout_s: None };
    control::create_snapshot(&mut flash, &LAYOUT, &mut running, &options, &mut [0; 512], 1000).unwrap();
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, u64::MAX), Ok(TickAction::Nothing));
    let state = stored(&mut flash);
    assert_eq!((state.committed, state.revert), (false, Some(Slot::S1)));
    // A reboot without a commit goes back to the snapshot.
    assert_eq!(boot_slot(&mut flash), (Slot::S1, BootReason::Reverted { from: Slot::S0 }));
}

// Defect 7: a commit kept the stored commit timeout; Mongoose OS deletes it (`updater.dat`).
#[test]
fn a_commit_keeps_the_commit_timeout() {
    let mut flash = updated();
    boot_slot(&mut flash);
    control::commit(&mut flash, &LAYOUT, Slot::S1).unwrap();
    assert_eq!(stored(&mut flash).commit_timeout_s, 0);
}

// Defect 7: `SetBootState {commit_timeout: 0}` during a trial committed at the next tick: a
// timeout of 0 commits only at the first boot, as `mgos_upd_boot_finish` decides it.
#[test]
fn a_zero_timeout_set_during_a_trial_commits_at_once() {
    let mut flash = updated();
    let BootOutcome::Boot { slot, first_boot, .. } = boot::boot(&mut flash, &LAYOUT, &mut [0; 256]).unwrap()
    else {
        panic!("no boot")
    };
    let mut running = Running::booted(slot, first_boot, 0);
    let patch = BootStatePatch { commit_timeout_s: Some(0), ..Default::default() };
    control::set_boot_state(&mut flash, &LAYOUT, &mut running, &patch, 5000).unwrap();
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 5001), Ok(TickAction::Nothing));
    assert!(!stored(&mut flash).committed);
    // Booted with a timeout of 0, the trial commits at once.
    let mut flash = updated();
    let mut state = stored(&mut flash);
    state.commit_timeout_s = 0;
    let current = log::read(&mut flash, &LAYOUT).unwrap();
    log::append(&mut flash, &LAYOUT, current.as_ref(), &state).unwrap();
    let (slot, _) = boot_slot(&mut flash);
    let running = Running::booted(slot, true, 0);
    assert_eq!(control::tick(&mut flash, &LAYOUT, &running, 0), Ok(TickAction::Committed));
}

// Defect 7: `SetBootState {is_committed: true}` kept the revert slot, which `OTA.Commit` clears;
// asking for both is refused with the rule.
#[test]
fn set_boot_state_committed_keeps_the_revert_slot() {
    let mut flash = updated();
    boot_slot(&mut flash);
    let mut running = Running::booted(Slot::S1, true, 0);
    let both =
        BootStatePatch { is_committed: Some(true), revert_slot: Some(Some(Slot::S0)), ..Default::default() };
    let err = control::set_boot_state(&mut flash, &LAYOUT, &mut running, &both, 0).unwrap_err();
    insta::assert_snapshot!(err.to_string(), @"invalid boot state: a committed image has no revert slot (committing clears revert_slot); boot state unchanged");
    let patch = BootStatePatch { is_committed: Some(true), ..Default::default() };
    control::set_boot_state(&mut flash, &LAYOUT, &mut running, &patch, 0).unwrap();
    let state = stored(&mut flash);
    assert_eq!((state.active, state.committed, state.revert), (Slot::S1, true, None));
}

// Defect 8: `Layout` did not know the sector map. A 16 KiB erase unit inside the 128 KiB
// sectors of an STM32F4 was accepted, and then every erase of that slot failed. It is refused
// at construction, naming the sector.
#[test]
fn a_16_kib_erase_unit_inside_128_kib_sectors_is_accepted() {
    use ota_core::layout::{LayoutError, RegionName, SectorRun};
    const STM32F4: [SectorRun; 3] = [
        SectorRun { count: 4, sector_bytes: 16 * 1024 },
        SectorRun { count: 1, sector_bytes: 64 * 1024 },
        SectorRun { count: 7, sector_bytes: 128 * 1024 },
    ];
    let layout = |unit: u32, app: u32| {
        Layout::new(
            unit,
            4,
            [Region::new(0, unit), Region::new(unit, unit)],
            [Region::new(0x20000, app), Region::new(0x20000 + app, app)],
            [Region::new(0xc0000, 0x20000), Region::new(0xe0000, 0x20000)],
        )
    };
    let small = layout(16 * 1024, 0x20000).unwrap();
    let err = small.with_sectors(&STM32F4).unwrap_err();
    assert_eq!(
        err,
        LayoutError::SectorSplit {
            region: RegionName::App(Slot::S0),
            sector_offset: 0x20000,
            sector_bytes: 0x20000
        }
    );
    insta::assert_snapshot!(err.to_string(), @"app slot 0 is erased in units that split the 131072-byte sector at 0x20000: every erase unit must be whole sectors");
    // 128 KiB units fit: the first one is the four 16 KiB sectors and the 64 KiB one, whole.
    let fits = Layout::new(
        128 * 1024,
        4,
        [Region::new(0, 0x20000), Region::new(0x40000, 0x20000)],
        [Region::new(0x60000, 0x20000), Region::new(0x80000, 0x20000)],
        [Region::new(0xa0000, 0x20000), Region::new(0xc0000, 0x20000)],
    )
    .unwrap();
    assert_eq!(fits.with_sectors(&STM32F4), Ok(fits));
    // A region past the end of the map is out of the flash.
    let short = [SectorRun { count: 4, sector_bytes: 16 * 1024 }];
    assert!(matches!(fits.with_sectors(&short), Err(LayoutError::OutOfFlash { .. })));
}

/// Flips each bit of both boot-state areas in turn and checks the slot that boots.
fn every_single_flip_boots(flash: &FaultyFlash, expected: Slot) {
    let areas = (LAYOUT.boot_state[0].offset as usize)..(LAYOUT.boot_state[1].end() as usize);
    for byte in areas {
        for bit in 0..8 {
            let mut flipped = flash.clone();
            flipped.mem[byte] ^= 1 << bit;
            let outcome = boot::boot(&mut flipped, &LAYOUT, &mut [0; 256]).unwrap();
            let BootOutcome::Boot { slot, .. } = outcome else {
                panic!("bit {bit} of byte {byte} flipped: {outcome:?}")
            };
            assert_eq!(slot, expected, "bit {bit} of byte {byte} flipped");
        }
    }
}

// Defect 5: any single bit flip in the only record of a freshly provisioned device gave "no
// boot state" (a brick), and any flip in the newest record of a committed update rolled the
// device back. Every record is kept twice, so no single flip changes which image boots.
#[test]
fn a_single_bit_flip_bricks_or_rolls_back() {
    every_single_flip_boots(&provisioned(), Slot::S0);
    let mut flash = updated();
    assert_eq!(boot_slot(&mut flash), (Slot::S1, BootReason::Trial));
    control::commit(&mut flash, &LAYOUT, Slot::S1).unwrap();
    every_single_flip_boots(&flash, Slot::S1);
}

// Defect 4: a record whose program was cut so early that all its bits stayed erased looks like
// a free position, so the next append programmed the same write units again, a strictness
// violation on NOR (and ECC) parts; when it was the trial or commit record, the device then
// recorded nothing more. No write unit is ever programmed twice, however many appends in a row
// are cut that way.
#[test]
fn a_torn_record_whose_bits_stay_erased_is_programmed_again() {
    let mut flash = provisioned();
    let v1 = stored(&mut flash);
    for attempt in 0..6u32 {
        let current = log::read(&mut flash, &LAYOUT).unwrap();
        let next = BootState { commit_timeout_s: 100 + attempt, ..v1 };
        // Where this append writes: try it on a copy, then tear it on the flash itself.
        let mut probe = flash.clone();
        let written = log::append(&mut probe, &LAYOUT, current.as_ref(), &next).unwrap();
        let area = LAYOUT.boot_state[written.position.area as usize];
        if probe.mem[area.offset as usize..area.end() as usize]
            != flash.mem[area.offset as usize..area.end() as usize]
            && written.position.index == 0
            && current.is_some_and(|c| c.position.area != written.position.area)
        {
            // The append began by erasing that area: the cut came after the erase.
            flash.erase(area.offset, area.end() as u32).unwrap();
        }
        let offset = area.offset + written.position.index * ota_core::state::RECORD_SIZE_BYTES as u32;
        flash.torn_and_erased(offset, ota_core::state::RECORD_SIZE_BYTES as u32);
        assert_eq!(log::read(&mut flash, &LAYOUT).unwrap(), current, "attempt {attempt}: nothing landed");
    }
    // After six torn appends in a row from the same record, the next one lands, cleanly.
    let current = log::read(&mut flash, &LAYOUT).unwrap();
    let next = BootState { commit_timeout_s: 7, ..v1 };
    let written = log::append(&mut flash, &LAYOUT, current.as_ref(), &next).unwrap();
    assert_eq!(log::read(&mut flash, &LAYOUT).unwrap(), Some(written));
    assert_eq!(flash.violations, Vec::<u32>::new(), "write units programmed twice");
}
