#![doc = include_str!("../README.md")]
#![no_std]

extern crate alloc;

#[cfg(any(target_os = "none", test))]
mod libc;
mod shared;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_void};
use core::fmt;
use core::ptr::{self, NonNull};

use embedded_storage::nor_flash::NorFlash;
use littlefs2_sys as ll;
use ota_core::flash::RamFlash;
use ota_core::fs::FileSystem;
use ota_core::layout::Region;

pub use shared::Shared;

/// Bytes of each littlefs cache: the read cache, the program cache and the open file's cache.
/// Also the largest file littlefs stores inline in its directory (with a 4 KiB block).
pub const CACHE_BYTES: u32 = 512;
/// Bytes of the lookahead bitmap: one bit per block, so 256 blocks per allocation scan.
pub const LOOKAHEAD_BYTES: u32 = 32;
/// Erase cycles of a metadata block before littlefs moves it (wear levelling).
pub const BLOCK_CYCLES: i32 = 500;
/// The on-disk version written: 2.1, the first with forward CRCs (see the crate documentation).
pub const DISK_VERSION: u32 = 0x0002_0001;
/// Longest file name littlefs stores, in bytes (`LFS_NAME_MAX`).
pub const NAME_MAX_BYTES: usize = ll::LFS_NAME_MAX as usize;
/// Smallest block littlefs accepts, in bytes.
pub const BLOCK_MIN_BYTES: u32 = 128;

const _: () = assert!(LOOKAHEAD_BYTES.is_multiple_of(8) && CACHE_BYTES.is_power_of_two());
const _: () = assert!(CACHE_BYTES >= BLOCK_MIN_BYTES && BLOCK_MIN_BYTES.is_power_of_two());
const _: () = assert!(NAME_MAX_BYTES >= ota_core::fs::NAME_MAX_BYTES);

/// A littlefs error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LfsError {
    Io,
    Corrupt,
    NoEntry,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    BadFile,
    FileTooLarge,
    Invalid,
    NoSpace,
    NoMemory,
    NoAttribute,
    NameTooLong,
    Unknown(i32),
}

impl LfsError {
    fn from_code(code: c_int) -> LfsError {
        match code {
            ll::lfs_error_LFS_ERR_IO => LfsError::Io,
            ll::lfs_error_LFS_ERR_CORRUPT => LfsError::Corrupt,
            ll::lfs_error_LFS_ERR_NOENT => LfsError::NoEntry,
            ll::lfs_error_LFS_ERR_EXIST => LfsError::Exists,
            ll::lfs_error_LFS_ERR_NOTDIR => LfsError::NotDir,
            ll::lfs_error_LFS_ERR_ISDIR => LfsError::IsDir,
            ll::lfs_error_LFS_ERR_NOTEMPTY => LfsError::NotEmpty,
            ll::lfs_error_LFS_ERR_BADF => LfsError::BadFile,
            ll::lfs_error_LFS_ERR_FBIG => LfsError::FileTooLarge,
            ll::lfs_error_LFS_ERR_INVAL => LfsError::Invalid,
            ll::lfs_error_LFS_ERR_NOSPC => LfsError::NoSpace,
            ll::lfs_error_LFS_ERR_NOMEM => LfsError::NoMemory,
            ll::lfs_error_LFS_ERR_NOATTR => LfsError::NoAttribute,
            ll::lfs_error_LFS_ERR_NAMETOOLONG => LfsError::NameTooLong,
            other => LfsError::Unknown(other),
        }
    }
}

impl fmt::Display for LfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LfsError::Io => "I/O error",
            LfsError::Corrupt => "corrupted filesystem",
            LfsError::NoEntry => "no such file",
            LfsError::Exists => "file exists",
            LfsError::NotDir => "not a directory",
            LfsError::IsDir => "is a directory",
            LfsError::NotEmpty => "directory not empty",
            LfsError::BadFile => "bad file",
            LfsError::FileTooLarge => "file too large",
            LfsError::Invalid => "invalid argument or on-flash format",
            LfsError::NoSpace => "no space left",
            LfsError::NoMemory => "out of memory",
            LfsError::NoAttribute => "no such attribute",
            LfsError::NameTooLong => "name too long",
            LfsError::Unknown(code) => return write!(f, "unknown error {code}"),
        })
    }
}

/// The littlefs call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LfsOp {
    Format,
    Mount,
    Stat,
    Open,
    Seek,
    Read,
    Write,
    Close,
    Remove,
    Rename,
    OpenDir,
    ReadDir,
    CloseDir,
    Traverse,
}

impl fmt::Display for LfsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LfsOp::Format => "format",
            LfsOp::Mount => "mount",
            LfsOp::Stat => "stat",
            LfsOp::Open => "open",
            LfsOp::Seek => "seek",
            LfsOp::Read => "read",
            LfsOp::Write => "write",
            LfsOp::Close => "close",
            LfsOp::Remove => "remove",
            LfsOp::Rename => "rename",
            LfsOp::OpenDir => "open the root directory",
            LfsOp::ReadDir => "read the root directory",
            LfsOp::CloseDir => "close the root directory",
            LfsOp::Traverse => "traverse",
        })
    }
}

/// Why a filesystem call failed. `E` is the flash's error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error<E> {
    /// littlefs's `op` returned `code`. `flash` is the first flash error during the call, when
    /// the flash caused it (littlefs then reports [`LfsError::Io`]).
    Lfs { op: LfsOp, code: LfsError, flash: Option<E> },
    /// `region` is not at least two whole, aligned `block_size_bytes` blocks inside a flash of
    /// `capacity_bytes` (and below 4 GiB), or the block is not a power of two of at least
    /// [`BLOCK_MIN_BYTES`] and a whole number of the flash's erase units.
    Region { region: Region, block_size_bytes: u32, capacity_bytes: u64 },
    /// A `len_bytes`-byte name that cannot be a file of the root: empty, `.`, `..`, holding `/` or
    /// NUL, or longer than [`NAME_MAX_BYTES`].
    NameInvalid { len_bytes: usize },
    /// The root holds a `len_bytes`-byte name, longer than the `buf_bytes` given to `list`.
    NameTooLong { len_bytes: usize, buf_bytes: usize },
}

impl<E> Error<E> {
    /// True when littlefs's view in RAM may no longer match the flash: mount again.
    fn needs_remount(&self) -> bool {
        matches!(
            self,
            Error::Lfs { flash: Some(_), .. } | Error::Lfs { code: LfsError::Io | LfsError::Corrupt, .. }
        )
    }

    fn is_no_entry(&self) -> bool {
        matches!(self, Error::Lfs { code: LfsError::NoEntry, .. })
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lfs { op, code, flash: Some(flash) } => write!(
                f,
                "littlefs {op} failed: {code}, caused by the flash ({flash:?}); littlefs commits \
                 atomically, so the filesystem holds what it held before the call; mount it again"
            ),
            Error::Lfs { op: LfsOp::Mount, code, flash: None } => write!(
                f,
                "littlefs mount failed: {code}; the region holds no LittleFS v2 filesystem with \
                 this block size; nothing was written"
            ),
            Error::Lfs { op, code, flash: None } => {
                write!(f, "littlefs {op} failed: {code}; the filesystem holds what it held before the call")
            }
            Error::Region { region, block_size_bytes, capacity_bytes } => write!(
                f,
                "region 0x{:x}+0x{:x} cannot hold a filesystem: it must be at least 2 whole \
                 0x{block_size_bytes:x}-byte blocks, block-aligned, inside the 0x{capacity_bytes:x}-byte \
                 flash; nothing was written",
                region.offset, region.size_bytes
            ),
            Error::NameInvalid { len_bytes } => write!(
                f,
                "a {len_bytes}-byte file name is not a root file name (empty, '.', '..', '/' or NUL \
                 inside, or over {NAME_MAX_BYTES} bytes); nothing was written"
            ),
            Error::NameTooLong { len_bytes, buf_bytes } => write!(
                f,
                "the root holds a {len_bytes}-byte name, longer than the {buf_bytes}-byte buffer; \
                 nothing was written"
            ),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// A mounted LittleFS in `region` of a flash, seen as the merge's flat root directory.
///
/// To open the old and the new fs slot of one flash at once, as the merge does, give each a
/// [`Shared`] handle on the same `RefCell`.
pub struct LfsFs<'f, F: NorFlash> {
    flash: &'f mut F,
    engine: Engine<F>,
    /// A call failed in a way that may leave littlefs's RAM state behind the flash.
    remount: bool,
}

impl<'f, F: NorFlash> LfsFs<'f, F> {
    /// Mounts the filesystem in `region`, with blocks of the flash's erase size.
    pub fn mount(flash: &'f mut F, region: Region) -> Result<Self, Error<F::Error>> {
        Self::mount_blocks(flash, region, F::ERASE_SIZE as u32)
    }

    fn mount_blocks(
        flash: &'f mut F,
        region: Region,
        block_size_bytes: u32,
    ) -> Result<Self, Error<F::Error>> {
        let mut engine = Engine::new(region, block_size_bytes, flash.capacity() as u64)?;
        engine.mount(flash)?;
        Ok(LfsFs { flash, engine, remount: false })
    }

    pub fn region(&self) -> Region {
        self.engine.region
    }

    /// The whole content of `name`, or `None` if the root holds no file of that name.
    pub fn read_to_vec(&mut self, name: &str) -> Result<Option<Vec<u8>>, Error<F::Error>> {
        let name = c_name(name)?;
        self.run(|engine, flash| {
            let Some(size) = engine.file_size(flash, &name)? else { return Ok(None) };
            let mut data = vec![0; size as usize];
            let read = engine.read(flash, &name, 0, &mut data)?;
            data.truncate(read);
            Ok(Some(data))
        })
    }

    /// Writes `data` as the whole content of `name`, in one commit when the file exists.
    pub fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), Error<F::Error>> {
        self.write(name, 0, data)
    }

    /// The names of the regular files of the root, in littlefs's directory order.
    pub fn names(&mut self) -> Result<Vec<String>, Error<F::Error>> {
        let mut names = Vec::new();
        let mut buf = [0; NAME_MAX_BYTES];
        for index in 0.. {
            let Some(len) = self.list(index, &mut buf)? else { break };
            names.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        Ok(names)
    }

    /// Blocks in use, found by walking every metadata pair and file: a deeper check than a mount.
    pub fn blocks_in_use(&mut self) -> Result<u32, Error<F::Error>> {
        self.run(|engine, flash| engine.traverse(flash))
    }

    /// Runs `op` on a mounted filesystem, mounting again first after a failure that calls for it.
    fn run<R>(
        &mut self,
        op: impl FnOnce(&mut Engine<F>, &mut F) -> Result<R, Error<F::Error>>,
    ) -> Result<R, Error<F::Error>> {
        if self.remount {
            self.engine.unmount();
            self.engine.mount(self.flash)?;
            self.remount = false;
        }
        let result = op(&mut self.engine, self.flash);
        if let Err(error) = &result {
            self.remount = error.needs_remount();
        }
        result
    }
}

impl<F: NorFlash> FileSystem for LfsFs<'_, F> {
    type Error = Error<F::Error>;

    /// The `index`-th regular file in littlefs's directory order, which is by name, bytewise.
    /// Each call reads the directory from its start.
    fn list(&mut self, index: u32, name: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        self.run(|engine, flash| engine.nth_file(flash, index, name))
    }

    /// True if the root holds an entry of that name, a file or a directory.
    fn exists(&mut self, name: &str) -> Result<bool, Self::Error> {
        let name = c_name(name)?;
        self.run(|engine, flash| engine.stat(flash, &name).map(|info| info.is_some()))
    }

    fn read(&mut self, name: &str, offset: u32, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let name = c_name(name)?;
        self.run(|engine, flash| engine.read(flash, &name, offset, buf))
    }

    /// At offset 0, creates or truncates the file; further on, writes into the existing file,
    /// zero-filling any gap after its end. The data is committed when the call returns.
    fn write(&mut self, name: &str, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        let name = c_name(name)?;
        self.run(|engine, flash| engine.write(flash, &name, offset, data))
    }

    fn remove(&mut self, name: &str) -> Result<(), Self::Error> {
        let name = c_name(name)?;
        self.run(|engine, flash| engine.remove(flash, &name))
    }

    /// littlefs's rename, one commit: replaces `to` atomically.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Self::Error> {
        let (from, to) = (c_name(from)?, c_name(to)?);
        self.run(|engine, flash| engine.rename(flash, &from, &to))
    }
}

/// Writes a fresh, empty filesystem into `region`. Only the blocks littlefs uses are erased.
pub fn format<F: NorFlash>(flash: &mut F, region: Region) -> Result<(), Error<F::Error>> {
    let mut engine = Engine::new(region, F::ERASE_SIZE as u32, flash.capacity() as u64)?;
    engine.format(flash)
}

/// Mounts the filesystem in `region` and walks every block it uses.
pub fn mount_check<F: NorFlash>(flash: &mut F, region: Region) -> Result<(), Error<F::Error>> {
    LfsFs::mount(flash, region)?.blocks_in_use().map(|_| ())
}

/// The content of the root file `name`, or `None` if there is none.
pub fn read_file<F: NorFlash>(
    flash: &mut F,
    region: Region,
    name: &str,
) -> Result<Option<Vec<u8>>, Error<F::Error>> {
    LfsFs::mount(flash, region)?.read_to_vec(name)
}

/// Writes `data` as the whole content of the root file `name`. Replacing an existing file is
/// atomic across a power cut.
pub fn write_file<F: NorFlash>(
    flash: &mut F,
    region: Region,
    name: &str,
    data: &[u8],
) -> Result<(), Error<F::Error>> {
    LfsFs::mount(flash, region)?.write_file(name, data)
}

/// A file's name and content.
pub type NamedFile = (String, Vec<u8>);

/// Every regular file of the root with its content, sorted by name.
pub fn list_files<F: NorFlash>(flash: &mut F, region: Region) -> Result<Vec<NamedFile>, Error<F::Error>> {
    let mut fs = LfsFs::mount(flash, region)?;
    let mut files = Vec::new();
    for name in fs.names()? {
        let data = fs.read_to_vec(&name)?.unwrap_or_default();
        files.push((name, data));
    }
    files.sort();
    Ok(files)
}

/// A LittleFS image of a `region_size_bytes` region holding `files` in its root, like Mongoose OS's
/// `fs.img`: format, write the files in order, unmount.
///
/// Trailing blocks that are entirely erased (0xFF) are left out, so the image may be shorter than
/// the region, always by whole blocks. The image mounts only where the rest of the region is
/// erased, as the updater leaves it. Write it by erasing the region and programming only the write
/// units that are not all 0xFF: littlefs appends its next commit into the erased tail of a
/// metadata block, and a unit programmed with 0xFF counts as programmed on a strict NOR flash.
///
/// # Panics
///
/// If `block_size_bytes` is not a power of two of at least [`BLOCK_MIN_BYTES`], if the region is
/// not at least two whole blocks, or if a file name is invalid or the files do not fit: the image is
/// built from the caller's own inputs, so each of these is a bug there.
pub fn build_image(region_size_bytes: u32, block_size_bytes: u32, files: &[(&str, &[u8])]) -> Vec<u8> {
    assert!(
        block_size_bytes.is_power_of_two() && block_size_bytes >= BLOCK_MIN_BYTES,
        "a LittleFS block of {block_size_bytes} bytes is not a power of two of at least {BLOCK_MIN_BYTES}"
    );
    assert!(
        region_size_bytes.is_multiple_of(block_size_bytes),
        "a {region_size_bytes}-byte region is not a whole number of {block_size_bytes}-byte blocks"
    );
    let region = Region::new(0, region_size_bytes);
    let mut bytes = vec![0xff; region_size_bytes as usize];
    let mut flash = ImageFlash::new(&mut bytes);
    let mut engine = Engine::new(region, block_size_bytes, u64::from(region_size_bytes))
        .unwrap_or_else(|e| panic!("cannot build a filesystem image: {e}"));
    engine.format(&mut flash).unwrap_or_else(|e| panic!("cannot format the image: {e}"));
    drop(engine);
    let mut fs = LfsFs::mount_blocks(&mut flash, region, block_size_bytes)
        .unwrap_or_else(|e| panic!("cannot mount the fresh image: {e}"));
    for (name, data) in files {
        fs.write_file(name, data).unwrap_or_else(|e| panic!("cannot add {name} to the image: {e}"));
    }
    drop(fs);
    let block = block_size_bytes as usize;
    let used_blocks =
        bytes.chunks(block).rposition(|b| b.iter().any(|&byte| byte != 0xff)).map_or(0, |i| i + 1);
    bytes.truncate(used_blocks * block);
    bytes
}

/// A root file name as littlefs takes it: NUL-terminated.
type CName = [u8; NAME_MAX_BYTES + 1];

fn c_name<E>(name: &str) -> Result<CName, Error<E>> {
    let bytes = name.as_bytes();
    let invalid = bytes.is_empty()
        || bytes.len() > NAME_MAX_BYTES
        || name == "."
        || name == ".."
        || bytes.iter().any(|&b| b == b'/' || b == 0);
    if invalid {
        return Err(Error::NameInvalid { len_bytes: bytes.len() });
    }
    let mut c = [0; NAME_MAX_BYTES + 1];
    c[..bytes.len()].copy_from_slice(bytes);
    Ok(c)
}

fn c_str(name: &CName) -> *const c_char {
    name.as_ptr().cast()
}

/// What littlefs points into while mounted, in one heap allocation that never moves: `lfs` points
/// at `config`, `config` at the caches and at `bridge`, and an open file or directory is linked
/// into `lfs`'s list of open objects until it is closed.
struct Mount<F: NorFlash> {
    lfs: ll::lfs_t,
    config: ll::lfs_config,
    file: ll::lfs_file_t,
    file_config: ll::lfs_file_config,
    dir: ll::lfs_dir_t,
    info: ll::lfs_info,
    bridge: Bridge<F>,
    read_cache: [u8; CACHE_BYTES as usize],
    prog_cache: [u8; CACHE_BYTES as usize],
    file_cache: [u8; CACHE_BYTES as usize],
    lookahead: [u64; LOOKAHEAD_BYTES as usize / 8],
    mounted: bool,
}

/// The flash as littlefs's callbacks see it: set for the duration of each call into littlefs.
struct Bridge<F: NorFlash> {
    flash: *mut F,
    offset: u32,
    block_size_bytes: u32,
    block_count: u32,
    /// The first flash error of the current call.
    error: Option<F::Error>,
}

impl<F: NorFlash> Bridge<F> {
    /// Runs a flash operation on `len` bytes at `off` in `block`. littlefs stays inside its blocks;
    /// were it not to, this answers "corrupt" rather than panic, which would abort across the FFI.
    fn flash_op(
        &mut self,
        block: u32,
        off: u32,
        len: u32,
        op: impl FnOnce(&mut F, u32) -> Result<(), F::Error>,
    ) -> c_int {
        let inside =
            block < self.block_count && off.checked_add(len).is_some_and(|end| end <= self.block_size_bytes);
        if !inside {
            return ll::lfs_error_LFS_ERR_CORRUPT;
        }
        // SAFETY: `flash` is set from a live `&mut F` for exactly the duration of the call into
        // littlefs that runs this callback, and nothing else uses that borrow meanwhile.
        let Some(flash) = (unsafe { self.flash.as_mut() }) else { return ll::lfs_error_LFS_ERR_IO };
        // The region ends at or below `u32::MAX`, checked in `Engine::new`.
        let address = self.offset + block * self.block_size_bytes + off;
        match op(flash, address) {
            Ok(()) => 0,
            Err(error) => {
                self.error.get_or_insert(error);
                ll::lfs_error_LFS_ERR_IO
            }
        }
    }
}

/// # Safety
///
/// littlefs calls this with the configuration `Engine::new` built, whose context is the `Bridge`.
unsafe fn bridge<'a, F: NorFlash>(config: *const ll::lfs_config) -> &'a mut Bridge<F> {
    // SAFETY: see the function's contract; littlefs runs one callback at a time.
    unsafe { &mut *(*config).context.cast::<Bridge<F>>() }
}

unsafe extern "C" fn lfs_read<F: NorFlash>(
    config: *const ll::lfs_config,
    block: ll::lfs_block_t,
    off: ll::lfs_off_t,
    buffer: *mut c_void,
    size: ll::lfs_size_t,
) -> c_int {
    if size == 0 {
        return 0;
    }
    // SAFETY: littlefs passes our configuration and a buffer of `size` bytes.
    let (bridge, buf) =
        unsafe { (bridge::<F>(config), core::slice::from_raw_parts_mut(buffer.cast::<u8>(), size as usize)) };
    bridge.flash_op(block, off, size, |flash, address| flash.read(address, buf))
}

unsafe extern "C" fn lfs_prog<F: NorFlash>(
    config: *const ll::lfs_config,
    block: ll::lfs_block_t,
    off: ll::lfs_off_t,
    buffer: *const c_void,
    size: ll::lfs_size_t,
) -> c_int {
    if size == 0 {
        return 0;
    }
    // SAFETY: littlefs passes our configuration and a buffer of `size` bytes.
    let (bridge, data) =
        unsafe { (bridge::<F>(config), core::slice::from_raw_parts(buffer.cast::<u8>(), size as usize)) };
    bridge.flash_op(block, off, size, |flash, address| flash.write(address, data))
}

unsafe extern "C" fn lfs_erase<F: NorFlash>(config: *const ll::lfs_config, block: ll::lfs_block_t) -> c_int {
    // SAFETY: littlefs passes our configuration.
    let bridge = unsafe { bridge::<F>(config) };
    let size = bridge.block_size_bytes;
    bridge.flash_op(block, 0, size, |flash, address| flash.erase(address, address + size))
}

unsafe extern "C" fn lfs_sync(_config: *const ll::lfs_config) -> c_int {
    0
}

/// littlefs's state for one region, with the flash lent in for each call.
struct Engine<F: NorFlash> {
    mount: NonNull<Mount<F>>,
    region: Region,
}

impl<F: NorFlash> Drop for Engine<F> {
    fn drop(&mut self) {
        self.unmount();
        // SAFETY: `mount` came from `Box::into_raw` in `Engine::new` and is freed only here.
        drop(unsafe { Box::from_raw(self.mount.as_ptr()) });
    }
}

impl<F: NorFlash> Engine<F> {
    fn new(region: Region, block_size_bytes: u32, capacity_bytes: u64) -> Result<Self, Error<F::Error>> {
        const {
            assert!(
                (BLOCK_MIN_BYTES as usize).is_multiple_of(F::WRITE_SIZE)
                    && (BLOCK_MIN_BYTES as usize).is_multiple_of(F::READ_SIZE),
                "littlefs's caches hold whole read and program units"
            )
        };
        let block = block_size_bytes;
        let fits = block >= BLOCK_MIN_BYTES
            && block.is_power_of_two()
            && (block as usize).is_multiple_of(F::ERASE_SIZE)
            && region.offset.is_multiple_of(block)
            && region.size_bytes.is_multiple_of(block)
            && region.size_bytes / block >= 2
            && region.end() <= capacity_bytes.min(u64::from(u32::MAX));
        if !fits {
            return Err(Error::Region { region, block_size_bytes, capacity_bytes });
        }
        let cache_size = CACHE_BYTES.min(block);
        let config = ll::lfs_config {
            read: Some(lfs_read::<F>),
            prog: Some(lfs_prog::<F>),
            erase: Some(lfs_erase::<F>),
            sync: Some(lfs_sync),
            read_size: F::READ_SIZE as u32,
            prog_size: F::WRITE_SIZE as u32,
            block_size: block,
            block_count: region.size_bytes / block,
            block_cycles: BLOCK_CYCLES,
            cache_size,
            lookahead_size: LOOKAHEAD_BYTES,
            disk_version: DISK_VERSION,
            ..Default::default()
        };
        let mount = Box::new(Mount {
            lfs: Default::default(),
            config,
            file: Default::default(),
            file_config: Default::default(),
            dir: Default::default(),
            info: Default::default(),
            bridge: Bridge {
                flash: ptr::null_mut(),
                offset: region.offset,
                block_size_bytes: block,
                block_count: region.size_bytes / block,
                error: None,
            },
            read_cache: [0; CACHE_BYTES as usize],
            prog_cache: [0; CACHE_BYTES as usize],
            file_cache: [0; CACHE_BYTES as usize],
            lookahead: [0; LOOKAHEAD_BYTES as usize / 8],
            mounted: false,
        });
        let m = Box::into_raw(mount);
        // SAFETY: `m` is a fresh, live allocation; the pointers stored point into it.
        unsafe {
            (*m).config.context = (&raw mut (*m).bridge).cast();
            (*m).config.read_buffer = (&raw mut (*m).read_cache).cast();
            (*m).config.prog_buffer = (&raw mut (*m).prog_cache).cast();
            (*m).config.lookahead_buffer = (&raw mut (*m).lookahead).cast();
            (*m).file_config.buffer = (&raw mut (*m).file_cache).cast();
        }
        // SAFETY: `Box::into_raw` never returns null.
        Ok(Engine { mount: unsafe { NonNull::new_unchecked(m) }, region })
    }

    /// Calls littlefs through `f` with `flash` lent to the callbacks, and turns a negative return
    /// into an error carrying the flash's error.
    fn call(
        &mut self,
        flash: &mut F,
        op: LfsOp,
        f: impl FnOnce(*mut Mount<F>) -> c_int,
    ) -> Result<u32, Error<F::Error>> {
        let m = self.mount.as_ptr();
        // SAFETY: `m` is live; the bridge holds the flash pointer only until `f` returns.
        unsafe {
            (*m).bridge.flash = flash;
            (*m).bridge.error = None;
        }
        let code = f(m);
        // SAFETY: as above.
        let flash_error = unsafe {
            (*m).bridge.flash = ptr::null_mut();
            (*m).bridge.error.take()
        };
        match u32::try_from(code) {
            Ok(value) => Ok(value),
            Err(_) => Err(Error::Lfs { op, code: LfsError::from_code(code), flash: flash_error }),
        }
    }

    fn format(&mut self, flash: &mut F) -> Result<(), Error<F::Error>> {
        assert!(!self.is_mounted(), "format of a mounted filesystem");
        // SAFETY: littlefs uses `lfs` and `config`, both inside the live allocation.
        self.call(flash, LfsOp::Format, |m| unsafe {
            ll::lfs_format(&raw mut (*m).lfs, &raw const (*m).config)
        })?;
        Ok(())
    }

    fn mount(&mut self, flash: &mut F) -> Result<(), Error<F::Error>> {
        assert!(!self.is_mounted(), "mount of a mounted filesystem");
        // A block count of 0 makes littlefs take the one its superblock records: an image built
        // for a smaller filesystem than the slot (a bundle's `fs_size`) mounts at its own size,
        // as on a Mongoose OS device. Every access stays bounded by the region (the bridge
        // checks each block against it). Formats need the real count, so it is put back.
        // SAFETY: as in `format`; after a success `lfs` keeps pointing at `config`, which does not move.
        let result = self.call(flash, LfsOp::Mount, |m| unsafe {
            let slot_blocks = (*m).config.block_count;
            (*m).config.block_count = 0;
            let code = ll::lfs_mount(&raw mut (*m).lfs, &raw const (*m).config);
            (*m).config.block_count = slot_blocks;
            code
        });
        result?;
        // SAFETY: `m` is live.
        unsafe { (*self.mount.as_ptr()).mounted = true };
        Ok(())
    }

    /// Forgets the mount. littlefs's unmount only releases memory: it never touches the flash.
    fn unmount(&mut self) {
        let m = self.mount.as_ptr();
        // SAFETY: `m` is live; no file or directory is open between calls.
        unsafe {
            if (*m).mounted {
                ll::lfs_unmount(&raw mut (*m).lfs);
                (*m).mounted = false;
            }
        }
    }

    fn is_mounted(&self) -> bool {
        // SAFETY: `mount` is live.
        unsafe { (*self.mount.as_ptr()).mounted }
    }

    /// The type and size of `name`, or `None` if it does not exist.
    fn stat(&mut self, flash: &mut F, name: &CName) -> Result<Option<(u8, u32)>, Error<F::Error>> {
        // SAFETY: `name` is NUL-terminated; `info` is inside the live allocation.
        let result = self.call(flash, LfsOp::Stat, |m| unsafe {
            ll::lfs_stat(&raw mut (*m).lfs, c_str(name), &raw mut (*m).info)
        });
        match result {
            // SAFETY: `m` is live.
            Ok(_) => Ok(Some(unsafe {
                let info = &(*self.mount.as_ptr()).info;
                (info.type_, info.size)
            })),
            Err(error) if error.is_no_entry() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The size of the regular file `name`, or `None` if there is no entry of that name.
    fn file_size(&mut self, flash: &mut F, name: &CName) -> Result<Option<u32>, Error<F::Error>> {
        match self.stat(flash, name)? {
            Some((kind, size)) if u32::from(kind) == ll::lfs_type_LFS_TYPE_REG => Ok(Some(size)),
            Some(_) => Err(Error::Lfs { op: LfsOp::Stat, code: LfsError::IsDir, flash: None }),
            None => Ok(None),
        }
    }

    fn read(
        &mut self,
        flash: &mut F,
        name: &CName,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, Error<F::Error>> {
        let len = buf.len().min(i32::MAX as usize) as u32;
        self.with_file(flash, name, ll::lfs_open_flags_LFS_O_RDONLY, offset, |engine, flash| {
            // SAFETY: the file is open; `buf` holds at least `len` bytes.
            engine.call(flash, LfsOp::Read, |m| unsafe {
                ll::lfs_file_read(&raw mut (*m).lfs, &raw mut (*m).file, buf.as_mut_ptr().cast(), len)
            })
        })
        .map(|read| read as usize)
    }

    fn write(
        &mut self,
        flash: &mut F,
        name: &CName,
        offset: u32,
        data: &[u8],
    ) -> Result<(), Error<F::Error>> {
        let flags = if offset == 0 {
            ll::lfs_open_flags_LFS_O_WRONLY | ll::lfs_open_flags_LFS_O_CREAT | ll::lfs_open_flags_LFS_O_TRUNC
        } else {
            ll::lfs_open_flags_LFS_O_WRONLY
        };
        let Ok(len) = u32::try_from(data.len()) else {
            return Err(Error::Lfs { op: LfsOp::Write, code: LfsError::FileTooLarge, flash: None });
        };
        self.with_file(flash, name, flags, offset, |engine, flash| {
            // SAFETY: the file is open; `data` holds `len` bytes.
            engine.call(flash, LfsOp::Write, |m| unsafe {
                ll::lfs_file_write(&raw mut (*m).lfs, &raw mut (*m).file, data.as_ptr().cast(), len)
            })
        })?;
        Ok(())
    }

    /// Opens `name` with `flags`, seeks to `offset`, runs `f`, and closes the file whatever
    /// happened: an open file stays linked into littlefs's state, and the next open reuses its slot.
    fn with_file<R>(
        &mut self,
        flash: &mut F,
        name: &CName,
        flags: u32,
        offset: u32,
        f: impl FnOnce(&mut Self, &mut F) -> Result<R, Error<F::Error>>,
    ) -> Result<R, Error<F::Error>> {
        // SAFETY: `name` is NUL-terminated; `file` and `file_config` are inside the live allocation,
        // and `file` is closed before this function returns.
        self.call(flash, LfsOp::Open, |m| unsafe {
            ll::lfs_file_opencfg(
                &raw mut (*m).lfs,
                &raw mut (*m).file,
                c_str(name),
                flags as c_int,
                &raw const (*m).file_config,
            )
        })?;
        let result = match i32::try_from(offset) {
            Ok(offset) => self
                // SAFETY: the file is open.
                .call(flash, LfsOp::Seek, |m| unsafe {
                    ll::lfs_file_seek(
                        &raw mut (*m).lfs,
                        &raw mut (*m).file,
                        offset,
                        ll::lfs_whence_flags_LFS_SEEK_SET as c_int,
                    )
                })
                .and_then(|_| f(self, flash)),
            Err(_) => Err(Error::Lfs { op: LfsOp::Seek, code: LfsError::Invalid, flash: None }),
        };
        // SAFETY: the file is open; closing unlinks it even when its final commit fails.
        let closed = self.call(flash, LfsOp::Close, |m| unsafe {
            ll::lfs_file_close(&raw mut (*m).lfs, &raw mut (*m).file)
        });
        let value = result?;
        closed?;
        Ok(value)
    }

    fn remove(&mut self, flash: &mut F, name: &CName) -> Result<(), Error<F::Error>> {
        // SAFETY: `name` is NUL-terminated.
        self.call(flash, LfsOp::Remove, |m| unsafe { ll::lfs_remove(&raw mut (*m).lfs, c_str(name)) })?;
        Ok(())
    }

    fn rename(&mut self, flash: &mut F, from: &CName, to: &CName) -> Result<(), Error<F::Error>> {
        // SAFETY: both names are NUL-terminated.
        self.call(flash, LfsOp::Rename, |m| unsafe {
            ll::lfs_rename(&raw mut (*m).lfs, c_str(from), c_str(to))
        })?;
        Ok(())
    }

    /// Copies the name of the `index`-th regular file of the root into `name`.
    fn nth_file(
        &mut self,
        flash: &mut F,
        index: u32,
        name: &mut [u8],
    ) -> Result<Option<usize>, Error<F::Error>> {
        let root = c"/";
        // SAFETY: `dir` is inside the live allocation and closed before this function returns.
        self.call(flash, LfsOp::OpenDir, |m| unsafe {
            ll::lfs_dir_open(&raw mut (*m).lfs, &raw mut (*m).dir, root.as_ptr())
        })?;
        let found = self.find_nth_file(flash, index);
        // SAFETY: the directory is open.
        let closed = self.call(flash, LfsOp::CloseDir, |m| unsafe {
            ll::lfs_dir_close(&raw mut (*m).lfs, &raw mut (*m).dir)
        });
        let found = found?;
        closed?;
        let Some(()) = found else { return Ok(None) };
        // SAFETY: `m` is live; littlefs NUL-terminates the name it stores in `info`.
        let info_name = unsafe { &(*self.mount.as_ptr()).info.name };
        let len = info_name.iter().position(|&c| c == 0).unwrap_or(info_name.len());
        if len > name.len() {
            return Err(Error::NameTooLong { len_bytes: len, buf_bytes: name.len() });
        }
        // A C `char` is signed on the host and unsigned on RISC-V: take its byte either way.
        for (to, &from) in name.iter_mut().zip(&info_name[..len]) {
            [*to] = from.to_ne_bytes();
        }
        Ok(Some(len))
    }

    /// Reads the open root directory up to its `index`-th regular file, which ends in `info`.
    /// Bounded by the directory: littlefs returns 0 at its end.
    fn find_nth_file(&mut self, flash: &mut F, index: u32) -> Result<Option<()>, Error<F::Error>> {
        let mut files_seen = 0;
        loop {
            // SAFETY: the directory is open; `info` is inside the live allocation.
            let more = self.call(flash, LfsOp::ReadDir, |m| unsafe {
                ll::lfs_dir_read(&raw mut (*m).lfs, &raw mut (*m).dir, &raw mut (*m).info)
            })?;
            if more == 0 {
                return Ok(None);
            }
            // SAFETY: `m` is live.
            let kind = unsafe { (*self.mount.as_ptr()).info.type_ };
            if u32::from(kind) != ll::lfs_type_LFS_TYPE_REG {
                continue;
            }
            if files_seen == index {
                return Ok(Some(()));
            }
            files_seen += 1;
        }
    }

    fn traverse(&mut self, flash: &mut F) -> Result<u32, Error<F::Error>> {
        // SAFETY: `lfs` is mounted.
        self.call(flash, LfsOp::Traverse, |m| unsafe { ll::lfs_fs_size(&raw mut (*m).lfs) })
    }
}

/// The flash an image is built in: RAM, with the smallest erase unit any block size is a multiple
/// of. It does not catch a second program: littlefs on the simulator's strict `SimFlash` is what
/// the tests hold to the rules.
type ImageFlash<'a> = RamFlash<'a, 4, { BLOCK_MIN_BYTES as usize }>;
