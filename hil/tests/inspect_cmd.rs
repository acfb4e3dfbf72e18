//! `hil inspect`, run as the built binary: the six real bundles pass, every defect `ota-bundle` can
//! build fails with its mismatch or the updater's message, and unreadable files exit 2.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ota_bundle::{Bundle, Defect, PartSpec};
use serde_json::Value;

/// The real `mos create-fw-bundle` output, beside the checkout (see its README).
const REAL_BUNDLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/real-bundles");
const REAL_NAMES: [&str; 6] = [
    "f072test_1.0.0.zip",
    "f072test_2.0.0.zip",
    "f303test_1.0.0.zip",
    "f303test_2.0.0.zip",
    "f401test_1.0.0.zip",
    "f401test_2.0.0.zip",
];

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `hil ARGS` in `dir`, so that the paths it prints are the relative ones given.
fn hil(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_hil")).args(args).current_dir(dir).output().unwrap();
    Output {
        code: output.status.code().expect("hil exits, it is not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect_cmd").join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The real bundles' folder, or `None` (with a line saying so) where it is absent; under CI it
/// must be there.
fn real_bundles() -> Option<&'static Path> {
    let dir = Path::new(REAL_BUNDLES);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must provide the real bundles at {REAL_BUNDLES}");
    println!("skipped: no real bundles at {REAL_BUNDLES}");
    None
}

#[test]
fn the_six_real_bundles_pass() {
    let Some(dir) = real_bundles() else { return };
    for name in REAL_NAMES {
        let run = hil(dir, &["inspect", name]);
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{name}:\n{}", run.stdout);
        insta::assert_snapshot!(format!("real_{name}"), run.stdout);
    }
}

#[test]
fn the_real_bundles_in_json_name_their_app_part() {
    let Some(dir) = real_bundles() else { return };
    for name in REAL_NAMES {
        let run = hil(dir, &["inspect", "--json", name]);
        assert_eq!(run.code, 0, "{name}");
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(report["ok"], true);
        assert_eq!(report["manifest"]["platform"], "ccm_host");
        assert_eq!(report["manifest"]["version"], Value::Null, "real manifests have no version");
        let part = &report["parts"][0];
        assert_eq!(part["name"], "host_fw");
        assert_eq!((&part["cs_sha1"]["status"], &part["cs_sha256"]["status"]), (&"ok".into(), &"ok".into()));
        assert_eq!(part["placement"], "skipped");
        assert_eq!(report["updater"]["accepts"], true);
        let notes = report["updater"]["notes"].to_string();
        assert!(notes.contains("Incomplete update package"), "{name}: {notes}");
    }
}

/// A small bundle: an app and an fs part, in a folder, so every defect has something to aim at.
fn demo() -> Bundle {
    let app: Vec<u8> = (0..96u8).collect();
    Bundle::new("demo", "esp32")
        .version("1.0")
        .build_id("20261122/1.0")
        .in_folder()
        .part(PartSpec::new("app", "demo.bin", app).kind("app"))
        .part(PartSpec::new("fs", "fs.img", vec![0xff; 64]).kind("fs").extra("fs_size", "65536"))
        .attr("vendor", &ota_bundle::json_string("acme"))
}

#[test]
fn a_good_bundle_passes_and_its_json_is_one_object() {
    let dir = temp_dir("good");
    fs::write(dir.join("good.zip"), demo().build()).unwrap();
    let run = hil(&dir, &["inspect", "good.zip"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    insta::assert_snapshot!("good", run.stdout);
    let run = hil(&dir, &["inspect", "--json", "good.zip"]);
    assert_eq!(run.code, 0);
    insta::assert_snapshot!("good_json", run.stdout);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["problems"], Value::Array(Vec::new()));
    assert_eq!(report["manifest"]["other"]["vendor"], "acme");
    let placements: Vec<&Value> =
        report["parts"].as_array().unwrap().iter().map(|part| &part["placement"]).collect();
    assert_eq!(placements, ["app", "fs"]);
}

#[test]
fn defects_exit_1_with_the_mismatch_shown() {
    let part = |name: &str| name.to_string();
    let cases = [
        ("wrong_crc", Defect::WrongCrc { entry: part("demo.bin") }),
        ("wrong_sha1", Defect::WrongSha1 { part: part("app") }),
        ("wrong_sha256", Defect::WrongSha256 { part: part("fs") }),
        ("wrong_size", Defect::WrongSize { part: part("app") }),
        ("compressed", Defect::Compressed { entry: part("manifest.json") }),
        ("streaming", Defect::Streaming { entry: part("fs.img") }),
        ("manifest_not_first", Defect::ManifestNotFirst),
        ("missing_entry", Defect::MissingEntry { part: part("fs") }),
        ("corrupt_data", Defect::CorruptData { part: part("app") }),
        ("no_central_directory", Defect::NoCentralDirectory),
    ];
    let dir = temp_dir("defects");
    for (name, defect) in cases {
        let file = format!("{name}.zip");
        fs::write(dir.join(&file), demo().build_with(defect)).unwrap();
        let run = hil(&dir, &["inspect", &file]);
        assert_eq!((run.code, run.stderr.as_str()), (1, ""), "{name}:\n{}", run.stdout);
        insta::assert_snapshot!(format!("defect_{name}"), run.stdout);
        let run = hil(&dir, &["inspect", "--json", &file]);
        assert_eq!(run.code, 1, "{name}");
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(report["ok"], false);
        assert!(!report["problems"].as_array().unwrap().is_empty());
    }
}

#[test]
fn a_bundle_without_an_app_part_is_refused() {
    // Only a role-less part with data could be the app of a device that names it; an fs part
    // alone cannot, so no device takes this bundle.
    let dir = temp_dir("no_app");
    let bundle = Bundle::new("demo", "esp32").version("1.0").fs(vec![0xff; 64]);
    fs::write(dir.join("fs_only.zip"), bundle.build()).unwrap();
    let run = hil(&dir, &["inspect", "fs_only.zip"]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!("no_app_part", run.stdout);
}

#[test]
fn files_that_are_not_zips_exit_1() {
    let dir = temp_dir("not_zip");
    fs::write(dir.join("picture.gif"), b"GIF89a\x01\x00\x01\x00 and the rest of a picture").unwrap();
    fs::write(dir.join("empty.zip"), b"").unwrap();
    for name in ["picture.gif", "empty.zip"] {
        let run = hil(&dir, &["inspect", name]);
        assert_eq!((run.code, run.stderr.as_str()), (1, ""), "{name}");
        insta::assert_snapshot!(format!("not_zip_{name}"), run.stdout);
    }
}

#[test]
fn files_that_cannot_be_read_exit_2() {
    let dir = temp_dir("unreadable");
    fs::create_dir(dir.join("folder.zip")).unwrap();
    let mut texts = Vec::new();
    for name in ["missing.zip", "folder.zip"] {
        let run = hil(&dir, &["inspect", name]);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{name}");
        texts.push(format!("$ hil inspect {name}\n{}", run.stderr));
    }
    insta::assert_snapshot!("unreadable", texts.join("\n"));
}

// Issue 9, defect 6: on an archive with garbage before the central directory, or a truncated
// one, inspect said "Image too big … slot holds 4096" where the device says "invalid file
// header" / "Update aborted"; on a part without `size` it panicked (exit 101).
#[test]
fn inspect_says_image_too_big_where_the_device_says_invalid_file_header() {
    let dir = temp_dir("device_reason");
    let zip = demo().build();
    let central = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let mut garbage = zip[..central].to_vec();
    garbage.extend_from_slice(b"garbage, not a zip header");
    garbage.extend_from_slice(&zip[central..]);
    let no_size = Bundle::new("demo", "esp32")
        .version("1.0")
        .part(PartSpec::new("app", "demo.bin", vec![7; 96]).kind("app").without_size())
        .build();
    let cases = [
        ("garbage.zip", garbage, 1, "invalid file header"),
        ("truncated.zip", zip[..central - 10].to_vec(), 1, "Update aborted"),
        ("no_size.zip", no_size, 0, ""),
    ];
    for (name, bytes, code, message) in cases {
        fs::write(dir.join(name), bytes).unwrap();
        let run = hil(&dir, &["inspect", "--json", name]);
        assert_eq!(run.code, code, "{name}: {}{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        let said = report["updater"]["message"].as_str().unwrap_or("");
        assert!(said.contains(message) && !said.contains("Image too big"), "{name}: {said}");
    }
}

// Issue 9, defect 6: a huge number under a key no device reads (which devices accept) made
// inspect exit 1, as its own JSON reader could not hold the number.
#[test]
fn inspect_exits_1_on_a_huge_number_that_devices_accept() {
    let dir = temp_dir("huge_number");
    fs::write(dir.join("huge.zip"), demo().attr("huge", "1e999").build()).unwrap();
    let run = hil(&dir, &["inspect", "--json", "huge.zip"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["updater"]["accepts"], true);
}
