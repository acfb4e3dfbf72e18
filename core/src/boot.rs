//! The boot loader's decision: which slot boots, and what the boot state says afterwards.
//!
//! | stored state                          | chosen slot | state written before booting                 |
//! |---------------------------------------|-------------|----------------------------------------------|
//! | committed                             | active      | none                                         |
//! | uncommitted, first-boot flag B set    | active      | flag B cleared (this is the one trial boot)  |
//! | uncommitted, flag B clear             | revert      | active = revert, committed, flags cleared    |
//!
//! The chosen slot's image must verify (length within the slot, SHA-256 as recorded). If it does
//! not, the other slot is tried, and when it verifies it becomes the committed active slot. If
//! neither verifies the outcome is [`BootOutcome::NoBootableImage`]: an unverified image is never
//! booted. The state is written only after the chosen image verified, so a power cut during the
//! write repeats the same decision on the next boot.
//!
//! When the write fails, the slot that boots can differ from the recorded active slot (a trial
//! that could not be recorded boots the committed revert slot: [`BootReason::TrialSkipped`]).
//! The outcome therefore says which slot runs and whether this is its first boot, and the
//! application acts on that, never on the recorded active slot:
//!
//! | reason                  | `first_boot` | `merge_from`                       |
//! |-------------------------|--------------|------------------------------------|
//! | `Trial`                 | true         | the revert slot, when merge-fs set |
//! | `Recovered`, on trial   | true         | `None`                             |
//! | any other               | false        | `None`                             |
//!
//! When no boot-state record decodes (every copy destroyed), the slots' image descriptors
//! ([`crate::descriptor`]) say what each slot holds, and only images that verify against them
//! count ([`BootReason::Recovered`]):
//!
//! | slots that verify | outcome                                                                |
//! |-------------------|------------------------------------------------------------------------|
//! | none, no descriptor decodes | [`BootOutcome::NotProvisioned`]: an erased, never provisioned flash |
//! | none              | [`BootOutcome::NoBootableImage`]                                        |
//! | one               | it boots, recorded committed                                           |
//! | both              | the newest (higher generation) boots on trial, with the commit timeout it was written with, and the other as its revert slot |
//!
//! Why a trial when both verify: without the state nobody knows whether the newest image ever
//! committed. On trial, a healthy newest image commits itself, and one that does not goes back
//! to the other, which ran before it was replaced. No image is committed before it ran, and an
//! image that does not verify never boots.

use embedded_storage::nor_flash::NorFlash;

use crate::descriptor;
use crate::flash::{FlashError, RegionDigests, sha256_region, sha256_region_known};
use crate::layout::{Layout, Slot};
use crate::log::{self, AppendError, Located};
use crate::state::{BootState, Record, SlotInfo};

/// Why a slot was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootReason {
    /// The active image is committed.
    Committed,
    /// The first boot of a new, uncommitted image: its one trial.
    Trial,
    /// An uncommitted image booted again without a commit (crash, watchdog, reboot, power loss):
    /// back to the revert slot.
    Reverted { from: Slot },
    /// The chosen slot's image did not verify; the other one did.
    FellBack { from: Slot },
    /// The state could not be written, so the new image is not given its trial; the committed
    /// revert slot boots with the state unchanged.
    TrialSkipped { error: AppendError },
    /// No boot-state record decoded; the slots' descriptors named an image that verifies (table
    /// above), and the log starts again from it.
    Recovered,
}

/// What the boot loader does.
// No allocator to box the record into: the outcome lives on the stack, once per boot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    Boot {
        /// The slot that boots: the running slot the application commits, reverts and reports.
        slot: Slot,
        reason: BootReason,
        /// The newest record as stored after the decision.
        state: Located,
        /// This is `slot`'s one trial boot: the commit timer is armed from it (and commits at
        /// once when the commit timeout is 0).
        first_boot: bool,
        /// Merge this slot's filesystem into `slot`'s before the application starts. Set only on
        /// a first boot whose state asks for the merge.
        merge_from: Option<Slot>,
    },
    /// No boot-state record and no image descriptor: the device was never provisioned.
    NotProvisioned,
    /// Neither slot holds an image that verifies.
    NoBootableImage,
}

/// Reads the boot state, decides, writes the state the decision needs, and says which slot to
/// boot. `buf` is any non-empty scratch buffer for hashing.
pub fn boot<F: NorFlash>(flash: &mut F, layout: &Layout, buf: &mut [u8]) -> Result<BootOutcome, FlashError> {
    decide(flash, layout, buf, sha256_region::<F>)
}

/// [`boot`] on a flash that may know its images' digests ([`RegionDigests`]): the same decision
/// on the same path, with each image's SHA-256 asked of the flash before it is read.
pub fn boot_with_known_digests<F: NorFlash + RegionDigests>(
    flash: &mut F,
    layout: &Layout,
    buf: &mut [u8],
) -> Result<BootOutcome, FlashError> {
    decide(flash, layout, buf, sha256_region_known::<F>)
}

/// How an image's SHA-256 is found: [`sha256_region`] or [`sha256_region_known`].
type Sha256Of<F> = fn(&mut F, u32, u32, &mut [u8]) -> Result<[u8; 32], FlashError>;

fn decide<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    buf: &mut [u8],
    sha256_of: Sha256Of<F>,
) -> Result<BootOutcome, FlashError> {
    let Some(current) = log::read(flash, layout)? else {
        return recover(flash, layout, buf, sha256_of);
    };
    let stored = current.record.state;
    let (planned, reason) = plan(&stored);
    let (next, reason) = if verify_with(flash, layout, &planned, planned.active, buf, sha256_of)? {
        (planned, reason)
    } else {
        let other = planned.active.other();
        if !verify_with(flash, layout, &planned, other, buf, sha256_of)? {
            return Ok(BootOutcome::NoBootableImage);
        }
        (planned.settled_on(other), BootReason::FellBack { from: planned.active })
    };
    if next == stored {
        return Ok(booted(next.active, reason, current));
    }
    match log::append(flash, layout, Some(&current), &next) {
        Ok(state) => Ok(booted(next.active, reason, state)),
        Err(error) => write_failed(flash, layout, buf, sha256_of, current, &next, reason, error),
    }
}

/// The decision of the table above, before any image is verified.
pub fn plan(state: &BootState) -> (BootState, BootReason) {
    if state.committed {
        return (*state, BootReason::Committed);
    }
    if state.first_boot_b {
        return (BootState { first_boot_b: false, ..*state }, BootReason::Trial);
    }
    let revert = state.revert.expect("an uncommitted state has a revert slot (BootState::check)");
    (state.settled_on(revert), BootReason::Reverted { from: state.active })
}

/// A failed state write must not turn into a boot loop: a trial needs flag B cleared on flash,
/// so without that write the committed revert slot boots instead, if it verifies. A revert or a
/// fallback boots its already verified committed slot; the next boot tries the write again.
#[allow(clippy::too_many_arguments)]
fn write_failed<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    buf: &mut [u8],
    sha256_of: Sha256Of<F>,
    current: Located,
    next: &BootState,
    reason: BootReason,
    error: AppendError,
) -> Result<BootOutcome, FlashError> {
    if reason != BootReason::Trial {
        return Ok(booted(next.active, reason, current));
    }
    let stored = current.record.state;
    let revert = stored.revert.expect("a trial has a revert slot");
    if verify_with(flash, layout, &stored, revert, buf, sha256_of)? {
        return Ok(booted(revert, BootReason::TrialSkipped { error }, current));
    }
    Ok(BootOutcome::NoBootableImage)
}

/// No record decodes: boot what the descriptors name, if it verifies (the table above).
fn recover<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    buf: &mut [u8],
    sha256_of: Sha256Of<F>,
) -> Result<BootOutcome, FlashError> {
    let mut described = false;
    let mut found = [None; 2];
    for slot in Slot::ALL {
        let Some(descriptor) = descriptor::read(flash, layout, slot)? else { continue };
        described = true;
        if image_verifies(flash, layout, &descriptor.info, slot, buf, sha256_of)? {
            found[slot.index()] = Some(descriptor);
        }
    }
    let (state, older) = match found {
        [None, None] if described => return Ok(BootOutcome::NoBootableImage),
        [None, None] => return Ok(BootOutcome::NotProvisioned),
        [Some(only), None] => (BootState::provisioned(Slot::S0, only.info), Slot::S0),
        [None, Some(only)] => (BootState::provisioned(Slot::S1, only.info), Slot::S1),
        [Some(a), Some(b)] => {
            let newest = if b.generation > a.generation { Slot::S1 } else { Slot::S0 };
            let trial = BootState {
                active: newest,
                revert: Some(newest.other()),
                committed: false,
                first_boot_a: true,
                first_boot_b: false,
                merge_fs: false,
                commit_timeout_s: found[newest.index()].map_or(0, |d| d.commit_timeout_s),
                slots: [a.info, b.info],
            };
            (trial, newest.other())
        }
    };
    let seq = found.iter().flatten().map(|d| d.generation).max().unwrap_or(0).wrapping_add(1);
    match log::restart(flash, layout, seq, &state) {
        Ok(located) => Ok(booted(state.active, BootReason::Recovered, located)),
        Err(_) => {
            // The log cannot be written: boot the image that ran before, as the state it would
            // have written says; nothing is on flash, so the next boot recovers again.
            let settled = state.settled_on(older);
            let record = log::Located {
                record: Record { seq, state: settled },
                position: log::Position { area: 0, index: 0 },
            };
            Ok(booted(older, BootReason::Recovered, record))
        }
    }
}

/// The outcome of booting `slot`: only a recorded trial (or a recovery that put `slot` on
/// trial) is a first boot, and only a first boot whose state asks for it merges.
fn booted(slot: Slot, reason: BootReason, state: Located) -> BootOutcome {
    let stored = state.record.state;
    let on_trial = matches!(reason, BootReason::Trial | BootReason::Recovered) && !stored.committed;
    let first_boot = on_trial && stored.active == slot;
    let merge_from = if first_boot && stored.merge_fs { stored.revert } else { None };
    BootOutcome::Boot { slot, reason, state, first_boot, merge_from }
}

/// True when `slot` holds the image the state records: a non-zero length that fits the slot and
/// the recorded SHA-256.
pub fn verify<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    state: &BootState,
    slot: Slot,
    buf: &mut [u8],
) -> Result<bool, FlashError> {
    verify_with(flash, layout, state, slot, buf, sha256_region::<F>)
}

/// [`verify`] on a flash that may know its images' digests ([`RegionDigests`]).
pub fn verify_with_known_digests<F: NorFlash + RegionDigests>(
    flash: &mut F,
    layout: &Layout,
    state: &BootState,
    slot: Slot,
    buf: &mut [u8],
) -> Result<bool, FlashError> {
    verify_with(flash, layout, state, slot, buf, sha256_region_known::<F>)
}

fn verify_with<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    state: &BootState,
    slot: Slot,
    buf: &mut [u8],
    sha256_of: Sha256Of<F>,
) -> Result<bool, FlashError> {
    image_verifies(flash, layout, state.slot(slot), slot, buf, sha256_of)
}

/// True when `slot` holds the image `info` describes.
fn image_verifies<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    info: &SlotInfo,
    slot: Slot,
    buf: &mut [u8],
    sha256_of: Sha256Of<F>,
) -> Result<bool, FlashError> {
    let region = layout.app(slot);
    if !info.has_image() || info.app_len_bytes > region.size_bytes {
        return Ok(false);
    }
    Ok(sha256_of(flash, region.offset, info.app_len_bytes, buf)? == info.app_sha256)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::control;
    use crate::test_support::{FLASH_BYTES, Flash, LAYOUT, image, put_image};
    use embedded_storage::nor_flash::NorFlash;
    use std::vec;

    /// Slot 0 holds committed v1, slot 1 holds v2 just finalized (on trial).
    fn updated(mem: &mut [u8]) -> Flash<'_> {
        let mut flash = Flash::new(mem);
        let v1 = put_image(&mut flash, Slot::S0, &image(1, 3000), "1.0");
        let v2 = put_image(&mut flash, Slot::S1, &image(2, 5000), "2.0");
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

    fn boot_slot(flash: &mut Flash<'_>) -> (Slot, BootReason) {
        match boot(flash, &LAYOUT, &mut [0; 256]).unwrap() {
            BootOutcome::Boot { slot, reason, .. } => (slot, reason),
            other => panic!("expected a boot, got {other:?}"),
        }
    }

    #[test]
    fn a_blank_device_is_not_provisioned() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = Flash::new(&mut mem);
        assert_eq!(boot(&mut flash, &LAYOUT, &mut [0; 64]), Ok(BootOutcome::NotProvisioned));
    }

    #[test]
    fn the_first_boot_is_a_trial_and_the_second_uncommitted_boot_reverts() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = updated(&mut mem);
        assert_eq!(boot_slot(&mut flash), (Slot::S1, BootReason::Trial));
        let state = log::read(&mut flash, &LAYOUT).unwrap().unwrap().record.state;
        assert!(!state.first_boot_b && state.first_boot_a && !state.committed);
        // No commit: the next boot goes back.
        assert_eq!(boot_slot(&mut flash), (Slot::S0, BootReason::Reverted { from: Slot::S1 }));
        let state = log::read(&mut flash, &LAYOUT).unwrap().unwrap().record.state;
        assert!(state.committed && state.revert.is_none() && !state.merge_fs);
        assert_eq!(boot_slot(&mut flash), (Slot::S0, BootReason::Committed));
    }

    #[test]
    fn a_committed_trial_stays() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = updated(&mut mem);
        boot_slot(&mut flash);
        control::commit(&mut flash, &LAYOUT, Slot::S1).unwrap();
        for _ in 0..3 {
            assert_eq!(boot_slot(&mut flash), (Slot::S1, BootReason::Committed));
        }
    }

    #[test]
    fn a_corrupt_new_image_falls_back_and_never_boots() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = updated(&mut mem);
        // One bit of the new image flips: write a 0 over a byte of ones would not, so erase a unit.
        let at = LAYOUT.app(Slot::S1).offset;
        flash.erase(at, at + 1024).unwrap();
        assert_eq!(boot_slot(&mut flash), (Slot::S0, BootReason::FellBack { from: Slot::S1 }));
        let state = log::read(&mut flash, &LAYOUT).unwrap().unwrap().record.state;
        assert_eq!((state.active, state.committed), (Slot::S0, true));
    }

    #[test]
    fn no_verified_image_is_a_distinct_outcome() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = updated(&mut mem);
        for slot in Slot::ALL {
            let at = LAYOUT.app(slot).offset;
            flash.erase(at, at + 1024).unwrap();
        }
        let before = log::read(&mut flash, &LAYOUT).unwrap();
        assert_eq!(boot(&mut flash, &LAYOUT, &mut [0; 64]), Ok(BootOutcome::NoBootableImage));
        assert_eq!(log::read(&mut flash, &LAYOUT).unwrap(), before, "nothing written");
    }

    #[test]
    fn plan_follows_the_table() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = updated(&mut mem);
        let trial = log::read(&mut flash, &LAYOUT).unwrap().unwrap().record.state;
        let (next, reason) = plan(&trial);
        assert_eq!((next.active, reason, next.first_boot_b), (Slot::S1, BootReason::Trial, false));
        let (again, reason) = plan(&next);
        assert_eq!(
            (again.active, reason, again.committed),
            (Slot::S0, BootReason::Reverted { from: Slot::S1 }, true)
        );
        assert_eq!(plan(&again), (again, BootReason::Committed));
    }
}
