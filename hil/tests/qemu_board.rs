//! The QEMU board end to end: `hil run --board boards/qemu.toml` on scenario files, with the
//! boot loader and the firmware of `firmware-under-test/qemu-virt/` on the emulated CPU.
//!
//! Needs `qemu-system-riscv32` and the two binaries
//! (`cargo build --release -p ota-port-qemu-virt --target riscv32imc-unknown-none-elf --bins`).
//! Without them the tests print why and pass, unless `HIL_REQUIRE_QEMU_BOARD=1` (CI sets it after
//! building them), which makes anything missing a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

const HIL: &str = env!("CARGO_BIN_EXE_hil");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether this machine can run the board; prints why not.
fn ready() -> bool {
    let required = std::env::var_os("HIL_REQUIRE_QEMU_BOARD").is_some_and(|v| v == "1");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let dir = target.join("riscv32imc-unknown-none-elf/release");
    let missing: Vec<String> = ["ota-qemu-boot", "ota-qemu-fw"]
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .chain(
            Command::new("qemu-system-riscv32")
                .arg("--version")
                .output()
                .is_err()
                .then(|| "qemu-system-riscv32 on PATH".to_string()),
        )
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!required, "HIL_REQUIRE_QEMU_BOARD=1 but these are missing: {missing:?}");
    eprintln!(
        "qemu_board: skipped: missing {missing:?} (set HIL_REQUIRE_QEMU_BOARD=1 to make this a failure)"
    );
    false
}

fn hil_run(scenario: &str) -> (bool, String) {
    let output = Command::new(HIL)
        .args(["run", "--board", "boards/qemu.toml", "--no-logs", scenario])
        .current_dir(workspace())
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn the_commit_scenario_passes_on_the_emulated_cpu() {
    if !ready() {
        return;
    }
    let (ok, text) = hil_run("scenarios/commit.toml");
    assert!(ok, "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn a_scenario_that_pushes_over_http_passes_through_the_boards_network() {
    if !ready() {
        return;
    }
    let (ok, text) = hil_run("scenarios/commit_timeout_zero.toml");
    assert!(ok, "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
