//! The filesystem as the merge sees it: a flat root directory of named files.
//!
//! The core never knows which filesystem sits behind this trait. The simulator implements it over
//! LittleFS on its flash model; tests implement it in memory.

/// Longest file name the merge handles, in bytes.
pub const NAME_MAX_BYTES: usize = 64;

/// A flat view of a filesystem's root directory.
///
/// Names are UTF-8 without `/`. Only regular files in the root are listed: Mongoose OS merges the
/// top level only.
pub trait FileSystem {
    type Error: core::fmt::Debug;

    /// Writes the name of the `index`-th regular file of the root directory into `name` and
    /// returns its length, or `None` past the last file. The order is stable while the filesystem
    /// is not written. A name longer than `name.len()` is an error.
    fn list(&mut self, index: u32, name: &mut [u8]) -> Result<Option<usize>, Self::Error>;

    fn exists(&mut self, name: &str) -> Result<bool, Self::Error>;

    /// Reads from `offset` into `buf`; returns the number of bytes read, 0 at the end of the file.
    fn read(&mut self, name: &str, offset: u32, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// Writes `data` at `offset`. A write at offset 0 creates the file or truncates it first.
    fn write(&mut self, name: &str, offset: u32, data: &[u8]) -> Result<(), Self::Error>;

    fn remove(&mut self, name: &str) -> Result<(), Self::Error>;

    /// Renames `from` to `to`, replacing `to` if it exists. Atomic: after a power cut, either the
    /// old or the new name holds the file, never neither. LittleFS guarantees this.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Self::Error>;
}
