//! One RPC frame in, its reply out: shared by the serial channel and `POST /rpc`.

use serde_json::Value;

use super::{SharedDevice, lock};
use crate::app::RpcError;
use crate::rpc::frame::{self, FrameError, Request, Response};
use crate::service::{self, Reply};

/// The device id replies carry: `device.id` from `conf9.json`, or the build's.
pub fn device_id(device: &SharedDevice) -> String {
    let mut d = lock(device);
    let fallback = d.settings_device_id();
    d.with_app(|app, _| app.config().device_id).unwrap_or(fallback)
}

/// Handles a frame's JSON and hands the reply (if any: notifications get none) to `reply`,
/// possibly later and from another thread (a pull replies when it ends). Bytes that are not a
/// request and get no reply frame come back as the error, for a transport that must still answer
/// (`POST /rpc`); the serial line drops them.
pub fn handle_frame(
    device: &SharedDevice,
    json: &[u8],
    reply: impl FnOnce(String) + Send + 'static,
) -> Result<(), FrameError> {
    let id = device_id(device);
    let request = match frame::parse_request(json) {
        Ok(request) => request,
        Err(error) => {
            let Some(response) = Response::bad_request(&error, &id) else { return Err(error) };
            reply(response.to_json());
            return Ok(());
        }
    };
    if !frame::dst_is_local(&request, &id) {
        eprintln!("virtual-board: Wrong dst {:?}", request.dst);
        return Ok(());
    }
    match call(device, &request.method, &request.params) {
        Reply::Pull(pull) => {
            let device = device.clone();
            std::thread::spawn(move || {
                let outcome = super::pull::run(&device, &pull);
                if let Some(response) =
                    respond(&request, &id, outcome.map(|m| serde_json::json!({"state": 3, "msg": m})))
                {
                    reply(response.to_json());
                }
            });
        }
        Reply::Result(value) => {
            if let Some(response) = respond(&request, &id, Ok(value)) {
                reply(response.to_json());
            }
        }
        Reply::Error(e) => {
            if let Some(response) = respond(&request, &id, Err(e)) {
                reply(response.to_json());
            }
        }
    }
    Ok(())
}

/// Runs a method on the device; a device that is hung or bricked answers with an error.
pub fn call(device: &SharedDevice, method: &str, params: &Value) -> Reply {
    let mut d = lock(device);
    let uptime = d.clock.now_ms();
    match d.with_app(|app, now| service::dispatch(app, method, params, now, uptime)) {
        Ok(reply) => reply,
        Err(e) => Reply::Error(e),
    }
}

fn respond(request: &Request, id: &str, outcome: Result<Value, RpcError>) -> Option<Response> {
    match outcome {
        Ok(value) => Response::ok(request, id, value),
        Err(e) if e.code == 404 => Response::no_handler(request, id),
        Err(e) => Response::error(request, id, e.code as i64, e.message),
    }
}
