//! Scenario files: TOML, parsed in two layers (raw types that refuse unknown keys, then the
//! validated [`model`]). Every error names the file, the key and, where it can, the line.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

pub mod model;
mod parse;
mod raw;

pub use model::Scenario;

/// A scenario file that could not be read or is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// The key at fault, dotted (`step[3].push.transport`), where known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads and validates one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = fs::read_to_string(path)
        .map_err(|e| ScenarioError::whole_file(path, format!("cannot read the scenario: {e}")))?;
    load_str(path, &text)
}

/// Validates `text` as the scenario file `path` would hold it: errors name `path`, and bundle
/// paths resolve against its folder (and must exist there).
pub fn load_str(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    parse::scenario(path, text)
}

/// The scenario files named by `paths`: files as given, folders searched (not recursively) for
/// `*.toml`, sorted by name.
///
/// A file named twice is kept once, where it first appears. `README.md` is skipped, so a shell
/// glob such as `scenarios/*` works, and so are hidden files (an editor's `.#x.toml`). A path that
/// does not exist, a file that is not `.toml`, or no scenario at all is an error.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        let found = if path.is_dir() {
            folder_scenarios(path)?
        } else if path.is_file() {
            given_file(path)?.into_iter().collect()
        } else {
            return Err(ScenarioError::whole_file(path, "no such file or folder".to_string()));
        };
        for file in found {
            if !files.contains(&file) {
                files.push(file);
            }
        }
    }
    match (files.is_empty(), paths.first()) {
        (true, Some(first)) => {
            Err(ScenarioError::whole_file(first, "no scenario files (*.toml) found here".to_string()))
        }
        _ => Ok(files),
    }
}

/// A file named on the command line: a scenario, or `README.md` (skipped).
fn given_file(path: &Path) -> Result<Option<PathBuf>, ScenarioError> {
    if path.file_name().is_some_and(|name| name == "README.md") {
        return Ok(None);
    }
    if !is_toml(path) {
        let message = "not a scenario file: expected a .toml file or a folder of them".to_string();
        return Err(ScenarioError::whole_file(path, message));
    }
    Ok(Some(path.to_path_buf()))
}

fn folder_scenarios(folder: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let unreadable =
        |e: std::io::Error| ScenarioError::whole_file(folder, format!("cannot read the folder: {e}"));
    let mut files = Vec::new();
    for entry in fs::read_dir(folder).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let hidden = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !hidden && is_toml(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "toml")
}

impl ScenarioError {
    /// An error about the file as a whole: no line, no key.
    fn whole_file(file: &Path, message: String) -> ScenarioError {
        ScenarioError { file: file.to_path_buf(), line: None, key: None, message }
    }
}
