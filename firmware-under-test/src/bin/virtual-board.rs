//! `virtual-board`: the device application as a host process. See the crate's README.

use std::process::ExitCode;

use ota_firmware::board::{self, Options, USAGE};

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(why) => {
            eprintln!("virtual-board: {why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match board::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("virtual-board: {why}");
            ExitCode::from(2)
        }
    }
}
