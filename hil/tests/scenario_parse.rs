//! The scenario parser: every file in `scenarios/` loads, `collect` finds them, a scenario reads
//! as the model the engine runs, and each kind of mistake gives an error that names the file, the
//! line and the key, and says what is accepted.

use std::fs;
use std::path::{Path, PathBuf};

use ota_hil::scenario::model::{
    Action, Behaviour, BundleSource, BundleSpec, CallExpect, Cut, CutWhen, Defect, Expect, Phase, PushExpect,
    Script, Transport,
};
use ota_hil::scenario::{self, Scenario};

fn scenarios_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// A fresh folder under the system's temp dir, for cases that need files.
fn temp_folder(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("ota-hil-scenario-parse-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&folder);
    fs::create_dir_all(&folder).expect("temp folder");
    folder
}

fn parse(text: &str) -> Result<Scenario, scenario::ScenarioError> {
    scenario::load_str(Path::new("bad.toml"), text)
}

/// The error `text` gives, as the user reads it.
fn error_text(text: &str) -> String {
    match parse(text) {
        Ok(scenario) => panic!("expected an error, got {scenario:#?}"),
        Err(error) => error.to_string(),
    }
}

/// One bad input and its error text, as an inline snapshot. The input starts on the line after
/// `r#"`, so the line numbers in the text count from there.
macro_rules! check {
    ($text:expr, @$expected:literal) => {
        insta::assert_snapshot!(error_text($text.strip_prefix('\n').unwrap_or($text)), @$expected)
    };
}

#[test]
fn every_scenario_file_loads() {
    let files = scenario::collect(&[scenarios_folder()]).expect("the scenarios folder");
    for file in &files {
        let scenario = scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!scenario.description.is_empty(), "{} says what it proves in `description`", file.display());
        assert!(!scenario.steps.is_empty());
    }
}

#[test]
fn the_readme_example_loads() {
    let readme = fs::read_to_string(scenarios_folder().join("README.md")).expect("scenarios/README.md");
    let examples: Vec<&str> =
        readme.split("```toml\n").skip(1).map(|block| block.split("```").next().unwrap()).collect();
    assert!(!examples.is_empty(), "the README shows a scenario file");
    for example in examples {
        scenario::load_str(&scenarios_folder().join("README.md"), example).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn collect_lists_the_scenarios_folder_sorted_without_the_readme() {
    let files = scenario::collect(&[scenarios_folder()]).expect("the scenarios folder");
    let names: Vec<String> =
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    insta::assert_snapshot!(names.join("\n"), @r"
    bad_bundles.toml
    commit.toml
    commit_timeout_zero.toml
    conf_preserved.toml
    crash_on_boot.toml
    every_op_cut.toml
    hang_watchdog.toml
    missed_commit.toml
    power_loss.toml
    power_loss_http.toml
    pull_commit.toml
    revert.toml
    same_version.toml
    shadow_bad_input.toml
    shadow_fleet.toml
    shadow_missed_commit.toml
    snapshot.toml
    sweep.toml
    ");
}

#[test]
fn collect_takes_files_as_given_and_folders_flat() {
    let folder = temp_folder("collect");
    fs::create_dir_all(folder.join("nested")).unwrap();
    for name in ["b.toml", "a.toml", "nested/c.toml", "notes.txt", "README.md", ".#a.toml"] {
        fs::write(folder.join(name), "").unwrap();
    }
    let given = [folder.join("b.toml"), folder.clone(), folder.join("README.md")];
    let files = scenario::collect(&given).unwrap();
    // b.toml first, as given; then the folder's a.toml; b.toml is not listed twice.
    assert_eq!(files, vec![folder.join("b.toml"), folder.join("a.toml")]);

    let missing = scenario::collect(&[folder.join("nope")]).unwrap_err();
    assert_eq!(missing.to_string(), format!("{}: no such file or folder", folder.join("nope").display()));
    let not_toml = scenario::collect(&[folder.join("notes.txt")]).unwrap_err();
    assert_eq!(
        not_toml.to_string(),
        format!(
            "{}: not a scenario file: expected a .toml file or a folder of them",
            folder.join("notes.txt").display()
        )
    );
    let empty = scenario::collect(&[folder.join("README.md")]).unwrap_err();
    assert!(empty.to_string().ends_with("no scenario files (*.toml) found here"), "{empty}");
    fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn a_scenario_reads_as_the_model() {
    let text = r#"
description = "all the shapes"

[[step]]
provision = { version = "1.0.0" }

[[step]]
push = { bundle = { version = "2.0.0", behaviour = { commits_after = "10s" }, app_bytes = 1000, files = { "b.txt" = "B", "a.json" = "{}" } }, transport = "http", commit_timeout = "5m", chunk_bytes = 4096 }
cut = { at_op = 12 }
timeout = "2m"

[[step]]
push = { bundle = { version = "2.0.0", defect = { truncated = 0.25 }, platform = "esp8266", name = "fw", build_id = "b7" }, expect = { refused = "Update aborted" } }

[[step]]
wait = "1500ms"
cut = { at_phase = "revert" }

[[step]]
commit = { expect_error = "already committed" }

[[step]]
snapshot = true

[[step]]
expect = { revert_slot = "none", files = { "conf9.json" = "x", "old.txt" = false } }

[[step]]
sweep = { scripts = ["rollback", "update"] }
"#;
    let scenario =
        scenario::load_str(Path::new("scenarios/shapes.toml"), text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scenario.name, "shapes", "the name defaults to the file stem");
    assert_eq!(scenario.description, "all the shapes");
    let lines: Vec<usize> = scenario.steps.iter().map(|s| s.line).collect();
    assert_eq!(lines, [4, 7, 12, 15, 19, 22, 25, 28], "each step's line is its [[step]] header's");
    let s = &scenario.steps;

    let Action::Provision { bundle: BundleSource::Spec(v1) } = &s[0].action else { panic!("{:?}", s[0]) };
    let defaults = BundleSpec {
        name: "app".into(),
        version: "1.0.0".into(),
        build_id: "hil/1.0.0".into(),
        platform: None,
        behaviour: Behaviour::Healthy,
        app_bytes: 64 * 1024,
        files: vec![("app.json".into(), br#"{"version": "1.0.0"}"#.to_vec())],
        defect: None,
    };
    assert_eq!(*v1, defaults);
    assert_eq!((s[0].cut, s[0].timeout_ms), (None, 60_000));

    let Action::Push(push) = &s[1].action else { panic!("{:?}", s[1]) };
    let BundleSource::Spec(v2) = &push.bundle else { panic!("{push:?}") };
    assert_eq!(v2.behaviour, Behaviour::CommitsAfter { seconds: 10 });
    assert_eq!(v2.app_bytes, 1000);
    // In the order the file writes them.
    assert_eq!(v2.files, vec![("b.txt".into(), b"B".to_vec()), ("a.json".into(), b"{}".to_vec())]);
    assert_eq!((push.transport, push.commit_timeout_s, push.chunk_bytes), (Transport::Http, 300, 4096));
    assert_eq!(push.expect, PushExpect::PowerLost, "a push with a cut expects the power to go");
    assert_eq!(s[1].cut, Some(Cut::AtOp { op: 12, when: CutWhen::During }));
    assert_eq!(s[1].timeout_ms, 120_000);

    let Action::Push(push) = &s[2].action else { panic!("{:?}", s[2]) };
    let BundleSource::Spec(bad) = &push.bundle else { panic!("{push:?}") };
    assert_eq!(bad.defect, Some(Defect::Truncated(0.25)));
    assert_eq!(
        (bad.name.as_str(), bad.build_id.as_str(), bad.platform.as_deref()),
        ("fw", "b7", Some("esp8266"))
    );
    assert_eq!(push.expect, PushExpect::Refused { message: "Update aborted".into() });
    assert_eq!((push.transport, push.commit_timeout_s, push.chunk_bytes), (Transport::Rpc, 0, 512));

    assert_eq!(s[3].action, Action::Wait { ms: 1500 });
    assert_eq!(s[3].cut, Some(Cut::AtPhase(Phase::Revert)));
    assert_eq!(
        s[4].action,
        Action::Commit { expect: CallExpect::Error { message: "already committed".into() } }
    );
    let snapshot = Action::Snapshot { set_as_revert: false, commit_timeout_s: None, expect: CallExpect::Ok };
    assert_eq!(s[5].action, snapshot);
    let expect = Expect {
        revert_slot: Some(None),
        files: vec![("conf9.json".into(), Some(b"x".to_vec())), ("old.txt".into(), None)],
        ..Expect::default()
    };
    assert_eq!(s[6].action, Action::Expect(expect));
    let Action::Sweep(sweep) = &s[7].action else { panic!("{:?}", s[7]) };
    assert_eq!(sweep.scripts, [Script::Rollback, Script::Update]);
    assert_eq!((sweep.app_kib, sweep.depth, sweep.random_schedules, sweep.random_steps), (64, 1, 0, 30));
}

#[test]
fn a_bundle_path_resolves_against_the_scenario_folder() {
    let folder = temp_folder("paths");
    fs::create_dir_all(folder.join("fixtures")).unwrap();
    fs::write(folder.join("fixtures/v1.zip"), b"PK").unwrap();
    let file = folder.join("s.toml");
    fs::write(
        &file,
        "[[step]]\nprovision = \"fixtures/v1.zip\"\n[[step]]\npush = { bundle = \"fixtures/v2.zip\" }\n",
    )
    .unwrap();
    let error = scenario::load(&file).unwrap_err().to_string().replace(&folder.display().to_string(), "$TMP");
    insta::assert_snapshot!(error, @r#"$TMP/s.toml:4: step[2].push.bundle: no bundle file at $TMP/fixtures/v2.zip (the path "fixtures/v2.zip" is relative to the scenario's folder)"#);

    fs::write(folder.join("fixtures/v2.zip"), b"PK").unwrap();
    let scenario = scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let Action::Provision { bundle } = &scenario.steps[0].action else { panic!() };
    assert_eq!(*bundle, BundleSource::File(folder.join("fixtures/v1.zip")));
    fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn a_file_that_cannot_be_read_is_an_error() {
    let folder = temp_folder("unreadable");
    let error = scenario::load(&folder.join("gone.toml")).unwrap_err();
    assert_eq!((error.line, error.key.as_deref()), (None, None));
    assert!(error.message.starts_with("cannot read the scenario: "), "{error}");
    fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn toml_and_structure_mistakes() {
    check!(r#"
name = "x"
[[step]]
wait = "1s
"#,
        @r#"bad.toml:3: invalid basic string; expected `"`"#);

    check!(r#"
nmae = "x"
[[step]]
power_on = true
"#,
        @"bad.toml:1: nmae: unknown key `nmae`; expected one of `name`, `description`, `devices`, `step`");

    check!(r#"
[[step]]
power_on = true
[[step]]
push = { bundle = { version = "2" }, transprt = "rpc" }
"#,
        @"bad.toml:4: step[2].push.transprt: unknown key `transprt`; expected one of `bundle`, `transport`, `commit_timeout`, `ignore_same_version`, `chunk_bytes`, `expect`");

    check!(r#"
[[step]]
push = { version = "2.0.0" }
"#,
        @"bad.toml:2: step[1].push.version: unknown key `version`; expected one of `bundle`, `transport`, `commit_timeout`, `ignore_same_version`, `chunk_bytes`, `expect`");

    check!(r#"
[[step]]
provision = { name = "fw", app_kib = 32 }
"#,
        @"bad.toml:2: step[1].provision: missing key `version`");

    check!(r#"
[[step]]
provision = { version = "1" }

[[step]]
power_on = true
wait = "1s"
"#,
        @"bad.toml:6: step[2]: a step has exactly one action; this one has power_on and wait (start a new [[step]] for each action)");

    check!(r#"
[[step]]
timeout = "5s"
"#,
        @"bad.toml:1: step[1]: a step needs one action key: one of provision, write_file, push, power_on, power_cut, wait, commit, revert, reboot, snapshot, expect, sweep, shadow");

    check!(r#"
description = "nothing to do"
"#,
        @"bad.toml: a scenario needs at least one [[step]]");

    check!(r#"
[[step]]
power_on = false
"#,
        @"bad.toml:2: step[1].power_on: power_on = false does nothing; write power_on = true or remove the step");

    check!(r#"
[[step]]
[step.push]
commit_timeout = 5
"#,
        @"bad.toml:2: step[1].push: missing key `bundle`");

    check!(r#"
[[step]]
push = { bundle = { version = "2.0.0", files = { "a/b" = "x" } } }
"#,
        @r#"bad.toml:2: step[1].push.bundle.files."a/b": file name "a/b": files live in the filesystem's root, so a name has no '/' and is not . or .."#);
}

#[test]
fn value_mistakes() {
    check!(r#"
[[step]]
push = { bundle = { version = "2" }, transport = "usb" }
"#,
        @r#"bad.toml:2: step[1].push.transport: unknown transport "usb"; expected one of rpc, http, pull"#);

    check!(r#"
[[step]]
wait = "5 days"
"#,
        @r#"bad.toml:2: step[1].wait: "5 days": unknown unit "days"; expected ms, s, m or h"#);

    check!(r#"
[[step]]
wait = 301
"#,
        @r#"bad.toml:2: step[1].wait: a duration needs a unit: write "301s" (the units are ms, s, m and h)"#);

    check!(r#"
[[step]]
push = { bundle = { version = "2" }, commit_timeout = "1500ms" }
"#,
        @"bad.toml:2: step[1].push.commit_timeout: expected whole seconds; found 1500 ms");

    check!(r#"
[[step]]
push = { bundle = { version = "2" }, chunk_bytes = 0 }
"#,
        @"bad.toml:2: step[1].push.chunk_bytes: expected a number from 1 to 65536; found 0");

    check!(r#"
[[step]]
provision = { version = "1", app_kib = 32, app_bytes = 1000 }
"#,
        @"bad.toml:2: step[1].provision.app_bytes: give app_kib or app_bytes, not both");

    check!(r#"
[[step]]
provision = { version = "1", defect = "broken" }
"#,
        @r#"bad.toml:2: step[1].provision.defect: unknown defect "broken"; expected one of bad-checksum, bad-crc, compressed, streaming, too-big, not-a-zip, manifest-not-first, or { truncated = 0.5 }"#);

    check!(r#"
[[step]]
provision = { version = "1", behaviour = "sleeps" }
"#,
        @r#"bad.toml:2: step[1].provision.behaviour: unknown behaviour "sleeps"; expected one of healthy, crashes-at-boot, hangs, never-commits, or { commits_after = "10s" }"#);

    check!(r#"
[[step]]
provision = 3
"#,
        @r#"bad.toml:2: step[1].provision: expected a bundle: a path to a .zip ("fixtures/v2.zip") or a spec table ({ version = "2.0.0" }); found the number 3"#);

    check!(r#"
[[step]]
provision = { version = "a-version-far-too-long-for-the-header" }
"#,
        @r#"bad.toml:2: step[1].provision.version: version "a-version-far-too-long-for-the-header" does not fit the image header: at most 24 bytes, no NUL"#);

    check!(r#"
[[step]]
commit = false
"#,
        @r#"bad.toml:2: step[1].commit: expected commit = true or commit = { expect_error = "…" }; found false"#);

    check!(r#"
[[step]]
expect = {}
"#,
        @"bad.toml:2: step[1].expect: an expect checks nothing; give at least one of version, active_slot, revert_slot, committed, unchanged = true, bricked, files, reported");

    check!(r#"
[[step]]
expect = { unchanged = false }
"#,
        @"bad.toml:2: step[1].expect: an expect checks nothing; give at least one of version, active_slot, revert_slot, committed, unchanged = true, bricked, files, reported");

    check!(r#"
[[step]]
expect = { revert_slot = 2 }
"#,
        @r#"bad.toml:2: step[1].expect.revert_slot: expected 0, 1 or "none"; found the number 2"#);

    check!(r#"
[[step]]
expect = { files = { "conf9.json" = true } }
"#,
        @r#"bad.toml:2: step[1].expect.files."conf9.json": expected the file's content (a string) or false for "absent"; found true"#);

    check!(r#"
[[step]]
sweep = { scripts = ["update", "upgrade"] }
"#,
        @r#"bad.toml:2: step[1].sweep.scripts[2]: unknown script "upgrade"; expected "all" or one of update, rollback, snapshot"#);

    check!(r#"
[[step]]
sweep = { depth = 3 }
"#,
        @"bad.toml:2: step[1].sweep.depth: expected 1 or 2; found 3");

    check!(r#"
[[step]]
push = { bundle = { version = "2" }, expect = "done" }
"#,
        @r#"bad.toml:2: step[1].push.expect: unknown push outcome "done"; expected one of applied, up-to-date, power-lost, or { refused = "…" }"#);
}

#[test]
fn cut_mistakes() {
    check!(r#"
[[step]]
wait = "1s"
cut = { at_fraction = 0.5 }
"#,
        @"bad.toml:3: step[1].cut.at_fraction: at_fraction (a fraction of the upload) goes with push only, not wait; use at_op or at_phase");

    check!(r#"
[[step]]
expect = { version = "1" }
cut = { at_op = 3 }
"#,
        @"bad.toml:3: step[1].cut: a cut does not go with expect; it goes with write_file, push, power_on, wait, commit, revert, reboot and snapshot");

    check!(r#"
[[step]]
provision = { version = "1" }
cut = { at_phase = "write" }
"#,
        @"bad.toml:3: step[1].cut: a cut does not go with provision; it goes with write_file, push, power_on, wait, commit, revert, reboot and snapshot");

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_fraction = 1.0 }
"#,
        @"bad.toml:3: step[1].cut.at_fraction: expected a fraction between 0 and 1 (both excluded), such as 0.5; found 1.0");

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_op = 3, at_phase = "merge" }
"#,
        @"bad.toml:3: step[1].cut.at_phase: a cut takes one of at_op, at_fraction, at_phase or at_every_op; found at_op and at_phase");

    check!(r#"
[[step]]
wait = "1s"
cut = { at_every_op = true }
"#,
        @"bad.toml:3: step[1].cut.at_every_op: at_every_op = true goes with push only (found it with wait)");

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_every_op = false }
"#,
        @"bad.toml:3: step[1].cut.at_every_op: at_every_op = true goes with push only (found it with push)");

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_phase = "flash" }
"#,
        @r#"bad.toml:3: step[1].cut.at_phase: unknown phase "flash"; expected one of write, finalize, boot, merge, commit, revert, snapshot"#);

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_phase = "merge", when = "before" }
"#,
        @"bad.toml:3: step[1].cut.when: when goes with at_op only");

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_op = 3, when = "soon" }
"#,
        @r#"bad.toml:3: step[1].cut.when: unknown cut timing "soon"; expected one of before, during, after"#);

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = {}
"#,
        @"bad.toml:3: step[1].cut: a cut needs one of at_op, at_fraction or at_phase");

    check!(r#"
[[step]]
push = { bundle = { version = "2" } }
cut = { at_op = -1 }
"#,
        @"bad.toml:3: step[1].cut.at_op: expected a number from 0 up; found -1");
}

#[test]
fn shadow_steps_devices_and_reported_expectations_parse() {
    use ota_hil::scenario::model::{Action, ReportedExpect, ShadowDesired};
    let scenario = parse(
        r#"
devices = 3
[[step]]
shadow = { url = "http://127.0.0.1:9/fw.zip" }
device = "all"
[[step]]
expect = { reported = { code = -1, message = "stays" } }
device = 2
"#,
    )
    .unwrap();
    assert_eq!(scenario.devices, 3);
    assert_eq!(scenario.steps[0].devices, vec![0, 1, 2]);
    assert_eq!(
        scenario.steps[0].action,
        Action::Shadow(ShadowDesired::Url("http://127.0.0.1:9/fw.zip".into()))
    );
    let Action::Expect(expect) = &scenario.steps[1].action else { panic!() };
    assert_eq!(expect.reported, Some(ReportedExpect { code: Some(-1), message: Some("stays".into()) }));
    assert_eq!(scenario.steps[1].devices, vec![2]);
    assert_eq!(parse("[[step]]\npower_on = true\n").unwrap().steps[0].devices, vec![0]);
}

#[test]
fn shadow_and_device_mistakes() {
    check!(r#"
[[step]]
shadow = { url = "http://h/fw.zip", doc = "{}" }
"#,
        @"bad.toml:2: step[1].shadow: a shadow step sets exactly one of bundle (served by the runner), url or doc");

    check!(r#"
devices = 2
[[step]]
power_on = true
device = 2
"#,
        @r#"bad.toml:4: step[1].device: expected a device number from 0 to 1 (the scenario has devices = 2) or "all"; found the number 2"#);

    check!(r#"
devices = 0
[[step]]
power_on = true
"#,
        @"bad.toml:1: devices: expected a number from 1 to 64; found 0");

    check!(r#"
[[step]]
shadow = { url = "http://h/fw.zip" }
cut = { at_fraction = 0.5 }
"#,
        @"bad.toml:3: step[1].cut: a cut does not go with shadow; it goes with write_file, push, power_on, wait, commit, revert, reboot and snapshot");
}
