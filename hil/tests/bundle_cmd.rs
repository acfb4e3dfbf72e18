//! `hil bundle`, run as the built binary: the bundles it writes are what the device's reader and
//! the simulated device take, and every bad input is refused with its message, exit code 2 and
//! nothing written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ota_bundle::{FLAG_DATA_DESCRIPTOR, METHOD_STORED, read_entries};
use ota_core::updater::UpdateOptions;
use ota_sim::device::{Config, Device, Run};
use serde_json::Value;
use sha1::Digest as _;

/// What one run of the binary did.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `hil ARGS` in `dir`, so that paths in its output are the relative ones given.
fn hil(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_hil")).args(args).current_dir(dir).output().unwrap();
    Output {
        code: output.status.code().expect("hil exits, it is not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// An empty folder of this test's own.
fn temp_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bundle_cmd").join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// The names in `dir`, sorted, to show that a failed run left nothing behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

const APP_JSON: &[u8] = b"{\"greeting\": \"hello\"}\n";
const INDEX_HTML: &[u8] = b"<h1>v2</h1>\n";

/// A folder with `fs/app.json` and `fs/index.html`.
fn with_fs(test: &str) -> PathBuf {
    let dir = temp_dir(test);
    write(&dir, "fs/app.json", APP_JSON);
    write(&dir, "fs/index.html", INDEX_HTML);
    dir
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn a_bundle_has_the_manifest_first_stored_entries_and_right_checksums() {
    let dir = with_fs("layout");
    let args = ["bundle", "--name", "demo", "--version", "1.2.0", "--platform", "esp32", "--build-id", "b42"];
    let run = hil(
        &dir,
        &[
            &args[..],
            &["--sim-app", "healthy", "--app-kib", "8", "--fs-dir", "fs", "--folder", "-o", "fw.zip"],
        ]
        .concat(),
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    insta::assert_snapshot!("layout_stdout", run.stdout);
    assert_eq!(listing(&dir), ["fs", "fw.zip"], "no temporary file stays");

    let zip = fs::read(dir.join("fw.zip")).unwrap();
    let entries = read_entries(&zip).unwrap();
    let names: Vec<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(names, ["demo-1.2.0/manifest.json", "demo-1.2.0/demo.bin", "demo-1.2.0/fs.img"]);
    for entry in &entries {
        assert_eq!((entry.method, entry.flags & FLAG_DATA_DESCRIPTOR), (METHOD_STORED, 0), "{}", entry.name);
        assert_eq!(entry.compressed_size_bytes, entry.uncompressed_size_bytes);
        assert_eq!(entry.uncompressed_size_bytes, entry.data_len_bytes);
    }
    let manifest: Value = serde_json::from_slice(entries[0].data(&zip)).unwrap();
    assert_eq!(manifest["name"], "demo");
    assert_eq!(manifest["platform"], "esp32");
    assert_eq!(manifest["version"], "1.2.0");
    assert_eq!(manifest["build_id"], "b42");
    for (part, entry) in [("app", &entries[1]), ("fs", &entries[2])] {
        let data = entry.data(&zip);
        let fields = &manifest["parts"][part];
        assert_eq!(fields["type"], part);
        assert_eq!(fields["size"], data.len());
        assert_eq!(fields["cs_sha1"], hex(&sha1::Sha1::digest(data)), "{part}");
        assert_eq!(fields["cs_sha256"], hex(&sha2::Sha256::digest(data)), "{part}");
    }
    assert_eq!(entries[1].data_len_bytes, 8 * 1024);
    assert_eq!(manifest["parts"]["fs"]["fs_size"], 64 * 1024);

    // The CRC-32s and the device's own reading: inspect says so.
    let inspect = hil(&dir, &["inspect", "--json", "fw.zip"]);
    assert_eq!(inspect.code, 0, "{}", inspect.stdout);
    let report: Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["updater"]["accepts"], true);
    assert!(report["entries"].as_array().unwrap().iter().all(|entry| entry["crc"] == "ok"));
}

/// Builds `<version>.zip` in `dir`: a simulated app of `behaviour` and the fs of folder `fs_dir`.
fn bundle(dir: &Path, version: &str, behaviour: &str, fs_dir: &str) -> Vec<u8> {
    let out = format!("{version}-{behaviour}.zip");
    let args = ["bundle", "--name", "demo", "--version", version, "--platform", "esp32"];
    let run = hil(dir, &[&args[..], &["--sim-app", behaviour, "--fs-dir", fs_dir, "-o", &out]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    fs::read(dir.join(out)).unwrap()
}

fn running_version(device: &Device) -> Option<String> {
    match device.run() {
        Run::Running { version, .. } => version.clone(),
        other => panic!("the device should run a firmware, it is {other:?}"),
    }
}

#[test]
fn bundles_boot_on_the_simulated_device_and_their_fs_mounts() {
    let dir = temp_dir("device");
    write(&dir, "fs-v1/app.json", APP_JSON);
    write(&dir, "fs-v2/app.json", b"{\"greeting\": \"hello again\"}\n");
    write(&dir, "fs-v2/index.html", INDEX_HTML);
    let v1 = bundle(&dir, "1.0.0", "healthy", "fs-v1");
    let v2 = bundle(&dir, "2.0.0", "healthy", "fs-v2");

    let mut device = Device::new(Config::default());
    device.provision(&v1).unwrap();
    device.power_on();
    assert_eq!(running_version(&device).as_deref(), Some("1.0.0"));
    assert_eq!(device.read_user_file("app.json").unwrap().as_deref(), Some(APP_JSON));
    assert_eq!(device.read_user_file("index.html").unwrap(), None);
    device.write_user_file("conf9.json", b"{\"wifi\": {}}").unwrap();

    device.update(&v2, 1000, UpdateOptions::default()).unwrap();
    assert_eq!(running_version(&device).as_deref(), Some("2.0.0"));
    assert_eq!(device.read_user_file("index.html").unwrap().as_deref(), Some(INDEX_HTML));
    let app_json = device.read_user_file("app.json").unwrap().unwrap();
    assert_eq!(app_json, b"{\"greeting\": \"hello again\"}\n", "the image's file wins");
    let conf9 = device.read_user_file("conf9.json").unwrap();
    assert_eq!(conf9.as_deref(), Some(&b"{\"wifi\": {}}"[..]), "the merge keeps the user's config");
}

#[test]
fn an_app_file_goes_in_as_it_is() {
    let dir = temp_dir("app_file");
    let app: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    write(&dir, "build/app.bin", &app);
    let args =
        ["bundle", "--name", "myapp", "--version", "0.9", "--platform", "esp32c3", "--app", "build/app.bin"];
    let run = hil(&dir, &[&args[..], &["-o", "build/fw.zip"]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    insta::assert_snapshot!("app_file_stdout", run.stdout);
    let zip = fs::read(dir.join("build/fw.zip")).unwrap();
    let entries = read_entries(&zip).unwrap();
    let names: Vec<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(names, ["manifest.json", "myapp.bin"], "no folder without --folder, no fs without --fs-dir");
    assert_eq!(entries[1].data(&zip), app);
    let manifest: Value = serde_json::from_slice(entries[0].data(&zip)).unwrap();
    assert_eq!(manifest["build_id"], "0.9", "the build id defaults to the version");
}

#[test]
fn a_failed_build_leaves_the_previous_bundle_untouched() {
    let dir = with_fs("keeps_previous");
    let args = ["bundle", "--name", "demo", "--version", "1.0.0", "--platform", "esp32", "-o", "fw.zip"];
    let run = hil(&dir, &[&args[..], &["--sim-app", "healthy"]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let before = fs::read(dir.join("fw.zip")).unwrap();
    let run = hil(&dir, &[&args[..], &["--app", "missing.bin"]].concat());
    assert_eq!(run.code, 2);
    assert_eq!(fs::read(dir.join("fw.zip")).unwrap(), before);
    assert_eq!(listing(&dir), ["fs", "fw.zip"]);
}

#[test]
fn a_user_config_in_the_fs_folder_is_shipped_with_a_warning() {
    let dir = with_fs("conf9");
    write(&dir, "fs/conf9.json", b"{}");
    let args =
        ["bundle", "--name", "demo", "--version", "1.0.0", "--platform", "esp32", "--sim-app", "healthy"];
    let run = hil(&dir, &[&args[..], &["--fs-dir", "fs", "-o", "fw.zip"]].concat());
    assert_eq!(run.code, 0);
    insta::assert_snapshot!("conf9_stderr", run.stderr);
}

/// One bad input: its name, the files it needs, the arguments after the common ones.
struct Bad {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
    args: Vec<String>,
}

fn bad(name: &'static str, files: &[(&str, &[u8])], args: &[&str]) -> Bad {
    let files = files.iter().map(|(name, data)| (name.to_string(), data.to_vec())).collect();
    Bad { name, files, args: args.iter().map(|arg| arg.to_string()).collect() }
}

/// Common arguments with `changes` applied: a flag given there replaces the common one.
fn full_args(changes: &[String]) -> Vec<String> {
    let mut args: Vec<String> =
        ["--name", "demo", "--version", "1.0.0", "--platform", "esp32", "-o", "fw.zip"]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
    let mut extra = Vec::new();
    for pair in changes.chunks(2) {
        match args.iter().position(|arg| *arg == pair[0]) {
            Some(at) => args[at + 1] = pair[1].clone(),
            None => extra.extend_from_slice(pair),
        }
    }
    [vec!["bundle".to_string()], args, extra].concat()
}

#[test]
fn bad_inputs_are_refused_with_what_was_wrong_and_nothing_written() {
    const APP: &[(&str, &[u8])] = &[("app.bin", b"firmware")];
    const EMPTY: &[(&str, &[u8])] = &[("empty.bin", b"")];
    const FS_OK: &[(&str, &[u8])] = &[("fs/app.json", b"{}")];
    const SUBFOLDER: &[(&str, &[u8])] = &[("fs/app.json", b"{}"), ("fs/www/index.html", b"<p>")];
    const LONG_NAME: &[(&str, &[u8])] =
        &[("fs/a-file-name-that-is-far-too-long-for-the-merge-of-the-device-to-take.json", b"{}")];
    const TEMP: &[(&str, &[u8])] = &[("fs/.ota-merge.tmp", b"x")];
    const BIG: &[(&str, &[u8])] = &[("fs/a.bin", &[0x5a; 40_000]), ("fs/b.bin", &[0xa5; 40_000])];
    // 60,000 bytes are less than 64 KiB, but LittleFS keeps its root in two of the 16 blocks
    // and stores each file in whole blocks of its own.
    const NEARLY: &[(&str, &[u8])] = &[("fs/a.bin", &[0x5a; 30_000]), ("fs/b.bin", &[0xa5; 30_000])];
    let many: Vec<(String, Vec<u8>)> = (0..=128).map(|i| (format!("fs/{i:03}.txt"), b"x".to_vec())).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(name, data)| (name.as_str(), data.as_slice())).collect();
    let long_version = "1.0.0-rc.1+build.20261122";
    let long_build_id = format!("20261122-101500/{}", "g".repeat(39));
    let cases = [
        bad("missing app file", APP, &["--app", "nope.bin"]),
        bad("empty app file", EMPTY, &["--app", "empty.bin"]),
        bad("app is a folder", FS_OK, &["--app", "fs"]),
        bad("simulated app of 0 KiB", &[], &["--sim-app", "healthy", "--app-kib", "0"]),
        bad("fs folder missing", APP, &["--app", "app.bin", "--fs-dir", "fs"]),
        bad("fs folder is a file", APP, &["--app", "app.bin", "--fs-dir", "app.bin"]),
        bad("fs folder with a subfolder", SUBFOLDER, &["--sim-app", "healthy", "--fs-dir", "fs"]),
        bad("fs file name too long", LONG_NAME, &["--sim-app", "healthy", "--fs-dir", "fs"]),
        bad("fs file named as the merge's temporary", TEMP, &["--sim-app", "healthy", "--fs-dir", "fs"]),
        bad("fs files larger than the image", BIG, &["--sim-app", "healthy", "--fs-dir", "fs"]),
        bad("fs files that LittleFS cannot fit", NEARLY, &["--sim-app", "healthy", "--fs-dir", "fs"]),
        bad("more fs files than the merge lists", &many, &["--sim-app", "healthy", "--fs-dir", "fs"]),
        bad("fs image not whole blocks", FS_OK, &["--sim-app", "healthy", "--fs-dir", "fs", "--fs-kib", "6"]),
        bad("version too long", &[], &["--sim-app", "healthy", "--version", long_version]),
        bad("build id too long", &[], &["--sim-app", "healthy", "--build-id", &long_build_id]),
        bad("name too long", &[], &["--sim-app", "healthy", "--name", "a-firmware-name-of-thirty-three-b"]),
        bad("platform too long", &[], &["--sim-app", "healthy", "--platform", "esp32-with-a-suffix"]),
        bad("version with a slash", &[], &["--sim-app", "healthy", "--version", "1.0/beta"]),
        bad("empty name", &[], &["--sim-app", "healthy", "--name", ""]),
        bad("output folder missing", &[], &["--sim-app", "healthy", "-o", "out/fw.zip"]),
        bad("output is a folder", FS_OK, &["--sim-app", "healthy", "-o", "fs"]),
    ];
    let mut texts = Vec::new();
    for case in cases {
        let dir = temp_dir("bad");
        for (name, data) in &case.files {
            write(&dir, name, data);
        }
        let before = listing(&dir);
        let args = full_args(&case.args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = hil(&dir, &args);
        assert_eq!(run.code, 2, "{}: {}", case.name, run.stderr);
        assert_eq!(run.stdout, "", "{}", case.name);
        assert!(run.stderr.contains("nothing was written"), "{}: {}", case.name, run.stderr);
        assert_eq!(listing(&dir), before, "{}: nothing is written", case.name);
        texts.push(format!("# {}\n$ hil {}\n{}", case.name, args.join(" "), run.stderr));
    }
    insta::assert_snapshot!("bad_inputs", texts.join("\n"));
}

#[test]
fn usage_mistakes_are_clap_errors_with_exit_code_2() {
    let dir = temp_dir("usage");
    write(&dir, "app.bin", b"firmware");
    for (changes, expected) in [
        (&["--app", "app.bin", "--sim-app", "healthy"][..], "cannot be used with"),
        (&[][..], "--app <FILE>|--sim-app <BEHAVIOUR>"),
        (
            &["--sim-app", "sometimes"][..],
            "expected healthy, crashes-at-boot, hangs, never-commits or commits-after=SECONDS",
        ),
        (&["--sim-app", "commits-after=soon"][..], "commits-after= takes whole seconds"),
        (&["--app", "app.bin", "--app-kib", "8"][..], "cannot be used with"),
        (&["--sim-app", "healthy", "--fs-kib", "128"][..], "--fs-dir <DIR>"),
    ] {
        let changes: Vec<String> = changes.iter().map(|arg| arg.to_string()).collect();
        let args = full_args(&changes);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = hil(&dir, &args);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert_eq!(listing(&dir), ["app.bin"]);
    }
}

#[test]
fn every_simulated_behaviour_is_written_in_the_image_header() {
    let dir = temp_dir("behaviours");
    for (value, behaviour) in [
        ("healthy", ota_sim::image::Behaviour::Healthy),
        ("crashes-at-boot", ota_sim::image::Behaviour::CrashesAtBoot),
        ("hangs", ota_sim::image::Behaviour::Hangs),
        ("never-commits", ota_sim::image::Behaviour::NeverCommits),
        ("commits-after=90", ota_sim::image::Behaviour::CommitsAfter { seconds: 90 }),
    ] {
        let args = full_args(&[
            "--sim-app".to_string(),
            value.to_string(),
            "--app-kib".to_string(),
            "1".to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(hil(&dir, &args).code, 0, "{value}");
        let zip = fs::read(dir.join("fw.zip")).unwrap();
        let entries = read_entries(&zip).unwrap();
        let image = entries[1].data(&zip);
        assert_eq!(image.len(), 1024);
        assert_eq!(ota_sim::image::parse_header(image), (behaviour, Some("1.0.0".to_string())), "{value}");
    }
}
