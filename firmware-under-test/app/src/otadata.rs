//! Slot selection as Mongoose OS does it on ESP32 (`shared/reference/mongoose-os-ota.md` §3.2):
//! ESP-IDF's second-stage boot loader boots the app slot that **otadata** names, and the
//! application's early init runs the core's boot decision and steers otadata after it.
//!
//! The boot state stays the one authority: otadata only says which partition the ROM's boot
//! loader maps next, and the application keeps it in step. Early init ([`early_start`]):
//!
//! | step | what                                                                                 |
//! |------|--------------------------------------------------------------------------------------|
//! | 1    | plan from the boot-state log and verify the planned image ([`target_slot`]): no write |
//! | 2    | booted partition ≠ target: name the target in otadata and reset, **without** writing the boot state |
//! | 3    | booted = target: the core's boot (which clears flag B or reverts), then otadata names the slot it chose |
//!
//! Before every reset the application asks for (after `Updater::finish`, after a revert, a
//! scheduled reboot) the port calls [`prepare_reset`], which names the slot the next boot plans.
//! A power cut between the boot-state record and that otadata write is repaired by step 2.
//!
//! Step 2 must not write the boot state: the redirected boot would count as the image's second
//! boot, and the core would revert it (the trap the reference names).
//!
//! # otadata on flash
//!
//! Two copies of ESP-IDF's `esp_ota_select_entry_t`, one per 4 KiB sector, at
//! [`crate::partitions::OTADATA_OFFSET`] and one sector later:
//!
//! | bytes  | field       | value written here                                  |
//! |--------|-------------|-----------------------------------------------------|
//! | 0..4   | `ota_seq`   | little-endian; app slot = (`ota_seq` − 1) mod 2      |
//! | 4..24  | `seq_label` | 0xff (unused by the boot loader)                    |
//! | 24..28 | `ota_state` | 0xffff_ffff (undefined: no rollback of its own)     |
//! | 28..32 | `crc`       | [`seq_crc`] of the four `ota_seq` bytes             |
//!
//! A copy is valid when `ota_seq` is not 0xffff_ffff, its CRC matches and its state is neither
//! invalid (3) nor aborted (4). The boot loader boots the slot of the valid copy with the higher
//! `ota_seq`, and ota_0 when neither copy is valid (this map has no factory partition). Naming a
//! slot erases the copy that is not the newest valid one and writes the next `ota_seq` into it,
//! as `esp_ota_set_boot_partition` and esp-bootloader-esp-idf's `Ota` do, so a power cut leaves
//! the newest copy in charge.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use ota_core::boot::{self, BootOutcome};
use ota_core::descriptor;
use ota_core::flash::{FlashError, FlashOp, RegionDigests};
use ota_core::layout::{Layout, Slot};
use ota_core::log;
use ota_core::state::BootState;

use crate::app::{self, Settings, Start};
use crate::event::Stamped;
use crate::partitions::{ERASE_BYTES, OTADATA_OFFSET};
use crate::{Booted, Flash};

/// One `esp_ota_select_entry_t`.
pub const ENTRY_BYTES: usize = 32;
/// `ota_seq` of an erased entry.
pub const SEQ_ERASED: u32 = u32::MAX;
/// `ota_state` undefined: the boot loader does not roll back on its own.
pub const STATE_UNDEFINED: u32 = u32::MAX;
const STATE_INVALID: u32 = 3;
const STATE_ABORTED: u32 = 4;
/// The app slots the sequence number counts over.
const APP_SLOTS: u32 = 2;

/// The CRC the boot loader checks: the ROM's `crc32_le(UINT32_MAX, &ota_seq, 4)`, a reflected
/// CRC-32 (polynomial 0xedb88320) starting from 0 with the result inverted, which is not the
/// zip CRC-32 (that one starts from 0xffff_ffff).
pub fn seq_crc(ota_seq: u32) -> u32 {
    let mut crc = 0u32;
    for byte in ota_seq.to_le_bytes() {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One copy, as its bytes say (table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ota_seq: u32,
    pub seq_label: [u8; 20],
    pub ota_state: u32,
    pub crc: u32,
}

impl Entry {
    /// The entry that names `ota_seq`, written with an unused label and an undefined state.
    pub fn for_seq(ota_seq: u32) -> Entry {
        Entry { ota_seq, seq_label: [0xff; 20], ota_state: STATE_UNDEFINED, crc: seq_crc(ota_seq) }
    }

    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut raw = [0u8; ENTRY_BYTES];
        raw[0..4].copy_from_slice(&self.ota_seq.to_le_bytes());
        raw[4..24].copy_from_slice(&self.seq_label);
        raw[24..28].copy_from_slice(&self.ota_state.to_le_bytes());
        raw[28..32].copy_from_slice(&self.crc.to_le_bytes());
        raw
    }

    pub fn decode(raw: &[u8; ENTRY_BYTES]) -> Entry {
        let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let mut seq_label = [0u8; 20];
        seq_label.copy_from_slice(&raw[4..24]);
        Entry { ota_seq: word(0), seq_label, ota_state: word(24), crc: word(28) }
    }

    /// The boot loader's `bootloader_common_ota_select_valid`.
    pub fn is_valid(&self) -> bool {
        self.ota_seq != SEQ_ERASED
            && self.crc == seq_crc(self.ota_seq)
            && self.ota_state != STATE_INVALID
            && self.ota_state != STATE_ABORTED
    }

    /// The app slot this copy names.
    pub fn slot(&self) -> Slot {
        if self.ota_seq.wrapping_sub(1).is_multiple_of(APP_SLOTS) { Slot::S0 } else { Slot::S1 }
    }
}

/// Which copy the boot loader follows: the valid one with the higher `ota_seq`.
pub fn newest(entries: &[Entry; 2]) -> Option<usize> {
    match (entries[0].is_valid(), entries[1].is_valid()) {
        (true, true) if entries[1].ota_seq > entries[0].ota_seq => Some(1),
        (true, _) => Some(0),
        (false, true) => Some(1),
        (false, false) => None,
    }
}

/// The app slot the second-stage boot loader boots on `entries`: the newest valid copy's, and
/// ota_0 when neither copy is valid.
pub fn boot_loader_slot(entries: &[Entry; 2]) -> Slot {
    newest(entries).map_or(Slot::S0, |i| entries[i].slot())
}

/// What the application asks of otadata: which app slot it names, and naming another. The port
/// implements it over its flash (the ESP32-C3 with [`EspOtadata`]); the simulator sweeps power
/// cuts through the same model.
pub trait Otadata<F> {
    /// The slot the boot loader boots next: the newest valid copy's, ota_0 when none is valid.
    fn named_slot(&mut self, flash: &mut F) -> Result<Slot, FlashError>;
    /// Makes the boot loader boot `slot` next; nothing is written when it already does.
    fn name_slot(&mut self, flash: &mut F, slot: Slot) -> Result<(), FlashError>;
}

/// ESP-IDF's otadata partition on any [`NorFlash`]: the two copies at `offset` and one erase
/// sector later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspOtadata {
    pub offset: u32,
}

impl Default for EspOtadata {
    /// The ESP32-C3 partition map's ([`crate::partitions`]).
    fn default() -> Self {
        EspOtadata { offset: OTADATA_OFFSET }
    }
}

impl EspOtadata {
    fn copy_offset(&self, copy: usize) -> u32 {
        self.offset + copy as u32 * ERASE_BYTES
    }

    /// Both copies as they are on flash.
    pub fn read<F: NorFlash>(&self, flash: &mut F) -> Result<[Entry; 2], FlashError> {
        let mut entries = [Entry::for_seq(0); 2];
        for (copy, entry) in entries.iter_mut().enumerate() {
            let mut raw = [0u8; ENTRY_BYTES];
            let offset = self.copy_offset(copy);
            flash.read(offset, &mut raw).map_err(|e| flash_error(FlashOp::Read, offset, e))?;
            *entry = Entry::decode(&raw);
        }
        Ok(entries)
    }
}

fn flash_error<E: embedded_storage::nor_flash::NorFlashError>(op: FlashOp, offset: u32, e: E) -> FlashError {
    FlashError { op, offset, kind: e.kind() }
}

impl<F: NorFlash> Otadata<F> for EspOtadata {
    fn named_slot(&mut self, flash: &mut F) -> Result<Slot, FlashError> {
        Ok(boot_loader_slot(&self.read(flash)?))
    }

    fn name_slot(&mut self, flash: &mut F, slot: Slot) -> Result<(), FlashError> {
        let entries = self.read(flash)?;
        let (copy, ota_seq) = match newest(&entries) {
            Some(i) if entries[i].slot() == slot => return Ok(()),
            // The next sequence number names the other slot; it goes to the other copy.
            Some(i) => (1 - i, entries[i].ota_seq.wrapping_add(1)),
            // As esp_ota_set_boot_partition on an unformatted otadata: copy 0, seq = slot + 1.
            None => (0, slot.index() as u32 + 1),
        };
        let offset = self.copy_offset(copy);
        flash.erase(offset, offset + ERASE_BYTES).map_err(|e| flash_error(FlashOp::Erase, offset, e))?;
        flash
            .write(offset, &Entry::for_seq(ota_seq).encode())
            .map_err(|e| flash_error(FlashOp::Program, offset, e))
    }
}

/// Step 1: the slot the core's boot decision will run, found without writing anything: the
/// planned slot when its image verifies, else the other one when it does. `None` when nothing
/// verifies or the device was never provisioned (the core's boot then says so).
pub fn target_slot<F: NorFlash + RegionDigests>(
    flash: &mut F,
    layout: &Layout,
    buf: &mut [u8],
) -> Result<Option<Slot>, FlashError> {
    let Some(current) = log::read(flash, layout)? else {
        return recovery_slot(flash, layout, buf);
    };
    let (planned, _) = boot::plan(&current.record.state);
    for slot in [planned.active, planned.active.other()] {
        if boot::verify_with_known_digests(flash, layout, &planned, slot, buf)? {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// With no record left, the core boots what the slots' descriptors name (`boot`'s recovery
/// table): the newest image that verifies.
fn recovery_slot<F: NorFlash + RegionDigests>(
    flash: &mut F,
    layout: &Layout,
    buf: &mut [u8],
) -> Result<Option<Slot>, FlashError> {
    let mut best: Option<(Slot, u32)> = None;
    for slot in Slot::ALL {
        let Some(d) = descriptor::read(flash, layout, slot)? else { continue };
        let state = BootState::provisioned(slot, d.info);
        if boot::verify_with_known_digests(flash, layout, &state, slot, buf)?
            && best.is_none_or(|(_, generation)| d.generation > generation)
        {
            best = Some((slot, d.generation));
        }
    }
    Ok(best.map(|(slot, _)| slot))
}

/// How [`early_start`] ended.
pub enum Early<F> {
    /// Step 2: otadata now names `to` (unless the write failed: `named` false); reset without
    /// running anything.
    Redirect { flash: F, to: Slot, named: bool },
    /// Step 3: the core decided on the booted partition; the application's start followed.
    Start(Start<F>),
}

/// The application's early init on a board whose boot loader boots what otadata names:
/// `booted` is the partition the boot loader mapped. Steps 1–3 of the module docs, then
/// [`crate::start_booted`]'s merge and firmware start. Events go to `events`.
pub fn early_start<F: Flash, O: Otadata<F>>(
    mut flash: F,
    otadata: &mut O,
    booted: Slot,
    layout: Layout,
    settings: Settings,
    now_ms: u64,
    events: &mut Vec<Stamped>,
) -> Early<F> {
    let mut buf = vec![0u8; settings.work_buffer_bytes.max(1)];
    if let Ok(Some(target)) = target_slot(&mut flash, &layout, &mut buf)
        && target != booted
    {
        let named = otadata.name_slot(&mut flash, target).is_ok();
        return Early::Redirect { flash, to: target, named };
    }
    app::phase_boot(&mut flash, now_ms, events);
    let decision = boot::boot_with_known_digests(&mut flash, &layout, &mut buf);
    let Ok(BootOutcome::Boot { slot, reason, first_boot, merge_from, .. }) = decision else {
        return Early::Start(app::start_from_decision(flash, layout, settings, decision, now_ms, events));
    };
    // A failed write leaves otadata naming another slot at worst: the next boot redirects.
    let named = otadata.name_slot(&mut flash, slot).is_ok();
    if slot != booted {
        // The core chose the other slot (a trial whose record could not be written boots its
        // revert slot): that partition is not mapped, so boot it through otadata.
        return Early::Redirect { flash, to: slot, named };
    }
    let booted = Booted { slot, reason: reason.into(), first_boot, merge_from };
    Early::Start(crate::start_booted(flash, layout, settings, booted, now_ms, events))
}

/// Before a reset the application asked for: names in otadata the slot the next boot plans
/// (after `Updater::finish` the new image, after a revert the old one). An error leaves otadata
/// as it was; the next boot's step 2 redirects.
pub fn prepare_reset<F: NorFlash + RegionDigests, O: Otadata<F>>(
    flash: &mut F,
    otadata: &mut O,
    layout: &Layout,
    work_buffer_bytes: usize,
) -> Result<(), String> {
    let mut buf = vec![0u8; work_buffer_bytes.max(1)];
    let target = target_slot(flash, layout, &mut buf).map_err(|e| alloc::format!("{e}"))?;
    let Some(target) = target else { return Ok(()) };
    otadata.name_slot(flash, target).map_err(|e| alloc::format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_core::flash::RamFlash;

    /// esp-bootloader-esp-idf 0.6.0's own test entries (`src/ota.rs`): sequence numbers 1, 2 and
    /// 3 with the CRC its ROM path computes, in the states named.
    const CRATE_SEQ_1_UNDEFINED: [u8; 32] = [
        1, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 154, 152, 67, 71,
    ];
    const CRATE_SEQ_2_NEW: [u8; 32] = [
        2, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 0, 0, 0, 0, 116, 55, 246, 85,
    ];
    const CRATE_SEQ_3_PENDING: [u8; 32] = [
        3, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 1, 0, 0, 0, 17, 80, 74, 237,
    ];

    /// otadata at 0 on a RAM flash of the two sectors.
    fn otadata() -> EspOtadata {
        EspOtadata { offset: 0 }
    }

    fn entries(mem: &mut [u8]) -> [Entry; 2] {
        otadata().read(&mut RamFlash::<4, 4096>::with_contents(mem)).unwrap()
    }

    #[test]
    fn the_crc_is_the_roms_and_the_entries_are_the_crates() {
        assert_eq!(Entry::for_seq(1).encode(), CRATE_SEQ_1_UNDEFINED);
        for raw in [CRATE_SEQ_1_UNDEFINED, CRATE_SEQ_2_NEW, CRATE_SEQ_3_PENDING] {
            let entry = Entry::decode(&raw);
            assert_eq!(entry.encode(), raw);
            assert_eq!(entry.crc, seq_crc(entry.ota_seq));
            assert!(entry.is_valid());
        }
        // Not the zip CRC-32 of the same bytes.
        assert_ne!(seq_crc(1), 0x99f8_b879);
    }

    #[test]
    fn the_boot_loader_follows_the_newest_valid_copy_and_ota_0_without_one() {
        let erased = Entry::decode(&[0xff; 32]);
        let (one, two) = (Entry::for_seq(1), Entry::for_seq(2));
        assert_eq!(boot_loader_slot(&[erased, erased]), Slot::S0);
        assert_eq!(boot_loader_slot(&[one, erased]), Slot::S0);
        assert_eq!(boot_loader_slot(&[erased, two]), Slot::S1);
        assert_eq!(boot_loader_slot(&[one, two]), Slot::S1);
        assert_eq!(boot_loader_slot(&[Entry::for_seq(3), two]), Slot::S0);
        let torn = Entry { crc: 0, ..Entry::for_seq(3) };
        assert_eq!(boot_loader_slot(&[torn, two]), Slot::S1);
        let aborted = Entry { ota_state: STATE_ABORTED, ..Entry::for_seq(3) };
        assert_eq!(boot_loader_slot(&[aborted, two]), Slot::S1);
        let invalid = Entry { ota_state: STATE_INVALID, ..Entry::for_seq(2) };
        assert_eq!(boot_loader_slot(&[one, invalid]), Slot::S0);
    }

    #[test]
    fn naming_a_slot_writes_the_other_copy_with_the_next_sequence_number() {
        let mut mem = vec![0xff_u8; 0x2000];
        let mut flash = RamFlash::<4, 4096>::with_contents(&mut mem);
        let mut o = otadata();
        assert_eq!(o.named_slot(&mut flash).unwrap(), Slot::S0);
        // Unformatted: copy 0, seq = slot + 1, as esp_ota_set_boot_partition writes it.
        o.name_slot(&mut flash, Slot::S1).unwrap();
        assert_eq!(o.named_slot(&mut flash).unwrap(), Slot::S1);
        o.name_slot(&mut flash, Slot::S0).unwrap();
        o.name_slot(&mut flash, Slot::S0).unwrap();
        o.name_slot(&mut flash, Slot::S1).unwrap();
        let [a, b] = entries(&mut mem);
        assert_eq!((a.ota_seq, b.ota_seq), (4, 3));
        assert_eq!(a.encode(), Entry::for_seq(4).encode());
        assert_eq!(mem[32..0x1000], [0xff; 0x1000 - 32][..], "the rest of the sector stays erased");
    }

    #[test]
    fn a_torn_copy_is_stepped_over_and_rewritten() {
        let mut mem = vec![0xff_u8; 0x2000];
        mem[..32].copy_from_slice(&CRATE_SEQ_1_UNDEFINED);
        mem[0x1000..0x1000 + 32].copy_from_slice(&Entry::for_seq(2).encode());
        mem[0x1000 + 29] = 0; // copy 1 torn: its CRC no longer matches
        let mut flash = RamFlash::<4, 4096>::with_contents(&mut mem);
        let mut o = otadata();
        assert_eq!(o.named_slot(&mut flash).unwrap(), Slot::S0);
        o.name_slot(&mut flash, Slot::S1).unwrap();
        assert_eq!(o.named_slot(&mut flash).unwrap(), Slot::S1);
        assert_eq!(entries(&mut mem)[1], Entry::for_seq(2));
    }
}
