//! Rules about what the portable device crates' sources never contain, checked by reading them:
//! the application (`ota-app`), the protocol layers (`ota-proto`) and, for I/O, threads and
//! clocks, LittleFS (`ota-lfs`). Only a port crate knows a chip or a process.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted, walking into subdirectories.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The portable crates, by their folder under the workspace root.
const PORTABLE: &[&str] = &["firmware-under-test/app", "firmware-under-test/proto"];
/// Portable too, but C behind an FFI: held to the I/O, thread and clock rules only.
const PORTABLE_FFI: &[&str] = &["firmware-under-test/lfs"];

/// The non-test part of each source file of the crates in `crates`, named by its path from the
/// workspace root: everything before its first `#[cfg(test)]`.
fn production_sources(crates: &[&str]) -> Vec<(String, String)> {
    let mut sources = Vec::new();
    for krate in crates {
        let src = root().join(krate).join("src");
        for p in rust_files(&src) {
            let text = std::fs::read_to_string(&p).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap().to_string();
            let name = format!("{krate}/src/{}", p.strip_prefix(&src).unwrap().to_string_lossy());
            sources.push((name, production));
        }
    }
    sources
}

/// The code of a line, without its comment.
fn code(line: &str) -> &str {
    line.split("//").next().unwrap()
}

/// Fails with every line that contains one of `needles` and is not `allowed` (given the line
/// before it), naming `rule`.
fn forbid_unless(rule: &str, crates: &[&str], needles: &[&str], allowed: impl Fn(&str) -> bool) {
    let mut hits = Vec::new();
    for (file, text) in production_sources(crates) {
        let mut previous = "";
        for (n, line) in text.lines().enumerate() {
            if let Some(needle) = needles.iter().find(|needle| code(line).contains(*needle))
                && !allowed(previous)
            {
                hits.push(format!("{file}:{}: `{needle}` in: {}", n + 1, line.trim()));
            }
            if !line.trim().is_empty() {
                previous = line.trim();
            }
        }
    }
    assert!(hits.is_empty(), "rule broken: {rule}\n{}", hits.join("\n"));
}

fn forbid(rule: &str, crates: &[&str], needles: &[&str]) {
    forbid_unless(rule, crates, needles, |_| false);
}

/// Both lists of portable crates.
fn all_portable() -> Vec<&'static str> {
    PORTABLE.iter().chain(PORTABLE_FFI).copied().collect()
}

#[test]
fn the_portable_crates_use_std_only_behind_the_std_feature() {
    // A board's firmware builds these crates without std; only `impl std::error::Error` may need it.
    forbid_unless(
        "ota-app and ota-proto are no_std + alloc; std only on an item under #[cfg(feature = \"std\")]",
        PORTABLE,
        &["std::", "extern crate std"],
        |previous| previous == "#[cfg(feature = \"std\")]",
    );
}

#[test]
fn the_portable_crates_never_touch_a_socket_or_a_file() {
    forbid(
        "the portable crates do no I/O: bytes in, bytes out; sockets belong to a port (ota_firmware::net)",
        &all_portable(),
        &["TcpStream", "TcpListener", "UdpSocket", "std::net", "std::io", "std::fs"],
    );
}

#[test]
fn the_portable_crates_never_spawn_threads_or_processes_or_read_a_clock() {
    forbid(
        "the portable crates never spawn a thread or a process, nor read a clock: time comes in as now_ms",
        &all_portable(),
        &[
            "std::process",
            "Command::new",
            "thread::spawn",
            "std::thread",
            "Instant",
            "SystemTime",
            "std::time",
        ],
    );
}

#[test]
fn the_portable_crates_are_no_std_and_have_no_unsafe_code() {
    for krate in PORTABLE {
        let lib = std::fs::read_to_string(root().join(krate).join("src/lib.rs")).unwrap();
        assert!(lib.contains("#![no_std]"), "rule broken: {krate}/src/lib.rs declares #![no_std]");
        assert!(
            lib.contains("#![forbid(unsafe_code)]"),
            "rule broken: {krate}/src/lib.rs forbids unsafe code"
        );
    }
}

#[test]
fn only_a_port_crate_knows_a_chip() {
    // The core, the application, the protocols, the simulator and the runner run on any board;
    // a chip's HAL, its runtime and its registers belong to the thin crate of that port.
    let ports = ["firmware-under-test/link-check", "firmware-under-test/src"];
    let others: Vec<&str> = ["core", "bundle", "sim", "hil"].into_iter().chain(all_portable()).collect();
    forbid(
        &format!("only a port crate ({}) names a chip's HAL or runtime", ports.join(", ")),
        &others,
        &["esp_hal", "esp_storage", "esp_bootloader", "riscv_rt", "riscv::", "cortex_m"],
    );
}
