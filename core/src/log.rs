//! The boot-state log: [`Record`]s appended over two flash areas, as the Mongoose OS boot loader
//! keeps its config (§3.4 of the reference).
//!
//! Every record is written twice, in a pair of positions (`2k`, `2k + 1`) of one area, as
//! ESP-IDF keeps two otadata copies: a bit that flips in one copy leaves the other, so no single
//! flip changes the state that is read.
//!
//! Reading: every record position of both areas is decoded; the valid record with the highest
//! sequence number wins (either copy). A torn or erased record never decodes, so it never wins; a record whose
//! write was cut leaves the previous winner in place.
//!
//! Appending writes to a freshly erased area, the one that does not hold the winner:
//!
//! | step | area holding the winner | other area                                              |
//! |------|-------------------------|---------------------------------------------------------|
//! | 1    | untouched               | erased                                                  |
//! | 2    | untouched               | both copies written at pair 0, each read back, done     |
//!
//! Why never append after the winner in its own area: a program cut so early that its bits all
//! stay erased leaves a position that reads as free, and programming it again is a second
//! program of the same write units, which NOR and ECC parts forbid. An area is only written
//! right after this append erased it, so no write unit is ever programmed twice, whatever a cut
//! left behind. The cost is one erase of a boot-state area per record: a few per update cycle.
//!
//! A pair whose first copy fails to program or reads back wrong (a stuck bit) is stepped over:
//! step 2 moves on to the next pair of the freshly erased area, so one bad cell never wedges the
//! log. When only the second copy reads back wrong, the state is recorded (once) and the append
//! succeeds; the next append writes two copies again.
//!
//! A power cut at any step leaves the winner readable: step 1 erases only the area that does not
//! hold the winner, and step 2 writes only there.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

use crate::flash::{self, FlashError, FlashOp};
use crate::layout::Layout;
use crate::state::{BootState, RECORD_SIZE_BYTES, Record, StateError};

/// Where a record sits: area 0 or 1, and its index in the area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub area: u8,
    pub index: u32,
}

/// The winning record and where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub record: Record,
    pub position: Position,
}

/// Why a record could not be appended. In every case the previous record stays the winner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    Flash(FlashError),
    /// The state to write is inconsistent; nothing was written.
    Inconsistent(StateError),
    /// The record read back differs from what was written (the last pair tried, when every
    /// one failed).
    ReadBack {
        position: Position,
    },
    /// No pair of the freshly erased area could be written (every one stepped over).
    Full,
}

impl From<FlashError> for AppendError {
    fn from(e: FlashError) -> AppendError {
        AppendError::Flash(e)
    }
}

impl core::fmt::Display for AppendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AppendError::Flash(e) => write!(f, "boot-state record not written: {e}"),
            AppendError::Inconsistent(e) => write!(f, "boot-state record not written: {e}"),
            AppendError::ReadBack { position } => write!(
                f,
                "boot-state record at area {} index {} read back wrong",
                position.area, position.index
            ),
            AppendError::Full => f.write_str("boot-state record not written: no writable position left"),
        }
    }
}

/// Copies of every record, in consecutive positions of one area.
pub const COPIES: u32 = 2;
// `append` writes the first copy and then the one after it.
const _: () = assert!(COPIES == 2);

fn record_offset(layout: &Layout, position: Position) -> u32 {
    layout.boot_state[position.area as usize].offset + position.index * RECORD_SIZE_BYTES as u32
}

/// Finds the newest valid record, or `None` on a device that has never had one.
pub fn read<F: ReadNorFlash>(flash: &mut F, layout: &Layout) -> Result<Option<Located>, FlashError> {
    let mut best: Option<Located> = None;
    let mut raw = [0u8; RECORD_SIZE_BYTES];
    for area in 0..2u8 {
        for index in 0..layout.records_per_area() {
            let position = Position { area, index };
            flash::read(flash, record_offset(layout, position), &mut raw)?;
            let Ok(record) = Record::decode(&raw) else { continue };
            if best.is_none_or(|b| record.seq > b.record.seq) {
                best = Some(Located { record, position });
            }
        }
    }
    Ok(best)
}

/// Appends `state` as the newest record after `current` (the result of [`read`]), and returns
/// where it went. The state is checked before it is written and decoded again after it is read
/// back.
///
/// A pair whose first program fails or whose record reads back wrong (a stuck bit, a weak cell)
/// is stepped over: it holds no valid record, so the reader ignores it, and the record goes to
/// the next pair of the same freshly erased area. The log stays writable as long as one pair of
/// each area can be written. An erase or read error (the power going, among others) ends the
/// append at once.
pub fn append<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    current: Option<&Located>,
    state: &BootState,
) -> Result<Located, AppendError> {
    let seq = current.map_or(1, |c| c.record.seq.wrapping_add(1));
    // Step 1: the area that does not hold the winner (area 0, with no winner).
    let area = current.map_or(0, |c| 1 - c.position.area);
    append_to(flash, layout, area, seq, state)
}

/// Starts the log again when no record decodes (the boot loader's recovery from the slots'
/// descriptors): `state` goes to area 0 as record `seq`, after the area is erased. Whatever the
/// other area holds does not decode, so the new record wins.
pub fn restart<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    seq: u32,
    state: &BootState,
) -> Result<Located, AppendError> {
    append_to(flash, layout, 0, seq, state)
}

fn append_to<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    area: u8,
    seq: u32,
    state: &BootState,
) -> Result<Located, AppendError> {
    state.check().map_err(AppendError::Inconsistent)?;
    let record = Record { seq, state: *state };
    let raw = record.encode();
    let region = layout.boot_state[area as usize];
    flash::erase(flash, region.offset, region.offset + region.size_bytes)?;
    let mut failed = None;
    let mut index = 0;
    while index + COPIES <= layout.records_per_area() {
        let position = Position { area, index };
        match write_at(flash, layout, position, &record, &raw) {
            Ok(()) => {}
            Err(e) if is_bad_position(&e) => {
                failed = Some(e);
                index += COPIES;
                continue;
            }
            Err(e) => return Err(e),
        }
        // The state is recorded once now; the copy guards it against a flip.
        let copy = Position { area, index: index + 1 };
        // A copy that reads back wrong (a stuck bit) leaves the state recorded once. A copy
        // whose program fails is reported: the failure may be the power going.
        return match write_at(flash, layout, copy, &record, &raw) {
            Ok(()) | Err(AppendError::ReadBack { .. }) => Ok(Located { record, position }),
            Err(e) => Err(e),
        };
    }
    Err(failed.unwrap_or(AppendError::Full))
}

/// A failure of one position (its program, or what it reads back), which the next position
/// may not share, as opposed to an erase or read failure or a power cut.
fn is_bad_position(e: &AppendError) -> bool {
    matches!(e, AppendError::ReadBack { .. } | AppendError::Flash(FlashError { op: FlashOp::Program, .. }))
}

/// Programs `raw` at `position` and checks what reads back.
fn write_at<F: NorFlash>(
    flash: &mut F,
    layout: &Layout,
    position: Position,
    record: &Record,
    raw: &[u8; RECORD_SIZE_BYTES],
) -> Result<(), AppendError> {
    let offset = record_offset(layout, position);
    flash::program(flash, offset, raw)?;
    let mut back = [0u8; RECORD_SIZE_BYTES];
    flash::read(flash, offset, &mut back)?;
    if back != *raw || Record::decode(&back) != Ok(*record) {
        return Err(AppendError::ReadBack { position });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::flash::RamFlash;
    use crate::layout::{Region, Slot};
    use crate::state::tests::{info, trial_state};
    use std::vec;

    // Two 1 KiB areas: four records each.
    const LAYOUT: Layout = match Layout::new(
        1024,
        4,
        [Region::new(0, 1024), Region::new(1024, 1024)],
        [Region::new(2048, 1024), Region::new(3072, 1024)],
        [Region::new(4096, 1024), Region::new(5120, 1024)],
    ) {
        Ok(l) => l,
        Err(_) => panic!("test layout"),
    };

    fn state_n(n: u32) -> BootState {
        let mut s = BootState::provisioned(Slot::S0, info(100, "1.0.0"));
        s.commit_timeout_s = n;
        s
    }

    #[test]
    fn an_empty_log_reads_as_none() {
        let mut mem = vec![0u8; 6144];
        let mut flash = RamFlash::<4, 1024>::new(&mut mem);
        assert_eq!(read(&mut flash, &LAYOUT), Ok(None));
    }

    #[test]
    fn appends_wrap_across_both_areas_and_the_newest_wins() {
        let mut mem = vec![0u8; 6144];
        let mut flash = RamFlash::<4, 1024>::new(&mut mem);
        let mut current = None;
        for n in 0..20 {
            let located = append(&mut flash, &LAYOUT, current.as_ref(), &state_n(n)).unwrap();
            let found = read(&mut flash, &LAYOUT).unwrap().unwrap();
            assert_eq!(found, located);
            assert_eq!(found.record.state.commit_timeout_s, n);
            assert_eq!(found.record.seq, n + 1);
            current = Some(found);
        }
        // Each record goes to pair 0 of a freshly erased area: area 0, area 1, area 0, ...
        assert_eq!(current.unwrap().position, Position { area: 1, index: 0 });
    }

    #[test]
    fn a_garbage_position_is_skipped_not_programmed_twice() {
        let mut mem = vec![0u8; 6144];
        let mut flash = RamFlash::<4, 1024>::new(&mut mem);
        let first = append(&mut flash, &LAYOUT, None, &trial_state()).unwrap();
        // A torn record: half a record landed at index 2 of area 0, and another in area 1.
        let torn = Record { seq: 2, state: state_n(9) }.encode();
        flash.write(512, &torn[..128]).unwrap();
        flash.write(1024, &torn[..128]).unwrap();
        assert_eq!(read(&mut flash, &LAYOUT).unwrap(), Some(first));
        // The next record goes to area 1, erased first; the one after to area 0, erased first.
        let next = append(&mut flash, &LAYOUT, Some(&first), &state_n(5)).unwrap();
        assert_eq!(next.position, Position { area: 1, index: 0 });
        assert_eq!(read(&mut flash, &LAYOUT).unwrap(), Some(next));
        let after = append(&mut flash, &LAYOUT, Some(&next), &state_n(6)).unwrap();
        assert_eq!(after.position, Position { area: 0, index: 0 });
        assert!(flash.as_bytes()[512..1024].iter().all(|&b| b == 0xff), "the garbage was erased");
        assert_eq!(read(&mut flash, &LAYOUT).unwrap(), Some(after));
    }

    #[test]
    fn an_inconsistent_state_is_refused_before_any_write() {
        let mut mem = vec![0u8; 6144];
        let mut flash = RamFlash::<4, 1024>::new(&mut mem);
        let mut bad = trial_state();
        bad.revert = None;
        assert_eq!(
            append(&mut flash, &LAYOUT, None, &bad),
            Err(AppendError::Inconsistent(StateError::UncommittedWithoutRevert))
        );
        assert!(flash.as_bytes().iter().all(|&b| b == 0xff));
    }

    proptest::proptest! {
        // Invariant: after k complete appends and a write of record k+1 cut after any prefix
        // (the write unit in flight holding arbitrary bits), the log reads record k, or record
        // k+1 when the whole record landed.
        #[test]
        fn the_log_returns_the_last_fully_written_state_whatever_prefix_landed(
            k in 1u32..12,
            prefix in 0usize..=RECORD_SIZE_BYTES,
            noise in proptest::prelude::any::<[u8; 4]>(),
        ) {
            let mut mem = vec![0u8; 6144];
            let mut flash = RamFlash::<4, 1024>::new(&mut mem);
            let mut current = None;
            for n in 0..k {
                current = Some(append(&mut flash, &LAYOUT, current.as_ref(), &state_n(n)).unwrap());
            }
            let last = current.unwrap();
            // Where record k+1 would go, and what it would hold.
            let mut probe_mem = mem_copy(&flash);
            let mut probe = RamFlash::<4, 1024>::new(&mut probe_mem);
            probe_restore(&mut probe, &flash);
            let full = append(&mut probe, &LAYOUT, Some(&last), &state_n(k)).unwrap();
            let raw = full.record.encode();
            {
                // The append erased the other area first.
                let region = LAYOUT.boot_state[full.position.area as usize];
                flash.erase(region.offset, region.offset + region.size_bytes).unwrap();
            }
            let offset = record_offset(&LAYOUT, full.position);
            let landed = prefix / 4 * 4;
            flash.write(offset, &raw[..landed]).unwrap();
            if landed < RECORD_SIZE_BYTES {
                // The write unit in flight: arbitrary bits (a program only clears bits).
                flash.write(offset + landed as u32, &noise).unwrap();
            }
            let found = read(&mut flash, &LAYOUT).unwrap().unwrap();
            if landed == RECORD_SIZE_BYTES {
                proptest::prop_assert_eq!(found, full);
            } else if found != last {
                // Only a unit in flight that happens to hold the record's own bytes completes it.
                proptest::prop_assert_eq!(found, full);
                proptest::prop_assert_eq!(&noise[..], &raw[landed..landed + 4]);
                proptest::prop_assert_eq!(landed, RECORD_SIZE_BYTES - 4);
            }
        }
    }

    fn mem_copy(flash: &RamFlash<'_, 4, 1024>) -> std::vec::Vec<u8> {
        flash.as_bytes().to_vec()
    }

    fn probe_restore(probe: &mut RamFlash<'_, 4, 1024>, from: &RamFlash<'_, 4, 1024>) {
        // `RamFlash::new` erased the copy: program the original bytes back (erased is all ones).
        probe.write(0, from.as_bytes()).unwrap();
    }
}
