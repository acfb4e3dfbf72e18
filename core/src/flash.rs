//! Flash access shared by every part of the core: errors that name the operation and offset,
//! bounded region hashing, and a RAM-backed flash for tests, demos and RAM-only devices.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use sha1::{Digest as _, Sha1};
use sha2::Sha256;

/// Which flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashOp {
    Read,
    Program,
    Erase,
}

/// A flash operation that failed, with where it was aimed. A simulated power cut arrives as one
/// of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashError {
    pub op: FlashOp,
    pub offset: u32,
    pub kind: NorFlashErrorKind,
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let op = match self.op {
            FlashOp::Read => "read",
            FlashOp::Program => "program",
            FlashOp::Erase => "erase",
        };
        write!(f, "flash {op} at 0x{:x} failed ({:?})", self.offset, self.kind)
    }
}

pub(crate) fn read<F: ReadNorFlash>(flash: &mut F, offset: u32, buf: &mut [u8]) -> Result<(), FlashError> {
    flash.read(offset, buf).map_err(|e| FlashError { op: FlashOp::Read, offset, kind: e.kind() })
}

pub(crate) fn program<F: NorFlash>(flash: &mut F, offset: u32, data: &[u8]) -> Result<(), FlashError> {
    flash.write(offset, data).map_err(|e| FlashError { op: FlashOp::Program, offset, kind: e.kind() })
}

/// Programs `data` at `offset`, skipping every write unit that holds only `erased_byte`.
/// Programming erased bytes changes no cell, but it counts as the unit's one program on parts
/// with ECC or a program-once rule, and a filesystem that later appends into that free space
/// (LittleFS does, in its metadata blocks) would program the unit a second time. Runs of units
/// that hold data are programmed with one call each.
pub(crate) fn program_data<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    data: &[u8],
    write_size_bytes: u32,
    erased_byte: u8,
) -> Result<(), FlashError> {
    let unit = write_size_bytes as usize;
    assert!(data.len().is_multiple_of(unit), "programs are whole write units");
    let units = data.len() / unit;
    let mut i = 0;
    while i < units {
        let start = next_unit(data, unit, erased_byte, i, Unit::Data);
        if start == units {
            break;
        }
        i = next_unit(data, unit, erased_byte, start, Unit::Blank);
        program(flash, offset + (start * unit) as u32, &data[start * unit..i * unit])?;
    }
    Ok(())
}

/// What [`next_unit`] looks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// A write unit holding only erased bytes.
    Blank,
    /// A write unit holding at least one other byte.
    Data,
}

/// The first write unit at or after unit `from` that is `wanted`, or the number of units. Units
/// of 1, 2, 4 or 8 bytes are scanned eight bytes at a time: a word XOR the erased pattern is
/// non-zero when a unit in it holds data, and has a zero lane (the classic has-zero-byte trick
/// at the unit's width) when a unit in it is blank. Only the word that has one is looked at unit
/// by unit.
fn next_unit(data: &[u8], unit: usize, erased_byte: u8, from: usize, wanted: Unit) -> usize {
    let units = data.len() / unit;
    let mut i = from;
    if 8 % unit == 0 {
        let per_word = 8 / unit;
        let pattern = u64::from_ne_bytes([erased_byte; 8]);
        let lane_bits = unit * 8;
        let low = if lane_bits == 64 { 1 } else { u64::MAX / ((1u64 << lane_bits) - 1) };
        let high = low << (lane_bits - 1);
        let load = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("8 bytes")) ^ pattern;
        let mut words = data[i * unit..].chunks_exact(8);
        let skipped = match wanted {
            Unit::Data => words.position(|w| load(w) != 0),
            Unit::Blank => words.position(|w| {
                let word = load(w);
                word.wrapping_sub(low) & !word & high != 0
            }),
        };
        i += skipped.unwrap_or((data.len() - i * unit) / 8) * per_word;
    }
    while i < units && is_erased(&data[i * unit..(i + 1) * unit], erased_byte) != (wanted == Unit::Blank) {
        i += 1;
    }
    i
}

/// Whether every byte of `cells` is `erased_byte`, compared as whole words: one compare for the
/// usual 4-byte write unit, eight bytes at a time for larger ones.
#[inline]
fn is_erased(cells: &[u8], erased_byte: u8) -> bool {
    let word = u64::from_ne_bytes([erased_byte; 8]);
    match *cells {
        [a, b, c, d] => u32::from_ne_bytes([a, b, c, d]) == word as u32,
        _ => {
            let mut words = cells.chunks_exact(8);
            let whole = words.by_ref().all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == word);
            whole && words.remainder().iter().all(|&b| b == erased_byte)
        }
    }
}

pub(crate) fn erase<F: NorFlash>(flash: &mut F, from: u32, to: u32) -> Result<(), FlashError> {
    flash.erase(from, to).map_err(|e| FlashError { op: FlashOp::Erase, offset: from, kind: e.kind() })
}

/// SHA-1 and SHA-256 of a byte string, the two checksums a Mongoose OS manifest carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    pub sha1: [u8; 20],
    pub sha256: [u8; 32],
}

/// Both digests computed in one pass, fed in pieces.
#[derive(Clone)]
pub(crate) struct Hasher {
    sha1: Sha1,
    sha256: Sha256,
}

impl Hasher {
    pub(crate) fn new() -> Hasher {
        Hasher { sha1: Sha1::new(), sha256: Sha256::new() }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.sha1.update(data);
        self.sha256.update(data);
    }

    pub(crate) fn finish(self) -> Digests {
        Digests { sha1: self.sha1.finalize().into(), sha256: self.sha256.finalize().into() }
    }
}

/// SHA-256 of `len_bytes` of flash from `offset`, read through `buf` (any non-zero size).
pub fn sha256_region<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len_bytes: u32,
    buf: &mut [u8],
) -> Result<[u8; 32], FlashError> {
    let mut hasher = Sha256::new();
    for_each_piece(flash, offset, len_bytes, buf, |piece| hasher.update(piece))?;
    Ok(hasher.finalize().into())
}

/// A flash that may already know the SHA-256 of a region it holds, so that hashing it again can
/// be skipped: the simulator's flash does, by the identity of its copy-on-write pages, and a
/// sweep boots over the same unchanged image tens of thousands of times. Both methods have
/// defaults (know nothing, remember nothing), and real flashes need not implement the trait at
/// all: [`sha256_region`] always reads.
///
/// **Invariant:** an answer of [`RegionDigests::known_sha256`] equals the SHA-256 of the
/// `len_bytes` bytes that `read` returns from `offset` at the time of the call. A flash that
/// cannot be sure answers `None`.
pub trait RegionDigests {
    /// The SHA-256 of the region, when the flash knows it without reading.
    fn known_sha256(&mut self, _offset: u32, _len_bytes: u32) -> Option<[u8; 32]> {
        None
    }

    /// Tells the flash the SHA-256 just computed from the bytes read from the region.
    fn remember_sha256(&mut self, _offset: u32, _len_bytes: u32, _sha256: &[u8; 32]) {}
}

/// [`sha256_region`], answered by the flash when it knows the digest ([`RegionDigests`]); the
/// digest it computes otherwise is handed back to the flash. The result is the same either way.
pub fn sha256_region_known<F: ReadNorFlash + RegionDigests>(
    flash: &mut F,
    offset: u32,
    len_bytes: u32,
    buf: &mut [u8],
) -> Result<[u8; 32], FlashError> {
    if let Some(sha256) = flash.known_sha256(offset, len_bytes) {
        return Ok(sha256);
    }
    let sha256 = sha256_region(flash, offset, len_bytes, buf)?;
    flash.remember_sha256(offset, len_bytes, &sha256);
    Ok(sha256)
}

/// SHA-1 and SHA-256 of `len_bytes` of flash from `offset`, read through `buf`.
pub fn digest_region<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len_bytes: u32,
    buf: &mut [u8],
) -> Result<Digests, FlashError> {
    let mut hasher = Hasher::new();
    for_each_piece(flash, offset, len_bytes, buf, |piece| hasher.update(piece))?;
    Ok(hasher.finish())
}

/// Reads `len_bytes` from `offset` in pieces of at most `buf.len()` bytes, handing each to `f`.
/// The loop is bounded by `len_bytes / buf.len() + 1` iterations.
pub(crate) fn for_each_piece<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    len_bytes: u32,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> Result<(), FlashError> {
    assert!(!buf.is_empty(), "a region is read through a non-empty buffer");
    let mut done: u32 = 0;
    while done < len_bytes {
        let n = core::cmp::min(buf.len() as u32, len_bytes - done);
        let piece = &mut buf[..n as usize];
        read(flash, offset + done, piece)?;
        f(piece);
        done += n;
    }
    Ok(())
}

/// Erase-size-aligned `[from, to)` covering `[offset, offset + len)`.
pub(crate) fn erase_span(offset: u32, len_bytes: u32, erase_size_bytes: u32) -> (u32, u32) {
    let from = offset - offset % erase_size_bytes;
    let end = offset + len_bytes;
    let to = end.div_ceil(erase_size_bytes) * erase_size_bytes;
    (from, to)
}

/// A flash device in a caller-provided RAM buffer. It checks alignment and bounds, and programs
/// by AND-ing (a program only clears bits, as on NOR), but it does not catch a second program of a
/// cell: the simulator's strict model does that.
pub struct RamFlash<'a, const WRITE: usize, const ERASE: usize> {
    mem: &'a mut [u8],
}

/// A RAM flash knows no digests: every image is hashed from its bytes.
impl<const WRITE: usize, const ERASE: usize> RegionDigests for RamFlash<'_, WRITE, ERASE> {}

impl<'a, const WRITE: usize, const ERASE: usize> RamFlash<'a, WRITE, ERASE> {
    /// Wraps `mem` and erases it. Its length must be a multiple of `ERASE`.
    pub fn new(mem: &'a mut [u8]) -> Self {
        const { assert!(WRITE > 0 && ERASE.is_multiple_of(WRITE)) };
        assert!(mem.len().is_multiple_of(ERASE), "RAM flash size is a whole number of erase units");
        mem.fill(0xff);
        RamFlash { mem }
    }

    /// Wraps `mem` as it is: a flash image made elsewhere (a factory image, a copy of another
    /// flash). Its length must be a multiple of `ERASE`.
    pub fn with_contents(mem: &'a mut [u8]) -> Self {
        const { assert!(WRITE > 0 && ERASE.is_multiple_of(WRITE)) };
        assert!(mem.len().is_multiple_of(ERASE), "RAM flash size is a whole number of erase units");
        RamFlash { mem }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.mem
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for RamFlash<'_, WRITE, ERASE> {
    type Error = NorFlashErrorKind;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for RamFlash<'_, WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        let end = start.checked_add(bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?;
        let src = self.mem.get(start..end).ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for RamFlash<'_, WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(ERASE) || !to.is_multiple_of(ERASE) || from > to {
            return Err(NorFlashErrorKind::NotAligned);
        }
        self.mem.get_mut(from..to).ok_or(NorFlashErrorKind::OutOfBounds)?.fill(0xff);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        if !start.is_multiple_of(WRITE) || !bytes.len().is_multiple_of(WRITE) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let dst = self.mem.get_mut(start..start + bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?;
        for (cell, byte) in dst.iter_mut().zip(bytes) {
            *cell &= *byte;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Records every program call as (offset, length).
    struct Recorder(Vec<(u32, usize)>);

    impl ErrorType for Recorder {
        type Error = NorFlashErrorKind;
    }

    impl ReadNorFlash for Recorder {
        const READ_SIZE: usize = 1;
        fn read(&mut self, _: u32, _: &mut [u8]) -> Result<(), Self::Error> {
            Ok(())
        }
        fn capacity(&self) -> usize {
            1 << 20
        }
    }

    impl NorFlash for Recorder {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 4096;
        fn erase(&mut self, _: u32, _: u32) -> Result<(), Self::Error> {
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
            self.0.push((offset, bytes.len()));
            Ok(())
        }
    }

    #[test]
    fn units_of_erased_bytes_are_never_programmed() {
        let mut data = [0xffu8; 32];
        data[0] = 1; // unit 0
        data[9] = 2; // unit 2
        data[13] = 0; // unit 3
        data[31] = 0xfe; // unit 7
        let mut flash = Recorder(Vec::new());
        program_data(&mut flash, 0x100, &data, 4, 0xff).unwrap();
        assert_eq!(flash.0, [(0x100, 4), (0x108, 8), (0x11c, 4)]);
        let mut flash = Recorder(Vec::new());
        program_data(&mut flash, 0, &[0xff; 16], 4, 0xff).unwrap();
        assert!(flash.0.is_empty(), "nothing to program");
        let mut flash = Recorder(Vec::new());
        program_data(&mut flash, 0, &[0xff; 16], 4, 0x00).unwrap();
        assert_eq!(flash.0, [(0, 16)], "0xff is data where erased bytes read 0x00");
    }

    proptest::proptest! {
        // Invariant: program_data programs exactly the maximal runs of write units that hold a
        // byte other than the erased one, for any write size, whatever the word compare does.
        #[test]
        fn program_data_programs_exactly_the_runs_of_units_that_hold_data(
            unit in proptest::sample::select(std::vec![1usize, 2, 4, 8, 16, 12]),
            blanks in proptest::collection::vec(proptest::bool::ANY, 0..40),
            noise in proptest::collection::vec(0usize..64, 40),
            erased in proptest::sample::select(std::vec![0xffu8, 0x00]),
        ) {
            let mut data = std::vec![erased; blanks.len() * unit];
            for (i, &blank) in blanks.iter().enumerate() {
                if !blank {
                    data[i * unit + noise[i] % unit] ^= 1 << (noise[i] % 8);
                }
            }
            let mut expected = Vec::new();
            let mut i = 0;
            while i < blanks.len() {
                if blanks[i] { i += 1; continue; }
                let start = i;
                while i < blanks.len() && !blanks[i] { i += 1; }
                expected.push((0x40 + (start * unit) as u32, (i - start) * unit));
            }
            let mut flash = Recorder(Vec::new());
            program_data(&mut flash, 0x40, &data, unit as u32, erased).unwrap();
            proptest::prop_assert_eq!(flash.0, expected);
        }
    }
}
