//! The zip layer: a writer of stored entries laid out as mos's patched `archive/zip` lays them out,
//! with hooks for the local-header defects, and a reader of local headers for tests and inspection.

use std::fmt;

const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const END_SIGNATURE: u32 = 0x0605_4b50;
const DESCRIPTOR_SIGNATURE: u32 = 0x0807_4b50;

const LOCAL_HEADER_BYTES: usize = 30;
const DESCRIPTOR_BYTES: usize = 16;

/// "Version needed to extract" and "version made by" (2.0, MS-DOS), as Go's `archive/zip` writes.
const ZIP_VERSION: u16 = 20;
/// General-purpose bit 3: CRC-32 and sizes follow the data in a data descriptor.
pub const FLAG_DATA_DESCRIPTOR: u16 = 0x0008;
/// General-purpose bit 11: the name is UTF-8 (set, as Go and Python set it, for non-ASCII names).
pub const FLAG_UTF8_NAME: u16 = 0x0800;
/// Compression method 0: stored.
pub const METHOD_STORED: u16 = 0;
/// Compression method 8: deflate.
pub const METHOD_DEFLATE: u16 = 8;

/// Most entries [`read_entries`] accepts: the count a (non-zip64) end record can hold.
pub const ENTRIES_MAX: usize = u16::MAX as usize;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 (ISO-HDLC, the zip one) of `data`.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    CRC32.checksum(data)
}

/// What to get wrong in one entry's local header. The central directory always holds the truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalFault {
    None,
    WrongCrc,
    Compressed,
    Streaming,
}

/// One entry to write: its full name (folder included), its payload, its local-header fault.
pub(crate) struct EntrySpec {
    pub(crate) name: String,
    pub(crate) data: Vec<u8>,
    pub(crate) fault: LocalFault,
}

/// What the central directory needs to know about an entry already written.
pub(crate) struct CentralRecord {
    name: String,
    flags: u16,
    crc32: u32,
    size_bytes: u32,
    header_offset: u32,
}

/// Appends the local header, the data and (for [`LocalFault::Streaming`]) the data descriptor of
/// each entry, in order, and returns what the central directory needs.
pub(crate) fn write_entries(out: &mut Vec<u8>, entries: &[EntrySpec]) -> Vec<CentralRecord> {
    entries.iter().map(|entry| write_entry(out, entry)).collect()
}

fn write_entry(out: &mut Vec<u8>, entry: &EntrySpec) -> CentralRecord {
    let header_offset = to_u32(out.len(), "archive offset");
    let size_bytes = to_u32(entry.data.len(), "entry size");
    let crc32 = crc32(&entry.data);
    let mut flags = name_flags(&entry.name);
    let (mut method, mut local_crc32, mut local_size_bytes) = (METHOD_STORED, crc32, size_bytes);
    match entry.fault {
        LocalFault::None => {}
        LocalFault::WrongCrc => local_crc32 = !crc32,
        LocalFault::Compressed => method = METHOD_DEFLATE,
        LocalFault::Streaming => {
            flags |= FLAG_DATA_DESCRIPTOR;
            (local_crc32, local_size_bytes) = (0, 0);
        }
    }
    put_u32(out, LOCAL_SIGNATURE);
    put_u16(out, ZIP_VERSION);
    put_u16(out, flags);
    put_u16(out, method);
    // Modification time and date stay 0, as in mos's output.
    put_u16(out, 0);
    put_u16(out, 0);
    put_u32(out, local_crc32);
    put_u32(out, local_size_bytes);
    put_u32(out, local_size_bytes);
    put_u16(out, name_len(&entry.name));
    put_u16(out, 0);
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(&entry.data);
    if entry.fault == LocalFault::Streaming {
        put_u32(out, DESCRIPTOR_SIGNATURE);
        put_u32(out, crc32);
        put_u32(out, size_bytes);
        put_u32(out, size_bytes);
    }
    CentralRecord { name: entry.name.clone(), flags, crc32, size_bytes, header_offset }
}

/// Appends the central directory and the end-of-central-directory record (no comment).
pub(crate) fn write_central_directory(out: &mut Vec<u8>, records: &[CentralRecord]) {
    let directory_offset = to_u32(out.len(), "central directory offset");
    for record in records {
        put_u32(out, CENTRAL_SIGNATURE);
        put_u16(out, ZIP_VERSION);
        put_u16(out, ZIP_VERSION);
        put_u16(out, record.flags);
        put_u16(out, METHOD_STORED);
        put_u16(out, 0);
        put_u16(out, 0);
        put_u32(out, record.crc32);
        put_u32(out, record.size_bytes);
        put_u32(out, record.size_bytes);
        put_u16(out, name_len(&record.name));
        // Extra field length, comment length, disk number, internal and external attributes.
        put_u16(out, 0);
        put_u16(out, 0);
        put_u16(out, 0);
        put_u16(out, 0);
        put_u32(out, 0);
        put_u32(out, record.header_offset);
        out.extend_from_slice(record.name.as_bytes());
    }
    let directory_bytes = to_u32(out.len(), "archive size") - directory_offset;
    let count =
        u16::try_from(records.len()).expect("more than 65535 entries needs zip64, which mos never writes");
    put_u32(out, END_SIGNATURE);
    put_u16(out, 0);
    put_u16(out, 0);
    put_u16(out, count);
    put_u16(out, count);
    put_u32(out, directory_bytes);
    put_u32(out, directory_offset);
    put_u16(out, 0);
}

fn name_flags(name: &str) -> u16 {
    if name.is_ascii() { 0 } else { FLAG_UTF8_NAME }
}

fn name_len(name: &str) -> u16 {
    u16::try_from(name.len()).expect("zip entry names are at most 65535 bytes")
}

fn to_u32(value: usize, what: &str) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| panic!("{what} {value} needs zip64, which mos never writes"))
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// One entry of an archive as its local header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (folder included), decoded as UTF-8 with invalid bytes replaced.
    pub name: String,
    /// General-purpose flags; mos writes 0 (see [`FLAG_DATA_DESCRIPTOR`], [`FLAG_UTF8_NAME`]).
    pub flags: u16,
    /// Compression method; mos writes [`METHOD_STORED`].
    pub method: u16,
    /// CRC-32 from the local header (0 in a streaming entry: see [`Entry::descriptor`]).
    pub crc32: u32,
    /// Compressed size from the local header.
    pub compressed_size_bytes: u32,
    /// Uncompressed size from the local header.
    pub uncompressed_size_bytes: u32,
    /// The local header's extra field (where signed bundles keep their signatures, header ID 0x293a).
    pub extra: Vec<u8>,
    /// Offset of the local header's signature.
    pub header_offset: u32,
    /// Offset of the first data byte.
    pub data_offset: u32,
    /// Bytes of data that follow the header: the local header's compressed size, or the data
    /// descriptor's when flag bit 3 is set.
    pub data_len_bytes: u32,
    /// The data descriptor after the data, present when flag bit 3 is set.
    pub descriptor: Option<Descriptor>,
}

/// A data descriptor (`PK\7\8`, CRC-32, compressed size, uncompressed size) after an entry's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub crc32: u32,
    pub compressed_size_bytes: u32,
    pub uncompressed_size_bytes: u32,
}

impl Entry {
    /// The entry's data inside `zip`, the archive this entry was read from.
    pub fn data<'a>(&self, zip: &'a [u8]) -> &'a [u8] {
        let start = self.data_offset as usize;
        &zip[start..start + self.data_len_bytes as usize]
    }
}

/// Why [`read_entries`] gave up. Offsets are from the start of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The archive ends inside a local header, a name, an extra field or an entry's data.
    Truncated { offset: u32, what: &'static str, needed_bytes: u32, left_bytes: u32 },
    /// Neither a local header, a central directory header nor an end record starts at `offset`.
    UnexpectedSignature { offset: u32, found: u32 },
    /// Flag bit 3 is set, but no `PK\7\8` descriptor whose size matches follows the entry's data.
    DescriptorNotFound { name: String, data_offset: u32 },
    /// More than [`ENTRIES_MAX`] local headers.
    TooManyEntries,
    /// The input is 4 GiB or larger: zip64, which mos never writes.
    TooLarge { len_bytes: u64 },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Truncated { offset, what, needed_bytes, left_bytes } => write!(
                f,
                "the archive ends inside {what} at offset {offset:#x} (needs {needed_bytes} bytes, \
                 {left_bytes} left)\nhelp: the file was cut short; build or download it again"
            ),
            ReadError::UnexpectedSignature { offset, found } => write!(
                f,
                "no zip header at offset {offset:#x} (found {found:#010x}, expected a local header \
                 0x04034b50, a central directory 0x02014b50 or an end record 0x06054b50)\n\
                 help: this is not a zip archive, or an entry's size in its local header is wrong"
            ),
            ReadError::DescriptorNotFound { name, data_offset } => write!(
                f,
                "entry {name:?} sets flag bit 3 (sizes after the data) but no data descriptor matches \
                 its data at offset {data_offset:#x}\nhelp: the archive is damaged; build it again"
            ),
            ReadError::TooManyEntries => {
                write!(f, "more than {ENTRIES_MAX} entries\nhelp: zip64 archives are not firmware bundles")
            }
            ReadError::TooLarge { len_bytes } => write!(
                f,
                "the input is {len_bytes} bytes, more than a zip without zip64 can address\n\
                 help: zip64 archives are not firmware bundles"
            ),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads the local headers of `zip` in archive order, as a device's streaming updater meets them.
///
/// Reading stops at the first central directory header or end record, or at the end of the input
/// (an archive without a central directory is read, not refused). Entries are neither decompressed
/// nor checked against their CRC-32; compare [`Entry::data`] with [`Entry::crc32`] to check.
///
/// ```
/// let zip = ota_bundle::Bundle::new("demo", "esp32").app(vec![1, 2, 3]).build();
/// let entries = ota_bundle::read_entries(&zip).unwrap();
/// assert_eq!(entries[0].name, "manifest.json");
/// assert_eq!(entries[1].data(&zip), [1, 2, 3]);
/// ```
pub fn read_entries(zip: &[u8]) -> Result<Vec<Entry>, ReadError> {
    if u32::try_from(zip.len()).is_err() {
        return Err(ReadError::TooLarge { len_bytes: zip.len() as u64 });
    }
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < zip.len() {
        let signature = read_u32(zip, offset, "a header signature")?;
        match signature {
            LOCAL_SIGNATURE if entries.len() == ENTRIES_MAX => return Err(ReadError::TooManyEntries),
            LOCAL_SIGNATURE => {
                let entry = read_entry(zip, offset)?;
                offset = entry_end(&entry);
                entries.push(entry);
            }
            CENTRAL_SIGNATURE | END_SIGNATURE => break,
            found => return Err(ReadError::UnexpectedSignature { offset: offset as u32, found }),
        }
    }
    Ok(entries)
}

fn read_entry(zip: &[u8], offset: usize) -> Result<Entry, ReadError> {
    let header = take(zip, offset, LOCAL_HEADER_BYTES, "a local header")?;
    let field16 = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let field32 =
        |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let name_start = offset + LOCAL_HEADER_BYTES;
    let name = take(zip, name_start, usize::from(field16(26)), "an entry name")?;
    let extra_start = name_start + name.len();
    let extra = take(zip, extra_start, usize::from(field16(28)), "an extra field")?;
    let data_offset = extra_start + extra.len();
    let mut entry = Entry {
        name: String::from_utf8_lossy(name).into_owned(),
        flags: field16(6),
        method: field16(8),
        crc32: field32(14),
        compressed_size_bytes: field32(18),
        uncompressed_size_bytes: field32(22),
        extra: extra.to_vec(),
        header_offset: offset as u32,
        data_offset: to_u32(data_offset, "data offset"),
        data_len_bytes: field32(18),
        descriptor: None,
    };
    if entry.flags & FLAG_DATA_DESCRIPTOR != 0 {
        let descriptor = find_descriptor(zip, data_offset).ok_or_else(|| ReadError::DescriptorNotFound {
            name: entry.name.clone(),
            data_offset: entry.data_offset,
        })?;
        entry.data_len_bytes = descriptor.compressed_size_bytes;
        entry.descriptor = Some(descriptor);
    }
    take(zip, data_offset, entry.data_len_bytes as usize, "an entry's data")?;
    Ok(entry)
}

/// Finds the first `PK\7\8` descriptor after `data_offset` whose compressed size is the distance
/// from `data_offset` to it. Descriptors without the optional signature are not recognised.
fn find_descriptor(zip: &[u8], data_offset: usize) -> Option<Descriptor> {
    let last_start = zip.len().checked_sub(DESCRIPTOR_BYTES)?;
    (data_offset..=last_start).find_map(|at| {
        let word = |i: usize| u32::from_le_bytes(zip[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
        let fits = word(0) == DESCRIPTOR_SIGNATURE && word(2) as usize == at - data_offset;
        fits.then(|| Descriptor {
            crc32: word(1),
            compressed_size_bytes: word(2),
            uncompressed_size_bytes: word(3),
        })
    })
}

fn entry_end(entry: &Entry) -> usize {
    let data_end = entry.data_offset as usize + entry.data_len_bytes as usize;
    if entry.descriptor.is_some() { data_end + DESCRIPTOR_BYTES } else { data_end }
}

fn take<'a>(zip: &'a [u8], offset: usize, len: usize, what: &'static str) -> Result<&'a [u8], ReadError> {
    zip.get(offset..offset.saturating_add(len)).ok_or(ReadError::Truncated {
        offset: to_u32(offset, "offset"),
        what,
        needed_bytes: to_u32(len, "length"),
        left_bytes: to_u32(zip.len().saturating_sub(offset), "length"),
    })
}

fn read_u32(zip: &[u8], offset: usize, what: &'static str) -> Result<u32, ReadError> {
    let bytes = take(zip, offset, 4, what)?;
    Ok(u32::from_le_bytes(bytes.try_into().unwrap()))
}
