//! The ESP32-C3 board's commands on a machine without that board: what a developer or CI without
//! hardware sees. The board files here name a USB serial number no board has, so the tests hold
//! on a runner with a real board attached too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HIL: &str = env!("CARGO_BIN_EXE_hil");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A board file in a fresh folder: an ESP32-C3 that is never attached, with `extra` lines.
fn absent_board(test: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hil-esp32c3-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("esp32c3.toml");
    let text = format!("kind = \"esp32c3\"\n[esp32c3]\nusb = \"303a:1001:NO-SUCH-BOARD\"\n{extra}");
    std::fs::write(&path, text).unwrap();
    path
}

fn hil(args: &[&str]) -> Output {
    Command::new(HIL).args(args).current_dir(workspace()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_run_without_the_board_stops_with_exit_2_and_one_line() {
    let board = absent_board("run", "");
    let output = hil(&["run", "--no-logs", "--board", board.to_str().unwrap(), "scenarios/"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stderr),
        "error: board esp32c3: no USB serial port 303a:1001:NO-SUCH-BOARD is attached; no scenario ran\n"
    );
    assert!(!text(&output.stdout).contains("failed"), "{}", text(&output.stdout));
}

#[test]
fn flashing_without_the_board_stops_with_exit_2_and_one_line() {
    let board = absent_board("flash", "");
    let output = hil(&["flash", "--board", board.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output.stderr),
        "error: board esp32c3: no USB serial port 303a:1001:NO-SUCH-BOARD is attached; nothing was flashed\n"
    );
}

#[test]
fn the_list_gives_each_skips_reason_without_a_board() {
    let board = absent_board("list", "");
    let output = hil(&["run", "--list", "--board", board.to_str().unwrap(), "scenarios/"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let line = |file: &str| stdout.lines().find(|l| l.contains(file)).unwrap_or_default().to_string();
    assert!(line("scenarios/commit.toml").ends_with("(scenarios/commit.toml)"), "{stdout}");
    assert!(
        line("scenarios/power_loss.toml").ends_with(
            "SKIP: board esp32c3 cannot cut the power: it has no power control ([esp32c3.power] with `on` and `off` commands, for a relay or uhubctl) (line 20)"
        ),
        "{stdout}"
    );
    assert!(
        line("scenarios/sweep.toml").contains("SKIP: board esp32c3 cannot run exhaustive sweeps"),
        "{stdout}"
    );
    assert!(stdout.ends_with("18 trials, 9 would run, 9 skipped\n"), "{stdout}");

    // With power commands the power cuts at a fraction are no longer skipped for want of power.
    let powered = absent_board("list-power", "[esp32c3.power]\non = \"true\"\noff = \"true\"\n");
    let output = hil(&["run", "--list", "--board", powered.to_str().unwrap(), "scenarios/power_loss.toml"]);
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("no power control"), "{stdout}");
}

#[test]
fn a_scan_works_with_no_board() {
    let output = hil(&["boards", "--scan"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.starts_with("USB serial ports:\n"), "{stdout}");
    // Either something is attached and gets a board file, or the scan says nothing was found.
    assert!(stdout.contains("no boards found\n") || stdout.contains("kind = \"esp32c3\""), "{stdout}");
}

#[test]
fn probe_rs_without_the_feature_says_how_to_rebuild() {
    if cfg!(feature = "probe-rs") {
        return;
    }
    let board = absent_board("probe", "flasher = \"probe-rs\"\n");
    let config = ota_hil::board::config::load(&board).unwrap();
    let ota_hil::board::config::Backend::Esp32c3(esp) = config.backend else { panic!() };
    let error =
        ota_hil::board::esp32c3::write_flash(&esp, Path::new("/dev/null"), &[], &mut |_| {}).unwrap_err();
    assert_eq!(
        error,
        "flasher = \"probe-rs\": this hil was built without probe-rs; rebuild it with `cargo build --release -p ota-hil --features probe-rs` (about 6.5 minutes cold), or use flasher = \"espflash\""
    );
}
