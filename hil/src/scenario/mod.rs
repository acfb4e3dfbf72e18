//! Scenario files: TOML, parsed in two layers (raw types that refuse unknown keys, then the
//! validated [`model`]). Every error names the file, the key and, where it can, the line.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod model;

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
    let _ = path;
    todo!()
}

/// The scenario files named by `paths`: files as given, folders searched (not recursively) for
/// `*.toml`, sorted by name.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let _ = paths;
    todo!()
}
