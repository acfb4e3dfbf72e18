//! Each `Defect` does what it says, and nothing else: every test compares the bad bundle with the
//! good one built from the same `Bundle`.

mod common;

use common::{bytes, central_directory, crc32, sample, u32_at};
use ota_bundle::{Bundle, Defect, Entry, PartSpec, read_entries};
use sha1::Digest as _;

fn part(name: &str) -> String {
    name.to_string()
}

fn entries(zip: &[u8]) -> Vec<Entry> {
    read_entries(zip).unwrap()
}

fn names(zip: &[u8]) -> Vec<String> {
    entries(zip).into_iter().map(|entry| entry.name).collect()
}

fn entry<'a>(entries: &'a [Entry], name: &str) -> &'a Entry {
    entries.iter().find(|entry| entry.name.ends_with(name)).unwrap_or_else(|| panic!("no entry {name}"))
}

fn manifest_text(zip: &[u8]) -> String {
    let entries = entries(zip);
    String::from_utf8(entry(&entries, "manifest.json").data(zip).to_vec()).unwrap()
}

/// The lines of the bad manifest that differ from the good one's, as (good, bad) pairs.
fn manifest_changes(good: &[u8], bad: &[u8]) -> Vec<(String, String)> {
    let (good, bad) = (manifest_text(good), manifest_text(bad));
    assert_eq!(good.lines().count(), bad.lines().count(), "good:\n{good}\nbad:\n{bad}");
    let pairs = good.lines().zip(bad.lines()).filter(|(g, b)| g != b);
    pairs.map(|(g, b)| (g.trim().to_string(), b.trim().to_string())).collect()
}

/// A name no entry ends with, for [`assert_others_unchanged`] when every entry must stay as it was.
const NO_ENTRY: &str = "\0";

/// Asserts that every entry except `changed` has the same header fields and data in both archives.
fn assert_others_unchanged(good: &[u8], bad: &[u8], changed: &str) {
    let (good_entries, bad_entries) = (entries(good), entries(bad));
    for g in good_entries.iter().filter(|entry| !entry.name.ends_with(changed)) {
        let b = entry(&bad_entries, &g.name);
        assert_eq!(
            (b.flags, b.method, b.crc32, b.compressed_size_bytes),
            (g.flags, g.method, g.crc32, g.compressed_size_bytes)
        );
        assert_eq!(b.data(bad), g.data(good), "entry {}", g.name);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn wrong_crc_inverts_the_local_crc_and_keeps_the_central_one() {
    let good = sample().build();
    for name in ["manifest.json", "demo.bin"] {
        let bad = sample().build_with(Defect::WrongCrc { entry: name.to_string() });
        let bad_entries = entries(&bad);
        let wrong = entry(&bad_entries, name);
        assert_eq!(wrong.crc32, !crc32(wrong.data(&bad)), "entry {name}");
        let central = central_directory(&bad).0;
        let central = central.iter().find(|entry| entry.name == name).unwrap();
        assert_eq!(
            central.crc32,
            crc32(wrong.data(&bad)),
            "entry {name}: the central directory keeps the truth"
        );
        assert_eq!(bad.len(), good.len());
        assert_others_unchanged(&good, &bad, name);
    }
}

#[test]
fn wrong_sha1_changes_only_cs_sha1_of_that_part() {
    let good = sample().build();
    let bad = sample().build_with(Defect::WrongSha1 { part: part("app") });
    let real = hex(&sha1::Sha1::digest(bytes(1000, 1)));
    let mut wrong = sha1::Sha1::digest(bytes(1000, 1)).to_vec();
    wrong[0] ^= 0xff;
    let expected = (format!("\"cs_sha1\": \"{real}\","), format!("\"cs_sha1\": \"{}\",", hex(&wrong)));
    assert_eq!(manifest_changes(&good, &bad), [expected]);
    assert_others_unchanged(&good, &bad, "manifest.json");
}

#[test]
fn wrong_sha256_changes_only_cs_sha256_of_that_part() {
    let good = sample().build();
    let bad = sample().build_with(Defect::WrongSha256 { part: part("zeta") });
    let changes = manifest_changes(&good, &bad);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let real = hex(&sha2::Sha256::digest(bytes(77, 3)));
    assert_eq!(changes[0].0, format!("\"cs_sha256\": \"{real}\","));
    assert!(changes[0].1.starts_with("\"cs_sha256\": \""), "{changes:?}");
    assert_others_unchanged(&good, &bad, "manifest.json");
}

#[test]
fn wrong_checksums_are_written_even_for_parts_that_leave_them_out() {
    let bundle = Bundle::new("demo", "esp32")
        .part(PartSpec::new("app", "app.bin", vec![7; 8]).without_sha1().without_sha256());
    assert!(!bundle.manifest_json().contains("cs_sha"));
    let sha1_text = manifest_text(&bundle.build_with(Defect::WrongSha1 { part: part("app") }));
    let sha256_text = manifest_text(&bundle.build_with(Defect::WrongSha256 { part: part("app") }));
    assert!(sha1_text.contains("cs_sha1") && !sha1_text.contains("cs_sha256"), "{sha1_text}");
    assert!(sha256_text.contains("cs_sha256") && !sha256_text.contains("cs_sha1"), "{sha256_text}");
}

#[test]
fn wrong_size_adds_one_to_the_manifest_size_only() {
    let good = sample().build();
    let bad = sample().build_with(Defect::WrongSize { part: part("fs") });
    assert_eq!(manifest_changes(&good, &bad), [("\"size\": 300,".to_string(), "\"size\": 301,".to_string())]);
    assert_eq!(entry(&entries(&bad), "fs.img").compressed_size_bytes, 300);
    assert_others_unchanged(&good, &bad, "manifest.json");
}

#[test]
fn compressed_says_method_8_in_the_local_header_only() {
    let good = sample().build();
    let bad = sample().build_with(Defect::Compressed { entry: "a.bin".to_string() });
    let bad_entries = entries(&bad);
    let compressed = entry(&bad_entries, "a.bin");
    assert_eq!(compressed.method, 8);
    assert_eq!((compressed.compressed_size_bytes, compressed.uncompressed_size_bytes), (77, 77));
    assert_eq!(compressed.data(&bad), bytes(77, 3));
    assert_eq!(central_directory(&bad).0[1].method, 0);
    assert_others_unchanged(&good, &bad, "a.bin");
}

#[test]
fn streaming_moves_crc_and_sizes_into_a_data_descriptor() {
    let good = sample().build();
    let bad = sample().build_with(Defect::Streaming { entry: "demo.bin".to_string() });
    let bad_entries = entries(&bad);
    let streamed = entry(&bad_entries, "demo.bin");
    assert_eq!(streamed.flags, 0x0008);
    assert_eq!((streamed.crc32, streamed.compressed_size_bytes, streamed.uncompressed_size_bytes), (0, 0, 0));
    let data_end = (streamed.data_offset + streamed.data_len_bytes) as usize;
    let descriptor: Vec<u32> = (0..4).map(|i| u32_at(&bad, data_end + 4 * i)).collect();
    assert_eq!(descriptor, [0x0807_4b50, crc32(&bytes(1000, 1)), 1000, 1000]);
    assert_eq!(streamed.data(&bad), bytes(1000, 1));
    assert_eq!(bad.len(), good.len() + 16);
    let central = central_directory(&bad).0;
    assert_eq!(
        (central[2].flags, central[2].crc32, central[2].compressed_size_bytes),
        (0x0008, crc32(&bytes(1000, 1)), 1000)
    );
    assert_eq!(central[3].header_offset as usize, data_end + 16, "the next entry follows the descriptor");
    assert_others_unchanged(&good, &bad, "demo.bin");
}

#[test]
fn manifest_not_first_puts_the_manifest_last() {
    let good = sample().build();
    let bad = sample().build_with(Defect::ManifestNotFirst);
    assert_eq!(names(&bad), ["a.bin", "demo.bin", "fs.img", "manifest.json"]);
    let central: Vec<String> = central_directory(&bad).0.into_iter().map(|entry| entry.name).collect();
    assert_eq!(central, names(&bad));
    assert_eq!(manifest_text(&bad), sample().manifest_json());
    assert_others_unchanged(&good, &bad, NO_ENTRY);
}

#[test]
fn missing_entry_keeps_the_part_in_the_manifest() {
    let good = sample().build();
    let bad = sample().build_with(Defect::MissingEntry { part: part("app") });
    assert_eq!(names(&bad), ["manifest.json", "a.bin", "fs.img"]);
    assert_eq!(manifest_text(&bad), sample().manifest_json());
    assert!(manifest_text(&bad).contains("\"src\": \"demo.bin\""));
    let bad_entries = entries(&bad);
    for name in ["manifest.json", "a.bin", "fs.img"] {
        assert_eq!(entry(&bad_entries, name).data(&bad), entry(&entries(&good), name).data(&good));
    }
}

#[test]
fn corrupt_data_flips_the_middle_byte_after_the_checksums() {
    let good = sample().build();
    let bad = sample().build_with(Defect::CorruptData { part: part("fs") });
    let bad_entries = entries(&bad);
    let corrupted = entry(&bad_entries, "fs.img");
    let original = bytes(300, 2);
    let differing: Vec<usize> = (0..300).filter(|&i| corrupted.data(&bad)[i] != original[i]).collect();
    assert_eq!(differing, [150]);
    assert_eq!(corrupted.data(&bad)[150], !original[150]);
    // The zip layer is consistent with the corrupted data: only the manifest's checksums catch it.
    assert_eq!(corrupted.crc32, crc32(corrupted.data(&bad)));
    assert_eq!(manifest_text(&bad), sample().manifest_json());
    assert_eq!(bad.len(), good.len());
    assert_others_unchanged(&good, &bad, "fs.img");
}

#[test]
fn no_central_directory_ends_after_the_last_entry() {
    let good = sample().build();
    let bad = sample().build_with(Defect::NoCentralDirectory);
    let directory_offset = central_directory(&good).1.directory_offset as usize;
    assert_eq!(bad, good[..directory_offset]);
    assert_eq!(entries(&bad), entries(&good));
}

#[test]
fn defects_name_entries_without_the_folder() {
    let bundle = sample().in_folder();
    let bad = bundle.build_with(Defect::Streaming { entry: "fs.img".to_string() });
    assert_eq!(entry(&entries(&bad), "demo-1.0.3/fs.img").flags, 0x0008);
    let bad = bundle.build_with(Defect::MissingEntry { part: part("zeta") });
    assert_eq!(names(&bad), ["demo-1.0.3/manifest.json", "demo-1.0.3/demo.bin", "demo-1.0.3/fs.img"]);
}

#[test]
fn defects_on_a_shared_src_apply_to_its_one_entry() {
    // Parts "a" and "b" share src x.bin; part order must not undo a defect aimed at either.
    let data = bytes(10, 4);
    let bundle = Bundle::new("demo", "esp32")
        .part(PartSpec::new("a", "x.bin", data.clone()))
        .part(PartSpec::new("b", "x.bin", data.clone()));
    for name in ["a", "b"] {
        let missing = bundle.build_with(Defect::MissingEntry { part: part(name) });
        assert_eq!(names(&missing), ["manifest.json"], "part {name}");
        let corrupt = bundle.build_with(Defect::CorruptData { part: part(name) });
        assert_ne!(entry(&entries(&corrupt), "x.bin").data(&corrupt), data, "part {name}");
    }
}
