//! The application's side of the boot state (§3.1 and §5 of the reference): the commit timer,
//! commit, revert, reading and setting the state, and snapshots.
//!
//! Every call reads the newest record first and appends a new one; none keeps the boot state in
//! RAM, so the boot loader and the application never disagree about what is stored. What the
//! application does keep is [`Running`]: which slot runs, and when its commit timer was armed.
//! Every call acts on the running slot, never on the recorded active one:
//!
//! | stored active vs running | commit, revert        | reported state, timer          |
//! |--------------------------|-----------------------|--------------------------------|
//! | same slot                | as stored             | as stored                      |
//! | other slot (not yet run) | refused: committed    | running slot, committed        |

use embedded_storage::nor_flash::NorFlash;

use crate::descriptor;
use crate::flash::{self, FlashError, erase_span, sha256_region};
use crate::layout::{Layout, Region, Slot};
use crate::log::{self, AppendError, Located};
use crate::state::{BootState, Descriptor, StateError};

/// What the commit timer says, a pure function of the state, the [`Running`] image and now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerVerdict {
    /// The image is committed: there is nothing to time, and nothing is ever reverted.
    Committed,
    /// The first boot of an image whose `commit_timeout` is 0: commit now.
    CommitNow,
    /// Uncommitted with no deadline (`commit_timeout` 0, set after the first boot): it stays
    /// uncommitted until a commit, a revert or a reboot, which reverts.
    NoDeadline,
    /// The deadline has not passed.
    Running { remaining_ms: u64 },
    /// The deadline passed without a commit: revert and reboot.
    Expired,
}

/// What the application keeps in RAM about the image it runs: the slot the boot loader booted
/// (which commit, revert and the reported state act on, see [`BootState::seen_from`]) and when
/// the commit timer was armed. The core reads no clock, so the instants come from the caller.
///
/// | armed by                                  | `commit_timeout` 0 | `commit_timeout` n > 0   |
/// |-------------------------------------------|--------------------|--------------------------|
/// | the first boot of an image ([`Running::booted`]) | commit at once | revert n s after boot |
/// | [`set_boot_state`], [`create_snapshot`]   | no deadline        | revert n s after the call |
///
/// As in Mongoose OS, a timeout of 0 commits only at the first boot (`mgos_upd_boot_finish`);
/// set later it means "no timer", so `SetBootState {commit_timeout: 0}` during a trial does not
/// commit, and `CreateSnapshot {set_as_revert: true}` without a timeout leaves the image
/// uncommitted until it is committed or the device reboots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Running {
    pub slot: Slot,
    armed_ms: u64,
    armed_at_first_boot: bool,
}

impl Running {
    /// The image in `slot` booted at `now_ms`; `first_boot` as the boot outcome says.
    pub fn booted(slot: Slot, first_boot: bool, now_ms: u64) -> Running {
        Running { slot, armed_ms: now_ms, armed_at_first_boot: first_boot }
    }

    /// A call that set the boot state re-arms the timer: its deadline counts from `now_ms`.
    fn rearm(&mut self, now_ms: u64) {
        self.armed_ms = now_ms;
        self.armed_at_first_boot = false;
    }

    /// The commit timer over `state` as stored; it is read as the running image sees it.
    pub fn timer(&self, state: &BootState, now_ms: u64) -> TimerVerdict {
        let state = state.seen_from(self.slot);
        if state.committed {
            return TimerVerdict::Committed;
        }
        match (state.commit_timeout_s, self.armed_at_first_boot) {
            (0, true) => TimerVerdict::CommitNow,
            (0, false) => TimerVerdict::NoDeadline,
            _ => match self.deadline_ms(&state).checked_sub(now_ms) {
                Some(remaining_ms) if remaining_ms > 0 => TimerVerdict::Running { remaining_ms },
                _ => TimerVerdict::Expired,
            },
        }
    }

    /// When the timer next has something to do over `state` as stored: the deadline, or the
    /// boot itself for an automatic commit; `None` when committed or without a deadline.
    pub fn due_ms(&self, state: &BootState) -> Option<u64> {
        let state = state.seen_from(self.slot);
        match (state.committed, state.commit_timeout_s, self.armed_at_first_boot) {
            (true, _, _) | (false, 0, false) => None,
            (false, 0, true) => Some(self.armed_ms),
            _ => Some(self.deadline_ms(&state)),
        }
    }

    fn deadline_ms(&self, state: &BootState) -> u64 {
        self.armed_ms.saturating_add(state.commit_timeout_s as u64 * 1000)
    }
}

/// What [`tick`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickAction {
    Nothing,
    /// Committed automatically (`commit_timeout` 0 at the first boot).
    Committed,
    /// The deadline passed: the state now points back at the revert slot. Reboot.
    RevertedRebootNow,
}

/// Runs the commit timer and carries out its verdict.
pub fn tick<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    running: &Running,
    now_ms: u64,
) -> Result<TickAction, ControlError> {
    let current = read(flash, layout)?;
    match running.timer(&current.record.state, now_ms) {
        TimerVerdict::Committed | TimerVerdict::NoDeadline | TimerVerdict::Running { .. } => {
            Ok(TickAction::Nothing)
        }
        TimerVerdict::CommitNow => commit(flash, layout, running.slot).map(|_| TickAction::Committed),
        TimerVerdict::Expired => revert(flash, layout, running.slot).map(|_| TickAction::RevertedRebootNow),
    }
}

/// Why a control call failed. The numbers are the RPC error codes of §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// No boot-state record: the device was never provisioned.
    NotProvisioned,
    /// Commit or revert of an image that is already committed.
    AlreadyCommitted,
    /// A snapshot of an uncommitted image.
    SnapshotUncommitted,
    /// `set_boot_state` with no field given.
    NoFields,
    /// The state asked for is inconsistent, or names a slot with no image.
    Invalid(crate::state::StateError),
    /// A copy read back differently from its source.
    SnapshotVerify {
        slot: Slot,
    },
    /// The active image or filesystem is larger than the other slot.
    SnapshotDoesNotFit {
        slot: Slot,
    },
    Flash(FlashError),
    Write(AppendError),
}

impl ControlError {
    /// The RPC error code of §5 for this error.
    pub fn code(&self) -> i32 {
        match self {
            ControlError::NoFields => -2,
            ControlError::Invalid(_) | ControlError::Write(_) => -3,
            _ => -1,
        }
    }
}

impl From<FlashError> for ControlError {
    fn from(e: FlashError) -> Self {
        ControlError::Flash(e)
    }
}

impl From<AppendError> for ControlError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Flash(e) => ControlError::Flash(e),
            AppendError::Inconsistent(e) => ControlError::Invalid(e),
            other => ControlError::Write(other),
        }
    }
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ControlError::NotProvisioned => {
                f.write_str("OTA is not supported: no boot state (device not provisioned)")
            }
            ControlError::AlreadyCommitted => f.write_str("already committed; boot state unchanged"),
            ControlError::SnapshotUncommitted => {
                f.write_str("Cannot create snapshots in uncommitted state; boot state unchanged")
            }
            ControlError::NoFields => f.write_str("no boot-state fields given; boot state unchanged"),
            ControlError::Invalid(e) => write!(f, "invalid boot state: {e}; boot state unchanged"),
            ControlError::SnapshotVerify { slot } => {
                write!(f, "Failed to create snapshot: {slot} read back wrong; boot state unchanged")
            }
            ControlError::SnapshotDoesNotFit { slot } => write!(
                f,
                "Failed to create snapshot: the running image does not fit {slot}; nothing written, boot state unchanged"
            ),
            ControlError::Flash(e) => write!(f, "{e}; boot state unchanged"),
            ControlError::Write(e) => write!(f, "{e}; boot state unchanged"),
        }
    }
}

/// `OTA.GetBootState`: the state as the firmware running in `running` sees it
/// ([`BootState::seen_from`]): active and revert slot, committed, commit timeout, and what each
/// slot holds.
pub fn get_boot_state<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    running: Slot,
) -> Result<BootState, ControlError> {
    Ok(read(flash, layout)?.record.state.seen_from(running))
}

/// The newest boot-state record, as stored.
pub fn read<F: NorFlash>(flash: &mut F, layout: &Layout) -> Result<Located, ControlError> {
    log::read(flash, layout)?.ok_or(ControlError::NotProvisioned)
}

/// Commits the image running in `running`: it stays active, nothing is left to revert to, and
/// the stored commit timeout is cleared, as Mongoose OS deletes `updater.dat`. Refused when the
/// running image is already committed, which it is whenever another slot is recorded active
/// ([`BootState::seen_from`]): an image that never ran is never committed.
pub fn commit<F: NorFlash>(flash: &mut F, layout: &Layout, running: Slot) -> Result<Located, ControlError> {
    let current = read(flash, layout)?;
    let state = current.record.state.seen_from(running);
    if state.committed {
        return Err(ControlError::AlreadyCommitted);
    }
    let next = BootState { commit_timeout_s: 0, ..state.settled_on(running) };
    Ok(log::append(flash, layout, Some(&current), &next)?)
}

/// Points the state back at the revert slot of the image running in `running`, committed. The
/// caller reboots. Refused when the running image is committed, as [`commit`] is.
pub fn revert<F: NorFlash>(flash: &mut F, layout: &Layout, running: Slot) -> Result<Located, ControlError> {
    let current = read(flash, layout)?;
    let state = current.record.state.seen_from(running);
    if state.committed {
        return Err(ControlError::AlreadyCommitted);
    }
    let slot = state.revert.expect("an uncommitted state has a revert slot (BootState::check)");
    Ok(log::append(flash, layout, Some(&current), &state.settled_on(slot))?)
}

/// The fields `OTA.SetBootState` may set; `None` leaves a field as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootStatePatch {
    pub active_slot: Option<Slot>,
    /// `Some(None)` clears the revert slot.
    pub revert_slot: Option<Option<Slot>>,
    pub is_committed: Option<bool>,
    pub commit_timeout_s: Option<u32>,
}

/// Overrides only the given fields of the state as the running image sees it
/// ([`BootState::seen_from`]: an update recorded but not yet booted is dropped), and re-arms the
/// commit timer from `now_ms` ([`Running`]). Committing this way clears the first-boot and merge
/// flags and the revert slot, as [`commit`] does; a patch that commits and names a revert slot
/// is refused.
pub fn set_boot_state<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    running: &mut Running,
    patch: &BootStatePatch,
    now_ms: u64,
) -> Result<Located, ControlError> {
    if *patch == BootStatePatch::default() {
        return Err(ControlError::NoFields);
    }
    let current = read(flash, layout)?;
    let mut next = current.record.state.seen_from(running.slot);
    if let Some(slot) = patch.active_slot {
        next.active = slot;
    }
    if let Some(revert) = patch.revert_slot {
        next.revert = revert;
    }
    if let Some(timeout) = patch.commit_timeout_s {
        next.commit_timeout_s = timeout;
    }
    if let Some(committed) = patch.is_committed {
        next.committed = committed;
    }
    if next.committed {
        if patch.is_committed == Some(true) && matches!(patch.revert_slot, Some(Some(_))) {
            return Err(ControlError::Invalid(StateError::CommittedWithRevert));
        }
        next.revert = None;
        next.first_boot_a = false;
        next.first_boot_b = false;
        next.merge_fs = false;
    }
    next.check().map_err(ControlError::Invalid)?;
    let written = log::append(flash, layout, Some(&current), &next)?;
    running.rearm(now_ms);
    Ok(written)
}

/// Options of [`create_snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Make the running image uncommitted with the snapshot as its revert slot, so that a reboot
    /// or an expired commit timer goes back to the snapshot.
    pub set_as_revert: bool,
    pub commit_timeout_s: Option<u32>,
}

/// Copies the running app and filesystem slots to the other slots, verifies the copy, writes its
/// descriptor ([`crate::descriptor`]), records it, and re-arms the commit timer from `now_ms`
/// ([`Running`]). Allowed only when the running image is committed. Erase units that already
/// hold the right bytes are left alone. Returns the slot that holds the snapshot. The same as
/// [`SnapshotCopy`]'s steps, run to the end.
pub fn create_snapshot<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    running: &mut Running,
    options: &SnapshotOptions,
    buf: &mut [u8],
    now_ms: u64,
) -> Result<Slot, ControlError> {
    let mut copy = SnapshotCopy::begin(flash, layout, running, options)?;
    while !copy.step(flash, layout, buf)? {}
    copy.finish(flash, layout, running, buf, now_ms)
}

/// [`create_snapshot`] one erase unit at a time, so that a simulator can save the device between
/// two units: [`SnapshotCopy::begin`] checks, [`SnapshotCopy::step`] copies the next unit (the
/// app's, then the filesystem's) until it says every unit is copied, and
/// [`SnapshotCopy::finish`] verifies and records. The operations are those of
/// [`create_snapshot`], in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotCopy {
    current: Located,
    /// The state as the running image sees it.
    state: BootState,
    options: SnapshotOptions,
    fs_len_bytes: u32,
    /// Erase units copied so far.
    units_done: u32,
}

impl SnapshotCopy {
    /// Reads the state and checks that the snapshot is allowed and fits; writes nothing.
    pub fn begin<F: NorFlash>(
        flash: &mut F,
        layout: &Layout,
        running: &Running,
        options: &SnapshotOptions,
    ) -> Result<SnapshotCopy, ControlError> {
        let current = read(flash, layout)?;
        let state = current.record.state.seen_from(running.slot);
        if !state.committed {
            return Err(ControlError::SnapshotUncommitted);
        }
        let target = state.active.other();
        let info = state.active_info();
        let fs_len_bytes = layout.fs(state.active).size_bytes;
        if info.app_len_bytes > layout.app_capacity_bytes(target)
            || fs_len_bytes > layout.fs(target).size_bytes
        {
            return Err(ControlError::SnapshotDoesNotFit { slot: target });
        }
        Ok(SnapshotCopy { current, state, options: *options, fs_len_bytes, units_done: 0 })
    }

    fn units(&self, layout: &Layout, len_bytes: u32) -> u32 {
        erase_span(0, len_bytes, layout.erase_size_bytes).1 / layout.erase_size_bytes
    }

    /// Copies the next erase unit; true once every unit is copied (and on every call after).
    pub fn step<F: NorFlash>(
        &mut self,
        flash: &mut F,
        layout: &Layout,
        buf: &mut [u8],
    ) -> Result<bool, ControlError> {
        let (source, target) = (self.state.active, self.state.active.other());
        let app_len = self.state.active_info().app_len_bytes;
        let app_units = self.units(layout, app_len);
        let all_units = app_units + self.units(layout, self.fs_len_bytes);
        if self.units_done >= all_units {
            return Ok(true);
        }
        let (from, to, len_bytes, index) = if self.units_done < app_units {
            (layout.app(source), layout.app(target), app_len, self.units_done)
        } else {
            (layout.fs(source), layout.fs(target), self.fs_len_bytes, self.units_done - app_units)
        };
        copy_region_unit(flash, layout, from, to, len_bytes, index * layout.erase_size_bytes, buf)?;
        self.units_done += 1;
        Ok(self.units_done == all_units)
    }

    /// Verifies the copied image, writes its descriptor and the record, and re-arms the commit
    /// timer. Every unit must be copied first.
    pub fn finish<F: NorFlash>(
        self,
        flash: &mut F,
        layout: &Layout,
        running: &mut Running,
        buf: &mut [u8],
        now_ms: u64,
    ) -> Result<Slot, ControlError> {
        let app_units = self.units(layout, self.state.active_info().app_len_bytes);
        let all_units = app_units + self.units(layout, self.fs_len_bytes);
        assert!(self.units_done >= all_units, "a snapshot is finished after every unit is copied");
        let (state, options, current) = (self.state, self.options, self.current);
        let target = state.active.other();
        let info = *state.active_info();
        if sha256_region(flash, layout.app(target).offset, info.app_len_bytes, buf)? != info.app_sha256 {
            return Err(ControlError::SnapshotVerify { slot: target });
        }
        let mut next = state;
        next.slots[target.index()] = info;
        if let Some(timeout) = options.commit_timeout_s {
            next.commit_timeout_s = timeout;
        }
        if options.set_as_revert {
            next.committed = false;
            next.revert = Some(target);
        }
        let generation = current.record.seq.wrapping_add(1);
        let descriptor = Descriptor { generation, commit_timeout_s: next.commit_timeout_s, info };
        descriptor::write(flash, layout, target, &descriptor)?;
        log::append(flash, layout, Some(&current), &next)?;
        running.rearm(now_ms);
        Ok(target)
    }
}

/// Copies the erase unit at `at` of `len_bytes` from `source` to `target` through `buf`, unless
/// its bytes already match; the unit is compared after it is written.
fn copy_region_unit<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    source: Region,
    target: Region,
    len_bytes: u32,
    at: u32,
    buf: &mut [u8],
) -> Result<(), ControlError> {
    let unit = layout.erase_size_bytes;
    let half = (buf.len() / 2) as u32 / layout.write_size_bytes * layout.write_size_bytes;
    assert!(half > 0, "the snapshot buffer holds two write units");
    let this = core::cmp::min(unit, len_bytes.saturating_sub(at));
    if !same_bytes(flash, source.offset + at, target.offset + at, this, buf, half)? {
        flash::erase(flash, target.offset + at, target.offset + at + unit)?;
        copy_unit(flash, layout, source.offset + at, target.offset + at, this, buf, half)?;
        if !same_bytes(flash, source.offset + at, target.offset + at, this, buf, half)? {
            return Err(ControlError::SnapshotVerify { slot: slot_of(layout, target) });
        }
    }
    Ok(())
}

fn slot_of(layout: &Layout, region: Region) -> Slot {
    if region == layout.app(Slot::S0) || region == layout.fs(Slot::S0) { Slot::S0 } else { Slot::S1 }
}

fn same_bytes<F: NorFlash>(
    flash: &mut F,
    a: u32,
    b: u32,
    len_bytes: u32,
    buf: &mut [u8],
    half: u32,
) -> Result<bool, FlashError> {
    let (left, right) = buf.split_at_mut(half as usize);
    let mut done = 0;
    while done < len_bytes {
        let n = core::cmp::min(half, len_bytes - done) as usize;
        flash::read(flash, a + done, &mut left[..n])?;
        flash::read(flash, b + done, &mut right[..n])?;
        if left[..n] != right[..n] {
            return Ok(false);
        }
        done += n as u32;
    }
    Ok(true)
}

fn copy_unit<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    from: u32,
    to: u32,
    len_bytes: u32,
    buf: &mut [u8],
    half: u32,
) -> Result<(), FlashError> {
    let piece = &mut buf[..half as usize];
    let mut done = 0;
    while done < len_bytes {
        let n = core::cmp::min(half, len_bytes - done);
        let padded = n.div_ceil(layout.write_size_bytes) * layout.write_size_bytes;
        piece[n as usize..padded as usize].fill(layout.erased_byte);
        flash::read(flash, from + done, &mut piece[..n as usize])?;
        flash::program_data(
            flash,
            to + done,
            &piece[..padded as usize],
            layout.write_size_bytes,
            layout.erased_byte,
        )?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::state::tests::trial_state;
    use crate::test_support::{FLASH_BYTES, Flash, LAYOUT, image, put_image};
    use std::vec;

    fn provisioned(mem: &mut [u8]) -> Flash<'_> {
        let mut flash = Flash::new(mem);
        let v1 = put_image(&mut flash, Slot::S0, &image(1, 3000), "1.0");
        log::append(&mut flash, &LAYOUT, None, &BootState::provisioned(Slot::S0, v1)).unwrap();
        flash
    }

    #[test]
    fn the_timer_follows_the_deadline() {
        let state = trial_state();
        let running = Running::booted(Slot::S1, true, 1000);
        assert_eq!(running.timer(&state, 1000), TimerVerdict::Running { remaining_ms: 300_000 });
        assert_eq!(running.timer(&state, 300_999), TimerVerdict::Running { remaining_ms: 1 });
        assert_eq!(running.timer(&state, 301_000), TimerVerdict::Expired);
        assert_eq!(running.due_ms(&state), Some(301_000));
        let auto = BootState { commit_timeout_s: 0, ..state };
        assert_eq!(Running::booted(Slot::S1, true, 0).timer(&auto, 0), TimerVerdict::CommitNow);
    }

    proptest::proptest! {
        // Invariant: whatever the timeout and the instants, a committed image is never reverted.
        #[test]
        fn the_timer_never_reverts_a_committed_image(
            timeout in proptest::prelude::any::<u32>(),
            boot_ms in proptest::prelude::any::<u64>(),
            now_ms in proptest::prelude::any::<u64>(),
            first_boot in proptest::prelude::any::<bool>(),
        ) {
            let mut state = trial_state();
            state.committed = true;
            state.first_boot_a = false;
            state.first_boot_b = false;
            state.revert = None;
            state.commit_timeout_s = timeout;
            let running = Running::booted(Slot::S1, first_boot, boot_ms);
            proptest::prop_assert_eq!(running.timer(&state, now_ms), TimerVerdict::Committed);
        }

        // Invariant: an image that is not the recorded active one is committed as far as its
        // timer goes: it never commits the recorded image nor reverts away from itself.
        #[test]
        fn the_timer_never_acts_for_an_image_that_is_not_running(
            timeout in proptest::prelude::any::<u32>(),
            boot_ms in proptest::prelude::any::<u64>(),
            now_ms in proptest::prelude::any::<u64>(),
            first_boot in proptest::prelude::any::<bool>(),
        ) {
            let state = BootState { commit_timeout_s: timeout, ..trial_state() };
            let running = Running::booted(Slot::S0, first_boot, boot_ms);
            proptest::prop_assert_eq!(running.timer(&state, now_ms), TimerVerdict::Committed);
        }
    }

    #[test]
    fn commit_and_revert_refuse_a_committed_image() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = provisioned(&mut mem);
        assert_eq!(commit(&mut flash, &LAYOUT, Slot::S0), Err(ControlError::AlreadyCommitted));
        assert_eq!(revert(&mut flash, &LAYOUT, Slot::S0), Err(ControlError::AlreadyCommitted));
        assert_eq!(ControlError::AlreadyCommitted.code(), -1);
    }

    #[test]
    fn set_boot_state_overrides_only_the_given_fields() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = provisioned(&mut mem);
        let mut running = Running::booted(Slot::S0, false, 0);
        assert_eq!(
            set_boot_state(&mut flash, &LAYOUT, &mut running, &BootStatePatch::default(), 0),
            Err(ControlError::NoFields)
        );
        let patch = BootStatePatch { commit_timeout_s: Some(77), ..Default::default() };
        let after = set_boot_state(&mut flash, &LAYOUT, &mut running, &patch, 0).unwrap().record.state;
        assert_eq!((after.commit_timeout_s, after.active, after.committed), (77, Slot::S0, true));
        // Slot 1 holds nothing: it cannot become active.
        let patch = BootStatePatch { active_slot: Some(Slot::S1), ..Default::default() };
        let err = set_boot_state(&mut flash, &LAYOUT, &mut running, &patch, 0).unwrap_err();
        assert_eq!(err, ControlError::Invalid(crate::state::StateError::ActiveSlotEmpty));
        assert_eq!(err.code(), -3);
    }

    #[test]
    fn a_snapshot_copies_verifies_and_can_become_the_revert_slot() {
        let mut mem = vec![0; FLASH_BYTES];
        let mut flash = provisioned(&mut mem);
        let options = SnapshotOptions { set_as_revert: true, commit_timeout_s: Some(30) };
        let mut running = Running::booted(Slot::S0, false, 0);
        let snapshot = create_snapshot(&mut flash, &LAYOUT, &mut running, &options, &mut [0; 512], 0);
        assert_eq!(snapshot, Ok(Slot::S1));
        let state = read(&mut flash, &LAYOUT).unwrap().record.state;
        assert_eq!(state.slots[1], state.slots[0]);
        assert_eq!((state.committed, state.revert, state.commit_timeout_s), (false, Some(Slot::S1), 30));
        let bytes = flash.as_bytes();
        let (a, b) = (LAYOUT.app(Slot::S0), LAYOUT.app(Slot::S1));
        assert_eq!(bytes[a.offset as usize..][..3000], bytes[b.offset as usize..][..3000]);
        // Uncommitted now: no second snapshot.
        let err = create_snapshot(&mut flash, &LAYOUT, &mut running, &options, &mut [0; 512], 0);
        assert_eq!(err, Err(ControlError::SnapshotUncommitted));
        // The timer runs out: back to the snapshot.
        assert_eq!(tick(&mut flash, &LAYOUT, &running, 30_000), Ok(TickAction::RevertedRebootNow));
        assert_eq!(read(&mut flash, &LAYOUT).unwrap().record.state.active, Slot::S1);
    }
}
