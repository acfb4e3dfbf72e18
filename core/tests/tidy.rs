//! Rules about what the core's sources never contain, checked by reading them.

use std::path::Path;

/// The non-test part of each source file of `core/src`: everything before its first
/// `#[cfg(test)]`.
fn production_sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap().to_string();
            (p.file_name().unwrap().to_string_lossy().into_owned(), production)
        })
        .collect()
}

fn forbid(rule: &str, needles: &[&str]) {
    let mut hits = Vec::new();
    for (file, text) in production_sources() {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            if let Some(needle) = needles.iter().find(|needle| code.contains(*needle)) {
                hits.push(format!("core/src/{file}:{}: `{needle}` in: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "rule broken: {rule}\n{}", hits.join("\n"));
}

#[test]
fn the_core_never_uses_std_or_alloc() {
    // Under #![no_std] the only way to allocate is to bring in the alloc crate.
    forbid(
        "the core is no_std and never allocates",
        &["std::", "extern crate std", "extern crate alloc", "alloc::"],
    );
}

#[test]
fn the_core_never_reads_a_clock_or_owns_an_rng() {
    forbid(
        "time comes in as now_ms; the core owns no randomness",
        &["Instant", "SystemTime", "rand::", "thread_rng"],
    );
}

#[test]
fn the_core_never_iterates_a_hash_map() {
    forbid("no HashMap: iteration order must not depend on hashing", &["HashMap", "HashSet"]);
}

#[test]
fn the_core_is_no_std_and_has_no_unsafe_code() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(lib.contains("#![no_std]"), "rule broken: core/src/lib.rs declares #![no_std]");
    assert!(lib.contains("#![forbid(unsafe_code)]"), "rule broken: core/src/lib.rs forbids unsafe code");
}
