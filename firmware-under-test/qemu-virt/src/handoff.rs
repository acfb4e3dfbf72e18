//! What the boot loader hands the application: the boot outcome in registers `a0`–`a3` at the
//! jump, so the application never runs the boot decision again (a second run would count as
//! the second boot and revert).
//!
//! | register | bits   | meaning |
//! |----------|--------|---------|
//! | a0       | 0..32  | [`MAGIC`]: the boot loader started this image |
//! | a1       | 0..8   | the slot that runs (0 or 1) |
//! | a1       | 8..16  | 1 on the slot's first (trial) boot |
//! | a1       | 16..24 | the slot to merge the filesystem from, plus 1 (0: no merge) |
//! | a2       | 0..8   | why: 0 committed, 1 trial, 2 reverted, 3 fell back, 4 trial skipped, 5 recovered |
//! | a2       | 8..16  | the slot it reverted or fell back from |
//! | a3       | 0..32  | mtime's low word at the jump (for the record; the clock is the RAM block's) |

use ota_core::boot::BootReason;
use ota_core::layout::Slot;

/// `a0` when the boot loader started the image.
pub const MAGIC: u32 = 0x0b00_7ed1;

/// Why the slot was chosen, without the core's error detail (as the event reports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Committed,
    Trial,
    Reverted {
        from: Slot,
    },
    FellBack {
        from: Slot,
    },
    TrialSkipped,
    /// No boot-state record decoded; an image that verifies against its slot's descriptor.
    Recovered,
}

impl From<BootReason> for Reason {
    fn from(reason: BootReason) -> Reason {
        match reason {
            BootReason::Committed => Reason::Committed,
            BootReason::Trial => Reason::Trial,
            BootReason::Reverted { from } => Reason::Reverted { from },
            BootReason::FellBack { from } => Reason::FellBack { from },
            BootReason::TrialSkipped { .. } => Reason::TrialSkipped,
            BootReason::Recovered => Reason::Recovered,
        }
    }
}

/// The boot outcome the application starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandOff {
    pub slot: Slot,
    pub reason: Reason,
    pub first_boot: bool,
    pub merge_from: Option<Slot>,
}

impl HandOff {
    /// `a0`, `a1`, `a2` (`a3` is the caller's).
    pub fn encode(&self) -> [u32; 3] {
        let merge = self.merge_from.map_or(0, |s| s.index() as u32 + 1);
        let a1 = self.slot.index() as u32 | (self.first_boot as u32) << 8 | merge << 16;
        let (code, from) = match self.reason {
            Reason::Committed => (0, 0),
            Reason::Trial => (1, 0),
            Reason::Reverted { from } => (2, from.index() as u32),
            Reason::FellBack { from } => (3, from.index() as u32),
            Reason::TrialSkipped => (4, 0),
            Reason::Recovered => (5, 0),
        };
        [MAGIC, a1, code | from << 8]
    }

    /// The outcome in `a0`–`a2`, or `None` when the boot loader did not start this image (or
    /// the registers say something no boot loader writes).
    pub fn decode(a0: u32, a1: u32, a2: u32) -> Option<HandOff> {
        if a0 != MAGIC || a1 >> 24 != 0 || a2 >> 16 != 0 {
            return None;
        }
        let slot = Slot::from_index(a1 & 0xff)?;
        let first_boot = match (a1 >> 8) & 0xff {
            0 => false,
            1 => true,
            _ => return None,
        };
        let merge_from = match (a1 >> 16) & 0xff {
            0 => None,
            n => Some(Slot::from_index(n - 1)?),
        };
        let from = Slot::from_index((a2 >> 8) & 0xff)?;
        let reason = match a2 & 0xff {
            0 => Reason::Committed,
            1 => Reason::Trial,
            2 => Reason::Reverted { from },
            3 => Reason::FellBack { from },
            4 => Reason::TrialSkipped,
            5 => Reason::Recovered,
            _ => return None,
        };
        Some(HandOff { slot, reason, first_boot, merge_from })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hand_off_round_trips_through_the_registers() {
        let reasons = [
            Reason::Committed,
            Reason::Trial,
            Reason::Reverted { from: Slot::S0 },
            Reason::Reverted { from: Slot::S1 },
            Reason::FellBack { from: Slot::S1 },
            Reason::TrialSkipped,
            Reason::Recovered,
        ];
        for slot in Slot::ALL {
            for reason in reasons {
                for first_boot in [false, true] {
                    for merge_from in [None, Some(Slot::S0), Some(Slot::S1)] {
                        let handoff = HandOff { slot, reason, first_boot, merge_from };
                        let [a0, a1, a2] = handoff.encode();
                        assert_eq!(HandOff::decode(a0, a1, a2), Some(handoff));
                    }
                }
            }
        }
    }

    #[test]
    fn registers_no_boot_loader_wrote_are_no_hand_off() {
        assert_eq!(HandOff::decode(0, 0, 0), None, "started without the boot loader");
        assert_eq!(HandOff::decode(MAGIC, 2, 0), None, "slot 2");
        assert_eq!(HandOff::decode(MAGIC, 0, 9), None, "reason 9");
        assert_eq!(HandOff::decode(MAGIC, 3 << 16, 0), None, "merge from slot 2");
    }
}
