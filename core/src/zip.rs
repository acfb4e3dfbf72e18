//! A streaming reader of Mongoose OS `fw.zip` archives: stored entries only, sizes and CRC-32 in
//! the local header, the central directory ends the stream.
//!
//! The reader sees each byte once and keeps only what it must: the 30-byte local header and the
//! stripped entry name, in fixed buffers. Extra fields are skipped, entry data is handed back as
//! sub-slices of the input. Each local header, little-endian:
//!
//! | bytes  | field             | what the reader does with it                                     |
//! |--------|-------------------|------------------------------------------------------------------|
//! | 0..4   | signature         | `PK\3\4` an entry, `PK\1\2` or `PK\5\6` the end, else an error   |
//! | 4..6   | version needed    | ignored                                                          |
//! | 6..8   | flags             | bit 0 (encrypted) and bit 3 (sizes after the data) are refused   |
//! | 8..10  | method            | must be 0 (stored)                                               |
//! | 10..14 | time and date     | ignored                                                          |
//! | 14..18 | CRC-32            | checked at the end of the entry when nonzero                     |
//! | 18..22 | compressed size   | must equal the uncompressed size, not be `0xffff_ffff` (zip64)   |
//! | 22..26 | uncompressed size | the entry's size                                                 |
//! | 26..28 | name length       | the name follows the header                                      |
//! | 28..30 | extra length      | the extra field follows the name; skipped                        |
//!
//! Entry steps; one [`ZipReader::feed`] call reports at most one event:
//!
//! | phase  | reads                 | then                                                         |
//! |--------|-----------------------|--------------------------------------------------------------|
//! | header | 4 bytes, then 26 more | end signature: [`ZipEvent::End`]; else the checks, name      |
//! | name   | name length bytes     | strip the first path component, the checks, extra            |
//! | extra  | extra length bytes    | [`ZipEvent::EntryStart`], data                               |
//! | data   | size bytes            | [`ZipEvent::Data`] per call; then the CRC check and, in the  |
//! |        |                       | next call, [`ZipEvent::EntryEnd`]                            |

use crate::state::CRC32;

/// Longest entry name accepted (after the leading folder is stripped), as Mongoose OS's
/// `name[50]`: names of this many bytes or more are "Too long file name".
pub const NAME_MAX_BYTES: usize = 50;
/// Most entries one archive may hold. Only counted, never stored: it bounds the work on a
/// hostile archive. A part whose `src` is a directory becomes one entry per file, so real
/// bundles can hold far more than a handful (Mongoose OS sets no bound).
pub const ENTRIES_MAX: u32 = 1024;

const HEADER_SIZE_BYTES: usize = 30;
const SIGNATURE_SIZE_BYTES: usize = 4;
const SIGNATURE_LOCAL: [u8; 4] = *b"PK\x03\x04";
const SIGNATURE_CENTRAL: [u8; 4] = *b"PK\x01\x02";
const SIGNATURE_END: [u8; 4] = *b"PK\x05\x06";
const FLAG_ENCRYPTED: u16 = 1 << 0;
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
const METHOD_STORED: u16 = 0;
const SIZE_ZIP64: u32 = 0xffff_ffff;

const _: () = assert!(NAME_MAX_BYTES < u8::MAX as usize);

/// A `'static` home for the CRC table, so that a running digest can live in the reader.
static ZIP_CRC32: crc::Crc<u32, crate::state::Crc32Table> = CRC32;

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

impl core::fmt::Display for ZipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ZipError::InvalidHeader { offset } => {
                write!(f, "Malformed archive (invalid file header) at offset {offset}")
            }
            ZipError::Compressed { method } => {
                write!(f, "Cannot handle compressed .zip (method {method}, only 0, stored, is supported)")
            }
            ZipError::SizeUnknown => {
                f.write_str("Archived file size is unknown (general-purpose flag bit 3 is set)")
            }
            ZipError::Malformed => f.write_str(
                "Malformed archive (entry encrypted, zip64, or compressed and uncompressed sizes differ)",
            ),
            ZipError::NameTooLong { len } => {
                write!(f, "Too long file name ({len} bytes, at most {} allowed)", NAME_MAX_BYTES - 1)
            }
            ZipError::NameNotUtf8 => f.write_str("Malformed archive (file name is not UTF-8)"),
            ZipError::InvalidCrc { expected, found } => {
                write!(f, "Invalid CRC (expected {expected:08x}, found {found:08x})")
            }
            ZipError::TooManyEntries => write!(f, "Too many files in archive (more than {ENTRIES_MAX})"),
        }
    }
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

/// Where the reader stands in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `header_len` bytes of a local header (or of the end signature) are in `header`.
    Header,
    /// `remaining` bytes of the entry name are still due.
    Name { remaining: u16 },
    /// `remaining` bytes of the extra field are still to be skipped.
    Extra { remaining: u16 },
    /// `remaining` bytes of entry data are still due; at 0 the entry ends.
    Data { remaining: u32 },
    /// The central directory or the end record was reached.
    Ended,
}

/// The event of one step, without the borrows that [`ZipEvent`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    EntryStart,
    Data,
    EntryEnd,
    End,
}

/// The fields of the current entry's local header that outlive the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    size_bytes: u32,
    crc32: u32,
    extra_len: u16,
}

/// A streaming reader of stored-only zip archives.
///
/// Errors are final: once [`ZipReader::feed`] returned an error, every later call returns the
/// same error. The header CRC-32 is checked only when it is nonzero, as Mongoose OS does: an
/// entry whose header CRC is 0 is accepted whatever its data (the updater's SHA-1 and SHA-256
/// checks against the manifest still apply). A clone reads on from the same place.
#[derive(Clone)]
pub struct ZipReader {
    phase: Phase,
    header: [u8; HEADER_SIZE_BYTES],
    header_len: u8,
    /// Archive offset of the header being read, for [`ZipError::InvalidHeader`].
    header_offset: u32,
    entry: Entry,
    /// The stripped name; bytes past the buffer are counted in `name_stripped_len` only.
    name: [u8; NAME_MAX_BYTES],
    name_len: u8,
    name_stripped_len: u16,
    name_saw_slash: bool,
    crc: crc::Digest<'static, u32, crate::state::Crc32Table>,
    entries: u32,
    position: u32,
    error: Option<ZipError>,
}

impl core::fmt::Debug for ZipReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZipReader")
            .field("phase", &self.phase)
            .field("position", &self.position)
            .field("entries", &self.entries)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Default for ZipReader {
    fn default() -> ZipReader {
        ZipReader::new()
    }
}

impl ZipReader {
    pub const fn new() -> ZipReader {
        ZipReader {
            phase: Phase::Header,
            header: [0; HEADER_SIZE_BYTES],
            header_len: 0,
            header_offset: 0,
            entry: Entry { size_bytes: 0, crc32: 0, extra_len: 0 },
            name: [0; NAME_MAX_BYTES],
            name_len: 0,
            name_stripped_len: 0,
            name_saw_slash: false,
            crc: ZIP_CRC32.digest(),
            entries: 0,
            position: 0,
            error: None,
        }
    }

    /// Consumes a prefix of `input` and reports at most one event. Returns how many bytes were
    /// consumed.
    ///
    /// The count is 0 when `input` is empty, and also when the event is [`ZipEvent::EntryEnd`]:
    /// an entry ends in the call after its last data byte was handed out, and that call needs no
    /// input (so `feed(&[])` delivers a pending `EntryEnd`). Once the archive ended, `feed`
    /// consumes all of `input` and reports nothing, so that a caller looping until its input is
    /// empty stops.
    pub fn feed<'a>(&'a mut self, input: &'a [u8]) -> Result<(usize, Option<ZipEvent<'a>>), ZipError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let (consumed, found) = match self.step(input) {
            Ok(step) => step,
            Err(error) => {
                self.error = Some(error);
                return Err(error);
            }
        };
        if self.phase != Phase::Ended || found == Some(Found::End) {
            self.position = self.position.saturating_add(u32::try_from(consumed).unwrap_or(u32::MAX));
        }
        let event = found.map(|found| match found {
            Found::EntryStart => ZipEvent::EntryStart {
                name: self.name_str(),
                size_bytes: self.entry.size_bytes,
                crc32: self.entry.crc32,
            },
            Found::Data => ZipEvent::Data(&input[..consumed]),
            Found::EntryEnd => ZipEvent::EntryEnd,
            Found::End => ZipEvent::End,
        });
        Ok((consumed, event))
    }

    /// True once [`ZipEvent::End`] was reported.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Bytes of the archive consumed so far, up to and including the signature that ended it
    /// (input ignored after the end is not counted).
    pub fn position(&self) -> u32 {
        self.position
    }

    /// Entries started so far.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, Option<Found>), ZipError> {
        match self.phase {
            Phase::Ended => Ok((input.len(), None)),
            Phase::Data { remaining } => self.step_data(input, remaining),
            Phase::Header | Phase::Name { .. } | Phase::Extra { .. } => self.step_entry_header(input),
        }
    }

    /// Reads as much of the local header, name and extra field as `input` holds. Each part moves
    /// the phase on when it is complete, so one call can cross all three.
    fn step_entry_header(&mut self, input: &[u8]) -> Result<(usize, Option<Found>), ZipError> {
        let mut used = 0;
        if self.phase == Phase::Header {
            let (n, ended) = self.read_header(input)?;
            used += n;
            if ended {
                return Ok((used, Some(Found::End)));
            }
        }
        if let Phase::Name { remaining } = self.phase {
            used += self.read_name(&input[used..], remaining)?;
        }
        if let Phase::Extra { remaining } = self.phase {
            used += self.skip_extra(&input[used..], remaining);
        }
        if let Phase::Data { .. } = self.phase {
            return Ok((used, Some(Found::EntryStart)));
        }
        Ok((used, None))
    }

    /// Collects header bytes; returns the bytes used and whether the archive ended.
    fn read_header(&mut self, input: &[u8]) -> Result<(usize, bool), ZipError> {
        if self.header_len == 0 {
            self.header_offset = self.position;
        }
        let mut used = 0;
        if (self.header_len as usize) < SIGNATURE_SIZE_BYTES {
            used = self.collect_header(input, SIGNATURE_SIZE_BYTES);
            if (self.header_len as usize) < SIGNATURE_SIZE_BYTES {
                return Ok((used, false));
            }
            let signature = [self.header[0], self.header[1], self.header[2], self.header[3]];
            if signature == SIGNATURE_CENTRAL || signature == SIGNATURE_END {
                self.phase = Phase::Ended;
                return Ok((used, true));
            }
            if signature != SIGNATURE_LOCAL {
                return Err(ZipError::InvalidHeader { offset: self.header_offset });
            }
        }
        used += self.collect_header(&input[used..], HEADER_SIZE_BYTES);
        if (self.header_len as usize) < HEADER_SIZE_BYTES {
            return Ok((used, false));
        }
        let name_len = self.check_header()?;
        self.phase = Phase::Name { remaining: name_len };
        self.name_len = 0;
        self.name_stripped_len = 0;
        self.name_saw_slash = false;
        Ok((used, false))
    }

    /// Copies bytes into `header` until it holds `until` bytes; returns the bytes used.
    fn collect_header(&mut self, input: &[u8], until: usize) -> usize {
        let have = self.header_len as usize;
        let n = until.saturating_sub(have).min(input.len());
        self.header[have..have + n].copy_from_slice(&input[..n]);
        self.header_len += n as u8;
        n
    }

    /// Checks a complete local header, in Mongoose OS's order, and keeps its fields. Returns the
    /// name length.
    fn check_header(&mut self) -> Result<u16, ZipError> {
        let h = &self.header;
        let u16_at = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let (flags, method) = (u16_at(6), u16_at(8));
        let (compressed_size, size) = (u32_at(18), u32_at(22));
        if method != METHOD_STORED {
            return Err(ZipError::Compressed { method });
        }
        if flags & FLAG_DATA_DESCRIPTOR != 0 {
            return Err(ZipError::SizeUnknown);
        }
        if flags & FLAG_ENCRYPTED != 0 || compressed_size != size || size == SIZE_ZIP64 {
            return Err(ZipError::Malformed);
        }
        self.entry = Entry { size_bytes: size, crc32: u32_at(14), extra_len: u16_at(28) };
        Ok(u16_at(26))
    }

    /// Reads name bytes, keeping only what follows the first `/`; returns the bytes used.
    fn read_name(&mut self, input: &[u8], remaining: u16) -> Result<usize, ZipError> {
        let n = (remaining as usize).min(input.len());
        for &byte in &input[..n] {
            if byte == b'/' && !self.name_saw_slash {
                self.name_saw_slash = true;
                self.name_len = 0;
                self.name_stripped_len = 0;
                continue;
            }
            if (self.name_len as usize) < NAME_MAX_BYTES {
                self.name[self.name_len as usize] = byte;
                self.name_len += 1;
            }
            self.name_stripped_len = self.name_stripped_len.saturating_add(1);
        }
        let remaining = remaining - n as u16;
        if remaining > 0 {
            self.phase = Phase::Name { remaining };
            return Ok(n);
        }
        if self.name_stripped_len as usize >= NAME_MAX_BYTES {
            return Err(ZipError::NameTooLong { len: self.name_stripped_len });
        }
        if core::str::from_utf8(&self.name[..self.name_len as usize]).is_err() {
            return Err(ZipError::NameNotUtf8);
        }
        if self.entries >= ENTRIES_MAX {
            return Err(ZipError::TooManyEntries);
        }
        self.entries += 1;
        self.phase = Phase::Extra { remaining: self.entry.extra_len };
        Ok(n)
    }

    /// Skips extra-field bytes; returns the bytes used.
    fn skip_extra(&mut self, input: &[u8], remaining: u16) -> usize {
        let n = (remaining as usize).min(input.len());
        let remaining = remaining - n as u16;
        if remaining > 0 {
            self.phase = Phase::Extra { remaining };
            return n;
        }
        self.crc = ZIP_CRC32.digest();
        self.phase = Phase::Data { remaining: self.entry.size_bytes };
        n
    }

    /// Hands out entry data, or ends the entry once all of it was handed out.
    fn step_data(&mut self, input: &[u8], remaining: u32) -> Result<(usize, Option<Found>), ZipError> {
        if remaining == 0 {
            let found = core::mem::replace(&mut self.crc, ZIP_CRC32.digest()).finalize();
            let expected = self.entry.crc32;
            if expected != 0 && found != expected {
                return Err(ZipError::InvalidCrc { expected, found });
            }
            self.phase = Phase::Header;
            self.header_len = 0;
            return Ok((0, Some(Found::EntryEnd)));
        }
        let n = input.len().min(remaining as usize);
        if n == 0 {
            return Ok((0, None));
        }
        self.crc.update(&input[..n]);
        self.phase = Phase::Data { remaining: remaining - n as u32 };
        Ok((n, Some(Found::Data)))
    }

    fn name_str(&self) -> &str {
        // Checked as UTF-8 in `read_name` before the entry started.
        core::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;
    use std::{format, vec};

    /// One entry of a hand-built archive.
    struct TestEntry<'a> {
        name: &'a [u8],
        data: &'a [u8],
        extra: &'a [u8],
    }

    fn entry<'a>(name: &'a str, data: &'a [u8]) -> TestEntry<'a> {
        TestEntry { name: name.as_bytes(), data, extra: &[] }
    }

    /// A stored archive laid out as `mos create-fw-bundle` writes it: local headers with sizes
    /// and CRC-32, the data, the central directory, the end record.
    fn archive(entries: &[TestEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in entries {
            let offset = out.len() as u32;
            let crc = CRC32.checksum(e.data);
            let size = e.data.len() as u32;
            out.extend_from_slice(&SIGNATURE_LOCAL);
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
            for field in [crc, size, size] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(e.extra.len() as u16).to_le_bytes());
            out.extend_from_slice(e.name);
            out.extend_from_slice(e.extra);
            out.extend_from_slice(e.data);

            central.extend_from_slice(&SIGNATURE_CENTRAL);
            central.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // made by .. date
            for field in [crc, size, size] {
                central.extend_from_slice(&field.to_le_bytes());
            }
            central.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(e.name);
        }
        let central_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&SIGNATURE_END);
        out.extend_from_slice(&[0; 4]); // disk numbers
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&central_offset.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out
    }

    /// Where each entry's local header starts in [`archive`]'s output.
    fn header_offsets(entries: &[TestEntry]) -> Vec<usize> {
        let mut at = 0;
        let mut offsets = Vec::new();
        for e in entries {
            offsets.push(at);
            at += HEADER_SIZE_BYTES + e.name.len() + e.extra.len() + e.data.len();
        }
        offsets
    }

    fn set_u16(bytes: &mut [u8], at: usize, value: u16) {
        bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// An owned [`ZipEvent`], with adjacent data merged.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Ev {
        Start { name: String, size_bytes: u32, crc32: u32 },
        Data(Vec<u8>),
        EntryEnd,
        End,
    }

    fn record(events: &mut Vec<Ev>, event: ZipEvent) {
        match (event, events.last_mut()) {
            (ZipEvent::Data(bytes), Some(Ev::Data(have))) => have.extend_from_slice(bytes),
            (ZipEvent::Data(bytes), _) => events.push(Ev::Data(bytes.to_vec())),
            (ZipEvent::EntryStart { name, size_bytes, crc32 }, _) => {
                events.push(Ev::Start { name: name.to_string(), size_bytes, crc32 })
            }
            (ZipEvent::EntryEnd, _) => events.push(Ev::EntryEnd),
            (ZipEvent::End, _) => events.push(Ev::End),
        }
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled) with the updater's loop, then once
    /// with no input to collect a pending `EntryEnd`.
    fn events_in_chunks(bytes: &[u8], chunk_sizes: &[usize]) -> Result<Vec<Ev>, ZipError> {
        let mut reader = ZipReader::new();
        let mut events = Vec::new();
        let mut rest = bytes;
        let mut sizes = chunk_sizes.iter().cycle();
        while !rest.is_empty() {
            let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
            let (mut chunk, tail) = rest.split_at(size);
            rest = tail;
            while !chunk.is_empty() {
                let (n, event) = reader.feed(chunk)?;
                assert!(n <= chunk.len());
                assert!(n > 0 || event.is_some(), "feed made no progress");
                if let Some(event) = event {
                    record(&mut events, event);
                }
                chunk = &chunk[n..];
            }
        }
        if let (0, Some(event)) = reader.feed(&[])? {
            record(&mut events, event);
        }
        Ok(events)
    }

    fn events(bytes: &[u8]) -> Result<Vec<Ev>, ZipError> {
        events_in_chunks(bytes, &[bytes.len().max(1)])
    }

    /// The events a correct reader reports for `entries`.
    fn expected_events(entries: &[TestEntry]) -> Vec<Ev> {
        let mut out = Vec::new();
        for e in entries {
            let name = std::str::from_utf8(e.name).unwrap();
            let stripped = name.split_once('/').map_or(name, |(_, rest)| rest);
            let crc32 = CRC32.checksum(e.data);
            out.push(Ev::Start { name: stripped.to_string(), size_bytes: e.data.len() as u32, crc32 });
            if !e.data.is_empty() {
                out.push(Ev::Data(e.data.to_vec()));
            }
            out.push(Ev::EntryEnd);
        }
        out.push(Ev::End);
        out
    }

    fn bundle_entries() -> [TestEntry<'static>; 3] {
        [
            TestEntry {
                name: b"myapp-1.0/manifest.json",
                data: br#"{"name":"myapp","platform":"esp32","parts":{}}"#,
                extra: b":)\x05\x00sig0!",
            },
            entry("myapp-1.0/myapp.bin", &[0xe9; 700]),
            entry("myapp-1.0/fs/a.txt", b"hello"),
        ]
    }

    #[test]
    fn reads_a_bundle_as_mos_writes_it() {
        let entries = bundle_entries();
        let bytes = archive(&entries);
        assert_eq!(events(&bytes), Ok(expected_events(&entries)));
        let mut reader = ZipReader::new();
        let (n, event) = reader.feed(&bytes).unwrap();
        assert_eq!(n, 30 + 23 + 9);
        let crc32 = CRC32.checksum(entries[0].data);
        assert_eq!(event, Some(ZipEvent::EntryStart { name: "manifest.json", size_bytes: 46, crc32 }));
        assert_eq!(reader.position(), 62);
        assert_eq!(reader.entries(), 1);
    }

    #[test]
    fn names_lose_their_first_path_component() {
        let long_folder = format!("{}/ok", "x".repeat(300));
        for (name, stripped) in [
            ("myapp-1.0/manifest.json", "manifest.json"),
            ("manifest.json", "manifest.json"),
            ("myapp-1.0/fs/a.txt", "fs/a.txt"),
            ("myapp-1.0/", ""),
            ("/abs", "abs"),
            ("", ""),
            (long_folder.as_str(), "ok"),
        ] {
            let bytes = archive(&[entry(name, b"x")]);
            let got = events_in_chunks(&bytes, &[1]).unwrap();
            let Ev::Start { name: got, .. } = &got[0] else { panic!("{name}: {got:?}") };
            assert_eq!(got, stripped, "{name}");
        }
    }

    #[test]
    fn an_empty_entry_starts_and_ends_without_data() {
        let bytes = archive(&[entry("a/empty", b""), entry("a/b", b"b")]);
        let start = Ev::Start { name: "empty".to_string(), size_bytes: 0, crc32: 0 };
        assert_eq!(events(&bytes).unwrap()[..2], [start, Ev::EntryEnd]);
        assert_eq!(events_in_chunks(&bytes, &[1]), events(&bytes));
    }

    #[test]
    fn the_end_record_alone_is_an_empty_archive() {
        let bytes = archive(&[]);
        assert_eq!(bytes.len(), 22);
        assert_eq!(events(&bytes), Ok(vec![Ev::End]));
    }

    #[test]
    fn input_after_the_end_is_consumed_and_ignored() {
        let mut bytes = archive(&[entry("a", b"a")]);
        let central_at = 30 + 1 + 1;
        bytes.extend_from_slice(b"trailing garbage");
        let mut reader = ZipReader::new();
        assert!(matches!(reader.feed(&bytes), Ok((31, Some(ZipEvent::EntryStart { .. })))));
        assert_eq!(reader.feed(&bytes[31..]), Ok((1, Some(ZipEvent::Data(b"a")))));
        assert_eq!(reader.feed(&bytes[32..]), Ok((0, Some(ZipEvent::EntryEnd))));
        assert!(!reader.is_finished());
        assert_eq!(reader.feed(&bytes[32..]), Ok((4, Some(ZipEvent::End))));
        assert!(reader.is_finished());
        assert_eq!(reader.position(), central_at + 4);
        assert_eq!(reader.feed(b"PK\x03\x04 more"), Ok((9, None)));
        assert_eq!(reader.feed(&[]), Ok((0, None)));
        assert_eq!(reader.position(), central_at + 4);
    }

    #[test]
    fn a_long_extra_field_is_skipped_byte_by_byte() {
        let extra = vec![0xa5; u16::MAX as usize];
        let entries = [TestEntry { name: b"d/manifest.json", data: b"{}", extra: &extra }];
        let bytes = archive(&entries);
        assert_eq!(events_in_chunks(&bytes, &[1]), Ok(expected_events(&entries)));
    }

    #[test]
    fn a_zero_header_crc_is_not_checked() {
        // Mongoose OS checks the CRC only when the header's is nonzero; so does the reader.
        let mut bytes = archive(&[entry("a", b"data")]);
        set_u32(&mut bytes, 14, 0);
        let got = events(&bytes).unwrap();
        assert_eq!(got[0], Ev::Start { name: "a".to_string(), size_bytes: 4, crc32: 0 });
        assert_eq!(got[1..], [Ev::Data(b"data".to_vec()), Ev::EntryEnd, Ev::End]);
    }

    /// Feeds `bytes` whole and in single bytes; both must give `expected` and the text `display`.
    fn check_error(bytes: &[u8], expected: ZipError, display: &str) {
        assert_eq!(events(bytes), Err(expected));
        assert_eq!(events_in_chunks(bytes, &[1]), Err(expected));
        assert_eq!(expected.to_string(), display);
    }

    #[test]
    fn a_bad_signature_is_an_invalid_header_at_its_offset() {
        check_error(
            b"GIF89a and then some",
            ZipError::InvalidHeader { offset: 0 },
            "Malformed archive (invalid file header) at offset 0",
        );
        let entries = [entry("a/manifest.json", b"{}"), entry("a/b", b"b")];
        let mut bytes = archive(&entries);
        let second = header_offsets(&entries)[1];
        bytes[second + 3] = 0x06;
        check_error(
            &bytes,
            ZipError::InvalidHeader { offset: 47 },
            "Malformed archive (invalid file header) at offset 47",
        );
        assert_eq!(second, 47);
    }

    #[test]
    fn a_compressed_entry_is_refused_before_its_flags() {
        let mut bytes = archive(&[entry("a", b"a")]);
        set_u16(&mut bytes, 8, 8);
        set_u16(&mut bytes, 6, FLAG_DATA_DESCRIPTOR);
        check_error(
            &bytes,
            ZipError::Compressed { method: 8 },
            "Cannot handle compressed .zip (method 8, only 0, stored, is supported)",
        );
    }

    #[test]
    fn a_streaming_entry_has_an_unknown_size() {
        let mut bytes = archive(&[entry("a", b"a")]);
        set_u16(&mut bytes, 6, FLAG_DATA_DESCRIPTOR | FLAG_ENCRYPTED);
        check_error(
            &bytes,
            ZipError::SizeUnknown,
            "Archived file size is unknown (general-purpose flag bit 3 is set)",
        );
    }

    #[test]
    fn encrypted_zip64_or_unequal_sizes_are_malformed() {
        let text = "Malformed archive (entry encrypted, zip64, or compressed and uncompressed sizes differ)";
        let good = archive(&[entry("a", b"a")]);
        let mut encrypted = good.clone();
        set_u16(&mut encrypted, 6, FLAG_ENCRYPTED);
        check_error(&encrypted, ZipError::Malformed, text);
        let mut unequal = good.clone();
        set_u32(&mut unequal, 18, 0);
        check_error(&unequal, ZipError::Malformed, text);
        let mut zip64 = good;
        set_u32(&mut zip64, 18, SIZE_ZIP64);
        set_u32(&mut zip64, 22, SIZE_ZIP64);
        check_error(&zip64, ZipError::Malformed, text);
    }

    #[test]
    fn names_of_fifty_bytes_or_more_are_too_long() {
        let text = "Too long file name (50 bytes, at most 49 allowed)";
        let longest = "n".repeat(NAME_MAX_BYTES - 1);
        assert!(events(&archive(&[entry(&longest, b"")])).is_ok());
        assert!(events(&archive(&[entry(&format!("folder/{longest}"), b"")])).is_ok());
        let too_long = "n".repeat(NAME_MAX_BYTES);
        check_error(&archive(&[entry(&too_long, b"")]), ZipError::NameTooLong { len: 50 }, text);
        let bytes = archive(&[entry(&format!("folder/{too_long}"), b"")]);
        check_error(&bytes, ZipError::NameTooLong { len: 50 }, text);
        let bytes = archive(&[entry(&"n".repeat(1000), b"")]);
        check_error(
            &bytes,
            ZipError::NameTooLong { len: 1000 },
            "Too long file name (1000 bytes, at most 49 allowed)",
        );
    }

    #[test]
    fn names_must_be_utf8() {
        let bytes = archive(&[TestEntry { name: b"app/\xff\xfe.bin", data: b"", extra: b"" }]);
        check_error(&bytes, ZipError::NameNotUtf8, "Malformed archive (file name is not UTF-8)");
        // Only the stripped name matters: the folder is dropped unseen, as Mongoose OS does.
        let bytes = archive(&[TestEntry { name: b"\xff/ok", data: b"", extra: b"" }]);
        assert!(events(&bytes).is_ok());
    }

    #[test]
    fn a_changed_data_byte_is_an_invalid_crc() {
        let mut bytes = archive(&[entry("a", b"data")]);
        bytes[31] = b'D';
        let expected = CRC32.checksum(b"data");
        let found = CRC32.checksum(b"Data");
        assert_eq!((expected, found), (0xadf3f363, 0x0dc15c5d));
        check_error(
            &bytes,
            ZipError::InvalidCrc { expected, found },
            "Invalid CRC (expected adf3f363, found 0dc15c5d)",
        );
    }

    // Issue 9, defect 6: more than 32 entries were refused; a bundle with a directory part has
    // one entry per file. The bound is now 1024.
    #[test]
    fn more_than_32_entries_are_refused() {
        let names: Vec<String> = (0..40).map(|i| format!("f/{i}")).collect();
        let entries: Vec<TestEntry> = names.iter().map(|name| entry(name, b"x")).collect();
        assert_eq!(events(&archive(&entries)), Ok(expected_events(&entries)));
    }

    #[test]
    fn more_than_entries_max_entries_are_too_many() {
        let names: Vec<String> = (0..=ENTRIES_MAX).map(|i| format!("f/{i}")).collect();
        let entries: Vec<TestEntry> = names.iter().map(|name| entry(name, b"x")).collect();
        let most = &entries[..ENTRIES_MAX as usize];
        assert_eq!(events(&archive(most)), Ok(expected_events(most)));
        check_error(
            &archive(&entries),
            ZipError::TooManyEntries,
            "Too many files in archive (more than 1024)",
        );
    }

    #[test]
    fn errors_are_final() {
        let mut reader = ZipReader::new();
        assert_eq!(reader.feed(b"PK\x03\x05"), Err(ZipError::InvalidHeader { offset: 0 }));
        let bytes = archive(&[entry("a", b"a")]);
        assert_eq!(reader.feed(&bytes), Err(ZipError::InvalidHeader { offset: 0 }));
        assert_eq!(reader.feed(&[]), Err(ZipError::InvalidHeader { offset: 0 }));
        assert!(!reader.is_finished());
    }

    #[test]
    fn error_texts() {
        let errors = [
            ZipError::InvalidHeader { offset: 1234 },
            ZipError::Compressed { method: 8 },
            ZipError::SizeUnknown,
            ZipError::Malformed,
            ZipError::NameTooLong { len: 77 },
            ZipError::NameNotUtf8,
            ZipError::InvalidCrc { expected: 0x0badf00d, found: 0xc0ffee },
            ZipError::TooManyEntries,
        ];
        let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        insta::assert_snapshot!(texts.join("\n"), @r"
        Malformed archive (invalid file header) at offset 1234
        Cannot handle compressed .zip (method 8, only 0, stored, is supported)
        Archived file size is unknown (general-purpose flag bit 3 is set)
        Malformed archive (entry encrypted, zip64, or compressed and uncompressed sizes differ)
        Too long file name (77 bytes, at most 49 allowed)
        Malformed archive (file name is not UTF-8)
        Invalid CRC (expected 0badf00d, found 00c0ffee)
        Too many files in archive (more than 1024)
        ");
    }

    /// Owned test entries, as proptest generates them.
    type Owned = (String, Vec<u8>, Vec<u8>);

    fn owned_entries() -> impl Strategy<Value = Vec<Owned>> {
        let one = ("[a-z]{1,8}(/[a-z.]{1,8}){0,2}", prop::collection::vec(any::<u8>(), 0..300), {
            prop::collection::vec(any::<u8>(), 0..40)
        });
        prop::collection::vec(one, 0..5)
    }

    fn borrow(owned: &[Owned]) -> Vec<TestEntry<'_>> {
        owned.iter().map(|(name, data, extra)| TestEntry { name: name.as_bytes(), data, extra }).collect()
    }

    proptest! {
        #[test]
        fn any_split_into_chunks_yields_the_same_events(
            owned in owned_entries(),
            chunk_sizes in prop::collection::vec(1usize..64, 1..20),
        ) {
            // However the transport cuts the archive, the reader reports the same entries, the
            // concatenated data of each being the entry's bytes.
            let entries = borrow(&owned);
            let bytes = archive(&entries);
            prop_assert_eq!(events_in_chunks(&bytes, &chunk_sizes), Ok(expected_events(&entries)));
        }

        #[test]
        fn any_single_byte_change_is_an_error_or_the_same_entries(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            chunk_sizes in prop::collection::vec(1usize..64, 1..8),
        ) {
            // A corrupted byte is caught (signature, checks, CRC), leaves an archive that never
            // ends (a length that swallows the rest, which the updater refuses as truncated), or
            // lands where it changes nothing the updater uses: only the name that holds it may
            // differ. Never a panic.
            let mut entries = bundle_entries().into_iter().collect::<Vec<_>>();
            entries.push(entry("myapp-1.0/empty", b""));
            let mut bytes = archive(&entries);
            let at = at.index(bytes.len());
            bytes[at] ^= flip;
            let Ok(got) = events_in_chunks(&bytes, &chunk_sizes) else { return Ok(()) };
            let want = expected_events(&entries);
            let name_ranges = header_offsets(&entries)
                .into_iter()
                .zip(&entries)
                .map(|(offset, e)| offset + HEADER_SIZE_BYTES..offset + HEADER_SIZE_BYTES + e.name.len());
            let starts = |events: &[Ev]| -> Vec<(String, u32, u32)> {
                events
                    .iter()
                    .filter_map(|e| match e {
                        Ev::Start { name, size_bytes, crc32 } => Some((name.clone(), *size_bytes, *crc32)),
                        _ => None,
                    })
                    .collect()
            };
            for ((got, want), name_range) in starts(&got).into_iter().zip(starts(&want)).zip(name_ranges) {
                prop_assert!(got.0 == want.0 || name_range.contains(&at));
                prop_assert_eq!(got.1, want.1);
                // A CRC field that became 0 is not checked; any other change is caught.
                prop_assert!(got.2 == want.2 || got.2 == 0);
            }
            if got.last() == Some(&Ev::End) {
                prop_assert_eq!(got.len(), want.len());
                for (got, want) in got.iter().zip(&want) {
                    if !matches!(got, Ev::Start { .. }) {
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_always_progress(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            chunk_sizes in prop::collection::vec(1usize..64, 1..8),
        ) {
            // `events_in_chunks` asserts progress on every call; any error is fine.
            let mut with_header = SIGNATURE_LOCAL.to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = events_in_chunks(&bytes, &chunk_sizes);
            let _ = events_in_chunks(&with_header, &chunk_sizes);
        }
    }
}
