//! `hil bundle`.

use std::process::ExitCode;

use super::CommandError;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let _ = args;
    Err(CommandError::new("hil bundle is not built yet"))
}
