//! The per-run log folder, for a person looking into a run after the fact:
//!
//! ```text
//! <dir>/run-seed-<seed>[-<n>]/
//!     summary.txt        one line per trial, then the totals
//!     report.json        the JSON report (see `report::json`)
//!     junit.xml          the JUnit report (see `report::junit`)
//!     timeline.html      every trial's timeline, failures first
//!     01-<scenario>-<board>/
//!         console.txt    the console, as the board and the runner wrote it
//!         steps.txt      the steps with their device times and verdicts
//!         events.txt     the device's timeline as text
//!         timeline.svg   the trial's timeline picture
//! ```
//!
//! A new run never overwrites an old one: when `run-seed-<seed>` exists the folder gets the
//! first free suffix `-2`, `-3`, …. Folder names are slugs (lower-case ASCII letters, digits and
//! `-`), so they are safe on every filesystem.
//!
//! `<dir>/latest` always names the newest run's folder (a symbolic link, replaced in one rename
//! once the folder is complete), the stable path CI keeps as an artifact; the older runs stay
//! beside it, as twister keeps `twister-out.1`, `.2`, … beside `twister-out`.

use std::io;
use std::path::{Path, PathBuf};

use super::{console_text, events_text, json, junit, steps_text, summary_text, timeline};
use crate::result::Run;

/// How many suffixes to try before giving up on a free folder name.
const SUFFIXES_MAX: u32 = 1000;
/// Longest slug, in bytes, so a trial folder's path stays well under any path limit.
const SLUG_BYTES_MAX: usize = 48;

/// Writes the run's log folder inside `dir` (created if missing) and returns its path.
pub fn write(run: &Run, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let root = create_fresh(dir, &format!("run-seed-{}", run.seed))?;
    std::fs::write(root.join("summary.txt"), summary_text(run))?;
    json::write(run, &root.join("report.json"))?;
    junit::write(run, &root.join("junit.xml"))?;
    std::fs::write(root.join("timeline.html"), timeline::html(run))?;
    for (name, trial) in trial_dirs(run).into_iter().zip(&run.trials) {
        let folder = root.join(name);
        std::fs::create_dir(&folder)?;
        std::fs::write(folder.join("console.txt"), console_text(trial))?;
        std::fs::write(folder.join("steps.txt"), steps_text(trial))?;
        std::fs::write(folder.join("events.txt"), events_text(trial))?;
        std::fs::write(folder.join("timeline.svg"), timeline::svg(trial))?;
    }
    point_latest(dir, &root)?;
    Ok(root)
}

/// The name of the link to the newest run, inside the log directory.
pub const LATEST: &str = "latest";

/// Points `dir/latest` at `root` (a folder inside `dir`): a new link under a temporary name,
/// renamed over the old one, so a reader never finds `latest` missing or half-made.
fn point_latest(dir: &Path, root: &Path) -> io::Result<()> {
    let target = root.file_name().expect("a run folder has a name");
    let fresh = dir.join(format!(".{LATEST}-{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    link(Path::new(target), &fresh)?;
    std::fs::rename(&fresh, dir.join(LATEST)).map_err(|e| {
        let _ = std::fs::remove_file(&fresh);
        io::Error::new(
            e.kind(),
            format!("cannot point {} at the new run {}: {e}", dir.join(LATEST).display(), root.display()),
        )
    })
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

/// Without symbolic links `latest` is a text file naming the folder.
#[cfg(not(unix))]
fn link(target: &Path, at: &Path) -> io::Result<()> {
    std::fs::write(at, target.to_string_lossy().as_bytes())
}

/// The trial folders' names, in run order: `01-power-loss-sim`. The number is 1-based and
/// zero-padded to the width of the trial count, so the folders sort in run order.
pub fn trial_dirs(run: &Run) -> Vec<String> {
    let width = run.trials.len().to_string().len().max(2);
    let names = run.trials.iter().enumerate();
    names.map(|(i, t)| format!("{:0width$}-{}-{}", i + 1, slug(&t.scenario), slug(&t.board))).collect()
}

/// A filesystem-safe name: lower-case ASCII letters and digits, every other run of characters
/// one `-`, no leading or trailing `-`, at most [`SLUG_BYTES_MAX`] bytes; `x` when nothing is left.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= SLUG_BYTES_MAX {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() { "x".into() } else { trimmed.into() }
}

/// Creates `dir/name`, or `dir/name-2`, `dir/name-3`, … when it exists.
fn create_fresh(dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 1..=SUFFIXES_MAX {
        let path = if n == 1 { dir.join(name) } else { dir.join(format!("{name}-{n}")) };
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{}: {name} and its {SUFFIXES_MAX} suffixes all exist; clear old runs from it",
            dir.display()
        ),
    ))
}
