//! The six bundles of `shared/real-bundles/`, made by `mos create-fw-bundle` and taken unchanged
//! from `cesanta/ccm-test-fw`: the zip reader and the manifest parser must accept what the real
//! tool produces, and the part data must match the manifest's size and checksums.

use ota_core::manifest::{Hex, Manifest};
use ota_core::zip::{ZipError, ZipEvent, ZipReader};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::path::{Path, PathBuf};

const BUNDLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/real-bundles");

/// The table of `shared/real-bundles/README.md`: file, part size, cs_sha1.
const EXPECTED: [(&str, u32, &str); 6] = [
    ("f072test_1.0.0.zip", 14788, "375d88c22c084511d5a3a859646ef7e5edea3c81"),
    ("f072test_2.0.0.zip", 14788, "3f940b9f267b646855f8df8e9e60251999e92f38"),
    ("f303test_1.0.0.zip", 15380, "5ef04898c0c2284e0f1b05f568c31a431b8e49e9"),
    ("f303test_2.0.0.zip", 15380, "0b22f43d11808524fd3f1dacf1f1aaada1485e31"),
    ("f401test_1.0.0.zip", 14432, "6ea46a9e69cd5e2e10ec4aa801a9a0ff1725383d"),
    ("f401test_2.0.0.zip", 14432, "abc7cb34cfd1b8024b2d72e7cbe628ee7272dfc1"),
];

/// One entry as the reader reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    size_bytes: u32,
    data: Vec<u8>,
}

/// Reads a whole archive in chunks of `chunk_bytes`, as the updater's loop does.
fn read_entries(archive: &[u8], chunk_bytes: usize) -> Result<Vec<Entry>, ZipError> {
    let mut reader = ZipReader::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut ended = 0;
    for mut chunk in archive.chunks(chunk_bytes) {
        while !chunk.is_empty() {
            let (n, event) = reader.feed(chunk)?;
            match event {
                Some(ZipEvent::EntryStart { name, size_bytes, .. }) => {
                    entries.push(Entry { name: name.to_string(), size_bytes, data: Vec::new() })
                }
                Some(ZipEvent::Data(bytes)) => entries.last_mut().unwrap().data.extend_from_slice(bytes),
                Some(ZipEvent::EntryEnd) => ended += 1,
                Some(ZipEvent::End) | None => {}
            }
            chunk = &chunk[n..];
        }
    }
    assert!(reader.is_finished(), "the central directory ends every real bundle");
    assert_eq!(ended, entries.len(), "every entry ended with a matching CRC-32");
    Ok(entries)
}

/// The bundles folder, or `None` (with a line saying so) when this checkout has no `shared/`.
/// CI has it, so there its absence is a failure.
fn bundles_dir() -> Option<PathBuf> {
    let dir = Path::new(BUNDLES_DIR);
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    assert!(std::env::var_os("CI").is_none(), "CI must provide the real bundles at {}", dir.display());
    println!("skipped: no real bundles at {} (shared/ is not beside this checkout)", dir.display());
    None
}

fn hex(bytes: &[u8]) -> String {
    Hex(bytes).to_string()
}

#[test]
fn real_bundles_read_and_match_their_manifests() {
    let Some(dir) = bundles_dir() else { return };
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for (file, size_bytes, cs_sha1) in EXPECTED {
        let row = format!("| {file} | {size_bytes} | {cs_sha1} |");
        assert!(readme.contains(&row), "README.md's table has no row {row}");
        let archive = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let entries = read_entries(&archive, archive.len()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(read_entries(&archive, 7), Ok(entries.clone()), "{file} in 7-byte chunks");

        let [manifest_entry, part_entry] = &entries[..] else {
            panic!("{file}: {} entries, expected the manifest and one part", entries.len())
        };
        assert_eq!(manifest_entry.name, "manifest.json", "{file}: the manifest comes first");
        let manifest = Manifest::parse(&manifest_entry.data).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(manifest.platform.as_str(), "ccm_host", "{file}");
        assert_eq!((manifest.version, manifest.build_id), (None, None), "{file}");
        assert_eq!(manifest.parts.len(), 1, "{file}");

        let part = manifest.part("host_fw").unwrap_or_else(|| panic!("{file}: no host_fw part"));
        assert_eq!(part.src.map(|s| s.to_string()), Some(part_entry.name.clone()), "{file}");
        assert_eq!(part.addr, Some(134217728), "{file}");
        assert_eq!(part.size_bytes, Some(size_bytes), "{file}");
        assert_eq!(part_entry.size_bytes, size_bytes, "{file}");
        assert_eq!(part_entry.data.len(), size_bytes as usize, "{file}");

        let sha1 = Sha1::digest(&part_entry.data);
        let sha256 = Sha256::digest(&part_entry.data);
        assert_eq!(part.cs_sha1.map(|d| hex(&d)).as_deref(), Some(cs_sha1), "{file}: manifest cs_sha1");
        assert_eq!(hex(&sha1), cs_sha1, "{file}: SHA-1 of the part data");
        assert_eq!(part.cs_sha256.map(|d| hex(&d)), Some(hex(&sha256)), "{file}: SHA-256 of the part data");
    }
}
