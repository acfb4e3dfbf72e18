//! Board files: one TOML per board, a tagged backend kind, its platform and geometry. Parsed in
//! two layers like scenarios: raw types that refuse unknown keys, then a validated
//! [`BoardConfig`].
//!
//! ```toml
//! kind = "sim"            # sim (now); virtual, qemu and esp32 are coming
//! platform = "esp32"      # what the device reports; default esp32
//!
//! [sim]                   # only for kind = "sim"; every key optional
//! app_slot_kib = 256
//! fs_slot_kib = 64
//! work_buffer_bytes = 4096
//! watchdog = "10s"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::parse_duration_ms;

/// The backend kinds a board file may name.
pub const KINDS: [&str; 4] = ["sim", "virtual", "qemu", "esp32"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    kind: String,
    platform: Option<String>,
    sim: Option<RawSim>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    app_slot_kib: Option<u32>,
    fs_slot_kib: Option<u32>,
    work_buffer_bytes: Option<usize>,
    watchdog: Option<String>,
}

/// A validated board file.
#[derive(Clone, Debug, PartialEq)]
pub struct BoardConfig {
    pub name: String,
    pub file: Option<PathBuf>,
    pub platform: String,
    pub backend: Backend,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    Sim(SimConfig),
}

/// The simulator's geometry. Defaults as in `ota_sim::device::Config`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub app_slot_bytes: u32,
    pub fs_slot_bytes: u32,
    pub work_buffer_bytes: usize,
    pub watchdog_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        let d = ota_sim::device::Config::default();
        SimConfig {
            app_slot_bytes: d.app_slot_bytes,
            fs_slot_bytes: d.fs_slot_bytes,
            work_buffer_bytes: d.work_buffer_bytes,
            watchdog_ms: d.watchdog_ms,
        }
    }
}

impl BoardConfig {
    /// The built-in simulator, used when no `--board` is given.
    pub fn default_sim() -> BoardConfig {
        BoardConfig {
            name: "sim".into(),
            file: None,
            platform: ota_sim::device::ARCH.into(),
            backend: Backend::Sim(SimConfig::default()),
        }
    }
}

/// A board file that could not be read or is wrong: names the file and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardFileError {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for BoardFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

pub fn load(path: &Path) -> Result<BoardConfig, BoardFileError> {
    let fail = |message: String| BoardFileError { file: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the board file: {e}")))?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<BoardConfig, BoardFileError> {
    let fail = |message: String| BoardFileError { file: path.to_path_buf(), message };
    let raw: RawBoard = toml::from_str(text).map_err(|e| fail(toml_message(text, &e)))?;
    let name = path.file_stem().map_or("board".into(), |s| s.to_string_lossy().into_owned());
    let platform = raw.platform.unwrap_or_else(|| ota_sim::device::ARCH.into());
    if platform.is_empty() || platform.len() > 16 {
        return Err(fail(format!("platform: {platform:?} must be 1 to 16 bytes")));
    }
    let backend = match raw.kind.as_str() {
        "sim" => Backend::Sim(sim_config(raw.sim).map_err(fail)?),
        kind if KINDS.contains(&kind) => {
            return Err(fail(format!(
                "kind: the {kind:?} backend is not available in this version of hil; \"sim\" is"
            )));
        }
        kind => {
            return Err(fail(format!(
                "kind: unknown backend {kind:?}; expected one of {}",
                KINDS.join(", ")
            )));
        }
    };
    Ok(BoardConfig { name, file: Some(path.to_path_buf()), platform, backend })
}

fn sim_config(raw: Option<RawSim>) -> Result<SimConfig, String> {
    let mut config = SimConfig::default();
    let Some(raw) = raw else { return Ok(config) };
    if let Some(kib) = raw.app_slot_kib {
        if kib == 0 || kib % 4 != 0 {
            return Err(format!("sim.app_slot_kib: {kib} is not a positive multiple of 4 (the erase unit)"));
        }
        config.app_slot_bytes = kib * 1024;
    }
    if let Some(kib) = raw.fs_slot_kib {
        if kib < 16 || kib % 4 != 0 {
            return Err(format!("sim.fs_slot_kib: {kib} must be a multiple of 4, at least 16"));
        }
        config.fs_slot_bytes = kib * 1024;
    }
    if let Some(bytes) = raw.work_buffer_bytes {
        if !(1024..=65536).contains(&bytes) || bytes % 4 != 0 {
            return Err(format!("sim.work_buffer_bytes: {bytes} must be 1024 to 65536, a multiple of 4"));
        }
        config.work_buffer_bytes = bytes;
    }
    if let Some(text) = raw.watchdog {
        config.watchdog_ms = parse_duration_ms(&text).map_err(|e| format!("sim.watchdog: {e}"))?;
    }
    Ok(config)
}

/// A TOML error as "line N: message".
fn toml_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => format!("line {}: {message}", text[..span.start].matches('\n').count() + 1),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        match parse(text, Path::new("boards/x.toml")) {
            Ok(config) => format!("{config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn board_files_are_checked_key_by_key() {
        assert_eq!(
            check("kind = \"sim\"\n[sim]\napp_slot_kib = 128\nwatchdog = \"5s\"\n"),
            "BoardConfig { name: \"x\", file: Some(\"boards/x.toml\"), platform: \"esp32\", backend: Sim(SimConfig { app_slot_bytes: 131072, fs_slot_bytes: 65536, work_buffer_bytes: 4096, watchdog_ms: 5000 }) }"
        );
        assert_eq!(
            check("kind = \"usb\"\n"),
            "boards/x.toml: kind: unknown backend \"usb\"; expected one of sim, virtual, qemu, esp32"
        );
        assert_eq!(
            check("kind = \"esp32\"\n"),
            "boards/x.toml: kind: the \"esp32\" backend is not available in this version of hil; \"sim\" is"
        );
        assert!(
            check("kind = \"sim\"\nport = \"/dev/ttyUSB0\"\n")
                .starts_with("boards/x.toml: line 2: unknown field `port`")
        );
        assert_eq!(
            check("kind = \"sim\"\n[sim]\napp_slot_kib = 3\n"),
            "boards/x.toml: sim.app_slot_kib: 3 is not a positive multiple of 4 (the erase unit)"
        );
        assert_eq!(
            check("kind = \"sim\"\n[sim]\nwatchdog = \"ten\"\n").split(": ").nth(1),
            Some("sim.watchdog")
        );
    }
}
