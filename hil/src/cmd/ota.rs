//! `hil ota BUNDLE --port PORT`: pushes a firmware bundle as `mos ota` does. `OTA.Status` first
//! (an update already in progress is refused: "call OTA.End"), then `OTA.Begin {timeout,
//! commit_timeout, size}`, `OTA.Write {offset, data}` in chunks of `--chunk-size` bytes (base64),
//! each tried up to three times at the same offset, and `OTA.End`; after three failed attempts
//! it calls `OTA.End` to abort, and the device stays on its running firmware.
//!
//! Exit codes: 0 the device took the update (or already runs that version); 1 the device
//! refused it; 2 bad usage or no answer.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::CommandError;
use super::call::transport_error;
use crate::duration::parse_duration_ms;
use crate::rpc_client::{Client, OtaOutcome, OtaPush};

/// The largest bundle `hil ota` reads: far above any firmware flash.
const BUNDLE_MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle (fw.zip).
    pub bundle: PathBuf,
    /// The device: a serial port (/dev/ttyUSB0, /dev/pts/N), http://HOST:PORT/rpc or
    /// mqtt://HOST:PORT/DEVICE_ID (through a broker).
    #[arg(long, value_name = "PORT")]
    pub port: String,
    /// Seconds the new firmware has to commit before the device rolls back (0: commit at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub commit_timeout: u32,
    /// How long the device waits for the next write before it abandons the update.
    #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = parse_duration_ms)]
    pub update_timeout: u64,
    /// Raw bytes per OTA.Write.
    #[arg(long, value_name = "BYTES", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub chunk_size: u32,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let bundle = read_bundle(&args.bundle)?;
    let mut client = Client::open(&args.port).map_err(transport_error)?;
    let push = OtaPush {
        bundle: &bundle,
        commit_timeout_s: args.commit_timeout,
        update_timeout_s: u32::try_from(args.update_timeout / 1000).unwrap_or(u32::MAX),
        chunk_bytes: args.chunk_size as usize,
        ignore_same_version: false,
        stop_after_bytes: None,
    };
    let mut progress = ProgressLine::new(bundle.len(), std::io::stderr().is_terminal());
    let outcome = crate::rpc_client::ota_push(&mut client, &push, &mut |sent| progress.update(sent));
    progress.finish();
    let outcome = outcome.map_err(|e| {
        let mut error = transport_error(e);
        if progress.sent > 0 {
            error.message += &format!(" after {} of {} bytes", progress.sent, bundle.len());
            error = error
                .help("the device may hold an unfinished update: `hil call OTA.End --port PORT` aborts it");
        }
        error
    })?;
    match outcome {
        OtaOutcome::Ended { message } if message.contains("same as current") => {
            println!("{message}: the device already runs this version; nothing was written");
            Ok(ExitCode::SUCCESS)
        }
        OtaOutcome::Ended { message } => {
            println!("{message}");
            if args.commit_timeout > 0 {
                println!(
                    "the device reboots into the new firmware, uncommitted: `hil call OTA.Commit --port {}` within {} s keeps it, otherwise it rolls back",
                    args.port, args.commit_timeout
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        OtaOutcome::Busy { state } => {
            eprintln!("error: update is already in progress ({state}), call OTA.End");
            eprintln!(
                "  help: `hil call OTA.End --port {}` aborts it; the device stays on its running firmware",
                args.port
            );
            Ok(ExitCode::from(1))
        }
        OtaOutcome::Refused { step, error } => {
            eprintln!(
                "error: the device refused the update at {step}: {} (code {})",
                error.message, error.code
            );
            eprintln!("  the device stays on its running firmware");
            Ok(ExitCode::from(1))
        }
        OtaOutcome::Stopped { .. } => unreachable!("hil ota never stops an upload early"),
    }
}

fn read_bundle(path: &PathBuf) -> Result<Vec<u8>, CommandError> {
    let cannot = |e: std::io::Error| CommandError::new(format!("cannot read {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > BUNDLE_MAX_BYTES {
        return Err(CommandError::new(format!(
            "{} is {size} bytes, more than any firmware bundle",
            path.display()
        )));
    }
    let bundle = std::fs::read(path).map_err(cannot)?;
    if bundle.is_empty() {
        return Err(CommandError::new(format!("{} is empty", path.display()))
            .help("give a fw.zip built by mos or hil bundle"));
    }
    Ok(bundle)
}

/// `  262144 / 1048576 bytes  25%  812.4 KB/s` on stderr: redrawn on a terminal at most every
/// 100 ms, once at the end otherwise.
struct ProgressLine {
    total: usize,
    sent: usize,
    live: bool,
    started: Instant,
    drawn: Option<Instant>,
}

impl ProgressLine {
    fn new(total: usize, live: bool) -> ProgressLine {
        ProgressLine { total, sent: 0, live, started: Instant::now(), drawn: None }
    }

    fn update(&mut self, sent: usize) {
        self.sent = sent;
        if self.live && self.drawn.is_none_or(|at| at.elapsed() >= Duration::from_millis(100)) {
            eprint!("\r\x1b[2K{}", self.text());
            let _ = std::io::stderr().flush();
            self.drawn = Some(Instant::now());
        }
    }

    fn finish(&mut self) {
        if self.live {
            eprint!("\r\x1b[2K");
        }
        if self.sent > 0 {
            eprintln!("{}", self.text());
        }
    }

    fn text(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-6);
        let percent = (self.sent * 100).checked_div(self.total).unwrap_or(100);
        format!(
            "  {} / {} bytes  {percent:>3}%  {:.1} KB/s",
            self.sent,
            self.total,
            self.sent as f64 / 1000.0 / seconds
        )
    }
}
