//! `virtual-board`: the device application as a host process. See the crate's README.

use std::process::ExitCode;

use ota_firmware::board::{self, Options, USAGE};

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
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
