//! Rules about what the runner depends on, checked by reading its manifest.

use std::path::Path;

/// The names in one `[section]` of `hil/Cargo.toml`: the text before `=` or `.` on each line.
fn names_in_section(manifest: &str, section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap().trim();
            names.push(name.trim_matches('"').to_string());
        }
    }
    names
}

#[test]
fn the_runner_never_depends_on_the_host_port() {
    // The runner talks to boards through ota-proto's framing; ota-firmware is the virtual board,
    // a device it spawns as a process, and must not leak into a runner driving real boards.
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let dependencies = names_in_section(&manifest, "[dependencies]");
    assert!(!dependencies.is_empty(), "hil/Cargo.toml has a [dependencies] section");
    assert!(
        !dependencies.iter().any(|name| name == "ota-firmware"),
        "rule broken: hil/Cargo.toml's [dependencies] names ota-firmware (the host port); use ota-proto for the protocols\n{dependencies:?}"
    );
    assert!(
        dependencies.iter().any(|name| name == "ota-proto"),
        "hil frames RPC with ota-proto: {dependencies:?}"
    );
}

#[test]
fn the_runner_never_depends_on_the_qemu_port() {
    // The runner finds the QEMU port's two binaries as ELF files and reads their segments and
    // symbols, as it would flash a board; the port's crate (a device's code) stays out of it.
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for section in ["[dependencies]", "[dev-dependencies]"] {
        let names = names_in_section(&manifest, section);
        assert!(
            !names.iter().any(|name| name == "ota-port-qemu-virt"),
            "rule broken: hil/Cargo.toml's {section} names ota-port-qemu-virt; read the ELF files instead\n{names:?}"
        );
    }
}

#[test]
fn the_runner_never_depends_on_the_esp32c3_port() {
    // The runner builds the ESP32-C3's images from the firmware's ELF with espflash, as it would
    // flash any build; the port's crate (esp-hal, a device's code) stays out of it.
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for section in ["[dependencies]", "[dev-dependencies]"] {
        let names = names_in_section(&manifest, section);
        assert!(
            !names.iter().any(|name| name == "ota-port-esp32c3" || name.starts_with("esp-hal")),
            "rule broken: hil/Cargo.toml's {section} names the ESP32-C3 port or esp-hal; read the ELF instead\n{names:?}"
        );
    }
}
