//! Helpers shared by the integration tests: an independent reader of the central directory and the
//! end record (the crate itself reads only local headers), and the sample bundle.

#![allow(dead_code)]

use ota_bundle::{Bundle, PartSpec};

pub const END_RECORD_BYTES: usize = 22;

#[derive(Debug, PartialEq, Eq)]
pub struct CentralEntry {
    pub name: String,
    pub version_made_by: u16,
    pub version_needed: u16,
    pub flags: u16,
    pub method: u16,
    pub crc32: u32,
    pub compressed_size_bytes: u32,
    pub uncompressed_size_bytes: u32,
    pub header_offset: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub struct EndRecord {
    pub entries_on_disk: u16,
    pub entries_total: u16,
    pub directory_bytes: u32,
    pub directory_offset: u32,
    pub comment_bytes: u16,
}

pub fn u16_at(zip: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([zip[at], zip[at + 1]])
}

pub fn u32_at(zip: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(zip[at..at + 4].try_into().unwrap())
}

/// Reads the end record from the last 22 bytes (the builder writes no comment) and the central
/// directory it points at.
pub fn central_directory(zip: &[u8]) -> (Vec<CentralEntry>, EndRecord) {
    let end = zip.len() - END_RECORD_BYTES;
    assert_eq!(u32_at(zip, end), 0x0605_4b50, "end record signature");
    let record = EndRecord {
        entries_on_disk: u16_at(zip, end + 8),
        entries_total: u16_at(zip, end + 10),
        directory_bytes: u32_at(zip, end + 12),
        directory_offset: u32_at(zip, end + 16),
        comment_bytes: u16_at(zip, end + 20),
    };
    let mut at = record.directory_offset as usize;
    let mut entries = Vec::new();
    for _ in 0..record.entries_total {
        assert_eq!(u32_at(zip, at), 0x0201_4b50, "central header signature at {at:#x}");
        let name_len = usize::from(u16_at(zip, at + 28));
        let tail_len = usize::from(u16_at(zip, at + 30)) + usize::from(u16_at(zip, at + 32));
        assert_eq!(tail_len, 0, "no extra field nor comment in the central directory");
        assert_eq!((u16_at(zip, at + 34), u16_at(zip, at + 36), u32_at(zip, at + 38)), (0, 0, 0));
        entries.push(CentralEntry {
            name: String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap(),
            version_made_by: u16_at(zip, at + 4),
            version_needed: u16_at(zip, at + 6),
            flags: u16_at(zip, at + 8),
            method: u16_at(zip, at + 10),
            crc32: u32_at(zip, at + 16),
            compressed_size_bytes: u32_at(zip, at + 20),
            uncompressed_size_bytes: u32_at(zip, at + 24),
            header_offset: u32_at(zip, at + 42),
        });
        at += 46 + name_len;
    }
    assert_eq!(at, end, "the central directory ends where the end record starts");
    (entries, record)
}

pub fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

/// Deterministic filler bytes, different for each `seed`.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A bundle whose part order, entry order and manifest key order all differ: part `zeta` sorts
/// last by name but its src `a.bin` sorts first; part `nvs` has no src, so no entry.
pub fn sample() -> Bundle {
    Bundle::new("demo", "esp32")
        .version("1.0.3")
        .build_id("20240101-000000/1.0.3")
        .app(bytes(1000, 1))
        .fs(bytes(300, 2))
        .part(
            PartSpec::new("zeta", "a.bin", bytes(77, 3))
                .kind("boot")
                .extra("update", "true")
                .extra("addr", "4096"),
        )
        .part(PartSpec::new("nvs", "", vec![0xff; 16]).without_sha1().without_sha256().extra("fill", "255"))
}

/// The sample's entries without folder, in archive order, with their data.
pub fn sample_entries() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("manifest.json", sample().manifest_json().into_bytes()),
        ("a.bin", bytes(77, 3)),
        ("demo.bin", bytes(1000, 1)),
        ("fs.img", bytes(300, 2)),
    ]
}
