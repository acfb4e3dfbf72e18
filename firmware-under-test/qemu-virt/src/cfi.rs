//! The CFI flash driver: QEMU's `pflash_cfi01` (Intel command set) as a [`NorFlash`] with 4 KiB
//! erase sectors and a 4-byte write unit, over a [`Bus`] of 32-bit MMIO accesses.
//!
//! The bank is two interleaved x16 devices (a 32-bit bus, 256 KiB erase blocks, a 4 KiB write
//! buffer), so every command is written to both halves (`0x00XX_00XX`) and the status is read
//! from both. Two facts of QEMU's model shape the driver (`shared/reference/hardware-ports.md`):
//!
//! - **A program overwrites** instead of clearing bits. So [`Cfi::program`] reads the old
//!   contents first and programs `old & new`, as NOR would; and a 4 KiB "erase" is a buffered
//!   program of `0xff`, which gives the ESP32-C3's 4 KiB sectors on 256 KiB blocks.
//! - **Buffered programs are 100× faster** than word programs: every program and erase goes
//!   through the write buffer, at most 4 KiB inside one 4 KiB-aligned window.
//!
//! A buffered program, as the driver writes it:
//!
//! | step | address        | write                | then |
//! |------|----------------|----------------------|------|
//! | 1    | window start   | `0xE8` write to buffer | poll status until ready (SR.7) |
//! | 2    | window start   | word count − 1       | |
//! | 3    | each word      | the word             | |
//! | 4    | window start   | `0xD0` confirm       | poll status until ready; SR.1/3/4/5 are errors (then `0x50` clears them) |
//! | 5    | window start   | `0xFF` read array    | the window reads as memory again |
//!
//! Every command ends with read-array mode restored, also when it fails, so reads between
//! commands (and code run from flash) see the array.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// The driver's MMIO accesses: 32-bit, at byte offsets into the flash window.
pub trait Bus {
    fn read32(&mut self, offset: u32) -> u32;
    fn write32(&mut self, offset: u32, value: u32);
}

/// QEMU `virt`'s flash: pflash unit 0, 32 MiB at 0x2000_0000.
pub const BASE_ADDRESS: usize = 0x2000_0000;
pub const SIZE_BYTES: u32 = 32 * 1024 * 1024;
/// The emulated erase sector, and the most one buffered program writes.
pub const SECTOR_BYTES: u32 = 4096;
pub const WRITE_BYTES: u32 = 4;
/// Status polls before a command counts as stuck (QEMU is ready at the first).
pub const STATUS_POLLS_MAX: u32 = 100_000;

const WORDS_PER_SECTOR: usize = (SECTOR_BYTES / 4) as usize;

/// One command byte to both interleaved devices.
const fn both(command: u32) -> u32 {
    command | command << 16
}

pub const CMD_READ_ARRAY: u32 = both(0xff);
pub const CMD_CLEAR_STATUS: u32 = both(0x50);
pub const CMD_WRITE_TO_BUFFER: u32 = both(0xe8);
pub const CMD_CONFIRM: u32 = both(0xd0);
/// SR.7: the device is ready.
pub const SR_READY: u32 = both(0x80);
/// SR.1 (block locked), SR.3 (VPP low), SR.4 (program error), SR.5 (erase error).
pub const SR_ERRORS: u32 = both(0x3a);

const _: () = assert!(SECTOR_BYTES.is_multiple_of(WRITE_BYTES) && SIZE_BYTES.is_multiple_of(SECTOR_BYTES));

/// What went wrong; nothing past the failed buffer was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfiError {
    OutOfBounds {
        offset: u32,
        len_bytes: u32,
    },
    NotAligned {
        offset: u32,
        len_bytes: u32,
    },
    /// The device reported an error for the buffer at `offset` (status both halves).
    Device {
        offset: u32,
        status: u32,
    },
    /// The device stayed busy for [`STATUS_POLLS_MAX`] polls at `offset`.
    Stuck {
        offset: u32,
    },
}

impl NorFlashError for CfiError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            CfiError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            CfiError::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            CfiError::Device { .. } | CfiError::Stuck { .. } => NorFlashErrorKind::Other,
        }
    }
}

impl core::fmt::Display for CfiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CfiError::OutOfBounds { offset, len_bytes } => {
                write!(f, "{len_bytes} bytes at {offset:#x} run past the {SIZE_BYTES}-byte flash")
            }
            CfiError::NotAligned { offset, len_bytes } => {
                write!(f, "{len_bytes} bytes at {offset:#x} are not aligned to the flash's unit")
            }
            CfiError::Device { offset, status } => {
                write!(f, "the flash reported status {status:#010x} for the buffer at {offset:#x}")
            }
            CfiError::Stuck { offset } => write!(f, "the flash stayed busy at {offset:#x}"),
        }
    }
}

/// The driver over a [`Bus`].
pub struct Cfi<B> {
    bus: B,
}

impl<B: Bus> Cfi<B> {
    pub fn new(bus: B) -> Cfi<B> {
        Cfi { bus }
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }

    fn check(offset: u32, len_bytes: u32, unit: u32) -> Result<(), CfiError> {
        if offset as u64 + len_bytes as u64 > SIZE_BYTES as u64 {
            return Err(CfiError::OutOfBounds { offset, len_bytes });
        }
        if !offset.is_multiple_of(unit) || !len_bytes.is_multiple_of(unit) {
            return Err(CfiError::NotAligned { offset, len_bytes });
        }
        Ok(())
    }

    /// Reads in read-array mode (any offset and length).
    pub fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), CfiError> {
        let len_bytes = bytes.len() as u32;
        if offset as u64 + len_bytes as u64 > SIZE_BYTES as u64 {
            return Err(CfiError::OutOfBounds { offset, len_bytes });
        }
        if offset.is_multiple_of(4) {
            let mut at = offset;
            let mut words = bytes.chunks_exact_mut(4);
            for word in &mut words {
                word.copy_from_slice(&self.bus.read32(at).to_le_bytes());
                at += 4;
            }
            let tail = words.into_remainder();
            if !tail.is_empty() {
                let word = self.bus.read32(at).to_le_bytes();
                tail.copy_from_slice(&word[..tail.len()]);
            }
            return Ok(());
        }
        for (at, byte) in (offset..).zip(bytes.iter_mut()) {
            let word = self.bus.read32(at & !3);
            *byte = word.to_le_bytes()[(at & 3) as usize];
        }
        Ok(())
    }

    /// Programs `data` at `offset` as NOR does: each bit can only go from 1 to 0.
    pub fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), CfiError> {
        Self::check(offset, data.len() as u32, WRITE_BYTES)?;
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let window_end = (at / SECTOR_BYTES + 1) * SECTOR_BYTES;
            let take = ((window_end - at) as usize).min(rest.len());
            let (chunk, next) = rest.split_at(take);
            let mut words = [0u32; WORDS_PER_SECTOR];
            let words = &mut words[..take / 4];
            for (i, (word, new)) in words.iter_mut().zip(chunk.chunks_exact(4)).enumerate() {
                let old = self.bus.read32(at + 4 * i as u32);
                *word = old & u32::from_le_bytes([new[0], new[1], new[2], new[3]]);
            }
            self.write_buffer(at, words)?;
            at += take as u32;
            rest = next;
        }
        Ok(())
    }

    /// Erases the 4 KiB sectors in `from..to` (both sector-aligned): a buffered program of 0xff
    /// each, since QEMU's program overwrites.
    pub fn erase(&mut self, from: u32, to: u32) -> Result<(), CfiError> {
        if to < from {
            return Err(CfiError::NotAligned { offset: from, len_bytes: 0 });
        }
        Self::check(from, to - from, SECTOR_BYTES)?;
        let ones = [u32::MAX; WORDS_PER_SECTOR];
        for sector in (from..to).step_by(SECTOR_BYTES as usize) {
            self.write_buffer(sector, &ones)?;
        }
        Ok(())
    }

    /// One buffered program of `words` at `at` (inside one 4 KiB window), read-array mode
    /// restored whatever happens.
    fn write_buffer(&mut self, at: u32, words: &[u32]) -> Result<(), CfiError> {
        debug_assert!(!words.is_empty() && words.len() <= WORDS_PER_SECTOR);
        debug_assert!((at % SECTOR_BYTES) as usize + 4 * words.len() <= SECTOR_BYTES as usize);
        let result = self.buffered(at, words);
        if result.is_err() {
            self.bus.write32(at, CMD_CLEAR_STATUS);
        }
        self.bus.write32(at, CMD_READ_ARRAY);
        result
    }

    fn buffered(&mut self, at: u32, words: &[u32]) -> Result<(), CfiError> {
        self.bus.write32(at, CMD_WRITE_TO_BUFFER);
        self.wait_ready(at)?;
        self.bus.write32(at, both(words.len() as u32 - 1));
        for (i, &word) in words.iter().enumerate() {
            self.bus.write32(at + 4 * i as u32, word);
        }
        self.bus.write32(at, CMD_CONFIRM);
        let status = self.wait_ready(at)?;
        if status & SR_ERRORS != 0 {
            return Err(CfiError::Device { offset: at, status });
        }
        Ok(())
    }

    fn wait_ready(&mut self, at: u32) -> Result<u32, CfiError> {
        for _ in 0..STATUS_POLLS_MAX {
            let status = self.bus.read32(at);
            if status & SR_READY == SR_READY {
                return Ok(status);
            }
        }
        Err(CfiError::Stuck { offset: at })
    }
}

impl<B> ErrorType for Cfi<B> {
    type Error = CfiError;
}

impl<B: Bus> ReadNorFlash for Cfi<B> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), CfiError> {
        Cfi::read(self, offset, bytes)
    }

    fn capacity(&self) -> usize {
        SIZE_BYTES as usize
    }
}

impl<B: Bus> NorFlash for Cfi<B> {
    const WRITE_SIZE: usize = WRITE_BYTES as usize;
    const ERASE_SIZE: usize = SECTOR_BYTES as usize;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), CfiError> {
        Cfi::erase(self, from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), CfiError> {
        Cfi::program(self, offset, bytes)
    }
}

#[cfg(test)]
pub(crate) mod model {
    //! QEMU 7.2's `pflash_cfi01` as the driver meets it, and strict about the protocol: a
    //! program overwrites (it does not AND), commands outside the Intel set or in the wrong
    //! cycle panic, a buffer must stay inside one 4 KiB window, and [`Model::in_read_array`]
    //! tells whether the array reads as memory.

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        ReadArray,
        Status,
        Count { at: u32 },
        Data { at: u32, next: u32, left: u32 },
        Confirm { at: u32, bytes: u32 },
    }

    pub struct Model {
        pub mem: Vec<u8>,
        mode: Mode,
        /// Buffered programs confirmed: (offset, bytes).
        pub buffers: Vec<(u32, u32)>,
        /// The status the next confirm reports (0x80 ready, plus error bits).
        pub status_after_confirm: u32,
    }

    impl Model {
        pub fn new(size_bytes: usize) -> Model {
            Model {
                mem: vec![0xff; size_bytes],
                mode: Mode::ReadArray,
                buffers: Vec::new(),
                status_after_confirm: 0x80,
            }
        }

        pub fn in_read_array(&self) -> bool {
            self.mode == Mode::ReadArray
        }
    }

    impl Bus for &mut Model {
        fn read32(&mut self, offset: u32) -> u32 {
            match self.mode {
                Mode::ReadArray => {
                    let o = offset as usize;
                    u32::from_le_bytes(self.mem[o..o + 4].try_into().unwrap())
                }
                _ => both(self.status_after_confirm.min(0xff)),
            }
        }

        fn write32(&mut self, offset: u32, value: u32) {
            let command = value & 0xff;
            self.mode = match self.mode {
                Mode::ReadArray | Mode::Status => {
                    assert_eq!(value, both(command), "command {value:#x} not sent to both devices");
                    match command {
                        0xff | 0x00 => Mode::ReadArray,
                        0x50 => {
                            self.status_after_confirm = 0x80;
                            Mode::Status
                        }
                        0xe8 => Mode::Count { at: offset },
                        other => panic!("unexpected command {other:#x} at {offset:#x}"),
                    }
                }
                Mode::Count { at } => {
                    assert_eq!(offset, at, "the count goes to the buffer's address");
                    let words = (value & 0xffff) + 1;
                    assert_eq!(value, both(words - 1), "count for both devices");
                    assert!(
                        (at % SECTOR_BYTES) + 4 * words <= SECTOR_BYTES,
                        "{words} words at {at:#x} leave the 4 KiB window"
                    );
                    Mode::Data { at, next: at, left: words }
                }
                Mode::Data { at, next, left } => {
                    assert_eq!(offset, next, "buffer words in order");
                    let o = offset as usize;
                    // QEMU overwrites: no AND.
                    self.mem[o..o + 4].copy_from_slice(&value.to_le_bytes());
                    if left == 1 {
                        Mode::Confirm { at, bytes: next + 4 - at }
                    } else {
                        Mode::Data { at, next: next + 4, left: left - 1 }
                    }
                }
                Mode::Confirm { at, bytes } => {
                    assert_eq!(value, CMD_CONFIRM, "a full buffer is confirmed");
                    self.buffers.push((at, bytes));
                    Mode::Status
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::model::Model;
    use super::*;

    const SIZE: usize = 64 * 1024;

    fn check_read_array(model: &Model) {
        assert!(model.in_read_array(), "every command ends in read-array mode");
    }

    #[test]
    fn a_program_ands_with_the_old_contents_because_qemus_flash_overwrites() {
        let mut model = Model::new(SIZE);
        Cfi::new(&mut model).program(0x100, &[0x0f, 0xff, 0x00, 0xf0]).unwrap();
        Cfi::new(&mut model).program(0x100, &[0xf3, 0x0f, 0xff, 0xff]).unwrap();
        check_read_array(&model);
        assert_eq!(model.mem[0x100..0x104], [0x03, 0x0f, 0x00, 0xf0]);
        let mut back = [0u8; 4];
        Cfi::new(&mut model).read(0x100, &mut back).unwrap();
        assert_eq!(back, [0x03, 0x0f, 0x00, 0xf0]);
    }

    #[test]
    fn an_erase_sets_its_4k_sectors_and_nothing_else() {
        let mut model = Model::new(SIZE);
        model.mem.fill(0);
        Cfi::new(&mut model).erase(0x1000, 0x3000).unwrap();
        check_read_array(&model);
        assert!(model.mem[0x1000..0x3000].iter().all(|&b| b == 0xff));
        assert!(model.mem[..0x1000].iter().chain(&model.mem[0x3000..]).all(|&b| b == 0));
        assert_eq!(model.buffers, [(0x1000, 4096), (0x2000, 4096)], "one full buffer per sector");
    }

    #[test]
    fn a_program_across_windows_goes_in_buffers_of_at_most_4k_inside_each_window() {
        let mut model = Model::new(SIZE);
        let data: Vec<u8> = (0..12_288u32).map(|i| (i * 7 % 251) as u8).collect();
        Cfi::new(&mut model).program(0x800, &data).unwrap();
        check_read_array(&model);
        assert_eq!(model.buffers, [(0x800, 0x800), (0x1000, 0x1000), (0x2000, 0x1000), (0x3000, 0x800)]);
        assert_eq!(model.mem[0x800..0x800 + data.len()], data[..]);
        let mut back = vec![0u8; data.len() - 3];
        Cfi::new(&mut model).read(0x803, &mut back).unwrap();
        assert_eq!(back[..], data[3..]);
    }

    #[test]
    fn a_device_error_is_reported_and_read_array_mode_restored() {
        let mut model = Model::new(SIZE);
        model.status_after_confirm = 0x80 | 0x10;
        let error = Cfi::new(&mut model).program(0x40, &[0; 8]).unwrap_err();
        assert_eq!(error, CfiError::Device { offset: 0x40, status: 0x0090_0090 });
        check_read_array(&model);
        assert_eq!(model.status_after_confirm, 0x80, "the status was cleared");
    }

    #[test]
    fn misaligned_or_out_of_bounds_requests_write_nothing() {
        let mut model = Model::new(SIZE);
        assert_eq!(
            Cfi::new(&mut model).program(2, &[0; 4]),
            Err(CfiError::NotAligned { offset: 2, len_bytes: 4 })
        );
        assert_eq!(
            Cfi::new(&mut model).erase(0x800, 0x1000),
            Err(CfiError::NotAligned { offset: 0x800, len_bytes: 0x800 })
        );
        assert_eq!(
            Cfi::new(&mut model).program(SIZE_BYTES - 4, &[0; 8]),
            Err(CfiError::OutOfBounds { offset: SIZE_BYTES - 4, len_bytes: 8 })
        );
        assert!(model.buffers.is_empty());
        check_read_array(&model);
    }

    #[test]
    fn the_core_provisions_and_boots_through_the_driver_on_the_esp32c3_map() {
        use ota_core::boot::{self, BootOutcome, BootReason};
        use ota_core::layout::Slot;
        use ota_core::updater::{Device, Updater};
        let layout = ota_app::partitions::layout();
        let mut model = Model::new(ota_app::partitions::FLASH_BYTES as usize);
        let mut flash = Cfi::new(&mut model);
        let image = ota_app::image::Image::new("1.0.0", 70_000).bytes();
        let bundle = ota_bundle::Bundle::new("fw", crate::PLATFORM).version("1.0.0").app(image).build();
        let device =
            Device { arch: ota_core::manifest::Platform::new(crate::PLATFORM).unwrap(), app_part: None };
        let mut updater = Updater::begin_provision(&mut flash, &layout, device, vec![0; 4096]).unwrap();
        updater.process(&mut flash, &bundle).unwrap();
        updater.finish(&mut flash).unwrap();
        let outcome = boot::boot(&mut flash, &layout, &mut [0; 1024]).unwrap();
        assert!(
            matches!(outcome, BootOutcome::Boot { slot: Slot::S0, reason: BootReason::Committed, .. }),
            "{outcome:?}"
        );
        check_read_array(&model);
    }
}
