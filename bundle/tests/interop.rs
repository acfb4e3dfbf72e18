//! Other zip readers accept what the builder writes, and the builder writes what `mos` writes: the
//! real bundles of `shared/real-bundles/` are read, then rebuilt byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{crc32, sample};
use ota_bundle::{Bundle, Defect, PartSpec, read_entries};

const REAL_BUNDLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/real-bundles");
const REAL_BUNDLES: [&str; 6] = [
    "f072test_1.0.0.zip",
    "f072test_2.0.0.zip",
    "f303test_1.0.0.zip",
    "f303test_2.0.0.zip",
    "f401test_1.0.0.zip",
    "f401test_2.0.0.zip",
];

const PYTHON_LIST: &str = "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
                           print([i.filename for i in z.infolist()])";

/// A file in the temporary directory, unique to this process and `tag`, removed on drop.
struct TempZip(PathBuf);

impl TempZip {
    fn new(tag: &str, zip: &[u8]) -> TempZip {
        let path = std::env::temp_dir().join(format!("ota-bundle-{}-{tag}.zip", std::process::id()));
        std::fs::write(&path, zip).unwrap();
        TempZip(path)
    }
}

impl Drop for TempZip {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tool_present(program: &str, version_arg: &str) -> bool {
    let present = Command::new(program).arg(version_arg).output().is_ok();
    if !present {
        println!("skipped: `{program}` is not installed, so this check did not run");
    }
    present
}

/// Runs Python's `zipfile` on `zip`: the printed entry names if `testzip` passes, else stderr.
fn python_zipfile(tag: &str, zip: &[u8]) -> Result<String, String> {
    let file = TempZip::new(tag, zip);
    let output = Command::new("python3").args(["-c", PYTHON_LIST]).arg(&file.0).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    if output.status.success() { Ok(text(&output.stdout)) } else { Err(text(&output.stderr)) }
}

#[test]
fn python_zipfile_accepts_good_bundles() {
    if !tool_present("python3", "--version") {
        return;
    }
    let names = python_zipfile("good", &sample().build());
    assert_eq!(names.as_deref(), Ok("['manifest.json', 'a.bin', 'demo.bin', 'fs.img']"));
    let names = python_zipfile("folder", &sample().in_folder().build());
    let expected =
        "['demo-1.0.3/manifest.json', 'demo-1.0.3/a.bin', 'demo-1.0.3/demo.bin', 'demo-1.0.3/fs.img']";
    assert_eq!(names.as_deref(), Ok(expected));
}

#[test]
fn python_zipfile_accepts_defects_that_only_a_device_notices() {
    if !tool_present("python3", "--version") {
        return;
    }
    // Valid zips whose faults live in the manifest, the entry order or (for streaming) a layout
    // the zip format allows but the device refuses.
    let defects = [
        Defect::WrongSha1 { part: "app".to_string() },
        Defect::WrongSize { part: "fs".to_string() },
        Defect::CorruptData { part: "zeta".to_string() },
        Defect::MissingEntry { part: "app".to_string() },
        Defect::ManifestNotFirst,
        Defect::Streaming { entry: "demo.bin".to_string() },
    ];
    for (index, defect) in defects.into_iter().enumerate() {
        let result = python_zipfile(&format!("defect{index}"), &sample().build_with(defect.clone()));
        assert!(result.is_ok(), "{defect:?}: {result:?}");
    }
    let result = python_zipfile("no-central", &sample().build_with(Defect::NoCentralDirectory));
    assert!(result.as_ref().is_err_and(|error| error.contains("BadZipFile")), "{result:?}");
}

#[test]
fn unzip_tests_good_bundles_clean() {
    if !tool_present("unzip", "-v") {
        return;
    }
    for (tag, zip) in [("unzip-good", sample().build()), ("unzip-folder", sample().in_folder().build())] {
        let file = TempZip::new(tag, &zip);
        let output = Command::new("unzip").arg("-tq").arg(&file.0).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{tag}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.starts_with("No errors detected"), "{tag}: {stdout}");
    }
}

/// The real bundle `file`, or `None` (with a printed reason) when `shared/real-bundles/` is absent.
fn real_bundle(file: &str) -> Option<Vec<u8>> {
    let path = Path::new(REAL_BUNDLES_DIR).join(file);
    match std::fs::read(&path) {
        Ok(zip) => Some(zip),
        Err(error) => {
            println!(
                "skipped: real bundle {} not readable ({error}), so this check did not run",
                path.display()
            );
            None
        }
    }
}

/// The value of `"key": value` in a one-key-per-line manifest, without quotes.
fn field<'a>(manifest: &'a str, key: &str) -> &'a str {
    let line = manifest.lines().map(str::trim).find(|line| line.starts_with(&format!("\"{key}\": ")));
    let line = line.unwrap_or_else(|| panic!("no {key} in\n{manifest}"));
    line[key.len() + 4..].trim_end_matches(',').trim_matches('"')
}

/// The manifest's `key: value` lines, trimmed and sorted, for a comparison that ignores order.
fn field_lines(manifest: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        manifest.lines().map(|line| line.trim().trim_end_matches(',').to_string()).collect();
    lines.sort();
    lines
}

#[test]
fn real_bundles_read_as_two_stored_entries_manifest_first() {
    for file in REAL_BUNDLES {
        let Some(zip) = real_bundle(file) else { return };
        let entries = read_entries(&zip).unwrap();
        assert_eq!(entries.len(), 2, "{file}");
        assert_eq!(entries[0].name, "manifest.json", "{file}");
        let version = file.trim_end_matches(".zip");
        assert_eq!(entries[1].name, format!("{version}.bin"), "{file}");
        for entry in &entries {
            assert_eq!((entry.method, entry.flags), (0, 0), "{file} {}", entry.name);
            assert_eq!(entry.compressed_size_bytes, entry.uncompressed_size_bytes, "{file} {}", entry.name);
            assert_eq!(entry.crc32, crc32(entry.data(&zip)), "{file} {}", entry.name);
            assert_eq!(entry.descriptor, None, "{file} {}", entry.name);
        }
    }
}

#[test]
fn real_bundles_rebuild_byte_for_byte() {
    for file in REAL_BUNDLES {
        let Some(zip) = real_bundle(file) else { return };
        let entries = read_entries(&zip).unwrap();
        let manifest = std::str::from_utf8(entries[0].data(&zip)).unwrap();
        let (name, platform, addr) =
            (field(manifest, "name"), field(manifest, "platform"), field(manifest, "addr"));
        let part =
            PartSpec::new("host_fw", &entries[1].name, entries[1].data(&zip).to_vec()).extra("addr", addr);
        let rebuilt = Bundle::new(name, platform).part(part);
        let rebuilt_manifest = rebuilt.manifest_json();
        assert_eq!(field_lines(&rebuilt_manifest), field_lines(manifest), "{file}: the same fields");
        assert_eq!(rebuilt_manifest, manifest, "{file}: the same manifest text");
        assert!(rebuilt.build() == zip, "{file}: the rebuilt archive differs from the real one");
    }
}

#[test]
fn f401test_2_0_0_manifest_is_the_one_quoted_in_the_reference() {
    // §1.4 of the reference quotes this manifest whole.
    let Some(zip) = real_bundle("f401test_2.0.0.zip") else { return };
    let entries = read_entries(&zip).unwrap();
    let rebuilt = Bundle::new("f401test", "ccm_host").part(
        PartSpec::new("host_fw", "f401test_2.0.0.bin", entries[1].data(&zip).to_vec())
            .extra("addr", "134217728"),
    );
    insta::assert_snapshot!(rebuilt.manifest_json(), @r#"
    {
     "name": "f401test",
     "platform": "ccm_host",
     "parts": {
      "host_fw": {
       "src": "f401test_2.0.0.bin",
       "addr": 134217728,
       "size": 14432,
       "cs_sha1": "abc7cb34cfd1b8024b2d72e7cbe628ee7272dfc1",
       "cs_sha256": "2d242df4d8b74492ef33b9924abb40e83d4c50d33f011ede6f27c53ea36fbaa9"
      }
     }
    }
    "#);
    assert_eq!(rebuilt.build(), zip);
}
