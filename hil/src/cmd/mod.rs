//! The subcommands, one file each. Each returns the exit code, or a [`CommandError`] (exit 2)
//! that says what was wrong and what to do.

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod boards;
pub mod bundle;
pub mod call;
pub mod flash;
pub mod image;
pub mod inspect;
pub mod ota;
pub mod run;
pub mod sweep;
pub mod up;

#[derive(Debug, Parser)]
#[command(
    name = "hil",
    version,
    about = "Run OTA scenarios against the simulator, a virtual board or a real board"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenario files or folders of them.
    Run(run::Args),
    /// Build a Mongoose OS compatible fw.zip.
    Bundle(bundle::Args),
    /// Print a bundle's manifest and parts, and whether each part's checksums hold.
    Inspect(inspect::Args),
    /// Exhaustive power-cut sweeps and random fault schedules on the simulator, with figures.
    Sweep(sweep::Args),
    /// Call one RPC method on a device, as `mos call` does.
    Call(call::Args),
    /// Push a bundle to a device with OTA.Begin/Write/End, as `mos ota` does.
    Ota(ota::Args),
    /// Build an ESP32-C3 board's factory image (boot loader, partition table, boot state, app).
    Image(image::Args),
    /// Write the factory image to an attached ESP32-C3 board.
    Flash(flash::Args),
    /// List the attached USB serial ports and probes, with a board file for each.
    Boards(boards::Args),
    /// Start one provisioned board (the QEMU board) and print its serial= and http= lines.
    Up(up::Args),
}

pub fn run(cli: Cli) -> Result<ExitCode, CommandError> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bundle(args) => bundle::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Call(args) => call::run(args),
        Command::Ota(args) => ota::run(args),
        Command::Image(args) => image::run(args),
        Command::Flash(args) => flash::run(args),
        Command::Boards(args) => boards::run(args),
        Command::Up(args) => up::run(args),
    }
}

/// A usage, input or infrastructure error: exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub message: String,
    pub help: Option<String>,
}

impl CommandError {
    pub fn new(message: impl Into<String>) -> CommandError {
        CommandError { message: message.into(), help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> CommandError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}
