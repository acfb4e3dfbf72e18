//! A streaming reader of Mongoose OS `fw.zip` archives: stored entries only, sizes and CRC-32 in
//! the local header, the central directory ends the stream.

/// Longest entry name accepted (after the leading folder is stripped), as Mongoose OS's
/// `name[50]`: names of this many bytes or more are "Too long file name".
pub const NAME_MAX_BYTES: usize = 50;
/// Most entries one archive may hold.
pub const ENTRIES_MAX: u32 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZipError {
    /// Not `PK\3\4` nor `PK\1\2` where a header was due. "Malformed archive (invalid file header)"
    InvalidHeader {
        offset: u32,
    },
    /// Compression method other than 0. "Cannot handle compressed .zip"
    Compressed {
        method: u16,
    },
    /// General-purpose bit 3: sizes come after the data. "Archived file size is unknown"
    SizeUnknown,
    /// Compressed and uncompressed sizes differ, encrypted entry or zip64 marker. "Malformed archive"
    Malformed,
    /// "Too long file name"
    NameTooLong {
        len: u16,
    },
    /// Entry name is not UTF-8.
    NameNotUtf8,
    /// "Invalid CRC"
    InvalidCrc {
        expected: u32,
        found: u32,
    },
    TooManyEntries,
}

/// What one call to [`ZipReader::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ZipEvent<'a> {
    /// A local header was read. `name` has its first path component stripped if it had a `/`.
    EntryStart { name: &'a str, size_bytes: u32, crc32: u32 },
    /// Bytes of the current entry, a sub-slice of the input (never copied).
    Data(&'a [u8]),
    /// The current entry is complete and its CRC-32 matched the header's.
    EntryEnd,
    /// The central directory was reached: the archive is complete. Later input is ignored.
    End,
}

pub struct ZipReader {}

impl ZipReader {
    pub fn new() -> ZipReader {
        todo!()
    }

    /// Consumes a prefix of `input` and reports at most one event. Returns how many bytes were
    /// consumed (0 only when `input` is empty or the archive already ended).
    pub fn feed<'a>(&'a mut self, input: &'a [u8]) -> Result<(usize, Option<ZipEvent<'a>>), ZipError> {
        let _ = input;
        todo!()
    }

    /// True once [`ZipEvent::End`] was reported.
    pub fn is_finished(&self) -> bool {
        todo!()
    }

    /// Bytes of the archive consumed so far.
    pub fn position(&self) -> u32 {
        todo!()
    }
}
