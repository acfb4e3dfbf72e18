//! The first-boot filesystem merge (§4 of the reference).
//!
//! On the first boot of new firmware, every regular file in the root of the old filesystem that
//! the new filesystem lacks is copied into the new one. Files shipped in the new image win: they
//! are never overwritten. User files such as `conf9.json`, which no image carries, survive the
//! update this way. The old filesystem is only listed and read, never written.
//!
//! | step | the merge                                           | a power cut here leaves          |
//! |------|-----------------------------------------------------|----------------------------------|
//! | 1    | lists the old root, checking every name and count   | the new filesystem untouched     |
//! | 2    | removes a leftover [`TEMP_NAME`] from the new one   | the temporary file, or none      |
//! | 3    | copies an old file the new one lacks to the temp    | a partial temporary file         |
//! | 4    | renames [`TEMP_NAME`] to the file's name (atomic)   | the temporary file or the copy   |
//!
//! Running the merge again after an interruption at any point gives the same new filesystem as an
//! uninterrupted run: step 2 discards a partial copy, and a file renamed into place before the
//! interruption is a whole copy of the old one, which the rerun keeps as it keeps image files.
//! The merge never lists the new filesystem, so it does not depend on that listing's order while
//! it writes there.
//!
//! [`TEMP_NAME`] is reserved: a file of that name in the new image is removed, and one in the old
//! filesystem is not copied.

use crate::fs::{FileSystem, NAME_MAX_BYTES};
use crate::state::Label;

/// Most entries of the old root the merge considers; more is [`MergeError::TooManyFiles`].
pub const MERGE_FILES_MAX: u32 = 128;

/// The temporary file a copy is written to before it is renamed into place.
pub const TEMP_NAME: &str = ".ota-merge.tmp";

/// Size of the buffer the old root is listed through: LittleFS's `LFS_NAME_MAX`. A name up to this
/// long but over [`NAME_MAX_BYTES`] is reported as [`MergeError::NameTooLong`] with its first bytes;
/// a longer one makes the old filesystem's `list` fail.
pub const LIST_NAME_MAX_BYTES: usize = 255;

const _: () = assert!(TEMP_NAME.len() <= NAME_MAX_BYTES);
const _: () = assert!(LIST_NAME_MAX_BYTES >= NAME_MAX_BYTES);
const _: () = assert!(MERGE_FILES_MAX < u32::MAX);

/// A file name the merge handles, stored inline.
pub type FileName = Label<NAME_MAX_BYTES>;

/// What one merge did. `copied + kept_new + skipped` is the number of entries in the old root.
///
/// A rerun after an interruption counts the files the first run already renamed into place as
/// `kept_new`; the filesystem it leaves is the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Files of the old root copied into the new filesystem.
    pub copied: u32,
    /// Files of the old root that the new filesystem already holds: its copy wins.
    pub kept_new: u32,
    /// Files of the old root the filter refused, and an old [`TEMP_NAME`].
    pub skipped: u32,
    pub bytes_copied: u64,
    /// A temporary file left by an interrupted merge was removed before copying.
    pub removed_leftover_temp: bool,
}

/// A call on the old filesystem. The merge makes no other kind there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldOp {
    List,
    Read { offset: u32 },
}

/// A call on the new filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewOp {
    /// Checking whether the file exists.
    Exists,
    /// Removing a leftover [`TEMP_NAME`].
    RemoveTemp,
    /// Writing the copy of the file into [`TEMP_NAME`].
    WriteTemp { offset: u32 },
    /// Renaming [`TEMP_NAME`] to the file's name.
    RenameTemp,
}

/// Why a merge stopped. In every case the old filesystem is untouched. After an I/O error the
/// merge can be run again; after the others it stopped before writing the new filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeError<O, N> {
    /// A call on the old filesystem failed while handling entry `index` of its root, named
    /// `file` (empty when listing it failed).
    Old { op: OldOp, index: u32, file: FileName, error: O },
    /// A call on the new filesystem failed while handling `file` (the old file being merged, or
    /// [`TEMP_NAME`] when removing a leftover).
    New { op: NewOp, file: FileName, error: N },
    /// The old root holds more than `files_max` entries.
    TooManyFiles { files_max: u32 },
    /// Entry `index` of the old root has a `len_bytes`-byte name, longer than
    /// [`NAME_MAX_BYTES`]; `prefix` is its beginning.
    NameTooLong { index: u32, len_bytes: usize, prefix: FileName },
    /// Entry `index` of the old root has a name that is empty, not UTF-8, or holds a NUL or `/`.
    NameInvalid { index: u32 },
    /// The old filesystem returned more than `u32::MAX` bytes for `file`. The partial copy stays in
    /// [`TEMP_NAME`] until the next merge removes it.
    FileTooLarge { index: u32, file: FileName },
}

impl<O: core::fmt::Debug, N: core::fmt::Debug> core::fmt::Display for MergeError<O, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("filesystem merge failed: ")?;
        match self {
            MergeError::Old { op: OldOp::List, index, error, .. } => {
                write!(f, "listing entry {index} of the old root failed ({error:?})")?;
            }
            MergeError::Old { op: OldOp::Read { offset }, file, error, .. } => {
                write!(f, "reading {file} from the old filesystem at offset {offset} failed ({error:?})")?;
            }
            MergeError::New { op, file, error } => {
                match op {
                    NewOp::Exists => write!(f, "checking for {file} on the new filesystem")?,
                    NewOp::RemoveTemp => write!(f, "removing the leftover {file} from the new filesystem")?,
                    NewOp::WriteTemp { offset } => write!(
                        f,
                        "writing the copy of {file} to {TEMP_NAME} at offset {offset} on the new filesystem"
                    )?,
                    NewOp::RenameTemp => write!(f, "renaming {TEMP_NAME} to {file} on the new filesystem")?,
                }
                write!(f, " failed ({error:?})")?;
            }
            MergeError::TooManyFiles { files_max } => {
                return write!(
                    f,
                    "the old root holds more than {files_max} files; \
                     the old filesystem is untouched and the new one was not written"
                );
            }
            MergeError::NameTooLong { index, len_bytes, prefix } => {
                return write!(
                    f,
                    "entry {index} of the old root has a {len_bytes}-byte name ({prefix}…), \
                     longer than {NAME_MAX_BYTES} bytes; \
                     the old filesystem is untouched and the new one was not written"
                );
            }
            MergeError::NameInvalid { index } => {
                return write!(
                    f,
                    "entry {index} of the old root has a name that is empty, not UTF-8, or holds NUL or '/'; \
                     the old filesystem is untouched and the new one was not written"
                );
            }
            MergeError::FileTooLarge { file, .. } => {
                return write!(
                    f,
                    "{file} in the old filesystem is longer than {} bytes and was not copied; \
                     the old filesystem is untouched",
                    u32::MAX
                );
            }
        }
        f.write_str("; the old filesystem is untouched; the merge can be run again")
    }
}

type Error<O, N> = MergeError<<O as FileSystem>::Error, <N as FileSystem>::Error>;

/// Merges `old` into `new`, copying every file of the old root that `new` lacks, through `buf`
/// (any non-zero size). See the module documentation for the steps and their power safety.
///
/// # Panics
///
/// If `buf` is empty, or a filesystem breaks its contract by returning more bytes from `list` or
/// `read` than the buffer it was given holds.
pub fn merge<O: FileSystem, N: FileSystem>(
    old: &mut O,
    new: &mut N,
    buf: &mut [u8],
) -> Result<MergeReport, Error<O, N>> {
    merge_filtered(old, new, buf, |_| true)
}

/// [`merge`], copying only the files for which `should_copy(name)` is true, like Mongoose OS's
/// `mgos_ota_merge_fs_should_copy_file()`. `should_copy` must answer the same for a name every
/// time, or a rerun after an interruption may not reach the same result.
pub fn merge_filtered<O: FileSystem, N: FileSystem>(
    old: &mut O,
    new: &mut N,
    buf: &mut [u8],
    mut should_copy: impl FnMut(&str) -> bool,
) -> Result<MergeReport, Error<O, N>> {
    assert!(!buf.is_empty(), "files are copied through a non-empty buffer");
    let mut merger = Merger { old, new, buf };
    let mut report = MergeReport::default();

    // Every name is checked before the new filesystem is written, so a bad old root changes nothing.
    let files = merger.count_old_files()?;
    report.removed_leftover_temp = merger.remove_leftover_temp()?;

    let mut name_buf = [0; LIST_NAME_MAX_BYTES];
    for index in 0..files {
        // The old root is not written, so its listing is the one counted above.
        let Some(name) = merger.old_name(index, &mut name_buf)? else { break };
        if name == TEMP_NAME || !should_copy(name) {
            report.skipped += 1;
        } else if merger.new_has(name)? {
            report.kept_new += 1;
        } else {
            report.bytes_copied += u64::from(merger.copy(index, name)?);
            report.copied += 1;
        }
    }
    Ok(report)
}

struct Merger<'a, O, N> {
    old: &'a mut O,
    new: &'a mut N,
    buf: &'a mut [u8],
}

impl<O: FileSystem, N: FileSystem> Merger<'_, O, N> {
    /// Counts the entries of the old root, checking every name.
    fn count_old_files(&mut self) -> Result<u32, Error<O, N>> {
        let mut name_buf = [0; LIST_NAME_MAX_BYTES];
        for index in 0..=MERGE_FILES_MAX {
            if self.old_name(index, &mut name_buf)?.is_none() {
                return Ok(index);
            }
        }
        Err(MergeError::TooManyFiles { files_max: MERGE_FILES_MAX })
    }

    /// The name of entry `index` of the old root, checked, or `None` past the last entry.
    fn old_name<'n>(
        &mut self,
        index: u32,
        name_buf: &'n mut [u8; LIST_NAME_MAX_BYTES],
    ) -> Result<Option<&'n str>, Error<O, N>> {
        let listed = self.old.list(index, name_buf).map_err(|error| MergeError::Old {
            op: OldOp::List,
            index,
            file: FileName::EMPTY,
            error,
        })?;
        let Some(len_bytes) = listed else { return Ok(None) };
        assert!(len_bytes <= name_buf.len(), "FileSystem::list returned a name longer than its buffer");
        let name =
            core::str::from_utf8(&name_buf[..len_bytes]).map_err(|_| MergeError::NameInvalid { index })?;
        if name.is_empty() || name.contains(['\0', '/']) {
            return Err(MergeError::NameInvalid { index });
        }
        if len_bytes > NAME_MAX_BYTES {
            let prefix = file_name(&name[..name.floor_char_boundary(NAME_MAX_BYTES)]);
            return Err(MergeError::NameTooLong { index, len_bytes, prefix });
        }
        Ok(Some(name))
    }

    /// Removes a temporary file an interrupted merge left behind; true if there was one.
    fn remove_leftover_temp(&mut self) -> Result<bool, Error<O, N>> {
        let new_error = |op| move |error| MergeError::New { op, file: file_name(TEMP_NAME), error };
        if !self.new.exists(TEMP_NAME).map_err(new_error(NewOp::Exists))? {
            return Ok(false);
        }
        self.new.remove(TEMP_NAME).map_err(new_error(NewOp::RemoveTemp))?;
        Ok(true)
    }

    fn new_has(&mut self, name: &str) -> Result<bool, Error<O, N>> {
        self.new.exists(name).map_err(|error| MergeError::New {
            op: NewOp::Exists,
            file: file_name(name),
            error,
        })
    }

    /// Copies old file `name` (entry `index`) into the temporary file, then renames it into place.
    /// Returns the number of bytes copied.
    fn copy(&mut self, index: u32, name: &str) -> Result<u32, Error<O, N>> {
        let file = file_name(name);
        let mut offset: u32 = 0;
        // Bounded: every pass but the last moves `offset` forward by at least one byte, and the
        // file is refused before `offset` would pass `u32::MAX`.
        loop {
            let n = self.old.read(name, offset, self.buf).map_err(|error| MergeError::Old {
                op: OldOp::Read { offset },
                index,
                file,
                error,
            })?;
            assert!(n <= self.buf.len(), "FileSystem::read returned more bytes than its buffer holds");
            // The write at offset 0 creates the temporary file, or truncates a stale one, so an
            // empty file is copied too.
            if n > 0 || offset == 0 {
                self.new.write(TEMP_NAME, offset, &self.buf[..n]).map_err(|error| MergeError::New {
                    op: NewOp::WriteTemp { offset },
                    file,
                    error,
                })?;
            }
            if n == 0 {
                break;
            }
            offset = u32::try_from(n)
                .ok()
                .and_then(|n| offset.checked_add(n))
                .ok_or(MergeError::FileTooLarge { index, file })?;
        }
        self.new.rename(TEMP_NAME, name).map_err(|error| MergeError::New {
            op: NewOp::RenameTemp,
            file,
            error,
        })?;
        Ok(offset)
    }
}

/// `name` as a [`FileName`]. Callers pass names checked by `old_name` or the reserved name.
fn file_name(name: &str) -> FileName {
    FileName::new(name).expect("checked names fit a FileName")
}
