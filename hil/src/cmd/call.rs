//! `hil call METHOD [PARAMS_JSON] --port PORT`: one RPC call, as `mos call` makes it, over a
//! serial line (a device path) or HTTP (`http://HOST:PORT/rpc`).
//!
//! Exit codes: 0 the device answered with a result (printed as pretty JSON on stdout); 1 it
//! answered with an error (`{code, message}` printed on stdout); 2 bad usage or no answer (a
//! port that will not open, a timeout, a device that went away).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::CommandError;
use crate::duration::parse_duration_ms;
use crate::rpc_client::{Client, TransportError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The method, such as Sys.GetInfo or OTA.Commit.
    pub method: String,
    /// The params, a JSON object such as '{"url": "http://host/fw.zip"}'.
    pub params: Option<String>,
    /// The device: a serial port (/dev/ttyUSB0, /dev/pts/N), http://HOST:PORT/rpc or
    /// mqtt://HOST:PORT/DEVICE_ID (through a broker).
    #[arg(long, value_name = "PORT")]
    pub port: String,
    /// How long to wait for the reply.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration_ms)]
    pub timeout: u64,
}

pub fn run(args: Args) -> Result<ExitCode, CommandError> {
    let params = match &args.params {
        None => Value::Null,
        Some(text) => serde_json::from_str::<Value>(text).map_err(|e| {
            CommandError::new(format!("PARAMS_JSON is not JSON: {e}"))
                .help("quote it for the shell: hil call OTA.Update '{\"url\": \"http://host/fw.zip\"}'")
        })?,
    };
    let mut client = Client::open(&args.port).map_err(transport_error)?;
    let answer = client
        .call_timeout(&args.method, params, Duration::from_millis(args.timeout))
        .map_err(transport_error)?;
    match answer {
        Ok(result) => {
            println!("{}", pretty(&result));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}", pretty(&json!({ "code": e.code, "message": e.message })));
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) fn transport_error(e: TransportError) -> CommandError {
    let help = e.help();
    CommandError::new(e.to_string()).help(help)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value always serialises")
}
