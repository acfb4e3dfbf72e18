//! The virtual board's flash: a NOR flash kept in a file, so that it survives a restart as flash
//! survives a power cycle. Reads come from a copy in memory; every program and erase is written
//! through to the file before the call returns.
//!
//! A program only clears bits (the new byte is the old one AND the data), an erase sets 0xff.
//! With a power cut armed (`--power-cut-after-ops N`), the N-th mutating operation lands half
//! way — the first half of a program's write units, the first half of an erase's range — and the
//! process dies, leaving the torn write in the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

pub const WRITE_BYTES: usize = 4;
pub const ERASE_BYTES: usize = 4096;

/// Where in the struck operation the power goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutWhen {
    /// Before the operation changes anything.
    Before,
    /// Half way: the first half of a program's write units, or of an erase's range.
    During,
    /// After the operation completed.
    After,
}

pub struct FileFlash {
    file: File,
    mem: Vec<u8>,
    /// Mutating operations so far in this process.
    ops: u64,
    /// Die in the middle of this operation (1-based).
    cut_at_op: Option<u64>,
    cut_when: CutWhen,
    cut_at_phase: Option<ota_app::Phase>,
}

impl FileFlash {
    /// Opens `path`, creating it erased at `size_bytes` when it is missing. An existing file of
    /// another size is refused: it belongs to another layout.
    pub fn open(path: &Path, size_bytes: u32) -> io::Result<FileFlash> {
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        let mut mem = vec![0xff; size_bytes as usize];
        if len == 0 {
            file.write_all_at(&mem, 0)?;
        } else if len != size_bytes as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {len} bytes; this layout needs {size_bytes} (another --app-slot-kib/--fs-slot-kib?)",
                    path.display()
                ),
            ));
        } else {
            file.read_exact_at(&mut mem, 0)?;
        }
        Ok(FileFlash { file, mem, ops: 0, cut_at_op: None, cut_when: CutWhen::During, cut_at_phase: None })
    }

    /// Arms the power cut of `--power-cut-at-phase`: the first flash operation after the
    /// application marks `phase` dies half done.
    pub fn cut_power_at_phase(&mut self, phase: ota_app::Phase) {
        self.cut_at_phase = Some(phase);
    }

    /// Arms the power cut of `--power-cut-after-ops`.
    pub fn cut_power_at_op(&mut self, op: u64) {
        self.cut_at_op = Some(op);
        self.cut_when = CutWhen::During;
    }

    /// Arms a power cut `ops_from_now` mutating operations from now (0: the next one), struck
    /// `when` (`Board.CutAtOp`).
    pub fn cut_power_after(&mut self, ops_from_now: u64, when: CutWhen) {
        self.cut_at_op = Some(self.ops.saturating_add(ops_from_now).saturating_add(1));
        self.cut_when = when;
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    fn range(&self, offset: u32, len: usize) -> Result<std::ops::Range<usize>, NorFlashErrorKind> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(NorFlashErrorKind::OutOfBounds)?;
        if end > self.mem.len() {
            return Err(NorFlashErrorKind::OutOfBounds);
        }
        Ok(start..end)
    }

    /// Counts an operation; how the power dies in it, when it does.
    fn next_op(&mut self) -> Option<CutWhen> {
        self.ops += 1;
        (self.cut_at_op == Some(self.ops)).then_some(self.cut_when)
    }

    fn store(&mut self, range: std::ops::Range<usize>) -> Result<(), NorFlashErrorKind> {
        self.file
            .write_all_at(&self.mem[range.clone()], range.start as u64)
            .map_err(|_| NorFlashErrorKind::Other)
    }

    fn die(&self, what: &str, when: CutWhen) -> ! {
        let when = match when {
            CutWhen::Before => "before",
            CutWhen::During => "in the middle of",
            CutWhen::After => "after",
        };
        eprintln!("virtual-board: power cut {when} flash operation {} ({what})", self.ops);
        std::process::abort()
    }
}

/// The virtual board hashes its images every time, as a board does.
impl ota_core::flash::RegionDigests for FileFlash {}

impl ota_app::Flash for FileFlash {
    fn ops_done(&self) -> u64 {
        self.ops
    }

    fn phase_starts(&mut self, phase: ota_app::Phase) {
        if self.cut_at_phase == Some(phase) {
            self.cut_at_phase = None;
            self.cut_at_op = Some(self.ops + 1);
        }
    }
}

impl ErrorType for FileFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let range = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.mem[range]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = WRITE_BYTES;
    const ERASE_SIZE: usize = ERASE_BYTES;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if !from.is_multiple_of(ERASE_BYTES as u32) || !to.is_multiple_of(ERASE_BYTES as u32) || from > to {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let range = self.range(from, (to - from) as usize)?;
        let cut = self.next_op();
        let landed = match cut {
            Some(CutWhen::Before) => 0,
            Some(CutWhen::During) => range.len() / 2,
            _ => range.len(),
        };
        self.mem[range.start..range.start + landed].fill(0xff);
        self.store(range.start..range.start + landed)?;
        if let Some(when) = cut {
            self.die("erase", when);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if !(offset as usize).is_multiple_of(WRITE_BYTES) || !bytes.len().is_multiple_of(WRITE_BYTES) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let range = self.range(offset, bytes.len())?;
        let cut = self.next_op();
        let landed = match cut {
            Some(CutWhen::Before) => 0,
            Some(CutWhen::During) => bytes.len() / WRITE_BYTES / 2 * WRITE_BYTES,
            _ => bytes.len(),
        };
        for (cell, b) in self.mem[range.start..range.start + landed].iter_mut().zip(bytes) {
            *cell &= b;
        }
        self.store(range.start..range.start + landed)?;
        if let Some(when) = cut {
            self.die("program", when);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_flash_persists_and_programs_only_clear_bits() {
        let path = std::env::temp_dir().join(format!("ota-file-flash-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let mut flash = FileFlash::open(&path, 8192).unwrap();
            flash.write(4096, &[0x0f, 0xf0, 0xff, 0x00]).unwrap();
            flash.write(4096, &[0xf3, 0xff, 0x0f, 0xff]).unwrap();
            assert_eq!(flash.ops(), 2);
        }
        let mut flash = FileFlash::open(&path, 8192).unwrap();
        let mut back = [0u8; 4];
        flash.read(4096, &mut back).unwrap();
        assert_eq!(back, [0x03, 0xf0, 0x0f, 0x00]);
        flash.erase(4096, 8192).unwrap();
        flash.read(4096, &mut back).unwrap();
        assert_eq!(back, [0xff; 4]);
        assert_eq!(flash.write(4097, &[0; 4]), Err(NorFlashErrorKind::NotAligned));
        assert_eq!(flash.read(8190, &mut back), Err(NorFlashErrorKind::OutOfBounds));
        let wrong = FileFlash::open(&path, 4096).err().unwrap();
        assert!(wrong.to_string().contains("holds 8192 bytes; this layout needs 4096"), "{wrong}");
        std::fs::remove_file(&path).unwrap();
    }
}
