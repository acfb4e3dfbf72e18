//! `hil`: parses the command line and hands it to the library. Exit codes: 0 all passed, 1 a
//! scenario failed, 2 bad usage, a bad scenario or board file, or broken infrastructure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ota_hil::cmd::Cli::parse();
    match ota_hil::cmd::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
