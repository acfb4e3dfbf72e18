//! Rules about what the protocol layers' sources never contain, checked by reading them.

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

/// The non-test part of each source file of `proto/src`, named by its path under `src/`:
/// everything before its first `#[cfg(test)]`.
fn production_sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    rust_files(&src)
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap().to_string();
            (p.strip_prefix(&src).unwrap().to_string_lossy().into_owned(), production)
        })
        .collect()
}

/// The code of a line, without its comment.
fn code(line: &str) -> &str {
    line.split("//").next().unwrap()
}

/// Fails with every line that contains one of `needles` and is not `allowed` (given the line
/// before it), naming `rule`.
fn forbid_unless(rule: &str, needles: &[&str], allowed: impl Fn(&str) -> bool) {
    let mut hits = Vec::new();
    for (file, text) in production_sources() {
        let mut previous = "";
        for (n, line) in text.lines().enumerate() {
            if let Some(needle) = needles.iter().find(|needle| code(line).contains(*needle))
                && !allowed(previous)
            {
                hits.push(format!(
                    "firmware-under-test/proto/src/{file}:{}: `{needle}` in: {}",
                    n + 1,
                    line.trim()
                ));
            }
            if !line.trim().is_empty() {
                previous = line.trim();
            }
        }
    }
    assert!(hits.is_empty(), "rule broken: {rule}\n{}", hits.join("\n"));
}

fn forbid(rule: &str, needles: &[&str]) {
    forbid_unless(rule, needles, |_| false);
}

#[test]
fn the_protocol_layers_use_std_only_behind_the_std_feature() {
    // A board's firmware builds this crate without std; only `impl std::error::Error` may need it.
    forbid_unless(
        "ota-proto is no_std + alloc; std only on an item under #[cfg(feature = \"std\")]",
        &["std::", "extern crate std"],
        |previous| previous == "#[cfg(feature = \"std\")]",
    );
}

#[test]
fn the_protocol_layers_never_touch_a_socket() {
    forbid(
        "ota-proto does no I/O: bytes in, bytes out; sockets belong to the platform (ota_firmware::net)",
        &["TcpStream", "TcpListener", "UdpSocket", "std::net", "std::io", "std::fs"],
    );
}

#[test]
fn the_protocol_layers_never_spawn_threads_or_read_a_clock() {
    forbid(
        "ota-proto never spawns threads or reads a clock; timeouts belong to the caller's loop",
        &["thread::spawn", "std::thread", "Instant", "SystemTime", "std::time"],
    );
}

#[test]
fn the_protocol_layers_are_no_std_and_have_no_unsafe_code() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("#![no_std]"),
        "rule broken: firmware-under-test/proto/src/lib.rs declares #![no_std]"
    );
    assert!(
        lib.contains("#![forbid(unsafe_code)]"),
        "rule broken: firmware-under-test/proto/src/lib.rs forbids unsafe code"
    );
}
