//! The boot state and its on-flash record: the one encoder and the one decoder, used by the boot
//! loader and the application alike.
//!
//! A record is [`RECORD_SIZE_BYTES`] bytes, little-endian:
//!
//! | bytes     | field              | meaning                                                     |
//! |-----------|--------------------|-------------------------------------------------------------|
//! | 0..4      | magic              | `b"OTA1"`                                                    |
//! | 4..8      | seq                | `u32`, higher is newer; the first record written is 1       |
//! | 8         | format             | [`FORMAT_VERSION`]                                           |
//! | 9         | active slot        | 0 or 1                                                       |
//! | 10        | revert slot        | 0 or 1, or 0xff for none                                     |
//! | 11        | flags              | bit 0 COMMITTED, 1 FIRST_BOOT_A, 2 FIRST_BOOT_B, 3 MERGE_FS  |
//! | 12..16    | commit timeout     | `u32` seconds; 0 commits on the first healthy boot          |
//! | 16..134   | slot 0             | [`SlotInfo`], 118 bytes, table below                        |
//! | 134..252  | slot 1             | [`SlotInfo`]                                                 |
//! | 252..256  | crc                | CRC-32 (IEEE, as zip and Mongoose OS use) of bytes 0..252   |
//!
//! Each slot:
//!
//! | bytes   | field      | meaning                                                           |
//! |---------|------------|-------------------------------------------------------------------|
//! | 0..4    | app length | `u32` bytes of app image; 0 means the slot holds no image         |
//! | 4..36   | app digest | SHA-256 of the app image's `app length` bytes                      |
//! | 36..40  | fs length  | `u32` bytes of the fs image shipped with it; 0 means none shipped |
//! | 40..64  | version    | UTF-8, NUL-padded, at most [`VERSION_MAX_BYTES`]                  |
//! | 64..118 | build id   | UTF-8, NUL-padded, at most [`BUILD_ID_MAX_BYTES`]                 |
//!
//! A record is valid when its magic, format and CRC match and the state it holds is consistent
//! ([`BootState::check`]). Both properties are checked on two paths: before a record is written
//! and after it is read back.

use crate::layout::Slot;

pub const RECORD_SIZE_BYTES: usize = 256;
pub const FORMAT_VERSION: u8 = 1;
pub const MAGIC: [u8; 4] = *b"OTA1";
pub const VERSION_MAX_BYTES: usize = 24;
pub const BUILD_ID_MAX_BYTES: usize = 54;

const SLOT_INFO_SIZE_BYTES: usize = 4 + 32 + 4 + VERSION_MAX_BYTES + BUILD_ID_MAX_BYTES;
const HEADER_SIZE_BYTES: usize = 16;
const CRC_OFFSET: usize = RECORD_SIZE_BYTES - 4;

const _: () = assert!(HEADER_SIZE_BYTES + 2 * SLOT_INFO_SIZE_BYTES == CRC_OFFSET);
const _: () = assert!(SLOT_INFO_SIZE_BYTES == 118);

const FLAG_COMMITTED: u8 = 1;
const FLAG_FIRST_BOOT_A: u8 = 2;
const FLAG_FIRST_BOOT_B: u8 = 4;
const FLAG_MERGE_FS: u8 = 8;
const FLAGS_KNOWN: u8 = FLAG_COMMITTED | FLAG_FIRST_BOOT_A | FLAG_FIRST_BOOT_B | FLAG_MERGE_FS;
const NO_SLOT: u8 = 0xff;

/// The CRC-32 that zip entries, Mongoose OS boot records and the serial RPC framing use. A
/// slice-by-16 table (16 KiB of read-only data) checks bundle data several times faster than a
/// byte-wise one; the `small-crc-table` feature takes the byte-wise one (1 KiB) for a boot
/// loader that must fit a small partition.
pub(crate) const CRC32: crc::Crc<u32, Crc32Table> = crc::Crc::<u32, Crc32Table>::new(&crc::CRC_32_ISO_HDLC);

#[cfg(not(feature = "small-crc-table"))]
pub(crate) type Crc32Table = crc::Table<16>;
#[cfg(feature = "small-crc-table")]
pub(crate) type Crc32Table = crc::Table<1>;

/// A short UTF-8 string stored inline, such as a version or a build id. `Copy`, no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Label<N> {
    pub const EMPTY: Label<N> = Label { len: 0, bytes: [0; N] };

    /// `None` when `s` is longer than `N` bytes or holds a NUL.
    pub fn new(s: &str) -> Option<Label<N>> {
        const { assert!(N < 256) };
        if s.len() > N || s.as_bytes().contains(&0) {
            return None;
        }
        let mut bytes = [0; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Label { len: s.len() as u8, bytes })
    }

    pub fn as_str(&self) -> &str {
        // Labels are only built from `&str` or from decoded bytes checked as UTF-8.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        out[..self.len as usize].copy_from_slice(&self.bytes[..self.len as usize]);
    }

    fn decode(raw: &[u8]) -> Option<Label<N>> {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if raw[len..].iter().any(|&b| b != 0) {
            return None;
        }
        Label::new(core::str::from_utf8(&raw[..len]).ok()?)
    }
}

impl<const N: usize> Default for Label<N> {
    fn default() -> Self {
        Label::EMPTY
    }
}

impl<const N: usize> PartialEq<&str> for Label<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> core::fmt::Debug for Label<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> core::fmt::Display for Label<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Version = Label<VERSION_MAX_BYTES>;
pub type BuildId = Label<BUILD_ID_MAX_BYTES>;

/// What the boot state knows of one slot's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub app_len_bytes: u32,
    pub app_sha256: [u8; 32],
    pub fs_len_bytes: u32,
    pub version: Version,
    pub build_id: BuildId,
}

impl SlotInfo {
    pub const EMPTY: SlotInfo = SlotInfo {
        app_len_bytes: 0,
        app_sha256: [0; 32],
        fs_len_bytes: 0,
        version: Version::EMPTY,
        build_id: BuildId::EMPTY,
    };

    pub fn has_image(&self) -> bool {
        self.app_len_bytes != 0
    }
}

/// The boot state of §3 of the reference: which slot boots, which one it falls back to, and
/// where the newest image stands in its trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub active: Slot,
    /// The slot to go back to while `active` is on trial; `None` once committed.
    pub revert: Option<Slot>,
    pub committed: bool,
    /// Set by finalize; cleared by commit. The application reads it as "this is the first boot".
    pub first_boot_a: bool,
    /// Set by finalize; cleared by the boot loader when it boots the new image the first time.
    pub first_boot_b: bool,
    /// The new filesystem still needs the old one's files.
    pub merge_fs: bool,
    pub commit_timeout_s: u32,
    pub slots: [SlotInfo; 2],
}

/// Why a state is inconsistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    RevertIsActive,
    UncommittedWithoutRevert,
    CommittedOnTrial,
    /// A commit clears the revert slot (`OTA.Commit` and `SetBootState {is_committed: true}`
    /// alike), so a request to commit and to keep a revert slot contradicts itself.
    CommittedWithRevert,
    FirstBootBWithoutA,
    ActiveSlotEmpty,
    RevertSlotEmpty,
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StateError::RevertIsActive => "the revert slot is the active slot",
            StateError::UncommittedWithoutRevert => "an uncommitted image has no revert slot",
            StateError::CommittedOnTrial => "a committed image still has first-boot flags set",
            StateError::CommittedWithRevert => {
                "a committed image has no revert slot (committing clears revert_slot)"
            }
            StateError::FirstBootBWithoutA => "first-boot flag B is set without flag A",
            StateError::ActiveSlotEmpty => "the active slot holds no image",
            StateError::RevertSlotEmpty => "the revert slot holds no image",
        })
    }
}

impl BootState {
    /// The state of a freshly provisioned device: `slot` holds `info`, committed, nothing to
    /// revert to.
    pub fn provisioned(slot: Slot, info: SlotInfo) -> BootState {
        let mut slots = [SlotInfo::EMPTY; 2];
        slots[slot.index()] = info;
        let blank = BootState {
            active: slot,
            revert: None,
            committed: false,
            first_boot_a: false,
            first_boot_b: false,
            merge_fs: false,
            commit_timeout_s: 0,
            slots,
        };
        blank.settled_on(slot)
    }

    /// The same state with `slot` as the committed active slot and nothing on trial: what a
    /// commit (`slot` = active), a revert or a boot loader's fallback (`slot` = the other) writes.
    pub fn settled_on(&self, slot: Slot) -> BootState {
        BootState {
            active: slot,
            revert: None,
            committed: true,
            first_boot_a: false,
            first_boot_b: false,
            merge_fs: false,
            ..*self
        }
    }

    /// The state as the firmware running in `running` sees it, which is what the application
    /// reports, commits and reverts. When `running` is the recorded active slot that is the
    /// state as stored. When it is not, the recorded active image has not run yet: an update
    /// finished and not yet booted, or a trial the boot loader could not record (it then boots
    /// the committed revert slot, and tries again at the next boot). The running image is then
    /// the committed one, with nothing on trial: a commit or a revert has nothing to act on,
    /// and the untried image is never committed from here.
    ///
    /// | stored active | running | seen                                            |
    /// |---------------|---------|-------------------------------------------------|
    /// | `running`     | it      | as stored                                       |
    /// | the other     | it      | `running` active, committed, no revert, no flags |
    pub fn seen_from(&self, running: Slot) -> BootState {
        if self.active == running { *self } else { self.settled_on(running) }
    }

    pub fn slot(&self, slot: Slot) -> &SlotInfo {
        &self.slots[slot.index()]
    }

    pub fn active_info(&self) -> &SlotInfo {
        self.slot(self.active)
    }

    /// The relations every stored state keeps.
    pub fn check(&self) -> Result<(), StateError> {
        if self.revert == Some(self.active) {
            return Err(StateError::RevertIsActive);
        }
        if !self.committed && self.revert.is_none() {
            return Err(StateError::UncommittedWithoutRevert);
        }
        if self.committed && (self.first_boot_a || self.first_boot_b) {
            return Err(StateError::CommittedOnTrial);
        }
        if self.first_boot_b && !self.first_boot_a {
            return Err(StateError::FirstBootBWithoutA);
        }
        if !self.active_info().has_image() {
            return Err(StateError::ActiveSlotEmpty);
        }
        if let Some(revert) = self.revert
            && !self.slot(revert).has_image()
        {
            return Err(StateError::RevertSlotEmpty);
        }
        Ok(())
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        for (on, bit) in [
            (self.committed, FLAG_COMMITTED),
            (self.first_boot_a, FLAG_FIRST_BOOT_A),
            (self.first_boot_b, FLAG_FIRST_BOOT_B),
            (self.merge_fs, FLAG_MERGE_FS),
        ] {
            if on {
                flags |= bit;
            }
        }
        flags
    }
}

/// A boot state with its sequence number, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u32,
    pub state: BootState,
}

/// Why bytes are not a valid record. The reader treats all of these alike: not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Magic,
    Crc,
    Format(u8),
    Field,
    Inconsistent(StateError),
}

impl Record {
    /// Encodes the record. The state must be consistent: encoding an inconsistent state is a bug,
    /// since every writer checks the state first.
    pub fn encode(&self) -> [u8; RECORD_SIZE_BYTES] {
        assert_eq!(self.state.check(), Ok(()), "only consistent boot states are written");
        let mut out = [0u8; RECORD_SIZE_BYTES];
        let s = &self.state;
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8] = FORMAT_VERSION;
        out[9] = s.active as u8;
        out[10] = s.revert.map_or(NO_SLOT, |slot| slot as u8);
        out[11] = s.flags();
        out[12..16].copy_from_slice(&s.commit_timeout_s.to_le_bytes());
        for (i, info) in s.slots.iter().enumerate() {
            let at = HEADER_SIZE_BYTES + i * SLOT_INFO_SIZE_BYTES;
            encode_slot(info, &mut out[at..at + SLOT_INFO_SIZE_BYTES]);
        }
        let crc = CRC32.checksum(&out[..CRC_OFFSET]);
        out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The one decoder of the record format.
    pub fn decode(raw: &[u8; RECORD_SIZE_BYTES]) -> Result<Record, DecodeError> {
        if raw[0..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        let crc = u32::from_le_bytes(raw[CRC_OFFSET..].try_into().unwrap());
        if CRC32.checksum(&raw[..CRC_OFFSET]) != crc {
            return Err(DecodeError::Crc);
        }
        if raw[8] != FORMAT_VERSION {
            return Err(DecodeError::Format(raw[8]));
        }
        let active = Slot::from_index(raw[9] as u32).ok_or(DecodeError::Field)?;
        let revert = match raw[10] {
            NO_SLOT => None,
            n => Some(Slot::from_index(n as u32).ok_or(DecodeError::Field)?),
        };
        let flags = raw[11];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::Field);
        }
        let mut slots = [SlotInfo::EMPTY; 2];
        for (i, slot) in slots.iter_mut().enumerate() {
            let at = HEADER_SIZE_BYTES + i * SLOT_INFO_SIZE_BYTES;
            *slot = decode_slot(&raw[at..at + SLOT_INFO_SIZE_BYTES]).ok_or(DecodeError::Field)?;
        }
        let state = BootState {
            active,
            revert,
            committed: flags & FLAG_COMMITTED != 0,
            first_boot_a: flags & FLAG_FIRST_BOOT_A != 0,
            first_boot_b: flags & FLAG_FIRST_BOOT_B != 0,
            merge_fs: flags & FLAG_MERGE_FS != 0,
            commit_timeout_s: u32::from_le_bytes(raw[12..16].try_into().unwrap()),
            slots,
        };
        state.check().map_err(DecodeError::Inconsistent)?;
        Ok(Record { seq: u32::from_le_bytes(raw[4..8].try_into().unwrap()), state })
    }
}

/// What a slot's last erase unit says of the image in it: written by the updater (and a
/// snapshot) after the image verified and before the record that names it, so the boot loader
/// can still find a verifying image when no boot-state record decodes. One record size long,
/// little-endian:
///
/// | bytes    | field          | meaning                                                      |
/// |----------|----------------|--------------------------------------------------------------|
/// | 0..4     | magic          | `b"OTAI"`                                                     |
/// | 4..8     | generation     | `u32`: the seq of the record written with it; higher is newer |
/// | 8        | format         | [`FORMAT_VERSION`]                                            |
/// | 9..12    | reserved       | 0                                                             |
/// | 12..16   | commit timeout | `u32` seconds the image's trial was given                     |
/// | 16..134  | image          | [`SlotInfo`], as in a record                                  |
/// | 134..252 | reserved       | 0                                                             |
/// | 252..256 | crc            | CRC-32 of bytes 0..252                                        |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub generation: u32,
    pub commit_timeout_s: u32,
    pub info: SlotInfo,
}

pub const DESCRIPTOR_MAGIC: [u8; 4] = *b"OTAI";

impl Descriptor {
    /// Encodes the descriptor. It must describe an image: describing an empty slot is a bug.
    pub fn encode(&self) -> [u8; RECORD_SIZE_BYTES] {
        assert!(self.info.has_image(), "a descriptor describes an image");
        let mut out = [0u8; RECORD_SIZE_BYTES];
        out[0..4].copy_from_slice(&DESCRIPTOR_MAGIC);
        out[4..8].copy_from_slice(&self.generation.to_le_bytes());
        out[8] = FORMAT_VERSION;
        out[12..16].copy_from_slice(&self.commit_timeout_s.to_le_bytes());
        encode_slot(&self.info, &mut out[HEADER_SIZE_BYTES..HEADER_SIZE_BYTES + SLOT_INFO_SIZE_BYTES]);
        let crc = CRC32.checksum(&out[..CRC_OFFSET]);
        out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The one decoder of the descriptor format.
    pub fn decode(raw: &[u8; RECORD_SIZE_BYTES]) -> Result<Descriptor, DecodeError> {
        if raw[0..4] != DESCRIPTOR_MAGIC {
            return Err(DecodeError::Magic);
        }
        let crc = u32::from_le_bytes(raw[CRC_OFFSET..].try_into().unwrap());
        if CRC32.checksum(&raw[..CRC_OFFSET]) != crc {
            return Err(DecodeError::Crc);
        }
        if raw[8] != FORMAT_VERSION {
            return Err(DecodeError::Format(raw[8]));
        }
        let info = decode_slot(&raw[HEADER_SIZE_BYTES..HEADER_SIZE_BYTES + SLOT_INFO_SIZE_BYTES])
            .filter(SlotInfo::has_image)
            .ok_or(DecodeError::Field)?;
        if raw[9..12] != [0; 3]
            || raw[HEADER_SIZE_BYTES + SLOT_INFO_SIZE_BYTES..CRC_OFFSET].iter().any(|&b| b != 0)
        {
            return Err(DecodeError::Field);
        }
        Ok(Descriptor {
            generation: u32::from_le_bytes(raw[4..8].try_into().unwrap()),
            commit_timeout_s: u32::from_le_bytes(raw[12..16].try_into().unwrap()),
            info,
        })
    }
}

fn encode_slot(info: &SlotInfo, out: &mut [u8]) {
    out[0..4].copy_from_slice(&info.app_len_bytes.to_le_bytes());
    out[4..36].copy_from_slice(&info.app_sha256);
    out[36..40].copy_from_slice(&info.fs_len_bytes.to_le_bytes());
    info.version.encode(&mut out[40..40 + VERSION_MAX_BYTES]);
    info.build_id.encode(&mut out[40 + VERSION_MAX_BYTES..]);
}

fn decode_slot(raw: &[u8]) -> Option<SlotInfo> {
    Some(SlotInfo {
        app_len_bytes: u32::from_le_bytes(raw[0..4].try_into().unwrap()),
        app_sha256: raw[4..36].try_into().unwrap(),
        fs_len_bytes: u32::from_le_bytes(raw[36..40].try_into().unwrap()),
        version: Label::decode(&raw[40..40 + VERSION_MAX_BYTES])?,
        build_id: Label::decode(&raw[40 + VERSION_MAX_BYTES..])?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn info(len: u32, version: &str) -> SlotInfo {
        SlotInfo {
            app_len_bytes: len,
            app_sha256: [len as u8; 32],
            fs_len_bytes: 4096,
            version: Version::new(version).unwrap(),
            build_id: BuildId::new("20261122-000000/test").unwrap(),
        }
    }

    pub(crate) fn trial_state() -> BootState {
        BootState {
            active: Slot::S1,
            revert: Some(Slot::S0),
            committed: false,
            first_boot_a: true,
            first_boot_b: true,
            merge_fs: true,
            commit_timeout_s: 300,
            slots: [info(1000, "1.0.0"), info(2000, "2.0.0")],
        }
    }

    #[test]
    fn a_record_round_trips() {
        let record = Record { seq: 7, state: trial_state() };
        let raw = record.encode();
        assert_eq!(&raw[0..4], b"OTA1");
        assert_eq!(Record::decode(&raw), Ok(record));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let raw = Record { seq: 3, state: trial_state() }.encode();
        for bit in 0..RECORD_SIZE_BYTES * 8 {
            let mut bad = raw;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Record::decode(&bad).is_err(), "bit {bit} flipped still decodes");
        }
    }

    #[test]
    fn a_descriptor_round_trips_and_is_never_a_record() {
        let descriptor = Descriptor { generation: 9, commit_timeout_s: 300, info: info(1000, "2.0.0") };
        let raw = descriptor.encode();
        assert_eq!(Descriptor::decode(&raw), Ok(descriptor));
        assert_eq!(Record::decode(&raw), Err(DecodeError::Magic));
        let record = Record { seq: 9, state: trial_state() }.encode();
        assert_eq!(Descriptor::decode(&record), Err(DecodeError::Magic));
        for bit in 0..RECORD_SIZE_BYTES * 8 {
            let mut bad = raw;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Descriptor::decode(&bad).is_err(), "bit {bit} flipped still decodes");
        }
        assert!(Descriptor::decode(&[0xff; RECORD_SIZE_BYTES]).is_err());
        assert!(Descriptor::decode(&[0x00; RECORD_SIZE_BYTES]).is_err());
    }

    #[test]
    fn erased_records_are_not_records() {
        assert_eq!(Record::decode(&[0xff; RECORD_SIZE_BYTES]), Err(DecodeError::Magic));
        assert_eq!(Record::decode(&[0x00; RECORD_SIZE_BYTES]), Err(DecodeError::Magic));
    }

    #[test]
    fn inconsistent_states_are_refused() {
        let mut state = trial_state();
        state.revert = Some(Slot::S1);
        assert_eq!(state.check(), Err(StateError::RevertIsActive));
        let mut state = trial_state();
        state.committed = true;
        assert_eq!(state.check(), Err(StateError::CommittedOnTrial));
        let mut state = trial_state();
        state.first_boot_a = false;
        assert_eq!(state.check(), Err(StateError::FirstBootBWithoutA));
        let mut state = trial_state();
        state.slots[0] = SlotInfo::EMPTY;
        assert_eq!(state.check(), Err(StateError::RevertSlotEmpty));
    }

    #[test]
    fn labels_refuse_what_does_not_fit() {
        assert!(Version::new("1.2.3").is_some());
        assert!(Version::new(&"x".repeat(VERSION_MAX_BYTES)).is_some());
        assert!(Version::new(&"x".repeat(VERSION_MAX_BYTES + 1)).is_none());
        assert!(Version::new("a\0b").is_none());
        assert!(BuildId::new("20181126-182907/2.8.0-47-g7db8cdacf-dirty-mos9").is_some());
    }
}
